"""The command line: environment configuration, readiness, bad arguments."""

from __future__ import annotations

import os
import subprocess

from conftest import HOST, Service, free_port, httpx


def test_serve_configured_by_environment(aobin, mock_upstream):
    port = free_port()
    env = {"AUTO_OPTIMIZER_HOST": HOST, "AUTO_OPTIMIZER_PORT": str(port), "AUTO_OPTIMIZER_UPSTREAM": mock_upstream.v1}
    svc = Service("sidecar-env", [str(aobin), "serve"], port, env=env).start()
    try:
        r = httpx.post(svc.v1 + "/chat/completions", json={"model": "env-model", "messages": []},
                       timeout=10, trust_env=False)
        assert r.status_code == 200 and r.json()["model"] == "env-model"
        assert httpx.get(svc.base_url + "/ready", timeout=5, trust_env=False).status_code == 200
    finally:
        svc.stop()


def test_flags_override_environment(aobin, mock_upstream):
    port = free_port()
    env = {"AUTO_OPTIMIZER_PORT": str(free_port()), "AUTO_OPTIMIZER_UPSTREAM": f"http://{HOST}:1/v1"}
    svc = Service("sidecar-flags", [str(aobin), "serve", "--host", HOST, "--port", str(port),
                                    "--upstream", mock_upstream.v1], port, env=env).start()
    try:
        r = httpx.get(svc.v1 + "/models", timeout=10, trust_env=False)
        assert r.status_code == 200
    finally:
        svc.stop()


def test_help_and_bad_arguments(aobin):
    for args in (["--help"], ["serve", "--help"], ["mock-upstream", "--help"]):
        p = subprocess.run([str(aobin), *args], capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, (args, p.stderr)
        assert "USAGE" in (p.stdout + p.stderr).upper()
    for args in (["serve", "--port", "notaport"], ["serve", "--upstream", "not a url", "--port", str(free_port())],
                 ["no-such-command"]):
        p = subprocess.run([str(aobin), *args], capture_output=True, text=True, timeout=10,
                           env={k: v for k, v in os.environ.items() if not k.startswith("AUTO_OPTIMIZER_")})
        assert p.returncode != 0, f"{args} exited 0: {p.stdout} {p.stderr}"
        assert (p.stderr or p.stdout).strip(), f"{args}: no error message"


def test_bad_environment_values_stop_the_start(aobin):
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_OPTIMIZER_")}
    for name, value, says in (("AUTO_OPTIMIZER_ACCOUNTING_QUEUE", "8", "64...1048576"),
                              ("AUTO_OPTIMIZER_ACCOUNTING_QUEUE", "lots", "not a whole number"),
                              ("AUTO_OPTIMIZER_THREADS", "0", "threads must be")):
        p = subprocess.run([str(aobin), "serve", "--port", str(free_port())], capture_output=True, text=True,
                           timeout=10, env={**base, name: value})
        assert p.returncode != 0, f"{name}={value} exited 0: {p.stdout} {p.stderr}"
        assert says in p.stderr + p.stdout, f"{name}={value}: {p.stderr} {p.stdout}"
