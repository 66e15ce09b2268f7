"""Prompt compression with real processes: a policy with a compression rule, the sidecar, the mock upstream (whose
journal shows what actually arrived), the OpenAI SDK, and the `compress` command."""

from __future__ import annotations

import json
import subprocess
import time

import openai
import pytest

from conftest import (HOST, MockUpstream, Service, _mock_argv, _sidecar_argv, free_port, httpx, qa_rows,
                      rag_context)

POLICY = """
version: 1
upstreams:
  main: {{ url: "{url}" }}
compression_profiles:
  rag:
    target_ratio: 0.5
    min_prompt_tokens: 500
    min_quality: 0.3
rules:
  - name: rag-compress
    match: {{ app: rag }}
    compression: rag
"""


@pytest.fixture
def rag_setup(aobin, tmp_path):
    port = free_port()
    mock = MockUpstream("mock-rag", _mock_argv(aobin, port), port).start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=mock.v1))
    sport = free_port()
    sc = Service("sidecar-rag", _sidecar_argv(aobin, sport, mock.v1, ["--config", str(policy)]), sport).start()
    yield mock, sc
    sc.stop()
    mock.stop()


def messages_for(rows, question):
    return [
        {"role": "system", "content": "Answer the question from the documents.   Be brief."},
        {"role": "user", "content": rag_context(rows)},
        {"role": "user", "content": question},
    ]


def test_compression_rule_shrinks_the_prompt_seen_upstream(rag_setup):
    mock, sc = rag_setup
    rows = qa_rows(20)
    rows = rows[7:] + rows[:7]  # the asked question's passage in the middle
    asked = rows[13]
    msgs = messages_for(rows, asked["question"])
    client = openai.OpenAI(base_url=sc.v1, api_key="sk-test-compress", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=msgs, temperature=0, extra_headers={"x-app-id": "rag"})
    completion = raw.parse()
    assert completion.choices[0].message.content
    header = raw.headers.get("x-auto-optimizer-compression")
    assert header and "selection" in header, raw.headers
    assert int(raw.headers["x-auto-optimizer-tokens-saved"]) > 500
    assert raw.headers["x-auto-optimizer-rule"] == "rag-compress"

    sent = mock.last("/v1/chat/completions").json()
    got = sent["messages"]
    assert got[0] == msgs[0], "system prompt must not change"
    assert got[2] == msgs[2], "last user turn must not change"
    assert len(got[1]["content"]) < 0.6 * len(msgs[1]["content"])
    assert any(a.lower() in got[1]["content"].lower() for a in asked["answers"]), got[1]["content"][:2000]
    assert sent["temperature"] == 0 and sent["model"] == "gpt-4o-mini"

    rec = None
    deadline = time.time() + 5
    while rec is None and time.time() < deadline:  # records are written off the hot path
        records = httpx.get(sc.base_url + "/v1/optimizer/requests", timeout=5, trust_env=False).json()["data"]
        rec = next((r for r in records if r["application"] == "rag"), None)
        time.sleep(0.02)
    assert rec is not None
    c = rec["compression"]
    assert c["applied"] is True and c["profile"] == "rag" and "selection" in c["technique"]
    assert 0.3 < c["ratio"] <= 0.55 and 0 < c["quality_score"] <= 1
    assert rec["prompt_tokens_optimized"] < rec["prompt_tokens_original"]
    assert rec["tokens_saved"] == rec["prompt_tokens_original"] - rec["prompt_tokens_optimized"]
    savings = httpx.get(sc.base_url + "/v1/optimizer/savings", timeout=5, trust_env=False).json()
    assert savings["by_application"]["rag"]["tokens_saved"] == rec["tokens_saved"]
    assert savings["total"]["tokens_saved"] >= rec["tokens_saved"]


def test_streamed_request_is_compressed_too(rag_setup):
    mock, sc = rag_setup
    rows = qa_rows(20)
    msgs = messages_for(rows, rows[4]["question"])
    client = openai.OpenAI(base_url=sc.v1, api_key="sk-test-compress", max_retries=0)
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=msgs, stream=True, extra_headers={"x-app-id": "rag"}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    sent = mock.last("/v1/chat/completions").json()
    assert len(sent["messages"][1]["content"]) < 0.6 * len(msgs[1]["content"])


