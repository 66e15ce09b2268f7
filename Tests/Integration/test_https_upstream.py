"""An https upstream: TLS verified against the trust store (plus --upstream-ca-file), HTTP/2 negotiated by ALPN.

The upstream is a real nginx (Debian nginx-light, installed by scripts/setup.sh) terminating TLS and HTTP/2 with a
certificate from a throw-away CA made here with openssl, proxying to the mock upstream."""
from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import HOST, REPO, free_port

sys.path.insert(0, str(REPO / "Benchmarks"))
from proc_tools import nginx_config  # noqa: E402  (the benchmarks' nginx.conf prologue)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MESSAGES = [{"role": "user", "content": "Say hello over TLS."}]


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d: pathlib.Path, cn: str) -> None:
    """A throw-away CA (ca.pem) and a server certificate for 127.0.0.1 and localhost (server.pem, server.key)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", f"/CN={cn}", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)


def start_tls_nginx(d: pathlib.Path, *, listen: str, http_extra: str, location: str):
    """nginx serving TLS with d's certificate; `location /` holds `location`. Returns (port, process)."""
    if not pathlib.Path(NGINX).exists() or not shutil.which("openssl"):
        pytest.fail("nginx and openssl are needed (scripts/setup.sh installs nginx-light; openssl is in the base system)")
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(nginx_config(d, f"""
    {http_extra}
    server {{
        listen {HOST}:{port} {listen};
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        location / {{
            {location}
        }}
    }}"""))
    proc = subprocess.Popen([NGINX, "-p", str(d), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(d / "stderr.log", "wb"), start_new_session=True)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return port, proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"nginx did not start: {(d / 'stderr.log').read_text()} {(d / 'error.log').read_text()}")
            time.sleep(0.05)


def stop_nginx(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory, mock_upstream):
    d = tmp_path_factory.mktemp("tls-upstream")
    make_certificates(d, "auto-optimizer test CA")
    port, proc = start_tls_nginx(
        d, listen="ssl http2",
        http_extra=f"""log_format proto '$server_protocol $request_method $request_uri $status';
    access_log {d}/access.log proto;
    upstream mock {{ server 127.0.0.1:{mock_upstream.port}; keepalive 8; }}""",
        location="""proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;""")
    yield {"url": f"https://127.0.0.1:{port}/v1", "ca": str(d / "ca.pem"), "access_log": d / "access.log"}
    stop_nginx(proc)


def _access_lines(log: pathlib.Path, wanted: int) -> list[str]:
    for _ in range(50):  # nginx writes the line when the request ends
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= wanted:
            return lines
        time.sleep(0.05)
    return lines


def test_https_upstream_over_http2(tls_upstream, start_sidecar, http):
    """Plain and streamed chat through the sidecar to an https upstream trusted via --upstream-ca-file; the
    upstream sees HTTP/2 (ALPN), the client sees the upstream's answer."""
    before = len(_access_lines(tls_upstream["access_log"], 0))
    sidecar = start_sidecar("--upstream-ca-file", tls_upstream["ca"], upstream=tls_upstream["url"], name="sidecar-tls")
    r = http.post(sidecar.v1 + "/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "gpt-4o-mini" and r.json()["choices"][0]["message"]["content"]
    chunks = []
    with http.stream("POST", sidecar.v1 + "/chat/completions",
                     json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}) as s:
        assert s.status_code == 200
        for line in s.iter_lines():
            if line.startswith("data: "):
                chunks.append(line)
    assert len(chunks) > 2 and chunks[-1] == "data: [DONE]"
    lines = _access_lines(tls_upstream["access_log"], before + 2)[before:]
    assert lines and all(line.startswith("HTTP/2.0 POST /v1/chat/completions 200") for line in lines), lines


def test_untrusted_https_upstream_is_502(tls_upstream, start_sidecar, http):
    """Without the CA the upstream's certificate fails verification against the system trust store: 502, with
    the TLS failure named, and nothing reaches the upstream."""
    before = len(_access_lines(tls_upstream["access_log"], 0))
    sidecar = start_sidecar(upstream=tls_upstream["url"], name="sidecar-tls-untrusted")
    r = http.post(sidecar.v1 + "/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    message = err["message"].lower()
    assert err["type"] and any(w in message for w in ("certificate", "tls", "ssl")), err
    assert len(_access_lines(tls_upstream["access_log"], 0)) == before


def test_unreadable_ca_file_is_a_startup_error(aobin):
    out = subprocess.run([str(aobin), "serve", "--port", "0", "--upstream-ca-file", "/nonexistent/ca.pem"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "upstream CA file '/nonexistent/ca.pem' cannot be read" in out.stderr
