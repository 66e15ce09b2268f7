"""WebSocket (HTTP/1.1 Upgrade) requests through the sidecar: the official OpenAI SDK's Realtime client, raw frames
both ways, a refused upgrade, an unreachable upstream, and a wss:// upstream (a real nginx terminating TLS).

The OpenAI SDKs open Realtime (and other WebSocket) sessions at ws(s)://{base_url}/..., so an application pointed
at the sidecar sends them to it; the sidecar forwards the upgrade request on a connection of its own and relays
bytes both ways. The mock upstream speaks a small Realtime-style protocol at /v1/realtime and echoes other frames."""
from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import socket
import threading
import time

import openai
import pytest
import websockets
from websockets.asyncio.client import connect

from conftest import HOST, closed_port, httpx
from test_https_upstream import make_certificates, start_tls_nginx, stop_nginx


def ws_url(service_v1: str, path: str) -> str:
    return service_v1.replace("http://", "ws://", 1) + path


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def refusal(url: str):
    """The HTTP response of an upgrade request that does not become a WebSocket."""
    async def go():
        try:
            async with connect(url):
                pass
        except websockets.exceptions.InvalidStatus as e:
            return e.response
        raise AssertionError(f"{url} was upgraded")
    return run(go())


def realtime_session(base_url: str) -> dict:
    """One Realtime session with the official SDK: session.created, then one response."""
    client = openai.OpenAI(base_url=base_url, api_key="sk-test-key", max_retries=0, timeout=20.0)
    out: dict = {"types": [], "text": ""}
    with client.realtime.connect(model="gpt-realtime-mini", max_retries=0) as conn:
        first = conn.recv()
        out["first"] = first.type
        out["model"] = first.session.model
        conn.response.create()
        for event in conn:
            out["types"].append(event.type)
            if event.type == "response.output_text.delta":
                out["text"] += event.delta
            if event.type == "response.done":
                u = event.response.usage
                out["usage"] = (u.input_tokens, u.output_tokens, u.total_tokens)
                break
    return out


def test_realtime_session_with_the_openai_sdk(sidecar, mock_upstream):
    through = realtime_session(sidecar.v1)
    direct = realtime_session(mock_upstream.v1)
    assert through == direct
    assert through["first"] == "session.created" and through["model"] == "gpt-realtime-mini"
    assert through["text"] == "Hello from the mock realtime server."
    assert through["usage"] == (12, 9, 21)
    assert through["types"][0] == "response.created" and through["types"][-1] == "response.done"


def test_upgrade_request_reaches_the_upstream_rewritten(sidecar, mock_upstream):
    async def go():
        async with connect(ws_url(sidecar.v1, "/realtime?model=m1&x=%2F"),
                           additional_headers={"Authorization": "Bearer sk-ws-key", "OpenAI-Project": "proj_ws",
                                               "X-Custom": "kept"},
                           subprotocols=["realtime", "other"]) as ws:
            assert ws.subprotocol == "realtime"
            assert ws.response.status_code == 101
            assert ws.response.headers["x-mock-upstream"] == "websocket"  # the upstream's own head, relayed
            await ws.recv()
    run(go())
    rec = mock_upstream.last("/v1/realtime", "GET")
    assert rec.path == "/v1/realtime?model=m1&x=%2F"
    assert rec.header("host") == f"{HOST}:{mock_upstream.port}"
    assert rec.header("authorization") == "Bearer sk-ws-key"
    assert rec.header("openai-project") == "proj_ws"
    assert rec.header("x-custom") == "kept"
    assert rec.header("upgrade").lower() == "websocket"
    assert "upgrade" in rec.header("connection").lower()
    assert rec.header("sec-websocket-key") and rec.header("sec-websocket-version") == "13"
    assert rec.header("sec-websocket-protocol") == "realtime, other"


