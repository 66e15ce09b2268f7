"""Failure handling: OpenAI-shaped errors from the sidecar itself, upstream errors relayed untouched, upstream
faults mapped to 502/504, client disconnects and SIGTERM drain. After every case the sidecar still answers
/health."""

from __future__ import annotations

import http.client as httplib
import json
import random
import signal
import socket
import threading
import time

import pytest

from conftest import HOST, assert_openai_error, closed_port, httpx

MODEL = "gpt-4o-mini"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
MAX_BODY = 4096


@pytest.fixture(autouse=True)
def sidecar_stays_healthy(sidecar):
    yield
    assert sidecar.alive(), f"sidecar died (exit {sidecar.proc.returncode}):\n{sidecar.log_tail()}"
    r = httpx.get(sidecar.base_url + "/health", timeout=5, trust_env=False)
    assert r.status_code == 200, f"/health -> {r.status_code} after the test"


@pytest.fixture(scope="module")
def small_body_sidecar(aobin, mock_upstream):
    """A sidecar with --max-body-bytes 4096 (module scope; the factory fixture is function scoped)."""
    from conftest import Service, _sidecar_argv, free_port
    port = free_port()
    svc = Service("sidecar-maxbody", _sidecar_argv(aobin, port, mock_upstream.v1,
                                                   ["--max-body-bytes", str(MAX_BODY)]), port).start()
    yield svc
    alive = svc.alive()
    svc.stop()
    assert alive, "sidecar-maxbody died during the module"


# ------------------------------------------------------------------------------------ errors the sidecar makes

MALFORMED = {
    "truncated": b'{"model": "gpt-4o", "messages": [',
    "not-json": b"hello world",
    "empty": b"",
    "trailing-garbage": b'{"model": "gpt-4o"} xyz',
    "single-quotes": b"{'model': 'gpt-4o'}",
}


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"])
@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_json_is_400(http, sidecar, mock_upstream, endpoint, case):
    mock_upstream.clear()
    r = http.post(sidecar.base_url + endpoint, content=MALFORMED[case], headers={"content-type": "application/json"})
    err = assert_openai_error(r, 400)
    assert err["type"] == "invalid_request_error", err
    assert not mock_upstream.received(endpoint), "malformed request was forwarded upstream"


def _padded_chat(size: int) -> bytes:
    """A valid chat request of exactly `size` bytes."""
    base = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": ""}]}, separators=(",", ":"))
    pad = size - len(base)
    assert pad >= 0
    out = base.replace('"content":""', '"content":"' + "x" * pad + '"').encode()
    assert len(out) == size
    return out


