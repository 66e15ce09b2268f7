"""Telemetry (issue 6): OTLP spans and metrics checked by real receivers, W3C trace context, Prometheus text,
no exporter traffic without an endpoint, no API keys anywhere, and no span lost while the collector is down.

Receivers: PyPI ``oteltap`` (OTLP/HTTP protobuf) and ``grpcio`` + ``opentelemetry-proto`` (OTLP/gRPC), see
otlp_receivers.py. Every sidecar here gets its own receiver port, metrics port and spool directory.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time

import pytest

from conftest import HOST, Service, free_port, httpx
from otlp_receivers import GrpcReceiver, OtelTapReceiver, attrs, wait_until

SECRET = "sk-telemetry-SECRET-never-exported-0123456789"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300",
               "AUTO_OPTIMIZER_TELEMETRY_RETRY_MAX_MS": "300", "OTEL_EXPORTER_OTLP_TIMEOUT": "2000"}


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The test process's environment without any OTEL_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and not k.startswith("AUTO_OPTIMIZER_TELEMETRY")}
    env.update(extra)
    return env


@pytest.fixture
def telemetry_sidecar(aobin, mock_upstream, tmp_path):
    """Factory: telemetry_sidecar(env, *extra_args, port=None, metrics_port=None) -> Service with .metrics_port."""
    started: list[Service] = []

    def _start(env: dict[str, str], *extra: str, port: int | None = None, metrics_port: int | None = None,
               name: str = "sidecar-telemetry") -> Service:
        port = port or free_port()
        mport = metrics_port or free_port()
        argv = [str(aobin), "serve", "--host", HOST, "--port", str(port), "--upstream", mock_upstream.v1,
                "--metrics-port", str(mport), *extra]
        svc = Service(name, argv, port, env=env)
        # Service.start merges os.environ; the OTEL_* variables must come from `env` alone.
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("OTEL_")}
        try:
            svc.start()
        finally:
            os.environ.update(saved)
        svc.metrics_port = mport
        started.append(svc)
        return svc

    yield _start
    for svc in started:
        svc.stop()


def chat(svc: Service, *, model="gpt-4o-mini", stream=False, headers=None, app="telemetry-app", **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello to the telemetry test"}],
            "max_tokens": 7, "temperature": 0.25, "top_p": 0.5, **extra}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    h = {"authorization": f"Bearer {SECRET}", "x-app-id": app, **(headers or {})}
    r = httpx.post(svc.v1 + "/chat/completions", json=body, headers=h, timeout=15, trust_env=False)
    assert r.status_code == 200, r.text
    return r


def client_spans(spans):
    return [s for s in spans if s.kind == 3]


# ------------------------------------------------------------------------------------------------ OTLP/HTTP


def test_spans_over_otlp_http_with_genai_attributes_and_trace_context(telemetry_sidecar, mock_upstream):
    tap = OtelTapReceiver(free_port()).start()
    try:
        svc = telemetry_sidecar(clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": tap.base_url, **FAST_EXPORT}))
        mock_upstream.clear()
        traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
        chat(svc, headers={"traceparent": traceparent, "tracestate": "vendor=abc"})
        upstream_tp = mock_upstream.last("/v1/chat/completions").header("traceparent")
        chat(svc, stream=True)

        spans = wait_until(lambda: tap.span_list() if len(client_spans(tap.span_list())) >= 2 else None, 15,
                           "2 CLIENT spans at oteltap")
        main = next(s for s in client_spans(spans) if s.trace_id.hex() == CLIENT_TRACE)
        a = attrs(main.attributes)
        assert main.name == "chat gpt-4o-mini"
        # Trace context: the client's trace continues, the client's span is the parent, and the upstream got a
        # traceparent naming exactly the exported span.
        assert main.parent_span_id.hex() == CLIENT_SPAN
        assert main.trace_state == "vendor=abc"
        assert upstream_tp == f"00-{CLIENT_TRACE}-{main.span_id.hex()}-01"
        assert main.end_time_unix_nano > main.start_time_unix_nano
        assert abs(main.start_time_unix_nano / 1e9 - time.time()) < 60
        # GenAI semantic conventions (v1.41.1 names).
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == "gpt-4o-mini"
        assert a["gen_ai.response.model"] == "gpt-4o-mini"
        assert a["gen_ai.response.id"].startswith("chatcmpl-")
        assert a["gen_ai.response.finish_reasons"] == ["length"]
        assert a["gen_ai.request.stream"] is False
        assert a["gen_ai.request.max_tokens"] == 7
        assert a["gen_ai.request.temperature"] == 0.25
        assert a["gen_ai.request.top_p"] == 0.5
        assert a["gen_ai.usage.input_tokens"] > 0
        assert a["gen_ai.usage.output_tokens"] == 7
        assert "gen_ai.usage.cache_read.input_tokens" in a and "gen_ai.usage.reasoning.output_tokens" in a
        assert a["server.address"] == HOST and a["server.port"] == mock_upstream.port
        assert "error.type" not in a
        # The design's optimization attributes.
        assert a["llm.optimization.original_tokens"] > 0 and a["llm.optimization.optimized_tokens"] > 0
        assert a["llm.optimization.tokens_saved"] == 0
        assert "llm.optimization.cost_saved_usd" in a
        assert a["llm.optimization.original_model"] == "gpt-4o-mini"
        assert a["llm.optimization.rule"] == "default"
        assert a["llm.request_id"].startswith("ao-")
        assert a["llm.application_name"] == "telemetry-app"
        # The upstream call is a child of the request's span.
        children = [s for s in spans if s.parent_span_id == main.span_id]
        assert [c.name for c in children] == ["upstream default"]
        # The streamed request: a new trace (no traceparent), time to first chunk recorded.
        streamed = next(s for s in client_spans(spans) if s.trace_id.hex() != CLIENT_TRACE)
        sa = attrs(streamed.attributes)
        assert sa["gen_ai.request.stream"] is True
        assert 0 < sa["gen_ai.response.time_to_first_chunk"] < 10
        assert any(e.name == "gen_ai.first_chunk" for e in streamed.events)
        assert len(streamed.parent_span_id) == 0

        # Metrics over OTLP (swift-otel's HTTP exporter).
        wanted = {"llm.optimization.runs", "llm.optimization.duration", "gen_ai.client.token.usage",
                  "gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk",
                  "auto_optimizer.requests", "auto_optimizer.added_latency"}
        wait_until(lambda: wanted <= {m.name for m in tap.metric_list()}, 15, f"OTLP metrics {wanted}")
        usage = [m for m in tap.metric_list() if m.name == "gen_ai.client.token.usage"][-1]
        types = {attrs(dp.attributes).get("gen_ai.token.type") for dp in usage.histogram.data_points}
        assert types == {"input", "output"}
    finally:
        tap.stop()


def test_not_sampled_parent_exports_no_span_but_propagates(telemetry_sidecar, mock_upstream):
    tap = OtelTapReceiver(free_port()).start()
    try:
        svc = telemetry_sidecar(clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": tap.base_url, **FAST_EXPORT}))
        mock_upstream.clear()
        chat(svc, headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"})
        tp = mock_upstream.last("/v1/chat/completions").header("traceparent")
        assert tp.startswith(f"00-{CLIENT_TRACE}-") and tp.endswith("-00") and CLIENT_SPAN not in tp
        chat(svc)  # sampled: exported
        wait_until(lambda: client_spans(tap.span_list()), 10, "the sampled span")
        time.sleep(0.5)
        assert all(s.trace_id.hex() != CLIENT_TRACE for s in tap.span_list())
    finally:
        tap.stop()


def test_stdout_mode_prints_spans(telemetry_sidecar):
    svc = telemetry_sidecar(clean_env({}), "--telemetry", "stdout")
    chat(svc)
    line = wait_until(lambda: next((l for l in svc.log_text().splitlines() if l.startswith("{") and '"kind":"client"' in l),
                                   None), 10, "a span line on stdout")
    span = json.loads(line)
    assert span["name"] == "chat gpt-4o-mini"
    assert span["attributes"]["llm.request_id"].startswith("ao-")
    assert span["attributes"]["gen_ai.usage.output_tokens"] == 7
    assert SECRET not in svc.log_text()


# ------------------------------------------------------------------------------------------------ OTLP/gRPC


def test_spans_and_metrics_over_otlp_grpc(telemetry_sidecar):
    rx = GrpcReceiver(free_port()).start()
    try:
        svc = telemetry_sidecar(clean_env({
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "billing-sidecar", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=ml",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme", **FAST_EXPORT}))
        chat(svc, model="gpt-4o")
        got = wait_until(lambda: [x for x in rx.spans() if x[1].kind == 3], 15, "a CLIENT span over gRPC")
        resource, span = got[0]
        assert resource["service.name"] == "billing-sidecar"
        assert resource["deployment.environment"] == "test" and resource["team"] == "ml"
        assert span.name == "chat gpt-4o"
        a = attrs(span.attributes)
        assert a["gen_ai.request.model"] == "gpt-4o" and a["gen_ai.usage.output_tokens"] == 7
        assert rx.metadata[0].get("x-tenant") == "acme"
        wait_until(lambda: {"gen_ai.client.token.usage", "llm.optimization.runs"} <= rx.metric_names(), 15,
                   "OTLP/gRPC metrics")
    finally:
        rx.stop()


# ------------------------------------------------------------------------------------------------ Prometheus


def test_prometheus_metrics_endpoint(telemetry_sidecar):
    svc = telemetry_sidecar(clean_env({}))
    for _ in range(3):
        chat(svc)
    chat(svc, stream=True)
    def scrape():
        t = httpx.get(f"http://{HOST}:{svc.metrics_port}/metrics", timeout=5, trust_env=False).text
        ok = 'auto_optimizer_requests_total{http_response_status_code="200",endpoint="chat.completions"} 4' in t
        return t if ok else None

    text = wait_until(scrape, 10, "4 requests in /metrics")
    for name in ["llm_optimization_runs_total", "llm_optimization_duration_milliseconds_bucket",
                 "gen_ai_client_token_usage_bucket", "gen_ai_client_operation_duration_seconds_bucket",
                 "gen_ai_client_operation_time_to_first_chunk_seconds_bucket", "auto_optimizer_added_latency_seconds_bucket",
                 "auto_optimizer_telemetry_dropped_total"]:
        assert name in text, f"{name} missing from /metrics:\n{text[:2000]}"
    assert 'llm_optimization_runs_total{status="unchanged"} 4' in text
    assert 'gen_ai_token_type="input"' in text and 'gen_ai_token_type="output"' in text
    assert re.search(r'gen_ai_client_token_usage_bucket\{[^}]*le="16(\.0)?"', text), text[:3000]
    assert SECRET not in text


# ------------------------------------------------------------------------------------------------ no traffic, no keys


def _listen(port: int):
    """A TCP listener counting connections; None when the port is taken."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
    except OSError:
        s.close()
        return None
    s.listen(16)
    s.settimeout(0.1)
    hits = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                c, _ = s.accept()
                hits.append(c.recv(4096))
                c.close()
            except OSError:
                pass
        s.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return hits, stop, t


