"""Accounting through the real sidecar: exact prompt tokens (tiktoken's counts), prices from the shipped catalog,
usage injected for streams and stripped again, records for plain, streamed, tool-call and error responses, and the
savings report."""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from decimal import Decimal

import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from tiktoken_compare import load_tiktoken  # noqa: E402

CATALOG = json.loads((ROOT / "fixtures" / "models.json").read_text())
PRICES = {m["id"]: m["price_per_1m_tokens_usd"] for m in CATALOG["models"]}


@pytest.fixture(scope="module")
def tiktoken():
    return load_tiktoken(str(ROOT / "Sources" / "Tokenizer" / "Resources"), tempfile.mkdtemp(prefix="tiktoken-"))


def chat_tokens(enc, messages):
    """OpenAI cookbook formula: 3 per message, 1 per name, 3 reply priming."""
    n = 3
    for m in messages:
        n += 3
        for k, v in m.items():
            n += len(enc.encode_ordinary(v))
            if k == "name":
                n += 1
    return n


def cost(model, prompt, completion, cached=0):
    p = PRICES[model]
    cached_price = Decimal(p.get("cached_input") or p["input"])
    return ((prompt - cached) * Decimal(p["input"]) + cached * cached_price
            + completion * Decimal(p["output"])) / Decimal(1_000_000)


def records(http, sidecar, n=50):
    return http.get(f"{sidecar.v1}/optimizer/requests?limit={n}").json()["data"]


def wait_record(http, sidecar, predicate, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for r in reversed(records(http, sidecar, 256)):
            if predicate(r):
                return r
        time.sleep(0.05)
    raise AssertionError(f"no matching record; last: {records(http, sidecar, 3)}")


@pytest.fixture
def client(sidecar):
    c = openai.OpenAI(base_url=sidecar.v1, api_key="sk-acct", max_retries=0, timeout=20)
    yield c
    c.close()


MESSAGES = [
    {"role": "system", "content": "You are a precise assistant."},
    {"role": "user", "name": "ann", "content": "Summarise: the quick brown fox jumps over the lazy dog. Ünïcödé ✓ 😀"},
]


def test_plain_chat_record_and_headers(client, http, sidecar, tiktoken):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-app-id": "acct-plain"})
    r = raw.parse()
    h = raw.headers
    assert h["x-auto-optimizer-original-model"] == "gpt-4o"
    assert h["x-auto-optimizer-served-model"] == "gpt-4o"
    assert h["x-auto-optimizer-tokens-saved"] == "0"
    assert Decimal(h["x-auto-optimizer-cost-saved-usd"]) == 0
    rec = wait_record(http, sidecar, lambda x: x["application"] == "acct-plain")
    enc = tiktoken.get_encoding("o200k_base")
    assert rec["prompt_tokens_original"] == chat_tokens(enc, MESSAGES)
    assert rec["prompt_tokens_optimized"] == rec["prompt_tokens_original"]
    assert rec["token_count_is_estimate"] is False
    assert rec["usage"]["prompt_tokens"] == r.usage.prompt_tokens
    assert rec["usage"]["completion_tokens"] == r.usage.completion_tokens
    assert rec["usage_estimated"] is False
    assert Decimal(rec["cost_usd"]) == cost("gpt-4o", r.usage.prompt_tokens, r.usage.completion_tokens)
    assert Decimal(rec["counterfactual_cost_usd"]) == Decimal(rec["cost_usd"])
    assert Decimal(rec["cost_saved_usd"]) == 0
    assert rec["response_id"] == r.id and rec["finish_reasons"] == ["stop"] and rec["status"] == 200
    t = rec["timings_ms"]
    assert 0 <= t["overhead"] <= t["total"] and t["upstream"] <= t["total"]


def test_stream_usage_is_injected_upstream_and_invisible_to_the_sdk(client, http, sidecar, mock_upstream, tiktoken):
    mock_upstream.clear()
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"x-app-id": "acct-stream"}))
    # The client did not ask for usage: no chunk carries it, no usage-only chunk arrives.
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "a usage-only chunk reached the client"
    sent = mock_upstream.last("/v1/chat/completions").json()
    assert sent["stream_options"] == {"include_usage": True}, "the sidecar did not ask the upstream for usage"
    rec = wait_record(http, sidecar, lambda x: x["application"] == "acct-stream")
    assert rec["stream"] is True and rec["usage_estimated"] is False
    assert rec["usage"]["completion_tokens"] == len([c for c in chunks if c.choices and c.choices[0].delta.content])
    assert rec["prompt_tokens_original"] == chat_tokens(tiktoken.get_encoding("o200k_base"), MESSAGES)
    assert rec["timings_ms"]["time_to_first_chunk"] is not None
    assert Decimal(rec["cost_usd"]) == cost("gpt-4o-mini", rec["usage"]["prompt_tokens"],
                                            rec["usage"]["completion_tokens"])


