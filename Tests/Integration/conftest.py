"""Shared fixtures for the integration tests.

Everything runs on 127.0.0.1 against the real `auto-optimizer` binary (env AUTO_OPTIMIZER_BIN, else
.build/release/auto-optimizer, else .build/debug/auto-optimizer):

* ``mock_upstream``   session: ``auto-optimizer mock-upstream`` on a free port
* ``sidecar``         session: ``auto-optimizer serve`` in front of the mock
* ``start_sidecar``   function: factory for extra sidecars with their own options (stopped at teardown,
                      and checked to still answer /health unless the test stopped them itself)

Every process writes its output to a log file; when a test fails, the tail of the log of every process that
is running is attached to the failure report.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time
from typing import Iterable

import pytest

try:  # openai>=3 is built on httpx2; older releases on httpx. Same API.
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

REPO = pathlib.Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

# Only loopback traffic: never route the test clients through a proxy from the environment.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
             "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

_LIVE: list["Service"] = []  # services whose logs are attached to failure reports
_LOG_DIR = pathlib.Path(tempfile.mkdtemp(prefix="ao-integration-"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound then released; nothing else on this host grabs it that fast)."""
    return free_port()


def find_binary() -> pathlib.Path | None:
    env = os.environ.get("AUTO_OPTIMIZER_BIN")
    if env:
        return pathlib.Path(env)
    for rel in (".build/release/auto-optimizer", ".build/debug/auto-optimizer"):
        p = REPO / rel
        if p.exists():
            return p
    return None