def test_no_endpoint_means_no_exporter_traffic(telemetry_sidecar):
    traps = {p: _listen(p) for p in (4317, 4318)}
    if all(v is None for v in traps.values()):
        pytest.skip("the default OTLP ports 4317/4318 are in use on this host")
    try:
        svc = telemetry_sidecar(clean_env({"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "200"}))
        for _ in range(3):
            chat(svc)
        time.sleep(1.5)  # several export intervals
        for port, trap in traps.items():
            if trap is not None:
                assert trap[0] == [], f"exporter traffic to the default port {port} without an endpoint: {trap[0]!r}"
        assert "telemetry: OTLP spans" not in svc.log_text()
    finally:
        for trap in traps.values():
            if trap is not None:
                trap[1].set()
                trap[2].join(2)


def test_api_keys_never_exported(telemetry_sidecar):
    rx = GrpcReceiver(free_port()).start()
    try:
        svc = telemetry_sidecar(clean_env({
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", **FAST_EXPORT}))
        chat(svc, headers={"x-api-key": SECRET, "openai-organization": "org-" + SECRET})
        chat(svc, stream=True, headers={"api-key": SECRET})
        wait_until(lambda: len([x for x in rx.spans() if x[1].kind == 3]) >= 2, 15, "2 CLIENT spans")
        wait_until(lambda: rx.metric_names(), 15, "OTLP metrics")
        time.sleep(0.5)
        with rx.lock:
            blobs = [r.SerializeToString() for r in rx.trace_requests + rx.metric_requests]
        for b in blobs:
            assert SECRET.encode() not in b and b"sk-telemetry" not in b
        prom = httpx.get(f"http://{HOST}:{svc.metrics_port}/metrics", timeout=5, trust_env=False).text
        assert SECRET not in prom
        assert SECRET not in svc.log_text()
    finally:
        rx.stop()


# ------------------------------------------------------------------------------------------------ outage


def _request_ids(spans) -> set[str]:
    return {attrs(s.attributes)["llm.request_id"] for s in client_spans(spans)}


def test_spans_survive_a_collector_outage(telemetry_sidecar, tmp_path):
    port = free_port()
    tap = OtelTapReceiver(port).start()
    try:
        svc = telemetry_sidecar(clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": tap.base_url, **FAST_EXPORT,
                                           "AUTO_OPTIMIZER_TELEMETRY_MEMORY_BYTES": "2000"}),
                                "--telemetry-spool", str(tmp_path / "spool"))
        chat(svc)
        wait_until(lambda: client_spans(tap.span_list()), 10, "the first span")
        tap.stop()
        n = 25
        for _ in range(n):
            chat(svc)
        # Export attempts fail meanwhile (or hang until the export timeout while the receiver shuts down); batches
        # beyond the 2000-byte memory budget go to the spool.
        wait_until(lambda: list((tmp_path / "spool").glob("seg-*.lz4")), 15,
                   "spool segments while the collector is down")
        tap2 = OtelTapReceiver(port).start()
        try:
            got = wait_until(lambda: ids if len(ids := _request_ids(tap2.span_list())) >= n else None, 20,
                             f"{n} spans after the collector came back")
            assert len(got) == n
            wait_until(lambda: not list((tmp_path / "spool").glob("seg-*.lz4")), 10, "an empty spool")
        finally:
            tap2.stop()
    finally:
        tap.stop()


def test_spans_survive_collector_outage_and_sidecar_restart(telemetry_sidecar, tmp_path):
    port = free_port()
    spool = tmp_path / "spool"
    env = clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{port}", **FAST_EXPORT})
    svc = telemetry_sidecar(env, "--telemetry-spool", str(spool))
    n = 20
    for _ in range(n):
        chat(svc)
    time.sleep(0.5)
    svc.stop()  # SIGTERM: what could not be exported goes to the spool
    svc.stopped_by_test = True
    assert list(spool.glob("seg-*.lz4")), "the stopped sidecar left no spool segment"
    tap = OtelTapReceiver(port).start()
    try:
        svc2 = telemetry_sidecar(env, "--telemetry-spool", str(spool), name="sidecar-restarted")
        got = wait_until(lambda: ids if len(ids := _request_ids(tap.span_list())) >= n else None, 20,
                         f"{n} spans from the spool after the restart")
        assert len(got) == n
        assert "spool has batches from an earlier run" in svc2.log_text()
    finally:
        tap.stop()


def test_compression_attributes_and_child_span(telemetry_sidecar, mock_upstream, tmp_path):
    """A compression rule: the span carries ratio, quality and technique; a `compress ...` child span exists."""
    from conftest import qa_rows, rag_context
    rows = qa_rows(20)
    context = rag_context(rows)
    tap = OtelTapReceiver(free_port()).start()
    try:
        policy = tmp_path / "policy.yaml"
        policy.write_text(f"version: 1\nupstreams: {{ main: {{ url: \"{mock_upstream.v1}\" }} }}\n"
                          "defaults: { compression: { target_ratio: 0.5, min_prompt_tokens: 100 } }\n")
        svc = telemetry_sidecar(clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": tap.base_url, **FAST_EXPORT}),
                                "--config", str(policy), name="sidecar-telemetry-compress")
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": context},
                                                    {"role": "user", "content": rows[3]["question"]}]}
        r = httpx.post(svc.v1 + "/chat/completions", json=body, timeout=15, trust_env=False,
                       headers={"authorization": f"Bearer {SECRET}", "x-app-id": "compress-telemetry"})
        assert r.status_code == 200, r.text
        def with_compress_child():
            # The request's span and its `compress ...` child can reach the receiver in different export batches.
            spans = tap.span_list()
            mains = client_spans(spans)
            if mains and any(c.parent_span_id == mains[0].span_id and c.name.startswith("compress ") for c in spans):
                return spans
            return None
        spans = wait_until(with_compress_child, 15, "a CLIENT span and its compress child span")
        main = client_spans(spans)[0]
        a = attrs(main.attributes)
        assert "selection" in a["llm.optimization.technique"]
        assert 0.3 < a["llm.optimization.compression_ratio"] <= 0.55
        assert 0 < a["llm.optimization.quality_score"] <= 1
        assert a["llm.optimization.tokens_saved"] > 500
        assert a["llm.optimization.optimized_tokens"] < a["llm.optimization.original_tokens"]
        children = {c.name: attrs(c.attributes) for c in spans if c.parent_span_id == main.span_id}
        comp = next(v for k, v in children.items() if k.startswith("compress "))
        assert comp["llm.optimization.compression_applied"] is True
        assert comp["llm.optimization.optimized_tokens"] < comp["llm.optimization.original_tokens"]
    finally:
        tap.stop()
