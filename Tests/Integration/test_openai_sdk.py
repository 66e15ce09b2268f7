"""The sidecar is transparent: the official OpenAI SDK gets the same results through it as directly from the
(deterministic) mock upstream, the upstream receives the client's bytes, and the transport behaves
(streaming not buffered, h2c, keep-alive)."""

from __future__ import annotations

import http.client as httplib
import json
import socket
import time

import openai
import pytest

from conftest import HOST, httpx

MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the sidecar."},
]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}]


def make_client(base_url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sk-test-key", max_retries=0, timeout=20.0, **kw)


@pytest.fixture(scope="module")
def direct(mock_upstream):
    c = make_client(mock_upstream.v1)
    yield c
    c.close()


@pytest.fixture(scope="module")
def proxied(sidecar):
    c = make_client(sidecar.v1)
    yield c
    c.close()


def both(direct, proxied, call):
    return call(direct), call(proxied)


# ------------------------------------------------------------------------------------ SDK equivalence

def test_chat_completion_identical(direct, proxied):
    a, b = both(direct, proxied, lambda c: c.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0))
    assert a.choices and a.choices[0].message.role == "assistant" and a.choices[0].message.content
    assert a.usage is not None and a.usage.total_tokens > 0
    assert a.model == MODEL
    assert b.model_dump() == a.model_dump()


@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage", "include-usage"])
def test_streamed_chat_identical(direct, proxied, include_usage):
    def run(c):
        kw = {"stream_options": {"include_usage": True}} if include_usage else {}
        stream = c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **kw)
        return [chunk.model_dump() for chunk in stream]

    a, b = both(direct, proxied, run)
    assert len(a) > 2, f"direct stream has only {len(a)} chunks"
    text = "".join((ch["choices"][0]["delta"].get("content") or "") for ch in a if ch["choices"])
    assert text, "direct stream carried no content"
    if include_usage:
        assert a[-1]["usage"] is not None and a[-1]["choices"] == [], f"last chunk should carry usage: {a[-1]}"
    else:
        assert all(ch.get("usage") is None for ch in a), "usage sent without include_usage"
    if not include_usage:
        assert all(ch.get("usage") is None for ch in b), "sidecar passed a usage chunk the client did not ask for"
    assert len(b) == len(a), f"chunk count differs: direct {len(a)} vs sidecar {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        assert y == x, f"chunk {i} differs"


@pytest.mark.parametrize("tool_choice", [
    {"type": "function", "function": {"name": "get_weather"}},
    "required",
], ids=["forced-function", "required"])
def test_forced_tool_call_identical(direct, proxied, tool_choice):
    a, b = both(direct, proxied, lambda c: c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,
        tool_choice=tool_choice))
    calls = a.choices[0].message.tool_calls
    assert calls, f"mock returned no tool call: {a.model_dump()}"
    assert calls[0].type == "function" and calls[0].function.name == "get_weather"
    json.loads(calls[0].function.arguments)  # arguments are a JSON string
    assert b.model_dump() == a.model_dump()


def test_embeddings_default_base64_identical(direct, proxied, mock_upstream):
    # The SDK asks for base64 when encoding_format is not given and decodes it to floats.
    a, b = both(direct, proxied, lambda c: c.embeddings.create(model="text-embedding-3-small",
                                                               input=["first text", "second text"]))
    assert len(a.data) == 2 and len(a.data[0].embedding) > 0
    assert all(isinstance(v, float) for v in a.data[0].embedding)
    assert b.model_dump() == a.model_dump()
    sent = mock_upstream.last("/v1/embeddings").json()
    assert sent.get("encoding_format") == "base64", f"SDK default changed? upstream saw {sent}"


def test_embeddings_float_identical(direct, proxied):
    a, b = both(direct, proxied, lambda c: c.embeddings.create(model="text-embedding-3-small", input="hello",
                                                               encoding_format="float"))
    assert len(a.data) == 1 and len(a.data[0].embedding) > 0
    assert b.model_dump() == a.model_dump()


