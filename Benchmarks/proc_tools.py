#!/usr/bin/env python3
"""Process helpers for the benchmark scripts (stdlib only, Linux /proc).

    proc_tools.py spawn --health URL --pidfile F --readyfile R --log F [--timeout S] [--env K=V ...] -- CMD ARG...
        Starts CMD in a new session (its process group id is its pid, so the caller can stop it and every child
        with `kill -- -PID`), writes the pid to F, polls URL every millisecond until it answers 200 and writes the
        time from just before the exec to that first 200, in milliseconds, to R. Then stays CMD's parent until CMD
        exits (Envoy stops when its parent dies): run it in the background. Exit 1 (and CMD's log tail on stderr)
        when CMD dies or the timeout passes before it is ready.
    proc_tools.py sample PID
        One JSON line for PID's session (PID and every process whose session id is PID): cpu_s (utime + stime of
        all their threads), rss_kb (sum of VmRSS), hwm_kb (sum of VmHWM, each process's peak), procs.
    proc_tools.py ready URL [--timeout S]
        Waits until URL answers 200 (exit 0) or the timeout passes (exit 1).

Imported (by Benchmarks/websocket_rtt.py and the integration tests): `nginx_config`.
"""
import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.parse

TICK = os.sysconf("SC_CLK_TCK")


def nginx_config(d, http: str) -> str:
    """An nginx.conf for one worker in the foreground with every path (pid, logs, temp files) under directory `d`,
    whose temp subdirectories it creates; `http` goes inside the `http` block (directives and servers)."""
    d = pathlib.Path(d)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (d / sub).mkdir(exist_ok=True)
    return f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{http}
}}
"""


def http_ok(url, timeout=0.5):
    u = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((u.hostname, u.port or 80), timeout=timeout) as s:
            s.sendall(("GET %s HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n" % (u.path or "/", u.netloc)).encode())
            head = s.recv(64)
            return head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def session_pids(leader):
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (stat field 3); session id is stat field 6
        if int(name) == leader or int(fields[3]) == leader:
            pids.append(int(name))
    return pids


def sample(leader):
    cpu, rss, hwm, n = 0, 0, 0, 0
    for pid in session_pids(leader):
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open("/proc/%d/status" % pid) as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        cpu += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
        rss += int(status.get("VmRSS", "0 kB").split()[0])
        hwm += int(status.get("VmHWM", "0 kB").split()[0])
        n += 1
    return {"cpu_s": cpu / TICK, "rss_kb": rss, "hwm_kb": hwm, "procs": n}


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("spawn")
    sp.add_argument("--health", required=True)
    sp.add_argument("--pidfile", required=True)
    sp.add_argument("--readyfile", required=True)
    sp.add_argument("--log", required=True)
    sp.add_argument("--timeout", type=float, default=30)
    sp.add_argument("--env", action="append", default=[])
    sp.add_argument("argv", nargs=argparse.REMAINDER)
    sa = sub.add_parser("sample")
    sa.add_argument("pid", type=int)
    rd = sub.add_parser("ready")
    rd.add_argument("url")
    rd.add_argument("--timeout", type=float, default=10)
    args = ap.parse_args()

    if args.cmd == "sample":
        print(json.dumps(sample(args.pid)))
        return 0
    if args.cmd == "ready":
        end = time.monotonic() + args.timeout
        while time.monotonic() < end:
            if http_ok(args.url):
                return 0
            time.sleep(0.05)
        return 1

    argv = args.argv[1:] if args.argv and args.argv[0] == "--" else args.argv
    env = dict(os.environ)
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    log = open(args.log, "ab")
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    with open(args.pidfile, "w") as f:
        f.write("%d\n" % proc.pid)
    deadline = started + args.timeout
    while True:
        if http_ok(args.health, timeout=0.2):
            ms = (time.monotonic() - started) * 1000
            with open(args.readyfile + ".tmp", "w") as f:
                f.write("%.1f\n" % ms)
            os.rename(args.readyfile + ".tmp", args.readyfile)
            return proc.wait()
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            with open(args.log, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            print("%s did not answer 200 on %s (%s); log tail:\n%s" % (
                argv[0], args.health, "exited %s" % proc.returncode if proc.poll() is not None else "timeout", tail),
                file=sys.stderr)
            return 1
        time.sleep(0.001)


if __name__ == "__main__":
    sys.exit(main())