def test_a_context_sent_again_is_compressed_as_anew_for_each_question(rag_setup, aobin, tmp_path):
    """The same context with two questions, each sent twice, through the sidecar (whose analysis cache finds the
    context again) and through one with the cache off (AUTO_OPTIMIZER_ANALYSIS_CACHE_BYTES=0): what reaches the
    upstream is the same byte for byte, and it follows the question."""
    mock, sc = rag_setup
    port = free_port()
    cold = Service("sidecar-rag-cold", _sidecar_argv(aobin, port, mock.v1, ["--config", str(tmp_path / "policy.yaml")]),
                   port, env={"AUTO_OPTIMIZER_ANALYSIS_CACHE_BYTES": "0"}).start()
    try:
        rows = qa_rows(20)
        asked = [rows[4], rows[13], rows[4], rows[13]]
        sent = {}
        for name, svc in (("cached", sc), ("cold", cold)):
            sent[name] = []
            with httpx.Client(base_url=svc.v1, timeout=30, trust_env=False) as client:  # one connection, one loop
                for row in asked:
                    r = client.post("/chat/completions", headers={"x-app-id": "rag", "authorization": "Bearer sk-t"},
                                    json={"model": "gpt-4o-mini", "messages": messages_for(rows, row["question"])})
                    assert r.status_code == 200, r.text
                    assert "selection" in r.headers.get("x-auto-optimizer-compression", ""), r.headers
                    sent[name].append(mock.last("/v1/chat/completions").json()["messages"][1]["content"])
        assert sent["cached"] == sent["cold"]
        got = sent["cached"]
        assert got[0] == got[2] and got[1] == got[3] and got[0] != got[1]
        for text, row in zip(got[:2], asked[:2]):
            assert any(a.lower() in text.lower() for a in row["answers"]), text[:2000]
    finally:
        cold.stop()


def test_other_apps_and_small_prompts_pass_byte_for_byte(rag_setup):
    mock, sc = rag_setup
    rows = qa_rows(20)
    body = json.dumps({"model": "gpt-4o-mini", "temperature": 0.70,
                       "messages": messages_for(rows, rows[0]["question"])}, ensure_ascii=False).encode()
    r = httpx.post(sc.v1 + "/chat/completions", content=body, timeout=10, trust_env=False,
                   headers={"content-type": "application/json", "x-app-id": "not-rag"})
    assert r.status_code == 200
    assert mock.last("/v1/chat/completions").body == body
    assert "x-auto-optimizer-compression" not in r.headers

    small = json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "Some   short context."}, {"role": "user", "content": "Question?"}]}).encode()
    r = httpx.post(sc.v1 + "/chat/completions", content=small, timeout=10, trust_env=False,
                   headers={"content-type": "application/json", "x-app-id": "rag"})
    assert r.status_code == 200
    assert mock.last("/v1/chat/completions").body == small  # below min_prompt_tokens


def test_bad_compression_profile_is_rejected_with_its_line(aobin, tmp_path):
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nupstreams: { main: { url: \"http://127.0.0.1:9/v1\" } }\n"
                      "compression_profiles:\n  p: { target_ratio: 2 }\n")
    p = subprocess.run([str(aobin), "check-config", str(policy)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "bad.yaml:4" in p.stderr and "target_ratio" in p.stderr, p.stderr


# ---- the compress command ---------------------------------------------------------------------------------------

def run_compress(aobin, *args, input: str):
    return subprocess.run([str(aobin), "compress", *args], input=input.encode(), capture_output=True, timeout=60)


def test_compress_cli_text_and_stats(aobin):
    rows = qa_rows(20)
    ctx = rag_context(rows)
    p = run_compress(aobin, "--ratio", "0.25", "--question", rows[0]["question"], input=ctx)
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert any(a.lower() in out.lower() for a in rows[0]["answers"])
    stats = dict(kv.split("=", 1) for kv in p.stderr.decode().split())
    assert int(stats["compressed_tokens"]) <= 0.27 * int(stats["original_tokens"])
    assert "selection" in stats["technique"]


def test_compress_cli_jsonl_in_order_with_and_without_question(aobin):
    rows = qa_rows(6)
    lines = []
    for i, r in enumerate(rows):
        d = {"prompt": rag_context(rows[i:] + rows[:i])}
        if i % 2 == 0:
            d["question"] = r["question"]
        lines.append(json.dumps(d))
    p = run_compress(aobin, "--jsonl", "--ratio", "0.5", input="\n".join(lines) + "\n")
    assert p.returncode == 0, p.stderr
    outs = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert len(outs) == len(rows)
    for i, o in enumerate(outs):
        assert set(o) >= {"compressed", "original_tokens", "compressed_tokens"}
        assert o["compressed_tokens"] <= 0.52 * o["original_tokens"]
        assert o["compressed"].startswith("Document [1]")  # original order


def test_compress_cli_rejects_bad_input(aobin):
    assert run_compress(aobin, "--ratio", "0", input="x").returncode != 0
    p = run_compress(aobin, "--ratio", "1.5", input="x")
    assert p.returncode != 0 and b"ratio" in p.stderr
    p = run_compress(aobin, "--jsonl", input='{"prompt": "ok"}\nnot json\n')
    assert p.returncode != 0 and b"line 2" in p.stderr
    assert len(p.stdout.decode().splitlines()) == 1  # the good line before the bad one
    p = run_compress(aobin, "--profile", "nope", input="x")
    assert p.returncode != 0 and b"unknown profile" in p.stderr


def test_compress_cli_lossless_profile_keeps_json_values(aobin):
    doc = {"results": [{"title": "A  spaced   title", "score": 0.7, "n": 12345678901234567890, "s": "é \"q\""}],
           "meta": {"k": [1, 2, {"x": None, "y": True}]}}
    text = json.dumps(doc, indent=4, ensure_ascii=False)
    p = run_compress(aobin, "--profile", "lossless", input=text)
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode().strip()
    assert json.loads(out) == doc
    assert len(out) < len(text)