def test_models_list_and_retrieve_identical(direct, proxied):
    la, lb = both(direct, proxied, lambda c: [m.model_dump() for m in c.models.list()])
    assert la, "mock lists no models"
    assert lb == la
    model_id = la[0]["id"]
    ra, rb = both(direct, proxied, lambda c: c.models.retrieve(model_id).model_dump())
    assert ra["id"] == model_id
    assert rb == ra


def test_completions_identical(direct, proxied):
    a, b = both(direct, proxied, lambda c: c.completions.create(model="gpt-3.5-turbo-instruct",
                                                                prompt="Say hi", max_tokens=8, temperature=0))
    assert a.choices and a.choices[0].text
    assert b.model_dump() == a.model_dump()


def test_responses_basic_identical(direct, proxied):
    a, b = both(direct, proxied, lambda c: c.responses.create(model=MODEL, input="Say hi"))
    assert a.output, f"empty output: {a.model_dump()}"
    assert a.output_text
    assert b.model_dump() == a.model_dump()


def test_sdk_identity_headers_forwarded(sidecar, mock_upstream):
    c = make_client(sidecar.v1, organization="org-test123", project="proj_test456")
    c.chat.completions.create(model=MODEL, messages=MESSAGES)
    rec = mock_upstream.last("/v1/chat/completions")
    assert rec.header("authorization") == "Bearer sk-test-key"
    assert rec.header("openai-organization") == "org-test123"
    assert rec.header("openai-project") == "proj_test456"
    c.close()


# ------------------------------------------------------------------------------------ bytes on the wire

ODD_BODY = (b'{ "model" :"gpt-4o",\n\t"temperature":0.70 ,"top_p":1e-5 ,\r\n  "messages":[{"role":"user",'
            b'"content":"caf\\u00e9 \\ud83d\\ude00 caf\xc3\xa9 \xf0\x9f\x98\x80 \\"q\\" \\/"}],'
            b'"x_unknown":{"b":1,"a":[1,2],"n":null,"f":-0.0e+0}  }  \n')


def test_request_body_byte_identical(http, sidecar, mock_upstream):
    json.loads(ODD_BODY)  # valid JSON, just unusual
    mock_upstream.clear()
    r = http.post(sidecar.v1 + "/chat/completions", content=ODD_BODY,
                  headers={"content-type": "application/json", "authorization": "Bearer sk-raw"})
    assert r.status_code == 200, r.text
    rec = mock_upstream.last("/v1/chat/completions", "POST")
    assert rec.body == ODD_BODY, f"upstream got {rec.body!r}\nclient sent {ODD_BODY!r}"
    lengths = rec.headers_named("content-length")
    assert lengths in ([], [str(len(ODD_BODY))]), f"content-length at upstream: {lengths}"


def test_response_body_byte_identical(http, sidecar, mock_upstream):
    hdrs = {"content-type": "application/json", "authorization": "Bearer sk-raw"}
    d = http.post(mock_upstream.v1 + "/chat/completions", content=ODD_BODY, headers=hdrs)
    p = http.post(sidecar.v1 + "/chat/completions", content=ODD_BODY, headers=hdrs)
    assert d.status_code == p.status_code == 200
    assert p.content == d.content
    assert p.headers.get("content-type") == d.headers.get("content-type")


