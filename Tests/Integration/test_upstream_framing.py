"""HTTP/1 framing from plain-HTTP upstreams, parsed by the sidecar's own response parser: close-delimited bodies,
chunked bodies with extensions and trailers, heads split across writes, interim 1xx heads, HEAD responses, and
malformed responses (502, never a crash). A raw-socket upstream writes the exact bytes of each case."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from conftest import HOST, assert_openai_error, httpx

BODY = b'{"object":"list","data":[]}'
BIG = b'{"data":"' + bytes(0x61 + i % 26 for i in range(100_000)) + b'"}'

CASES: dict[str, list[bytes]] = {
    # HTTP/1.0, no length: the body ends when the upstream closes.
    "/v1/close-delimited": [b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n", BODY],
    "/v1/chunked": [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5;ext=1\r\n" + BODY[:5] + b"\r\n", b"%x\r\n" % (len(BODY) - 5), BODY[5:] + b"\r\n",
        b"0\r\nX-Trailer: t\r\n\r\n",
    ],
    # The head arrives in pieces, cut inside the status line and inside a header.
    "/v1/split-head": [b"HTTP/1.1 20", b"0 OK\r\nContent-Le", b"ngth: %d\r\n" % len(BODY), b"\r\n", BODY],
    "/v1/interim": [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY), BODY],
    "/v1/garbage": [b"ICY 200 OK\r\n\r\n"],
    "/v1/conflicting-length": [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"],
    "/v1/folded": [b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  continued\r\nContent-Length: 0\r\n\r\n"],
    "/v1/bad-chunk": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    # Framed two ways (Content-Length and chunked): refused, not re-framed under the wrong length.
    "/v1/te-and-cl": [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
    # A bare CR in the reason phrase would end the status line for a lenient client.
    "/v1/reason-cr": [b"HTTP/1.1 200 OK\rX-Injected: evil\r\nContent-Length: 0\r\n\r\n"],
    "/v1/head": [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nContent-Type: application/json\r\n\r\n"],
    # The sidecar keeps a head back until body bytes come and sends a small body in one buffer with it; bigger
    # bodies, bodies arriving later and empty ones take the other paths.
    "/v1/big": [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG[:20000], BIG[20000:]],
    "/v1/body-later": [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY), BODY[:3], BODY[3:]],
    "/v1/empty": [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
}
EXPECTED = {"/v1/big": BIG, "/v1/empty": b""}


class RawUpstream:
    """Answers each request with the bytes of its case (keep-alive unless the case is close-delimited)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode().split("?")[0]
                for piece in CASES.get(path, [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]):
                    conn.sendall(piece)
                    time.sleep(0.01)
                if path in ("/v1/close-delimited", "/v1/garbage", "/v1/conflicting-length", "/v1/folded",
                            "/v1/bad-chunk", "/v1/te-and-cl", "/v1/reason-cr"):
                    return

    def close(self) -> None:
        self.stopping = True
        self.sock.close()


@pytest.fixture(scope="module")
def raw_upstream():
    u = RawUpstream()
    yield u
    u.close()


@pytest.fixture(scope="module")
def framing_sidecar(aobin, raw_upstream):
    from conftest import Service, _sidecar_argv, free_port
    port = free_port()
    svc = Service("sidecar-framing", _sidecar_argv(aobin, port, f"http://{HOST}:{raw_upstream.port}/v1",
                                                   ["--upstream-timeout", "5"]), port).start()
    yield svc
    alive = svc.alive()
    svc.stop()
    assert alive, f"sidecar died:\n{svc.log_tail()}"


@pytest.mark.parametrize("path", ["/v1/close-delimited", "/v1/chunked", "/v1/split-head", "/v1/interim", "/v1/big",
                                  "/v1/body-later", "/v1/empty"])
def test_framings_relay_the_body(framing_sidecar, path):
    with httpx.Client(trust_env=False, timeout=10) as c:
        for _ in range(2):  # twice: the pooled connection (or a new one) serves the next request correctly
            r = c.get(framing_sidecar.base_url + path)
            assert r.status_code == 200, r.text
            assert r.content == EXPECTED.get(path, BODY)
            assert "x-auto-optimizer-overhead-ms" in r.headers
            if path in ("/v1/close-delimited", "/v1/chunked"):
                assert r.headers["content-type"] == "application/json"
            assert "transfer-encoding" not in r.headers or r.headers["transfer-encoding"] == "chunked"
            assert "x-trailer" not in r.headers


@pytest.mark.parametrize("path", ["/v1/garbage", "/v1/conflicting-length", "/v1/folded", "/v1/bad-chunk",
                                  "/v1/te-and-cl", "/v1/reason-cr"])
def test_malformed_upstream_response_is_502(framing_sidecar, path):
    if path == "/v1/bad-chunk":
        # The head was fine and was passed on; the broken body can only cut the response short.
        with pytest.raises(httpx.HTTPError):
            httpx.get(framing_sidecar.base_url + path, trust_env=False, timeout=10)
        return
    r = httpx.get(framing_sidecar.base_url + path, trust_env=False, timeout=10)
    assert r.status_code == 502, r.text
    assert_openai_error(r, 502)
    assert framing_sidecar.alive()


def test_head_response_has_no_body_and_connection_stays_usable(framing_sidecar, raw_upstream):
    with socket.create_connection((HOST, framing_sidecar.port), timeout=10) as s:
        s.sendall(b"HEAD /v1/head HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/split-head HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.time() + 10
        while BODY not in data and time.time() < deadline:
            data += s.recv(65536)
    first, rest = data.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200"), data
    assert b"Content-Length: 50" in first
    # The next response starts right after the HEAD response's head: no body bytes in between.
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]
    assert BODY in rest


def test_http10_client_gets_close_delimited_body_from_chunked_upstream(framing_sidecar):
    with socket.create_connection((HOST, framing_sidecar.port), timeout=10) as s:
        s.sendall(b"GET /v1/chunked HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200"), head
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == BODY


def test_model_name_cannot_inject_response_headers(sidecar):
    """The client's model name goes into x-auto-optimizer-*-model headers: control characters in it must not
    start a header line of their own."""
    body = json.dumps({"model": "gpt-4o\r\nX-Injected: yes\r\nSet-Cookie: a=b",
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    with socket.create_connection((HOST, sidecar.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        data = b""
        while part := s.recv(65536):
            data += part
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 200"), head
    lines = head.split(b"\r\n")
    assert not any(line.lower().startswith((b"x-injected", b"set-cookie")) for line in lines), head
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
