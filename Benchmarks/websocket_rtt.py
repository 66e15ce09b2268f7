#!/usr/bin/env python3
"""WebSocket sessions through proxies: added round-trip time per message, targets interleaved.

    python Benchmarks/websocket_rtt.py [--bin .build/release/auto-optimizer] [--rounds 5] [--messages 3000]
        [--size 200] [--out Benchmarks/results/websocket-DATE.md]

Starts, on 127.0.0.1: the mock upstream (its /v1/realtime WebSocket echoes every text message), the sidecar in
front of it (`--threads 1`, telemetry off) and nginx as a WebSocket reverse proxy (`worker_processes 1`,
`proxy_set_header Upgrade/Connection`). With --pin (default, needs 2 CPUs) the client runs on CPU 0 and the
upstream and proxies share CPU 1, as in Benchmarks/overhead.sh. Each round opens one session per target (direct,
sidecar, nginx, in turn) and sends MESSAGES text messages of SIZE bytes one at a time, timing each echo
(send to full receipt). Reported: per-target p50 / p90 / p99 round trip (medians over rounds) and the added time
against direct. The client is a minimal stdlib WebSocket client (masked frames out, unmasked in) on a plain socket,
so its own cost is the same for every target. Every process started is stopped at the end.
"""
import argparse
import base64
import datetime
import os
import pathlib
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from proc_tools import nginx_config

HOST = "127.0.0.1"
REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, proc, name):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port}")


class Session:
    """A minimal WebSocket client session (RFC 6455): handshake, masked text frames out, frames in."""

    def __init__(self, port, path):
        self.s = socket.create_connection((HOST, port), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                        "Authorization: Bearer sk-bench\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            data = self.s.recv(65536)
            if not data:
                raise RuntimeError("connection closed during the handshake")
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {head[:200]!r}")
        self.recv_message()  # the mock's session.created

    def send_text(self, payload: bytes):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.s.sendall(header + mask + masked)

    def _need(self, n):
        while len(self.buf) < n:
            data = self.s.recv(65536)
            if not data:
                raise RuntimeError("connection closed")
            self.buf += data

    def recv_message(self) -> bytes:
        self._need(2)
        b1 = self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return payload

    def close(self):
        try:
            self.s.sendall(struct.pack("!BB", 0x88, 0x80 | 2) + b"\0\0\0\0" + b"\x03\xe8")
        except OSError:
            pass
        self.s.close()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(REPO / ".build/release/auto-optimizer"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--pin", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / f"Benchmarks/results/websocket-{datetime.date.today()}.md"))
    a = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not pathlib.Path(a.bin).exists():
        sys.exit(f"{a.bin} missing: swift build -c release --product auto-optimizer")
    pin = a.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    server_cpu = ["taskset", "-c", "1"] if pin else []
    if pin:
        os.sched_setaffinity(0, {0})
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ws-rtt-"))
    procs = []
    try:
        mock_port, sidecar_port, nginx_port = free_port(), free_port(), free_port()
        mock = subprocess.Popen(server_cpu + [a.bin, "mock-upstream", "--host", HOST, "--port", str(mock_port),
                                              "--threads", "1"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "mock.log", "wb"))
        procs.append(mock)
        wait_port(mock_port, mock, "mock upstream")
        sidecar = subprocess.Popen(server_cpu + [a.bin, "serve", "--host", HOST, "--port", str(sidecar_port),
                                                 "--upstream", f"http://{HOST}:{mock_port}/v1", "--threads", "1",
                                                 "--telemetry", "off", "--metrics-port", "0"],
                                   stdout=subprocess.DEVNULL, stderr=open(tmp / "sidecar.log", "wb"))
        procs.append(sidecar)
        wait_port(sidecar_port, sidecar, "sidecar")
        (tmp / "nginx.conf").write_text(nginx_config(tmp, f"""
    access_log off;
    server {{
        listen {HOST}:{nginx_port};
        location / {{
            proxy_pass http://{HOST}:{mock_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 600s;
        }}
    }}"""))
        ng = subprocess.Popen(server_cpu + [nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
                              stdout=subprocess.DEVNULL, stderr=open(tmp / "nginx.err", "wb"))
        procs.append(ng)
        wait_port(nginx_port, ng, "nginx")
        targets = {"direct": mock_port, "sidecar": sidecar_port, "nginx": nginx_port}
        payload = (b'{"type":"conversation.item.create","item":{"text":"' + b"x" * a.size)[:a.size - 3] + b'"}}'
        per_round = {t: [] for t in targets}
        for r in range(a.rounds):
            for name, port in targets.items():
                s = Session(port, "/v1/realtime?model=gpt-realtime")
                for _ in range(200):  # warm-up
                    s.send_text(payload)
                    s.recv_message()
                rtts = []
                for _ in range(a.messages):
                    t0 = time.perf_counter()
                    s.send_text(payload)
                    echoed = s.recv_message()
                    rtts.append((time.perf_counter() - t0) * 1e6)
                    if echoed != payload:
                        raise RuntimeError(f"{name}: echo differs")
                s.close()
                per_round[name].append((pct(rtts, 50), pct(rtts, 90), pct(rtts, 99)))
                print(f"round {r + 1} {name}: p50 {pct(rtts, 50):.0f} us", file=sys.stderr)
        med = {t: tuple(statistics.median(x[i] for x in v) for i in range(3)) for t, v in per_round.items()}
        lines = [
            f"# WebSocket round trip through proxies ({datetime.datetime.now().strftime('%Y-%m-%d %H:%M')})",
            "",
            f"`python Benchmarks/websocket_rtt.py --rounds {a.rounds} --messages {a.messages} --size {a.size}`; "
            f"{'client on CPU 0, upstream and proxy on CPU 1' if pin else 'no CPU pinning'}; "
            "one session per target per round, messages one at a time; medians over rounds.",
            "",
            "| target | p50 us | p90 us | p99 us | added p50 | added p90 | added p99 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for t, (p50, p90, p99) in med.items():
            d = med["direct"]
            added = "| - | - | - |" if t == "direct" else f"| {p50 - d[0]:+.0f} | {p90 - d[1]:+.0f} | {p99 - d[2]:+.0f} |"
            lines.append(f"| {t} | {p50:.0f} | {p90:.0f} | {p99:.0f} {added}")
        s50, n50 = med["sidecar"][0] - med["direct"][0], med["nginx"][0] - med["direct"][0]
        lines += ["", f"Sidecar added p50 {s50:.0f} us, nginx {n50:.0f} us.", "",
                  "Per-round p50 (us): " + "; ".join(
                      f"{t} " + ", ".join(f"{x[0]:.0f}" for x in v) for t, v in per_round.items())]
        pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(a.out).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