def test_auth_and_openai_headers_forwarded(http, sidecar, mock_upstream):
    sent = {"Authorization": "Bearer sk-abc.DEF_123", "OpenAI-Organization": "org-XYZ",
            "OpenAI-Project": "proj_789", "content-type": "application/json"}
    r = http.post(sidecar.v1 + "/chat/completions", headers=sent,
                  content=json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
    assert r.status_code == 200, r.text
    rec = mock_upstream.last("/v1/chat/completions")
    for name, value in sent.items():
        assert rec.headers_named(name) == [value], f"{name}: upstream saw {rec.headers_named(name)}"


def test_end_to_end_headers_forwarded(http, sidecar, mock_upstream):
    """Ordinary end-to-end headers (OpenAI-Beta, idempotency keys, SDK telemetry) pass through too."""
    sent = {"OpenAI-Beta": "assistants=v2", "Idempotency-Key": "idem-1", "X-Stainless-Lang": "python",
            "X-Custom-Trace": "abc123", "content-type": "application/json"}
    r = http.post(sidecar.v1 + "/chat/completions", headers=sent,
                  content=json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
    assert r.status_code == 200, r.text
    rec = mock_upstream.last("/v1/chat/completions")
    missing = {n: rec.headers_named(n) for n, v in sent.items() if rec.headers_named(n) != [v]}
    assert not missing, f"not forwarded as sent: {missing}"


def _raw_request(port: int, request: bytes, timeout: float = 10.0) -> httplib.HTTPResponse:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.sendall(request)
    resp = httplib.HTTPResponse(sock)
    resp.begin()
    resp.body = resp.read()
    sock.close()
    return resp


HOP_BY_HOP = ["connection", "keep-alive", "proxy-authorization", "te", "trailer", "upgrade",
              "transfer-encoding", "proxy-connection"]


def test_hop_by_hop_headers_not_forwarded(sidecar, mock_upstream):
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\n"
           b"Host: " + f"{HOST}:{sidecar.port}".encode() + b"\r\n"
           b"Content-Type: application/json\r\n"
           b"Authorization: Bearer sk-hop\r\n"
           b"Connection: keep-alive\r\n"
           b"Keep-Alive: timeout=5, max=100\r\n"
           b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
           b"Proxy-Connection: keep-alive\r\n"
           b"TE: trailers\r\n"
           b"Trailer: X-Checksum\r\n"
           b"Upgrade: websocket\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    resp = _raw_request(sidecar.port, req)
    assert resp.status == 200, resp.body[:300]
    rec = mock_upstream.last("/v1/chat/completions")
    leaked = sorted(rec.header_names() & set(HOP_BY_HOP))
    assert not leaked, f"hop-by-hop headers reached the upstream: {[(n, rec.headers_named(n)) for n in leaked]}"
    assert rec.header("authorization") == "Bearer sk-hop"
    assert rec.body == body


def test_headers_named_in_connection_not_forwarded(sidecar, mock_upstream):
    """RFC 9110 7.6.1: fields listed in Connection are hop-by-hop as well."""
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\n"
           b"Host: " + f"{HOST}:{sidecar.port}".encode() + b"\r\n"
           b"Content-Type: application/json\r\n"
           b"Connection: keep-alive, X-Hop-Custom\r\n"
           b"X-Hop-Custom: drop-me\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    resp = _raw_request(sidecar.port, req)
    assert resp.status == 200, resp.body[:300]
    rec = mock_upstream.last("/v1/chat/completions")
    assert rec.header("x-hop-custom") is None, "header named in Connection reached the upstream"


def test_chunked_request_body_forwarded_without_transfer_encoding(sidecar, mock_upstream):
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 17]), body[i:i + 17]) for i in range(0, len(body), 17))
    req = (b"POST /v1/chat/completions HTTP/1.1\r\n"
           b"Host: " + f"{HOST}:{sidecar.port}".encode() + b"\r\n"
           b"Content-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    resp = _raw_request(sidecar.port, req)
    assert resp.status == 200, resp.body[:300]
    rec = mock_upstream.last("/v1/chat/completions")
    assert rec.body == body
    # The sidecar reads the whole body (it must, to answer 400/413), so it can send Content-Length upstream;
    # the client's Transfer-Encoding is hop-by-hop and must not be relayed.
    assert rec.header("transfer-encoding") is None, (
        f"upstream saw transfer-encoding={rec.header('transfer-encoding')!r}, content-length={rec.header('content-length')!r}")


# ------------------------------------------------------------------------------------ transport behaviour

def test_overhead_header_present_and_small(http, sidecar):
    r = http.post(sidecar.v1 + "/chat/completions", json={"model": MODEL, "messages": MESSAGES})
    assert r.status_code == 200
    raw = r.headers.get("x-auto-optimizer-overhead-ms")
    assert raw is not None, f"no x-auto-optimizer-overhead-ms header; headers: {dict(r.headers)}"
    value = float(raw)
    assert 0.0 <= value < 50.0, f"overhead header {raw!r} is not a small non-negative number of ms"


def test_overhead_header_on_models_and_stream(http, sidecar):
    r = http.get(sidecar.v1 + "/models")
    assert r.status_code == 200 and "x-auto-optimizer-overhead-ms" in r.headers
    with http.stream("POST", sidecar.v1 + "/chat/completions",
                     json={"model": MODEL, "messages": MESSAGES, "stream": True}) as s:
        assert s.status_code == 200 and "x-auto-optimizer-overhead-ms" in s.headers
        s.read()


def _timed_sse(client, url: str, headers: dict[str, str]) -> tuple[float, list[tuple[float, str]]]:
    """POST a streaming chat request; returns (time to response headers, [(arrival time, data line)])."""
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    events: list[tuple[float, str]] = []
    t0 = time.monotonic()
    with client.stream("POST", url, json=body, headers=headers) as r:
        t_headers = time.monotonic() - t0
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data:"):
                events.append((time.monotonic() - t0, line))
    return t_headers, events


@pytest.mark.parametrize("target", ["direct", "sidecar", "sidecar-h2c"])
def test_streaming_not_buffered(http, sidecar, mock_upstream, target):
    """10 tokens at 10 tokens/s: the chunks must arrive spread over ~1 s, not all at once at the end."""
    base = mock_upstream.v1 if target == "direct" else sidecar.v1
    hdrs = {"x-mock-tokens-per-second": "10", "x-mock-completion-tokens": "10"}
    if target == "sidecar-h2c":
        with httpx.Client(http1=False, http2=True, timeout=15.0, trust_env=False) as h2:
            t_headers, events = _timed_sse(h2, base + "/chat/completions", hdrs)
    else:
        t_headers, events = _timed_sse(http, base + "/chat/completions", hdrs)
    times = [t for t, _ in events]
    summary = f"headers at {t_headers:.3f}s, data events at {[round(t, 3) for t in times]}"
    assert events and events[-1][1].strip() == "data: [DONE]", summary
    content_events = [t for t, line in events if '"content"' in line]
    assert len(content_events) >= 5, summary
    assert times[0] < 0.5, f"first chunk too late: {summary}"
    assert times[-1] - times[0] >= 0.6, f"chunks not spread over time (buffered?): {summary}"
    gaps = [b - a for a, b in zip(content_events, content_events[1:])]
    assert sum(1 for g in gaps if g >= 0.04) >= len(gaps) // 2, f"most chunks arrived together: {summary}"


def test_h2c_prior_knowledge(sidecar, mock_upstream, http):
    body = {"model": MODEL, "messages": MESSAGES}
    direct = http.post(mock_upstream.v1 + "/chat/completions", json=body)
    with httpx.Client(http1=False, http2=True, timeout=15.0, trust_env=False) as h2:
        r = h2.post(sidecar.v1 + "/chat/completions", json=body)
        assert r.http_version == "HTTP/2", r.http_version
        assert r.status_code == 200, r.text
        assert r.json() == direct.json()
        # Several requests multiplexed/reused on the h2 connection, including a stream.
        m = h2.get(sidecar.v1 + "/models")
        assert m.status_code == 200 and m.http_version == "HTTP/2"
        with h2.stream("POST", sidecar.v1 + "/chat/completions", json={**body, "stream": True}) as s:
            assert s.status_code == 200
            lines = [ln for ln in s.iter_lines() if ln.startswith("data:")]
        assert lines[-1].strip() == "data: [DONE]" and len(lines) > 2
        health = h2.get(sidecar.base_url + "/health")
        assert health.status_code == 200


def test_h2c_openai_sdk(sidecar, direct):
    with httpx.Client(http1=False, http2=True, timeout=15.0, trust_env=False) as h2:
        c = openai.OpenAI(base_url=sidecar.v1, api_key="sk-test-key", max_retries=0, http_client=h2)
        b = c.chat.completions.create(model=MODEL, messages=MESSAGES)
        a = direct.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert b.model_dump() == a.model_dump()
        chunks = [ch.model_dump() for ch in c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)]
        ref = [ch.model_dump() for ch in direct.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)]
        assert chunks == ref


