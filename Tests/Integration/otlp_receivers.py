"""Real OTLP receivers for the telemetry tests, on 127.0.0.1.

* ``OtelTapReceiver``: PyPI ``oteltap`` (OTLP/HTTP protobuf), run on its own asyncio loop in a thread; collects
  the spans (``opentelemetry.proto.trace.v1.Span``) and metrics it receives. Can be stopped and started again on
  the same port (collector outage tests).
* ``GrpcReceiver``: ``grpcio`` + the official ``opentelemetry-proto`` classes: a TraceService and MetricsService
  that keep every ExportTraceServiceRequest / ExportMetricsServiceRequest.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def attrs(kvs) -> dict:
    """OTLP KeyValue list -> plain dict (arrays become lists)."""
    out = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "array_value":
            out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
        elif which is not None:
            out[kv.key] = getattr(v, which)
    return out


def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class OtelTapReceiver:
    def __init__(self, port: int):
        self.port = port
        self.spans: list = []
        self.metrics: list = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "OtelTapReceiver":
        ready = threading.Event()

        async def main():
            from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            receiver = OtelTapHttpProtobufReceiver(OtelTapHttpProtobufReceiverSettings(http_port=self.port))
            await receiver.start()

            async def consume(stream, into):
                async for m in stream:
                    with self._lock:
                        into.append(m)

            tasks = [asyncio.create_task(consume(receiver.stream_traces(), self.spans)),
                     asyncio.create_task(consume(receiver.stream_metrics(), self.metrics))]
            await asyncio.sleep(0.1)  # the streams subscribe when first iterated
            ready.set()
            await self._stop.wait()
            for t in tasks:
                t.cancel()
            await receiver.stop()

        def run():
            try:
                asyncio.run(main())
            except BaseException as e:  # pragma: no cover - reported by start()
                self._error = e
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True, name=f"oteltap-{self.port}")
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("oteltap receiver did not start")
        if self._error:
            raise RuntimeError(f"oteltap receiver failed: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    def span_list(self) -> list:
        with self._lock:
            return list(self.spans)

    def metric_list(self) -> list:
        with self._lock:
            return list(self.metrics)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, owner: "GrpcReceiver"):
        self.owner = owner

    def Export(self, request, context):
        with self.owner.lock:
            self.owner.trace_requests.append(request)
            self.owner.metadata.append(dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, owner: "GrpcReceiver"):
        self.owner = owner

    def Export(self, request, context):
        with self.owner.lock:
            self.owner.metric_requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver:
    def __init__(self, port: int):
        self.port = port
        self.lock = threading.Lock()
        self.trace_requests: list = []
        self.metric_requests: list = []
        self.metadata: list[dict] = []
        self.server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "GrpcReceiver":
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), self.server)
        bound = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert bound == self.port, f"gRPC receiver could not bind 127.0.0.1:{self.port}"
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None).wait(5)
            self.server = None

    def spans(self) -> list[tuple[dict, object]]:
        """(resource attributes, span) for every span received."""
        out = []
        with self.lock:
            for req in self.trace_requests:
                for rs in req.resource_spans:
                    res = attrs(rs.resource.attributes)
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            out.append((res, s))
        return out

    def metric_names(self) -> set[str]:
        with self.lock:
            return {m.name for req in self.metric_requests for rm in req.resource_metrics
                    for sm in rm.scope_metrics for m in sm.metrics}