@pytest.mark.parametrize("own_usage", [False, True])
def test_long_stream_accounted_without_holding_it(client, http, sidecar, own_usage):
    """A stream longer than what is held for the accounting thread (1 MiB) is read as it passes: same record."""
    app = f"acct-long-{own_usage}"
    extra = {"stream_options": {"include_usage": True}} if own_usage else {}
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body=extra,
        extra_headers={"x-app-id": app, "x-mock-completion-tokens": "20000"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 20000
    assert any(c.usage is not None for c in chunks) == own_usage
    rec = wait_record(http, sidecar, lambda x: x["application"] == app)
    assert rec["usage"]["completion_tokens"] == 20000 and not rec["usage_estimated"]
    assert rec["finish_reasons"] == ["stop"] and rec["response_id"]


def test_stream_with_client_usage_is_untouched(client, http, sidecar, mock_upstream):
    mock_upstream.clear()
    body = ('{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},'
            '"messages":[{"role":"user","content":"hi"}],"temperature":0.70}')
    with http.stream("POST", f"{sidecar.v1}/chat/completions", content=body,
                     headers={"content-type": "application/json", "x-app-id": "acct-own-usage"}) as resp:
        text = resp.read().decode()
    assert mock_upstream.last("/v1/chat/completions").body == body.encode()
    events = [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]
    assert events[-1]["usage"]["completion_tokens"] == 16 and events[-1]["choices"] == []
    rec = wait_record(http, sidecar, lambda x: x["application"] == "acct-own-usage")
    assert rec["usage"]["completion_tokens"] == 16 and not rec["usage_estimated"]


def test_tool_call_record(client, http, sidecar, tiktoken):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City"}},
                       "required": ["city"]}}}]
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Weather in Oslo?"}],
                                       tools=tools, tool_choice="required", extra_headers={"x-app-id": "acct-tool"})
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    rec = wait_record(http, sidecar, lambda x: x["application"] == "acct-tool")
    assert rec["finish_reasons"] == ["tool_calls"]
    assert rec["usage"]["completion_tokens"] == r.usage.completion_tokens
    # Messages are exact; tool definitions add an estimate on top (documented formula).
    plain = chat_tokens(tiktoken.get_encoding("o200k_base"), [{"role": "user", "content": "Weather in Oslo?"}])
    assert rec["prompt_tokens_original"] > plain


def test_streamed_tool_call_record(client, http, sidecar):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
    chunks = list(client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "find"}], tools=tools,
        tool_choice={"type": "function", "function": {"name": "lookup"}}, stream=True,
        extra_headers={"x-app-id": "acct-tool-stream"}))
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                   for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(args) == {"q": "mock"}
    rec = wait_record(http, sidecar, lambda x: x["application"] == "acct-tool-stream")
    assert rec["finish_reasons"] == ["tool_calls"] and rec["usage"]["completion_tokens"] > 0


def test_error_record(http, sidecar):
    r = http.post(f"{sidecar.v1}/chat/completions", json={"model": "gpt-4o", "messages": []},
                  headers={"x-mock-status": "503", "x-app-id": "acct-error"})
    assert r.status_code == 503
    rec = wait_record(http, sidecar, lambda x: x["application"] == "acct-error")
    assert rec["status"] == 503 and rec["error_type"] == "http_503"
    assert rec["usage"] is None and rec["cost_usd"] is None
    r = http.post(f"{sidecar.v1}/chat/completions", content=b'{"model": ', headers={"x-app-id": "acct-badjson"})
    assert r.status_code == 400
    rec = wait_record(http, sidecar, lambda x: x["application"] == "acct-badjson")
    assert rec["status"] == 400 and rec["error_type"] == "invalid_json"


def test_embeddings_record(client, http, sidecar, tiktoken):
    client.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"],
                             extra_headers={"x-app-id": "acct-emb"})
    rec = wait_record(http, sidecar, lambda x: x["application"] == "acct-emb")
    enc = tiktoken.get_encoding("cl100k_base")
    assert rec["prompt_tokens_original"] == len(enc.encode_ordinary("alpha beta")) + len(enc.encode_ordinary("gamma"))
    assert Decimal(rec["cost_usd"]) == cost("text-embedding-3-small", rec["usage"]["prompt_tokens"], 0)


def test_savings_report_by_application_and_model(client, http, sidecar):
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-app-id": "acct-report"})
    deadline = time.time() + 5
    while time.time() < deadline:
        report = http.get(f"{sidecar.v1}/optimizer/savings").json()
        app = report["by_application"].get("acct-report")
        if app and app["requests"] == 3:
            break
        time.sleep(0.05)
    assert app["requests"] == 3 and app["failed"] == 0
    assert Decimal(app["cost_usd"]) == 3 * cost("gpt-4o-mini", 7, 16)
    assert report["by_model"]["gpt-4o-mini"]["requests"] >= 3
    assert report["total"]["requests"] >= 3


def test_tokens_cli_matches_tiktoken(aobin, tiktoken):
    text = "Hello, wörld! 👩‍👩‍👧 <|endoftext|> 12345 \n\n  code();"
    for args, enc in ((["--encoding", "cl100k_base"], "cl100k_base"), (["--model", "gpt-4o"], "o200k_base")):
        out = subprocess.run([str(aobin), "tokens", *args, "--ids", "-"], input=text.encode(), capture_output=True,
                             check=True).stdout.decode().split()
        assert [int(x) for x in out] == tiktoken.get_encoding(enc).encode_ordinary(text)
    bad = subprocess.run([str(aobin), "tokens", "--encoding", "nope", "-"], input=b"x", capture_output=True)
    assert bad.returncode != 0 and bad.stderr


def test_tokenizer_corpus_matches_tiktoken(aobin):
    """Thousands of strings (many scripts, emoji, whitespace runs, 100k repeats, random Unicode) per encoding."""
    r = subprocess.run([sys.executable, str(pathlib.Path(__file__).parent / "tiktoken_compare.py"), str(aobin),
                        str(ROOT / "Sources" / "Tokenizer" / "Resources")], capture_output=True, timeout=600)
    assert r.returncode == 0, r.stdout.decode()[-3000:] + r.stderr.decode()[-3000:]