def test_keep_alive_reuse(sidecar):
    conn = httplib.HTTPConnection(HOST, sidecar.port, timeout=10)
    body = json.dumps({"model": MODEL, "messages": MESSAGES})
    first_sock = None
    try:
        for i in range(5):
            if i % 2:
                conn.request("GET", "/v1/models")
            else:
                conn.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, data[:300]
            assert (r.getheader("connection") or "").lower() != "close", f"request {i}: server asked to close"
            assert conn.sock is not None, f"request {i}: connection was closed after the response"
            if first_sock is None:
                first_sock = conn.sock
            assert conn.sock is first_sock, f"request {i} needed a new connection"
    finally:
        conn.close()


def test_large_body_byte_identical(http, sidecar, mock_upstream):
    """A 2 MiB request (under the default 32 MiB limit) reaches the upstream unchanged."""
    filler = "".join(chr(0x20 + (i * 7919) % 90) for i in range(2 * 1024 * 1024)).replace("\\", "/").replace('"', "'")
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": filler}]}).encode()
    r = http.post(sidecar.v1 + "/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text[:300]
    rec = mock_upstream.last("/v1/chat/completions")
    assert len(rec.body) == len(body) and rec.body == body


def test_concurrent_requests_not_mixed(sidecar, mock_upstream):
    """32 concurrent clients (plain and streamed, distinct models) each get their own, complete answer."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int):
        model = f"model-{i}"
        with httpx.Client(timeout=30.0, trust_env=False) as c:
            if i % 2:
                r = c.post(sidecar.v1 + "/chat/completions", json={"model": model, "messages": MESSAGES})
                assert r.status_code == 200, r.text
                d = c.post(mock_upstream.v1 + "/chat/completions", json={"model": model, "messages": MESSAGES})
                return r.content == d.content and r.json()["model"] == model
            body = {"model": model, "messages": MESSAGES, "stream": True}
            hdrs = {"x-mock-tokens-per-second": "50", "x-mock-completion-tokens": "10"}
            with c.stream("POST", sidecar.v1 + "/chat/completions", json=body, headers=hdrs) as r:
                lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
            models = {json.loads(ln[5:])["model"] for ln in lines[:-1]}
            return lines[-1].strip() == "data: [DONE]" and models == {model}

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(32)))
    bad = [i for i, ok in enumerate(results) if not ok]
    assert not bad, f"requests with wrong/mixed/incomplete answers: {bad}"


def test_query_string_forwarded(http, sidecar, mock_upstream):
    r = http.get(sidecar.v1 + "/models?limit=2&after=m%20x")
    assert r.status_code == 200
    rec = mock_upstream.last("/v1/models")
    assert rec.path == "/v1/models?limit=2&after=m%20x", rec.path


def test_success_response_headers_relayed(http, sidecar, mock_upstream):
    body = {"model": MODEL, "messages": MESSAGES}
    d = http.post(mock_upstream.v1 + "/chat/completions", json=body)
    p = http.post(sidecar.v1 + "/chat/completions", json=body)
    skip = {"date", "connection", "keep-alive", "transfer-encoding", "content-length"}
    for name, _ in d.headers.multi_items():
        if name.lower() not in skip:
            assert p.headers.get_list(name) == d.headers.get_list(name), name


def test_large_stream_byte_identical(http, sidecar, mock_upstream):
    """A long, fast stream (4000 tokens, no pacing) arrives complete and unchanged."""
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    hdrs = {"x-mock-completion-tokens": "4000"}
    d = http.post(mock_upstream.v1 + "/chat/completions", json=body, headers=hdrs)
    p = http.post(sidecar.v1 + "/chat/completions", json=body, headers=hdrs)
    assert d.status_code == p.status_code == 200
    assert d.content.count(b"data:") > 1000
    assert p.content == d.content


def test_h2c_concurrent_streams(sidecar):
    """Many requests multiplexed on one h2c connection each get their own answer."""
    import asyncio

    async def run():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=20.0, trust_env=False) as c:
            async def one(i):
                r = await c.post(sidecar.v1 + "/chat/completions", json={"model": f"h2-{i}", "messages": MESSAGES},
                                 headers={"x-mock-latency-ms": str(50 + (i * 37) % 200)})
                return r.http_version, r.status_code, r.json()["model"]
            return await asyncio.gather(*(one(i) for i in range(40)))

    results = asyncio.run(run())
    assert all(v == "HTTP/2" and st == 200 and m == f"h2-{i}" for i, (v, st, m) in enumerate(results)), results
