"""Recipe test (issue 6): the sidecar's spans in Arize Phoenix, as LLM spans with token counts.

Phoenix runs from its own venv (`.venv-phoenix`, made by `scripts/setup.sh --with-phoenix`; PyPI arize-phoenix,
about 140 s to install once) with `phoenix serve` on 127.0.0.1 (about 40 s to start). The sidecar exports OTLP/HTTP
protobuf to Phoenix's /v1/traces; the test reads the spans back through Phoenix's REST API
(`GET /v1/projects/{project}/spans`). Skipped when Phoenix is not installed, unless AUTO_OPTIMIZER_REQUIRE_PHOENIX=1
(scripts/test.sh sets it).
"""

from __future__ import annotations

import os
import pathlib
import socket

import pytest

from conftest import HOST, REPO, free_port, httpx
from otlp_receivers import wait_until
from test_telemetry import chat, clean_env

PHOENIX = pathlib.Path(os.environ.get("AUTO_OPTIMIZER_PHOENIX_VENV", REPO / ".venv-phoenix")) / "bin" / "phoenix"
PROJECT = "auto-optimizer-recipe"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


@pytest.fixture
def phoenix(start_service, tmp_path):
    if not PHOENIX.exists():
        if os.environ.get("AUTO_OPTIMIZER_REQUIRE_PHOENIX") == "1":
            pytest.fail(f"Phoenix not installed at {PHOENIX}: run scripts/setup.sh --with-phoenix")
        pytest.skip(f"Phoenix not installed at {PHOENIX} (scripts/setup.sh --with-phoenix)")
    port = free_port()
    grpc_port = free_port()  # Phoenix binds its gRPC port on all interfaces: pick a free one
    env = {"PHOENIX_HOST": HOST, "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(grpc_port),
           "PHOENIX_WORKING_DIR": str(tmp_path / "phoenix"), "PHOENIX_TELEMETRY_ENABLED": "false",
           "PHOENIX_ENABLE_AUTH": "false"}
    svc = start_service("phoenix", [str(PHOENIX), "serve"], port, ready_path="/healthz", startup_timeout=180,
                        env=env)
    return svc


def test_sidecar_spans_appear_in_phoenix_as_llm_spans(phoenix, aobin, mock_upstream, start_service):
    port = free_port()
    env = clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.base_url, "OTEL_BSP_SCHEDULE_DELAY": "200",
                     "OTEL_METRICS_EXPORTER": "none",  # Phoenix takes traces only
                     "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT}"})
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("OTEL_")}
    try:
        svc = start_service("sidecar-phoenix", [str(aobin), "serve", "--host", HOST, "--port", str(port),
                                                "--upstream", mock_upstream.v1, "--metrics-port", "0"], port, env=env)
    finally:
        os.environ.update(saved)
    chat(svc, app="phoenix-recipe")
    chat(svc, model="gpt-4o", stream=True, app="phoenix-recipe")

    def llm_spans():
        r = httpx.get(f"{phoenix.base_url}/v1/projects/{PROJECT}/spans", params={"limit": 100}, timeout=10,
                      trust_env=False)
        if r.status_code != 200:
            return None
        spans = [s for s in r.json().get("data", [])
                 if (s.get("attributes") or {}).get("openinference.span.kind") == "LLM"
                 or s.get("span_kind") == "LLM"]
        return spans if len(spans) >= 2 else None

    spans = wait_until(llm_spans, 60, "2 LLM spans in Phoenix", interval=1.0)
    names = {s["name"] for s in spans}
    assert {"chat gpt-4o-mini", "chat gpt-4o"} <= names, names
    for s in spans:
        a = s.get("attributes") or {}
        flat = {k: v for k, v in a.items()}
        # Phoenix maps gen_ai.* to its conventions (llm.token_count.*); either form carries the counts.
        prompt = flat.get("llm.token_count.prompt") or flat.get("gen_ai.usage.input_tokens")
        completion = flat.get("llm.token_count.completion") or flat.get("gen_ai.usage.output_tokens")
        assert prompt and prompt > 0, flat
        assert completion == 7, flat
