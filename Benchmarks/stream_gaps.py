#!/usr/bin/env python3
"""Streaming through proxies: time to first chunk, and proof that chunks are not batched (inter-chunk gaps kept).

    python Benchmarks/stream_gaps.py --body BODY.json [--requests 5] [--tps 50] [--tokens 20] --out FILE.json \
        NAME=URL [NAME=URL ...]

Each target gets REQUESTS streamed chat requests, one after another, over a fresh HTTP/1.1 connection each, with
`x-mock-tokens-per-second: TPS` and `x-mock-completion-tokens: TOKENS` (the mock upstream then sends one SSE event
every 1/TPS seconds; for LiteLLM, which does not forward client headers, use a model entry that adds them: the
suite's `gpt-4o-mini-paced`, given as NAME=URL#model). The client reads the socket with plain recv() calls and
timestamps every `data:` event by the recv that completed it. Reported per target (medians over requests):
events received, time to first event (from the request's last byte), inter-event gaps (p10 / p50 / p90), and the
share of gaps under 2 ms: events that arrived together, i.e. batched (0 when every event is forwarded as it comes).
Stdlib only.
"""
import argparse
import json
import socket
import statistics
import sys
import time
import urllib.parse


def one(url, body, headers):
    u = urllib.parse.urlsplit(url)
    head = ["POST %s HTTP/1.1" % u.path, "host: %s" % u.netloc, "content-type: application/json",
            "authorization: Bearer sk-bench", "connection: close", "content-length: %d" % len(body)]
    head += ["%s: %s" % kv for kv in headers.items()]
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    sent = time.perf_counter()
    stream, times, pos, status = b"", [], 0, None
    while True:
        data = s.recv(65536)
        now = time.perf_counter()
        if not data:
            break
        stream += data
        if status is None and b"\r\n" in stream:
            status = int(stream.split(b" ", 2)[1])
        while True:  # every complete "data:" line seen so far, stamped with this recv's time
            i = stream.find(b"data:", pos)
            if i < 0 or stream.find(b"\n", i) < 0:
                break
            times.append(now)
            pos = stream.find(b"\n", i)
        if b"data: [DONE]" in stream:
            break
    s.close()
    if status != 200 or not times:
        raise RuntimeError("%s answered %s: %r" % (url, status, stream[:300]))
    gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
    return {"events": len(times), "ttfc_ms": (times[0] - sent) * 1000, "gaps_ms": gaps}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("targets", nargs="+")
    ap.add_argument("--body", required=True)
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--tps", type=float, default=50)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--out")
    args = ap.parse_args()
    with open(args.body, "rb") as f:
        base = json.load(f)
    headers = {"x-mock-tokens-per-second": "%g" % args.tps, "x-mock-completion-tokens": str(args.tokens)}
    results = {}
    for spec in args.targets:
        name, _, url = spec.partition("=")
        url, _, model = url.partition("#")
        body = json.dumps(dict(base, stream=True, **({"model": model} if model else {}))).encode()
        runs = [one(url, body, headers) for _ in range(args.requests)]
        gaps = [g for r in runs for g in r["gaps_ms"]]
        results[name] = {
            "requests": len(runs), "events": statistics.median(r["events"] for r in runs),
            "ttfc_ms_p50": statistics.median(r["ttfc_ms"] for r in runs),
            "gap_ms_p10": pct(gaps, 10), "gap_ms_p50": pct(gaps, 50), "gap_ms_p90": pct(gaps, 90),
            "batched_share": sum(1 for g in gaps if g < 2.0) / len(gaps) if gaps else float("nan"),
            "expected_gap_ms": 1000 / args.tps,
        }
        print("%-10s events %4.0f  first event %7.2f ms  gaps p10/p50/p90 %6.2f %6.2f %6.2f ms  batched %.0f%%" % (
            name, results[name]["events"], results[name]["ttfc_ms_p50"], results[name]["gap_ms_p10"],
            results[name]["gap_ms_p50"], results[name]["gap_ms_p90"], 100 * results[name]["batched_share"]),
            file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
