"""The policy engine with real processes: two mock upstreams (primary, backup) behind the sidecar, a policy file
written by the test, requests from the OpenAI SDK and raw HTTP."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import threading
import time
from decimal import Decimal

import openai
import pytest

from conftest import HOST, MockUpstream, Service, _mock_argv, _sidecar_argv, free_port, httpx, closed_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
PRICES = {m["id"]: m["price_per_1m_tokens_usd"]
          for m in json.loads((ROOT / "fixtures" / "models.json").read_text())["models"]}


def cost(model, prompt, completion):
    p = PRICES[model]
    return (prompt * Decimal(p["input"]) + completion * Decimal(p["output"])) / Decimal(1_000_000)


@pytest.fixture
def mocks(aobin):
    started = []

    def _start(name, *extra):
        port = free_port()
        svc = MockUpstream(name, _mock_argv(aobin, port, extra), port).start()
        started.append(svc)
        return svc

    yield _start
    for s in started:
        s.stop()


@pytest.fixture
def policy_sidecar(aobin, tmp_path):
    started = []

    def _start(policy_text: str, name="sidecar-policy", env=None):
        path = tmp_path / "policy.yaml"
        path.write_text(policy_text)
        port = free_port()
        svc = Service(name, _sidecar_argv(aobin, port, "http://127.0.0.1:1/v1", ["--config", str(path)]), port,
                      env=env).start()
        svc.policy_path = path
        started.append(svc)
        return svc

    yield _start
    for s in started:
        s.stop()


def example_policy(primary, backup, extra_rules="", extra="", defaults_extra=""):
    return f"""
version: 1
upstreams:
  primary: {{ url: "{primary.v1}" }}
  backup:  {{ url: "{backup.v1}" }}
defaults:
  upstream: primary
  fallback: [backup]
{defaults_extra}
rules:
  - name: support-bot-cheaper
    match: {{ app: support-bot, model: "gpt-4o" }}
    set_model: gpt-4o-mini
  - name: batch-to-backup
    match: {{ app: batch, model: "gpt-4*" }}
    upstream: backup
{extra_rules}
{extra}
"""


def models_seen(mock):
    return [json.loads(r.body)["model"] for r in mock.received("/v1/chat/completions")]


def test_model_rewrite_is_spliced_and_visible(mocks, policy_sidecar):
    primary, backup = mocks("primary"), mocks("backup")
    sc = policy_sidecar(example_policy(primary, backup))
    body = ('{"model":"gpt-4o","temperature":0.70,"top_p":1e-5,"messages":[{"role":"user","content":"caf\\u00e9"}],'
            '"x_unknown":{"b":1,"a":[1,2]}}')
    r = httpx.post(sc.v1 + "/chat/completions", content=body, headers={"x-app-id": "support-bot",
                   "content-type": "application/json"}, trust_env=False, timeout=10)
    assert r.status_code == 200, r.text
    sent = primary.last("/v1/chat/completions").body
    assert sent == body.replace('"gpt-4o"', '"gpt-4o-mini"').encode(), sent
    assert r.headers["x-auto-optimizer-rule"] == "support-bot-cheaper"
    assert r.headers["x-auto-optimizer-original-model"] == "gpt-4o"
    assert r.headers["x-auto-optimizer-served-model"] == "gpt-4o-mini"
    usage = r.json()["usage"]
    saved = cost("gpt-4o", usage["prompt_tokens"], usage["completion_tokens"]) - cost(
        "gpt-4o-mini", usage["prompt_tokens"], usage["completion_tokens"])
    assert Decimal(r.headers["x-auto-optimizer-cost-saved-usd"]) == saved
    # Another app keeps its model, and says which rule (none) decided.
    r2 = httpx.post(sc.v1 + "/chat/completions", content=body, headers={"x-app-id": "other"}, trust_env=False)
    assert primary.last("/v1/chat/completions").body == body.encode()
    assert r2.headers["x-auto-optimizer-rule"] == "default"


def test_routing_by_app_and_glob(mocks, policy_sidecar):
    primary, backup = mocks("primary"), mocks("backup")
    sc = policy_sidecar(example_policy(primary, backup))
    c = openai.OpenAI(base_url=sc.v1, api_key="sk-x", max_retries=0)
    for model in ("gpt-4.1", "gpt-4o-mini", "o3"):
        c.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                  extra_headers={"x-app-id": "batch"})
    c.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "x"}],
                              extra_headers={"x-app-id": "web"})
    assert models_seen(backup) == ["gpt-4.1", "gpt-4o-mini"]
    assert models_seen(primary) == ["o3", "gpt-4.1"]
    recs = wait_records(sc, 4)[-4:]
    assert [r["upstream"] for r in recs] == ["backup", "backup", "primary", "primary"]


@pytest.mark.parametrize("fault", [["--status", "503"], ["--status", "429"], ["--fault", "reset"], "closed"])
def test_fallback_to_backup_before_any_byte(mocks, policy_sidecar, fault):
    backup = mocks("backup")
    if fault == "closed":
        class Closed:
            v1 = f"http://{HOST}:{closed_port()}/v1"
        primary = Closed()
    else:
        primary = mocks("primary", *fault)
    sc = policy_sidecar(example_policy(primary, backup, defaults_extra="  retry: { backoff: { initial: 10ms, max: 50ms } }"))
    c = openai.OpenAI(base_url=sc.v1, api_key="sk-x", max_retries=0)
    r = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content
    s = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
    assert models_seen(backup) == ["gpt-4o", "gpt-4o"]
    recs = wait_records(sc, 2)[-2:]
    assert all(x["upstream"] == "backup" and x["attempts"] == 2 and x["status"] == 200 for x in recs), recs


def test_no_retry_once_bytes_reached_the_client(mocks, policy_sidecar):
    primary, backup = mocks("primary", "--fault", "reset-mid-stream"), mocks("backup")
    sc = policy_sidecar(example_policy(primary, backup))
    c = openai.OpenAI(base_url=sc.v1, api_key="sk-x", max_retries=0)
    got = []
    with pytest.raises(Exception):
        for ch in c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True):
            got.append(ch)
    assert got, "the first chunks should have arrived before the reset"
    assert models_seen(backup) == [], "a request whose bytes reached the client must not be retried"


def test_all_upstreams_failing_gives_the_last_error(mocks, policy_sidecar):
    primary, backup = mocks("primary", "--status", "503"), mocks("backup", "--status", "500")
    sc = policy_sidecar(example_policy(primary, backup))
    r = httpx.post(sc.v1 + "/chat/completions", json={"model": "gpt-4o", "messages": []}, trust_env=False)
    assert r.status_code == 500 and r.json()["error"]["code"] == "mock_status_500"


def wait_records(sc, n, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        data = httpx.get(sc.v1 + "/optimizer/requests?limit=256", trust_env=False).json()["data"]
        if len(data) >= n:
            return data
        time.sleep(0.02)
    raise AssertionError(f"only {len(data)} records")


def test_budget_downgrades_then_rejects(mocks, policy_sidecar):
    primary, backup = mocks("primary"), mocks("backup")
    budgets = """