def test_frames_are_relayed_both_ways_in_order(sidecar):
    big = bytes(range(256)) * (4 * 4096)  # 4 MiB: more than the socket buffers, so backpressure takes part

    async def go():
        async with connect(ws_url(sidecar.v1, "/realtime"), max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            for i in range(200):
                await ws.send(f"message {i} \u00e9\u6f22")
            for i in range(200):
                assert await ws.recv() == f"message {i} \u00e9\u6f22"
            await ws.send(big)
            assert await ws.recv() == big
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 10)
            await ws.close(code=1000, reason="done")
            return ws.close_code
    assert run(go()) == 1000


def test_many_sessions_at_once(sidecar):
    async def one(i: int):
        async with connect(ws_url(sidecar.v1, f"/realtime?model=m{i}")) as ws:
            assert json.loads(await ws.recv())["session"]["model"] == f"m{i}"
            await ws.send(json.dumps({"type": "response.create"}))
            types = []
            while not types or types[-1] != "response.done":
                types.append(json.loads(await ws.recv())["type"])
            return len(types)

    async def go():
        return await asyncio.gather(*(one(i) for i in range(20)))
    assert run(go()) == [9] * 20


def test_refused_upgrade_is_relayed(sidecar, mock_upstream):
    # The mock upgrades only /v1/realtime and /v1/responses; elsewhere it answers as plain HTTP (404 here).
    response = refusal(ws_url(sidecar.v1, "/not-a-socket"))
    assert response.status_code == 404
    assert json.loads(response.body)["error"]["code"] == "unknown_url"
    # The sidecar stays up and serves plain requests.
    assert httpx.get(sidecar.base_url + "/health", trust_env=False).status_code == 200