class Service:
    """A subprocess listening on HOST:port, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], port: int, *, ready_path: str = "/health",
                 startup_timeout: float = 20.0, env: dict[str, str] | None = None,
                 user: tuple[int, int] | None = None):
        self.name = name
        self.argv = argv
        self.port = port
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.log_path = _LOG_DIR / f"{name}-{port}.log"
        self.env = env
        # (uid, gid) to run as (only root can switch), with no supplementary groups; None: this process's user.
        self.user = user
        self.proc: subprocess.Popen | None = None
        self.stopped_by_test = False

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def start(self) -> "Service":
        self._log = open(self.log_path, "wb")
        self._log.write(("$ " + " ".join(self.argv) + "\n").encode())
        self._log.flush()
        ids = {} if self.user is None else {"user": self.user[0], "group": self.user[1], "extra_groups": []}
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **(self.env or {})}, **ids)
        _LIVE.append(self)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} during startup:\n{self.log_tail()}")
            try:
                r = httpx.get(self.base_url + self.ready_path, timeout=1.0, trust_env=False)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready on {self.base_url}{self.ready_path} after "
                           f"{self.startup_timeout}s (last: {last}):\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self in _LIVE:
            _LIVE.remove(self)
        self._log.close()
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for svc in list(_LIVE):
            state = "running" if svc.alive() else f"exited {svc.proc.returncode}"
            rep.sections.append((f"{svc.name} :{svc.port} ({state}) log tail, {svc.log_path}", svc.log_tail()))


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def aobin() -> pathlib.Path:
    p = find_binary()
    if p is None or not p.exists():
        pytest.fail("auto-optimizer binary not found: build it (swift build -c release --product auto-optimizer) "
                    f"or set AUTO_OPTIMIZER_BIN (looked at {p or '.build/{release,debug}/auto-optimizer'})")
    return p


class MockUpstream(Service):
    """The mock upstream plus helpers for its /mock/requests journal."""

    def requests(self) -> list[dict]:
        r = httpx.get(self.base_url + "/mock/requests", timeout=5, trust_env=False)
        r.raise_for_status()
        return r.json()["requests"]

    def clear(self) -> None:
        r = httpx.request("DELETE", self.base_url + "/mock/requests", timeout=5, trust_env=False)
        assert r.status_code in (200, 204), f"DELETE /mock/requests -> {r.status_code} {r.text}"

    def last(self, path: str, method: str | None = None) -> "RecordedRequest":
        for raw in reversed(self.requests()):
            if raw["path"].split("?")[0] == path and (method is None or raw["method"] == method):
                return RecordedRequest(raw)
        raise AssertionError(f"mock upstream received no {method or ''} {path}; journal: "
                             f"{[(r['method'], r['path']) for r in self.requests()]}")

    def received(self, path: str) -> list["RecordedRequest"]:
        return [RecordedRequest(r) for r in self.requests() if r["path"].split("?")[0] == path]


class RecordedRequest:
    def __init__(self, raw: dict):
        self.raw = raw
        self.method = raw["method"]
        self.path = raw["path"]
        self.header_list: list[tuple[str, str]] = [(n, v) for n, v in raw["headers"]]
        self.body: bytes = base64.b64decode(raw.get("body_base64") or "")

    def header(self, name: str) -> str | None:
        vals = self.headers_named(name)
        return vals[0] if vals else None

    def headers_named(self, name: str) -> list[str]:
        return [v for n, v in self.header_list if n.lower() == name.lower()]

    def header_names(self) -> set[str]:
        return {n.lower() for n, _ in self.header_list}

    def json(self):
        return json.loads(self.body)


def _mock_argv(aobin, port, extra: Iterable[str] = ()) -> list[str]:
    return [str(aobin), "mock-upstream", "--host", HOST, "--port", str(port), *extra]


def _sidecar_argv(aobin, port, upstream: str, extra: Iterable[str] = ()) -> list[str]:
    return [str(aobin), "serve", "--host", HOST, "--port", str(port), "--upstream", upstream, *extra]


@pytest.fixture(scope="session")
def mock_upstream(aobin):
    port = free_port()
    svc = MockUpstream("mock-upstream", _mock_argv(aobin, port), port).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def sidecar(aobin, mock_upstream):
    port = free_port()
    svc = Service("sidecar", _sidecar_argv(aobin, port, mock_upstream.v1), port).start()
    yield svc
    svc.stop()


@pytest.fixture
def start_sidecar(aobin, mock_upstream):
    """Factory: start_sidecar(*extra_args, upstream=None) -> Service (default upstream: the mock)."""
    started: list[Service] = []

    def _start(*extra: str, upstream: str | None = None, name: str = "sidecar-extra") -> Service:
        port = free_port()
        svc = Service(name, _sidecar_argv(aobin, port, upstream or mock_upstream.v1, extra), port).start()
        started.append(svc)
        return svc

    yield _start
    problems = []
    for svc in started:
        if not svc.stopped_by_test:
            if not svc.alive():
                problems.append(f"{svc.name} died (exit {svc.proc.returncode}):\n{svc.log_tail()}")
            else:
                try:
                    r = httpx.get(svc.base_url + "/health", timeout=5, trust_env=False)
                    if r.status_code != 200:
                        problems.append(f"{svc.name} /health -> {r.status_code}")
                except httpx.HTTPError as e:
                    problems.append(f"{svc.name} /health failed: {e!r}")
        svc.stop()
    assert not problems, "\n".join(problems)


@pytest.fixture
def start_service():
    """Factory for arbitrary processes (e.g. the llama.cpp server): start_service(name, argv, port, **kw)."""
    started: list[Service] = []

    def _start(name: str, argv: list[str], port: int, **kw) -> Service:
        svc = Service(name, argv, port, **kw)
        started.append(svc)
        return svc.start()

    yield _start
    for svc in started:
        svc.stop()


@pytest.fixture(scope="session")
def http():
    with httpx.Client(timeout=15.0, trust_env=False) as c:
        yield c


def assert_openai_error(resp, status: int) -> dict:
    """The response is an OpenAI-shaped JSON error with the given status; returns the error object."""
    assert resp.status_code == status, f"expected HTTP {status}, got {resp.status_code}: {resp.text[:500]!r}"
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"error content-type is {ctype!r}, body {resp.text[:300]!r}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {resp.text[:300]!r}")
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not an OpenAI error body: {body!r}"
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], f"error.message missing/empty: {body!r}"
    assert isinstance(err.get("type"), str) and err["type"], f"error.type missing/empty: {body!r}"
    assert "param" in err, f"error.param key missing: {body!r}"
    assert "code" in err, f"error.code key missing: {body!r}"
    return err



QA_FIXTURE = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "qa" / "nq-open-oracle.jsonl.gz"


def qa_rows(n: int) -> list[dict]:
    """The first `n` rows of the QA fixture (question, answers, gold passage in ctxs[0])."""
    import gzip
    with gzip.open(QA_FIXTURE, "rt", encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


def rag_context(rows: list[dict]) -> str:
    """The gold passages of `rows` in the "Document [i](Title: t) text" retrieval layout."""
    return "\n".join("Document [%d](Title: %s) %s" % (i + 1, r["ctxs"][0]["title"], r["ctxs"][0]["text"])
                     for i, r in enumerate(rows))