budgets:
  - { app: capped, usd_per_hour: "0.000001", action: downgrade, downgrade_to: gpt-4o-mini }
  - { app: capped, usd_per_hour: "0.00025", action: reject }
"""
    sc = policy_sidecar(example_policy(primary, backup, extra=budgets))
    served, statuses = [], []
    for i in range(12):
        r = httpx.post(sc.v1 + "/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
                       headers={"x-app-id": "capped"}, trust_env=False)
        statuses.append(r.status_code)
        if r.status_code == 200:
            served.append(r.json()["model"])
        else:
            err = r.json()["error"]
            assert r.status_code == 429 and err["code"] == "budget_exceeded" and r.headers.get("retry-after")
        wait_records(sc, i + 1)  # spend is recorded off the hot path: let it land before the next request
    assert served[0] == "gpt-4o"
    assert served[1:] and all(m == "gpt-4o-mini" for m in served[1:]), served
    assert statuses[-1] == 429, statuses
    assert 429 not in statuses[:len(served)], statuses


def test_reload_under_traffic_with_a_bad_file(mocks, policy_sidecar):
    primary, backup = mocks("primary"), mocks("backup")
    rule = lambda model: f"""  - name: rewrite
    match: {{ app: live }}
    set_model: {model}
"""
    sc = policy_sidecar(example_policy(primary, backup, extra_rules=rule("gpt-4o-mini")))
    failures, models, stop = [], [], threading.Event()

    def traffic():
        with httpx.Client(trust_env=False, timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post(sc.v1 + "/chat/completions", json={"model": "gpt-4o", "messages": []},
                               headers={"x-app-id": "live"})
                    if r.status_code != 200:
                        failures.append(r.status_code)
                    else:
                        models.append(r.json()["model"])
                except Exception as e:  # noqa: BLE001
                    failures.append(repr(e))

    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(0.5)
        sc.policy_path.write_text(example_policy(primary, backup, extra_rules=rule("gpt-4.1-nano")))
        deadline = time.time() + 5
        while time.time() < deadline and (not models or models[-1] != "gpt-4.1-nano"):
            time.sleep(0.05)
        assert models and models[-1] == "gpt-4.1-nano", "the changed file was not picked up"
        sc.policy_path.write_text("version: 1\nrules: [ { name: broken, set_model: 3, bogus: yes } ]\n")
        time.sleep(2.5)
        n = len(models)
        time.sleep(0.5)
        assert len(models) > n and models[-1] == "gpt-4.1-nano", "the last good policy must keep serving"
        sc.policy_path.write_text(example_policy(primary, backup, extra_rules=rule("o4-mini")))
        sc.signal(signal.SIGHUP)
        deadline = time.time() + 3
        while time.time() < deadline and models[-1] != "o4-mini":
            time.sleep(0.05)
        assert models[-1] == "o4-mini"
    finally:
        stop.set()
        t.join()
    assert failures == [], failures[:5]
    assert "policy reload refused" in sc.log_text()
    assert len(models) > 50


def test_invalid_policy_refuses_to_start(aobin, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nupstreams:\n  a: { url: 5 }\ndefaults: { upstream: nowhere }\n")
    r = subprocess.run([str(aobin), "serve", "--port", str(free_port()), "--config", str(bad)], capture_output=True,
                       timeout=20)
    assert r.returncode != 0
    assert f"{bad}:" in r.stderr.decode(), r.stderr.decode()


def test_check_config(aobin):
    ok = subprocess.run([str(aobin), "check-config", str(ROOT / "fixtures/policies/example.yaml")],
                        capture_output=True, timeout=20)
    assert ok.returncode == 0 and b"OK" in ok.stdout, ok.stdout + ok.stderr
    bad = subprocess.run([str(aobin), "check-config", str(ROOT / "fixtures/policies/invalid.yaml")],
                         capture_output=True, timeout=20)
    assert bad.returncode != 0
    lines = [l for l in bad.stderr.decode().splitlines() if ": error:" in l]
    assert lines and all(l.startswith(str(ROOT / "fixtures/policies/invalid.yaml") + ":") for l in lines), lines
