"""The sidecar and the mock upstream work when an ordinary user runs them (no capabilities): a developer's
shell, a pod with `runAsNonRoot`. The test suite itself often runs as root (CI containers), where a socket
option only root may set goes unnoticed: `ChannelOptions.socketOption(.tcp_nodelay)` is SOL_SOCKET option 1,
SO_DEBUG (needs CAP_NET_ADMIN), not TCP_NODELAY, and every accepted or upstream connection failed for any
other user. As root, the processes here are started as `nobody`; otherwise as the (unprivileged) user running
the tests."""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

import pytest

from conftest import HOST, MockUpstream, Service, _mock_argv, _sidecar_argv, free_port
from otlp_receivers import wait_until


def _unprivileged_ids() -> tuple[int, int] | None:
    """(uid, gid) of `nobody` when this process is root (and can switch), else None (already unprivileged)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def _effective_uid(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])
    raise AssertionError(f"no Uid line in /proc/{pid}/status")


@pytest.fixture(scope="module")
def runnable_binary(aobin):
    """The binary, or a copy in a world-readable directory when `nobody` cannot reach it (a checkout under
    /root, say)."""
    ids = _unprivileged_ids()
    if ids is None:
        yield aobin
        return
    try:
        reachable = subprocess.run([str(aobin), "--help"], user=ids[0], group=ids[1], extra_groups=[],
                                   capture_output=True, timeout=30).returncode == 0
    except OSError:  # exec refused: a directory on the way is closed to that user
        reachable = False
    if reachable:
        yield aobin
        return
    d = pathlib.Path(tempfile.mkdtemp(prefix="ao-unprivileged-"))
    try:
        d.chmod(0o755)
        copy = d / "auto-optimizer"
        shutil.copy2(aobin, copy)
        copy.chmod(0o755)
        yield copy
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sidecar_and_mock_serve_as_unprivileged_user(runnable_binary, http):
    ids = _unprivileged_ids()
    mport, sport, metrics = free_port(), free_port(), free_port()
    mock = MockUpstream("mock-unprivileged", _mock_argv(runnable_binary, mport), mport, user=ids).start()
    try:
        sidecar = Service("sidecar-unprivileged",
                          _sidecar_argv(runnable_binary, sport, mock.v1, ["--metrics-port", str(metrics)]),
                          sport, user=ids).start()
        try:
            for svc in (mock, sidecar):
                uid = _effective_uid(svc.proc.pid)
                assert uid != 0, f"{svc.name} runs as root: the test would prove nothing"
                if ids is not None:
                    assert uid == ids[0], f"{svc.name} runs as uid {uid}, not {ids[0]}"

            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}
            r = http.post(sidecar.v1 + "/chat/completions", json=body,
                          headers={"authorization": "Bearer sk-test"})
            assert r.status_code == 200, r.text[:300]
            assert r.json()["choices"][0]["message"]["content"], r.text[:300]
            assert mock.last("/v1/chat/completions").json()["messages"] == body["messages"]

            # Streamed: the events arrive through the sidecar's connections to the client and to the upstream.
            with http.stream("POST", sidecar.v1 + "/chat/completions", json={**body, "stream": True},
                             headers={"authorization": "Bearer sk-test"}) as s:
                assert s.status_code == 200
                assert s.headers["content-type"].startswith("text/event-stream")
                text = "".join(s.iter_text())
            assert text.count("data: ") >= 2 and "data: [DONE]" in text, text[:300]

            # The Prometheus listener accepts connections too, and counts both requests (accounted off the
            # request path: they show within a few seconds).
            want = 'auto_optimizer_requests_total{http_response_status_code="200",endpoint="chat.completions"} 2'

            def scrape():
                m = http.get(f"http://{HOST}:{metrics}/metrics")
                assert m.status_code == 200
                return want in m.text

            wait_until(scrape, 10, "both requests in /metrics")
        finally:
            sidecar.stop()
    finally:
        mock.stop()