def test_refused_upgrade_ends_the_connection(sidecar, mock_upstream):
    # A request written after a refused upgrade on the same connection must not reach the upstream around the
    # sidecar's policy (the tunnel is already set up): the client gets the refusal, then the connection closes,
    # and the pipelined request never reaches the upstream.
    mock_upstream.clear()
    upgrade = (f"GET /v1/not-a-socket HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer sk-test\r\n"
               "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    after = f"GET /v1/models HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer sk-test\r\nX-Probe: after-refusal\r\n\r\n"
    with socket.create_connection((HOST, sidecar.port), timeout=10) as s:
        s.sendall((upgrade + after).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break  # closed by the sidecar
            data += chunk
    assert data.startswith(b"HTTP/1.1 404") and data.count(b"HTTP/1.1 ") == 1
    head, body = data.split(b"\r\n\r\n", 1)
    assert json.loads(body)["error"]["code"] == "unknown_url"
    seen = [r for r in mock_upstream.requests() if any(name.lower() == "x-probe" for name, _ in r["headers"])]
    assert seen == [] and [r["path"] for r in mock_upstream.requests()] == ["/v1/not-a-socket"]
    # Upgrades that succeed still relay what the client sends right after the 101.
    async def go():
        async with connect(ws_url(sidecar.v1, "/realtime?model=gpt-realtime-mini")) as ws:
            first = json.loads(await ws.recv())["type"]
            await ws.send(json.dumps({"type": "ping-echo"}))
            return first
    assert run(go()) == "session.created"


def test_other_upgrades_are_plain_requests(sidecar, mock_upstream, http):
    # curl's `Upgrade: h2c` on a GET: not a WebSocket, so answered as the HTTP/1.1 request it also is, and the
    # connection stays HTTP (its next request is handled by the sidecar too).
    with socket.create_connection((HOST, sidecar.port), timeout=10) as s:
        for extra in ("Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n", ""):
            s.sendall((f"GET /v1/models HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer sk-test\r\n{extra}\r\n").encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            while len(body) < length:
                body += s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200") and b"x-auto-optimizer-overhead-ms" in head.lower()
            assert json.loads(body)["object"] == "list"
    rec = mock_upstream.last("/v1/models", "GET")
    assert rec.header("upgrade") is None and rec.header("http2-settings") is None


def test_unreachable_upstream_is_a_502_error(start_sidecar):
    sc = start_sidecar("--telemetry", "off", upstream=f"http://{HOST}:{closed_port()}/v1", name="sidecar-ws-down")
    response = refusal(ws_url(sc.v1, "/realtime"))
    assert response.status_code == 502
    body = json.loads(response.body)
    assert body["error"]["type"] and body["error"]["message"]
    assert sc.alive()
    assert records_of(sc, 1)[0]["status"] == 502


def records_of(sc, n: int) -> list[dict]:
    for _ in range(100):  # a session is recorded when it closes, published by the accounting thread
        records = httpx.get(sc.v1 + "/optimizer/requests?limit=10", trust_env=False).json()["data"]
        if len(records) >= n:
            return records
        time.sleep(0.05)
    raise AssertionError(f"{n} records expected, got {records}")


def test_sessions_are_recorded_with_their_usage(start_sidecar):
    # The usage of each response.done event of a session is summed into the session's record (2 x 12 + 9).
    sc = start_sidecar("--telemetry", "off", name="sidecar-ws-records")

    async def go():
        async with connect(ws_url(sc.v1, "/realtime?model=gpt-realtime"),
                           additional_headers={"x-app-id": "voice-app"}) as ws:
            await ws.recv()
            for _ in range(2):
                await ws.send(json.dumps({"type": "response.create"}))
                while json.loads(await ws.recv())["type"] != "response.done":
                    pass
    run(go())
    record = records_of(sc, 1)[0]
    assert record["status"] == 101 and record["application"] == "voice-app"
    assert record["requested_model"] == "gpt-realtime"
    assert record["usage"]["prompt_tokens"] == 24 and record["usage"]["completion_tokens"] == 18
    report = httpx.get(sc.v1 + "/optimizer/savings", trust_env=False).json()
    assert report["total"]["requests"] == 1 and report["total"]["failed"] == 0
    assert report["total"]["prompt_tokens"] == 24 and report["total"]["completion_tokens"] == 18
    assert report["records_dropped"] == 0


@pytest.mark.parametrize("server_no_context_takeover", [False, True])
def test_compressed_session_usage_is_read(start_sidecar, server_no_context_takeover):
    # An upstream that accepts permessage-deflate (the websockets library's server, as many are): the extension
    # is negotiated end to end through the tunnel, frames pass compressed and unchanged, and the sidecar inflates
    # the server's messages to read the usage events (keeping the window from message to message, or not when
    # the server says server_no_context_takeover).
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
    from websockets.sync.server import serve

    def handler(conn):
        for message in conn:
            if isinstance(message, str) and '"response.create"' in message:
                usage = {"input_tokens": 7, "output_tokens": 3, "input_token_details": {"cached_tokens": 2}}
                conn.send(json.dumps({"type": "response.done", "response": {"usage": usage}}))
            else:
                conn.send(message)

    factory = ServerPerMessageDeflateFactory(server_no_context_takeover=server_no_context_takeover)
    server = serve(handler, HOST, 0, extensions=[factory], compression=None, max_size=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        sc = start_sidecar("--telemetry", "off", upstream=f"http://{HOST}:{port}/v1", name="sidecar-ws-deflate")
        text = "compressible " * 100_000

        async def go():
            async with connect(ws_url(sc.v1, "/realtime"), max_size=None) as ws:
                extensions = ws.response.headers.get("sec-websocket-extensions", "")
                await ws.send(text)
                echoed = await ws.recv()
                dones = []
                for _ in range(3):  # later events refer back into earlier ones' window (context takeover)
                    await ws.send(json.dumps({"type": "response.create"}))
                    dones.append(json.loads(await ws.recv())["type"])
                await ws.send(b"\x00\x01" * 1000)  # binary, echoed compressed
                binary = await ws.recv()
                await ws.send(json.dumps({"type": "response.create"}))
                dones.append(json.loads(await ws.recv())["type"])
                return extensions, echoed == text, dones, binary == b"\x00\x01" * 1000
        extensions, same, dones, binary_same = run(go())
        assert "permessage-deflate" in extensions
        assert ("server_no_context_takeover" in extensions) == server_no_context_takeover
        assert same and binary_same and dones == ["response.done"] * 4
        record = records_of(sc, 1)[0]
        assert record["status"] == 101
        assert record["usage"]["prompt_tokens"] == 28 and record["usage"]["completion_tokens"] == 12
        assert record["usage"]["cached_tokens"] == 8
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_client_closing_ends_the_upstream_session(sidecar, mock_upstream):
    # Closing the client's TCP connection without a close frame: the sidecar closes the upstream side too, and
    # new sessions keep working.
    async def go():
        ws = await connect(ws_url(sidecar.v1, "/realtime"))
        await ws.recv()
        ws.transport.abort()
        async with connect(ws_url(sidecar.v1, "/realtime")) as again:
            return json.loads(await again.recv())["type"]
    assert run(go()) == "session.created"


def test_shutdown_ends_open_sessions_at_the_drain_timeout(start_sidecar):
    # SIGTERM with a session open: the session keeps working while the sidecar drains, and the process exits at
    # the drain timeout (a WebSocket has no end of its own to wait for), closing the session.
    sc = start_sidecar("--telemetry", "off", "--drain-timeout", "1", name="sidecar-ws-drain")

    async def go():
        async with connect(ws_url(sc.v1, "/realtime")) as ws:
            await ws.recv()
            started = time.monotonic()
            sc.signal(signal.SIGTERM)
            await ws.send("still there?")
            echoed = await ws.recv()
            try:
                await asyncio.wait_for(ws.recv(), 20)
            except websockets.exceptions.ConnectionClosed:
                pass
            return echoed, time.monotonic() - started
    echoed, closed_after = run(go())
    assert echoed == "still there?"
    assert closed_after < 10, f"session closed {closed_after:.1f} s after SIGTERM (drain timeout 1 s)"
    assert sc.wait(timeout=10) == 0
    sc.stopped_by_test = True


@pytest.fixture(scope="module")
def wss_upstream(tmp_path_factory, mock_upstream):
    """nginx terminating TLS (certificate from a throw-away CA) and proxying WebSocket upgrades to the mock."""
    d = tmp_path_factory.mktemp("wss-upstream")
    make_certificates(d, "auto-optimizer ws test CA")
    port, proc = start_tls_nginx(
        d, listen="ssl",
        http_extra=f"""log_format ws '$server_protocol $request_method $request_uri $status $http_upgrade';
    access_log {d}/access.log ws;""",
        location=f"""proxy_pass http://127.0.0.1:{mock_upstream.port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 60s;""")
    yield {"port": port, "ca": str(d / "ca.pem"), "access_log": d / "access.log"}
    stop_nginx(proc)


def test_wss_upstream_by_name_and_by_ip(wss_upstream, start_sidecar):
    for host in ("localhost", "127.0.0.1"):  # SNI and name check; IP address check without SNI
        sc = start_sidecar("--telemetry", "off", "--upstream-ca-file", wss_upstream["ca"],
                           upstream=f"https://{host}:{wss_upstream['port']}/v1", name=f"sidecar-wss-{host}")
        got = realtime_session(sc.v1)
        assert got["text"] == "Hello from the mock realtime server." and got["usage"] == (12, 9, 21)
    log = pathlib.Path(wss_upstream["access_log"]).read_text().splitlines()
    assert sum(1 for line in log if line.startswith("HTTP/1.1 GET /v1/realtime?model=gpt-realtime-mini 101 websocket")) == 2


def test_untrusted_wss_upstream_is_a_502(wss_upstream, start_sidecar):
    # Without the test CA, the upstream's certificate does not verify: no session, a 502.
    sc = start_sidecar("--telemetry", "off", upstream=f"https://localhost:{wss_upstream['port']}/v1",
                       name="sidecar-wss-untrusted")
    response = refusal(ws_url(sc.v1, "/realtime"))
    assert response.status_code == 502
    assert "certificate" in json.loads(response.body)["error"]["message"].lower()