def test_body_at_limit_is_accepted(http, small_body_sidecar):
    r = http.post(small_body_sidecar.v1 + "/chat/completions", content=_padded_chat(MAX_BODY),
                  headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text[:300]


@pytest.mark.parametrize("size", [MAX_BODY + 1, 10 * MAX_BODY, 1024 * 1024])
def test_body_over_limit_is_413(http, small_body_sidecar, mock_upstream, size):
    mock_upstream.clear()
    r = http.post(small_body_sidecar.v1 + "/chat/completions", content=_padded_chat(size),
                  headers={"content-type": "application/json"})
    assert_openai_error(r, 413)
    assert not mock_upstream.received("/v1/chat/completions"), "oversized request was forwarded upstream"
    assert httpx.get(small_body_sidecar.base_url + "/health", trust_env=False).status_code == 200


def test_chunked_body_over_limit_is_413(small_body_sidecar, mock_upstream):
    """No Content-Length: the limit must be enforced while reading the chunks."""
    mock_upstream.clear()
    body = _padded_chat(3 * MAX_BODY)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000]) for i in range(0, len(body), 1000))
    with socket.create_connection((HOST, small_body_sidecar.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            s.sendall(chunks + b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sidecar may answer and close before reading everything
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < 12:
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except ConnectionResetError:
            pass
    assert data.startswith(b"HTTP/1.1 413"), f"got {data[:200]!r}"
    assert not mock_upstream.received("/v1/chat/completions")


def test_unknown_path_outside_v1_is_404(http, sidecar):
    for method, path in [("GET", "/nope"), ("POST", "/api/chat"), ("GET", "/v2/models")]:
        r = http.request(method, sidecar.base_url + path)
        assert_openai_error(r, 404)


# ------------------------------------------------------------------------------------ upstream failures

def test_upstream_unreachable_is_502(http, start_sidecar):
    sc = start_sidecar(upstream=f"http://{HOST}:{closed_port()}/v1", name="sidecar-deadupstream")
    for method, path, body in [("POST", "/v1/chat/completions", CHAT), ("GET", "/v1/models", None)]:
        t0 = time.monotonic()
        r = http.request(method, sc.base_url + path, json=body)
        assert_openai_error(r, 502)
        assert time.monotonic() - t0 < 5, "502 took too long"


def test_failed_connects_do_not_leak(http, start_sidecar):
    """Every request to an unreachable upstream fails a connect; nothing of those connections may stay behind
    (a read-timeout timer once kept each one alive for the whole timeout)."""
    sc = start_sidecar(upstream=f"http://{HOST}:{closed_port()}/v1", name="sidecar-deadupstream-leak")
    def burst(n):
        for _ in range(n):
            assert http.get(sc.base_url + "/v1/models").status_code == 502
    burst(500)
    before = _rss_mb(sc.proc.pid)
    burst(3000)
    grown = _rss_mb(sc.proc.pid) - before
    assert grown < 3, f"sidecar RSS grew {grown:.1f} MB over 3000 failed connects"


def test_upstream_timeout_is_504(http, start_sidecar):
    sc = start_sidecar("--upstream-timeout", "1", name="sidecar-timeout1")
    t0 = time.monotonic()
    r = http.post(sc.v1 + "/chat/completions", json=CHAT, headers={"x-mock-fault": "stall"})
    elapsed = time.monotonic() - t0
    assert_openai_error(r, 504)
    assert 0.8 <= elapsed < 5, f"504 after {elapsed:.2f}s with --upstream-timeout 1"
    # A normal request still works on the same sidecar.
    assert http.post(sc.v1 + "/chat/completions", json=CHAT).status_code == 200


def test_upstream_reset_is_502(http, sidecar, mock_upstream):
    mock_upstream.clear()
    r = http.post(sidecar.v1 + "/chat/completions", json=CHAT, headers={"x-mock-fault": "reset"})
    assert_openai_error(r, 502)
    # A POST is not idempotent: the sidecar must not have sent it twice.
    assert len(mock_upstream.received("/v1/chat/completions")) == 1, "sidecar retried a POST after a reset"


# Framing (content-length vs chunked) and per-hop fields may differ; everything else must be relayed as is.
IGNORED_RESPONSE_HEADERS = {"date", "connection", "keep-alive", "transfer-encoding", "content-length",
                            "x-auto-optimizer-overhead-ms"}


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_upstream_error_relayed_untouched(http, sidecar, mock_upstream, status):
    hdrs = {"x-mock-status": str(status)}
    d = http.post(mock_upstream.v1 + "/chat/completions", json=CHAT, headers=hdrs)
    assert d.status_code == status, f"mock did not produce {status}: {d.status_code}"
    mock_upstream.clear()
    p = http.post(sidecar.v1 + "/chat/completions", json=CHAT, headers=hdrs)
    assert p.status_code == status
    assert p.content == d.content, f"body changed:\n direct {d.content!r}\n sidecar {p.content!r}"
    for name, value in d.headers.multi_items():
        if name.lower() in IGNORED_RESPONSE_HEADERS:
            continue
        assert p.headers.get_list(name) == d.headers.get_list(name), (
            f"header {name}: direct {d.headers.get_list(name)} vs sidecar {p.headers.get_list(name)}")
    assert len(mock_upstream.received("/v1/chat/completions")) == 1, "sidecar retried the upstream"


def test_upstream_reset_mid_stream(http, sidecar):
    """The upstream dies after a few chunks: the client must be able to tell (no fabricated [DONE])."""
    received = b""
    error = None
    try:
        with http.stream("POST", sidecar.v1 + "/chat/completions", json={**CHAT, "stream": True},
                         headers={"x-mock-fault": "reset-mid-stream"}) as r:
            assert r.status_code == 200
            for part in r.iter_raw():
                received += part
    except httpx.HTTPError as e:  # an incomplete chunked body is the expected signal
        error = e
    assert b"data:" in received, f"no chunk relayed before the reset: {received!r} ({error!r})"
    assert b"[DONE]" not in received, "sidecar completed a stream the upstream broke off"
    assert error is not None, "the stream ended cleanly although the upstream was reset mid-stream"


# ------------------------------------------------------------------------------------ client behaviour

def test_client_disconnect_mid_stream(http, sidecar):
    body = json.dumps({**CHAT, "stream": True}).encode()
    for _ in range(3):
        with socket.create_connection((HOST, sidecar.port), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"x-mock-tokens-per-second: 5\r\nx-mock-completion-tokens: 50\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            data = b""
            while b"data:" not in data:
                part = s.recv(4096)
                assert part, f"connection closed before the first chunk: {data!r}"
                data += part
            assert data.startswith(b"HTTP/1.1 200")
        # closed after the first chunk; the sidecar must carry on
        t0 = time.monotonic()
        r = http.post(sidecar.v1 + "/chat/completions", json=CHAT)
        assert r.status_code == 200 and time.monotonic() - t0 < 5
    assert sidecar.alive()


def test_sigterm_drains_inflight_stream(start_sidecar, mock_upstream):
    sc = start_sidecar("--drain-timeout", "15", name="sidecar-drain")
    first = threading.Event()
    result: dict = {}

    def consume():
        lines = []
        try:
            with httpx.Client(timeout=20, trust_env=False) as c:
                with c.stream("POST", sc.v1 + "/chat/completions", json={**CHAT, "stream": True},
                              headers={"x-mock-tokens-per-second": "10", "x-mock-completion-tokens": "20"}) as r:
                    result["status"] = r.status_code
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            lines.append(line)
                            first.set()
        except Exception as e:  # noqa: BLE001
            result["error"] = e
        result["lines"] = lines
        first.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    assert first.wait(10), "no first chunk within 10 s"
    time.sleep(0.2)
    sc.signal(signal.SIGTERM)
    t0 = time.monotonic()
    t.join(20)
    assert not t.is_alive(), "stream still running 20 s after SIGTERM"
    assert "error" not in result, f"stream broke on SIGTERM: {result.get('error')!r}"
    lines = result["lines"]
    assert result["status"] == 200
    assert lines and lines[-1].strip() == "data: [DONE]", f"stream cut short: {lines[-3:]}"
    finish = [json.loads(ln[5:])["choices"][0].get("finish_reason") for ln in lines[:-1]
              if json.loads(ln[5:]).get("choices")]
    assert finish and finish[-1] in ("stop", "length"), finish
    try:
        code = sc.wait(timeout=15)
    except Exception:  # noqa: BLE001
        raise AssertionError(f"sidecar still running {time.monotonic() - t0:.1f}s after SIGTERM and drain")
    sc.stopped_by_test = True
    assert code == 0, f"exit code after SIGTERM: {code}\n{sc.log_tail()}"


def test_sigterm_after_traffic_shuts_down_cleanly(start_sidecar, http):
    """After serving traffic (pooled upstream connections open), SIGTERM -> exit 0 without NIO misuse errors
    (SwiftNIO announces that scheduling on a shut-down event loop will become a crash)."""
    sc = start_sidecar(name="sidecar-clean-exit")
    for _ in range(3):
        assert http.get(sc.v1 + "/models").status_code == 200
        assert http.post(sc.v1 + "/chat/completions", json={**CHAT, "stream": True}).status_code == 200
    sc.signal(signal.SIGTERM)
    code = sc.wait(timeout=15)
    sc.stopped_by_test = True
    log = sc.log_text()
    assert code == 0, f"exit {code}\n{sc.log_tail()}"
    assert "Cannot schedule tasks on an EventLoop that has already shut down" not in log, sc.log_tail()


def test_sigterm_idle_exits_promptly(start_sidecar):
    sc = start_sidecar(name="sidecar-idle-term")
    sc.signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = sc.wait(timeout=10)
    sc.stopped_by_test = True
    assert code == 0
    assert time.monotonic() - t0 < 5, "idle sidecar took >5 s to exit on SIGTERM"


def test_upstream_timeout_is_per_byte_not_total(http, start_sidecar):
    """--upstream-timeout bounds the wait for the upstream's next byte: a 2 s stream that sends a chunk every
    0.1 s passes a sidecar with --upstream-timeout 1."""
    sc = start_sidecar("--upstream-timeout", "1", name="sidecar-timeout1-stream")
    with http.stream("POST", sc.v1 + "/chat/completions", json={**CHAT, "stream": True},
                     headers={"x-mock-tokens-per-second": "10", "x-mock-completion-tokens": "20"}) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert lines[-1].strip() == "data: [DONE]", lines[-3:]
    # and a slow first byte under the limit is fine too
    r = http.post(sc.v1 + "/chat/completions", json=CHAT, headers={"x-mock-latency-ms": "500"})
    assert r.status_code == 200


def test_upstream_restart_recovers(aobin, start_sidecar, http):
    """The upstream restarts (its pooled keep-alive connections die): the next POST still succeeds."""
    from conftest import MockUpstream, _mock_argv, free_port
    port = free_port()
    mock = MockUpstream("mock-restart", _mock_argv(aobin, port), port).start()
    try:
        sc = start_sidecar(upstream=mock.v1, name="sidecar-restart")
        for _ in range(3):
            assert http.post(sc.v1 + "/chat/completions", json=CHAT).status_code == 200
        mock.stop()
        mock = MockUpstream("mock-restart-2", _mock_argv(aobin, port), port).start()
        time.sleep(0.2)
        for i in range(3):
            r = http.post(sc.v1 + "/chat/completions", json=CHAT)
            assert r.status_code == 200, f"request {i} after the upstream restart: {r.status_code} {r.text[:300]}"
    finally:
        mock.stop()


def test_http10_client(sidecar):
    body = json.dumps(CHAT).encode()
    with socket.create_connection((HOST, sidecar.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        data = b""
        while True:  # HTTP/1.0 without keep-alive: the server closes after the response
            part = s.recv(65536)
            if not part:
                break
            data += part
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head[:200]
    assert b"chunked" not in head.lower(), "chunked encoding sent to an HTTP/1.0 client"
    assert json.loads(payload)["object"] == "chat.completion"


def test_expect_100_continue(sidecar):
    body = json.dumps(CHAT).encode()
    with socket.create_connection((HOST, sidecar.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        s.settimeout(3)
        interim = s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100"), f"no 100 Continue: {interim[:100]!r}"
        s.settimeout(10)
        s.sendall(body)
        resp = httplib.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200, resp.read()[:300]
        assert json.loads(resp.read())["object"] == "chat.completion"


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_slow_client_backpressure(sidecar):
    """A client that does not read a fast ~23 MB stream: the sidecar must not buffer it (memory stays flat),
    and the whole stream arrives once the client reads."""
    body = json.dumps({**CHAT, "stream": True}).encode()
    before = _rss_mb(sidecar.proc.pid)
    with socket.create_connection((HOST, sidecar.port), timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"x-mock-completion-tokens: 100000\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                  + body)
        time.sleep(1.0)
        early = _rss_mb(sidecar.proc.pid)
        time.sleep(1.5)
        late = _rss_mb(sidecar.proc.pid)
        grown = late - before
        total, tail = 0, b""
        while True:
            part = s.recv(1 << 20)
            if not part:
                break
            total += len(part)
            tail = (tail + part)[-200:]
            if b"data: [DONE]" in tail:
                break
    # Buffering the stream would hold all of its ~23 MB; what a paused stream may cost is read buffers and the
    # allocator's retained pages (5-10 MB measured, depending on the heap's history), and it must stay flat.
    assert grown < 16, f"sidecar RSS grew {grown:.1f} MB while the client was not reading (buffering the stream?)"
    assert late - early < 2, f"sidecar RSS kept growing ({early:.1f} -> {late:.1f} MB) while the client was not reading"
    # ... nor hold what already passed (e.g. for accounting) until the stream ends.
    after = _rss_mb(sidecar.proc.pid) - before
    assert after < 16, f"sidecar RSS grew {after:.1f} MB over the stream (holding what already passed?)"
    assert total > 10_000_000 and b"data: [DONE]" in tail, f"stream incomplete: {total} bytes"


def _read_response(f) -> tuple[int, bytes]:
    """One HTTP/1.1 response from a buffered reader (content-length or chunked), leaving the reader positioned
    at the next response."""
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while (size := int(f.readline().split(b";")[0], 16)) > 0:
            body += f.read(size)
            f.readline()
        while f.readline() not in (b"\r\n", b""):
            pass
        return status, body
    return status, f.read(int(headers.get("content-length", "0")))


def test_pipelined_requests_answered_in_order(sidecar):
    """HTTP/1.1 pipelining: several requests in one write (proxied, local, a 400 and a stream) come back in
    order on the same connection, and the connection stays usable."""
    def req(body: bytes, path=b"/v1/chat/completions", method=b"POST") -> bytes:
        return (method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    models = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]  # the mock echoes the model: tells the answers apart
    chat = [json.dumps({**CHAT, "model": m}).encode() for m in models]
    stream = json.dumps({**CHAT, "stream": True}).encode()
    batch = (req(chat[0]) + req(b"", path=b"/health", method=b"GET") + req(b"{not json")
             + req(chat[1]) + req(stream) + req(chat[2]))
    with socket.create_connection((HOST, sidecar.port), timeout=10) as s:
        s.sendall(batch)
        f = s.makefile("rb")
        responses = [_read_response(f) for _ in range(6)]
        statuses = [r[0] for r in responses]
        assert statuses == [200, 200, 400, 200, 200, 200], responses
        bodies = [r[1] for r in responses]
        assert json.loads(bodies[0])["model"] == models[0]
        assert b'"status":"ok"' in bodies[1] and b"error" in bodies[2]
        assert json.loads(bodies[3])["model"] == models[1] and bodies[4].startswith(b"data: ")
        assert json.loads(bodies[5])["model"] == models[2]
        # Still open and in sync.
        s.sendall(req(chat[0]))
        status, body = _read_response(f)
        assert status == 200 and json.loads(body)["object"] == "chat.completion"


def test_pipelined_requests_are_back_pressured(start_sidecar):
    """A client that pipelines far more than the sidecar queues behind a request in flight (here 6,000 requests
    with 10 KB of headers each, 60 MB, behind one the mock answers after 2 s) is back-pressured: the sidecar stops
    reading (the kernel buffers fill, the client's sends block) instead of holding every request it can read in
    memory (queued heads were not counted), and once the slow answer is out every request is still answered."""
    sc = start_sidecar(name="sidecar-pipelining")
    n, pad = 6000, b"a" * 10_000
    slow = json.dumps(CHAT).encode()
    first = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"x-mock-latency-ms: 2000\r\nContent-Length: " + str(len(slow)).encode() + b"\r\n\r\n" + slow)
    rest = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-pad: " + pad + b"\r\n\r\n"
    total = len(first) + n * len(rest)
    sent = [0]
    failure = []
    before = _rss_mb(sc.proc.pid)
    with socket.create_connection((HOST, sc.port), timeout=30) as s:
        def send():
            try:
                s.sendall(first)
                sent[0] += len(first)
                for _ in range(n):
                    s.sendall(rest)
                    sent[0] += len(rest)
            except OSError as e:
                failure.append(e)
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(1.5)  # the first request is still upstream
        grown = _rss_mb(sc.proc.pid) - before
        assert grown < 10, (f"sidecar RSS grew {grown:.1f} MB holding pipelined requests "
                            f"({sent[0] / 1e6:.1f} of {total / 1e6:.1f} MB sent)")
        f = s.makefile("rb")
        statuses = [_read_response(f)[0] for _ in range(n + 1)]
        sender.join(timeout=30)
    assert not failure and sent[0] == total
    assert statuses.count(200) == n + 1, statuses[:5]


def test_string_validation_matches_python_json(sidecar):
    """Differential check of the request validator's string scanning (which skips plain ASCII eight bytes at a
    time) against Python's strict json: random message contents mixing quotes, escapes, control characters,
    valid and invalid UTF-8 at every offset get 200 exactly when json.loads accepts them, else 400."""
    rng = random.Random(7)
    alphabet = [b"a", b"Z", b" ", b"\"", b"\\", b"\\n", b"\\u00e9", b"\\ud83d\\ude00", b"\\x", b"\x01", b"\x1f",
                b"\x7f", "é".encode(), "😀".encode(), b"\xc3", b"\xff", b"\xed\xa0\x80", b"0123456", b"\t"]
    conn = httplib.HTTPConnection(HOST, sidecar.port, timeout=10)
    mismatches, invalid = [], 0
    for _ in range(1500):
        inner = b"".join(rng.choice(alphabet) if rng.random() < 0.3 else b"abcdefgh"[:rng.randint(1, 8)]
                         for _ in range(rng.randint(0, 40)))
        body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + inner + b'"}]}'
        try:
            json.loads(body.decode("utf-8"))
            expect = 200
        except ValueError:
            expect = 400
        invalid += expect == 400
        conn.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != expect:
            mismatches.append((r.status, expect, body))
    conn.close()
    assert not mismatches, mismatches[:5]
    assert 100 < invalid < 1400  # both outcomes exercised


# ------------------------------------------------------------------------------------ after a closing response

def _send_and_drain(port: int, data: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                part = s.recv(65536)
            except OSError:
                break
            if not part:
                break
            out += part
    return out


SMUG = b"POST /v1/SMUG HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nS"


@pytest.mark.parametrize("first", [
    b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /health HTTP/1.0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\n{",
    b"POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY + 100)
    + b"a" * (MAX_BODY + 100) + b"\r\n0\r\n\r\n",
], ids=["connection-close", "http10", "invalid-json-close", "chunked-over-limit"])
def test_nothing_after_a_closing_response_is_forwarded(small_body_sidecar, mock_upstream, first):
    """RFC 9112 section 9.6: after a response that ends the connection, later pipelined requests are not
    processed (they must not reach the upstream, which would run and bill them)."""
    mock_upstream.clear()
    out = _send_and_drain(small_body_sidecar.port, first + SMUG)
    assert out.startswith(b"HTTP/1."), out[:100]
    assert b"connection: close" in out.lower()
    time.sleep(0.2)
    assert mock_upstream.received("/v1/SMUG") == [], "a request sent after a closing response was forwarded"


@pytest.mark.parametrize("wire", [
    b"POST /v1/x HTTP/1.1\r\nX: a\nContent-Length: 2\r\n\r\nhi",
    b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nq\n0\n\n",
    b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nxx\r\n0\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\nq\r\n0\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nq\r\n0\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\n0\r\n\x01: t\r\n\r\n",
    b"POST /v1/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\n0\r\n\r\n",
    b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"post /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    b"FOO /v1/x HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["bare-lf-head", "bare-lf-chunks", "lf-in-extension", "cr-in-extension", "space-after-size",
        "ctl-in-trailer", "http10-chunked", "non-ascii-target", "lowercase-method", "unknown-method"])
def test_loose_framing_is_refused(sidecar, mock_upstream, wire):
    """Bytes another proxy in front could read differently are refused (400 and close), never forwarded."""
    mock_upstream.clear()
    out = _send_and_drain(sidecar.port, wire)
    assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert b'"error"' in out
    time.sleep(0.1)
    assert [r for r in mock_upstream.requests() if r["path"].startswith("/v1/")] == []
