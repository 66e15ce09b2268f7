#!/usr/bin/env python3
"""Summarise the h2load runs of Benchmarks/overhead.sh as a Markdown table.

Input: a directory with, per (target, concurrency, round), `TARGET-cC-rR.log` (h2load --log-file: one
tab-separated line per request: start time in us since the epoch, HTTP status, duration in us) and
`TARGET-cC-rR.out` (h2load's stdout, for req/s). Per round: p50 and p99 of the durations of the 2xx requests
(nearest-rank), req/s from h2load's summary; per (target, concurrency): the median over rounds of each.
"Added" latency is the target's median minus the direct target's median at the same concurrency.

Usage: overhead_report.py RUN_DIR [--meta KEY=VALUE ...] [--out FILE]
Stdlib only.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import re
import statistics
import sys
from collections import defaultdict

NAME = re.compile(r"^(?P<target>[a-z0-9_]+)-c(?P<conc>\d+)-r(?P<round>\d+)\.log$")
REQS = re.compile(r"finished in [\d.]+\w*, ([\d.]+) req/s")
ORDER = {"direct": 0, "sidecar": 1, "telemetry": 2, "nginx": 3}


def percentile(sorted_values: list[int], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    k = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return float(sorted_values[k - 1])


def read_round(log: pathlib.Path) -> dict:
    ok, failed = [], 0
    for line in log.read_text().splitlines():
        cols = line.split("\t")
        if len(cols) < 3:
            continue
        status, dur = int(cols[1]), int(cols[2])
        if 200 <= status < 300:
            ok.append(dur)
        else:
            failed += 1
    ok.sort()
    out = log.with_suffix(".out")
    rps = math.nan
    if out.exists():
        m = REQS.search(out.read_text())
        if m:
            rps = float(m.group(1))
    return {"n": len(ok), "failed": failed, "p50": percentile(ok, 50), "p99": percentile(ok, 99), "rps": rps}


def fmt(x: float, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def signed(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:+,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=pathlib.Path)
    ap.add_argument("--meta", action="append", default=[], help="KEY=VALUE lines for the report header")
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()

    rounds: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for log in sorted(args.run_dir.glob("*.log")):
        m = NAME.match(log.name)
        if m:
            rounds[(m["target"], int(m["conc"]))].append(read_round(log))
    if not rounds:
        print(f"no h2load logs in {args.run_dir}", file=sys.stderr)
        return 1

    summary = {}
    for key, rs in rounds.items():
        summary[key] = {
            "rounds": len(rs),
            "n": sum(r["n"] for r in rs),
            "failed": sum(r["failed"] for r in rs),
            "p50": statistics.median(r["p50"] for r in rs),
            "p99": statistics.median(r["p99"] for r in rs),
            "rps": statistics.median(r["rps"] for r in rs),
            "p50_all": [r["p50"] for r in rs],
        }

    lines = ["# Sidecar overhead benchmark", ""]
    for kv in args.meta:
        k, _, v = kv.partition("=")
        lines.append(f"- **{k}**: {v}")
    lines += ["", "| target | concurrency | p50 us | p99 us | added p50 vs direct (us) | added p99 vs direct (us) "
              "| req/s | requests (failed) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    concs = sorted({c for _, c in summary})
    ratios = []
    for c in concs:
        direct = summary.get(("direct", c))
        for (t, cc), s in sorted(summary.items(), key=lambda kv: (kv[0][1], ORDER.get(kv[0][0], 9), kv[0][0])):
            if cc != c:
                continue
            add50 = s["p50"] - direct["p50"] if direct and t != "direct" else math.nan
            add99 = s["p99"] - direct["p99"] if direct and t != "direct" else math.nan
            lines.append(f"| {t} | {c} | {fmt(s['p50'])} | {fmt(s['p99'])} | "
                         f"{'-' if t == 'direct' else signed(add50)} | {'-' if t == 'direct' else signed(add99)} | "
                         f"{fmt(s['rps'], 1)} | {s['n']} ({s['failed']}) |")
        sc, ng = summary.get(("sidecar", c)), summary.get(("nginx", c))
        if direct and sc and ng:
            a_sc, a_ng = sc["p50"] - direct["p50"], ng["p50"] - direct["p50"]
            ratio = a_sc / a_ng if a_ng > 0 else math.nan
            ratios.append(f"- concurrency {c}: sidecar added p50 {a_sc:,.0f} us / nginx added p50 {a_ng:,.0f} us "
                          f"= **{fmt(ratio, 2)}x**")
    if ratios:
        lines += ["", "Sidecar vs nginx, added p50 (median over rounds):", *ratios]
    tel_lines = []
    for c in concs:
        direct, sc, tel = summary.get(("direct", c)), summary.get(("sidecar", c)), summary.get(("telemetry", c))
        if direct and sc and tel:
            a_sc, a_tel = sc["p50"] - direct["p50"], tel["p50"] - direct["p50"]
            growth = (a_tel - a_sc) / a_sc * 100 if a_sc > 0 else math.nan
            tel_lines.append(f"- concurrency {c}: added p50 with telemetry {a_tel:,.0f} us vs without {a_sc:,.0f} us "
                             f"= **{signed(growth)}%**")
    if tel_lines:
        lines += ["", "Telemetry on (OTLP/HTTP spans + metrics to a local collector) vs off, added p50:", *tel_lines]
    lines += ["", "Per-round p50 (us), in run order:"]
    for (t, c), s in sorted(summary.items(), key=lambda kv: (kv[0][1], ORDER.get(kv[0][0], 9))):
        lines.append(f"- {t} c={c}: {', '.join(fmt(x) for x in s['p50_all'])}")
    failed = sum(s["failed"] for s in summary.values())
    if failed:
        lines += ["", f"**WARNING: {failed} requests failed (non-2xx or transport error); see the logs.**"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
