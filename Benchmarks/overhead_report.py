#!/usr/bin/env python3
"""Summarise the h2load runs of Benchmarks/overhead.sh (a Markdown table; `summarize()` for Benchmarks/suite_report.py).

Input: a run directory with, per (upstream, target, mode, size, concurrency, round), `U-T-M-S-cC-rR.log` (h2load
--log-file: one tab-separated line per request: start time in us since the epoch, HTTP status, duration in us),
`.out` (h2load's stdout, for req/s) and `.proc` (the target's /proc samples before and after the run). Per round:
p50 / p90 / p99 of the durations of the 2xx requests (nearest-rank), req/s from h2load's summary, CPU seconds of the
target's processes per request. Per cell (upstream, mode, size, concurrency) and target: the median over rounds of
each. "Added" latency is the target's median minus the direct target's median in the same cell.

Usage: overhead_report.py RUN_DIR [--meta KEY=VALUE ...] [--out FILE]
Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import statistics
import sys
from collections import defaultdict

NAME = re.compile(r"^(?P<upstream>[a-z]+)-(?P<target>[a-z0-9_]+)-(?P<mode>plain|stream)-(?P<size>[a-z]+)"
                  r"-c(?P<conc>\d+)-r(?P<round>\d+)\.log$")
REQS = re.compile(r"finished in [\d.]+\w*, ([\d.]+) req/s")
ORDER = {"direct": 0, "sidecar": 1, "full": 2, "fullcold": 3, "telemetry": 4, "niorelay": 5, "nginx": 6, "envoy": 7,
         "litellm": 8}
LABEL = {"direct": "direct", "sidecar": "sidecar passthrough", "full": "sidecar full policy",
         "fullcold": "sidecar full policy, new context (analysis cache off)",
         "telemetry": "sidecar + telemetry", "niorelay": "SwiftNIO byte relay (floor)", "nginx": "nginx",
         "envoy": "Envoy", "litellm": "LiteLLM",
         "soak_sidecar": "sidecar passthrough, soak", "soak_full": "sidecar full policy, soak"}


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
    rps, cpu = math.nan, math.nan
    out = log.with_suffix(".out")
    if out.exists():
        m = REQS.search(out.read_text())
        if m:
            rps = float(m.group(1))
    proc = log.with_suffix(".proc")
    if proc.exists() and ok:
        p = json.loads(proc.read_text())
        cpu = (p["after"]["cpu_s"] - p["before"]["cpu_s"]) / (len(ok) + failed)
    return {"n": len(ok), "failed": failed, "p50": percentile(ok, 50), "p90": percentile(ok, 90),
            "p99": percentile(ok, 99), "rps": rps, "cpu_per_req_us": cpu * 1e6}


def nanmedian(xs):
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else math.nan


def summarize(run_dir: pathlib.Path) -> dict:
    """{(upstream, mode, size, conc): {target: {p50, p90, p99, rps, cpu_per_req_us, n, failed, rounds, p50_all,
    added_p50, added_p90, added_p99, rps_rel}}} with medians over rounds."""
    rounds: dict[tuple, list[dict]] = defaultdict(list)
    for log in sorted(run_dir.glob("*.log")):
        m = NAME.match(log.name)
        if m:
            rounds[(m["upstream"], m["mode"], m["size"], int(m["conc"]), m["target"])].append(read_round(log))
    cells: dict[tuple, dict] = defaultdict(dict)
    for (u, mo, si, c, t), rs in rounds.items():
        cells[(u, mo, si, c)][t] = {
            "rounds": len(rs), "n": sum(r["n"] for r in rs), "failed": sum(r["failed"] for r in rs),
            **{k: nanmedian(r[k] for r in rs) for k in ("p50", "p90", "p99", "rps", "cpu_per_req_us")},
            "p50_all": [r["p50"] for r in rs],
        }
    for cell in cells.values():
        d = cell.get("direct")
        for t, s in cell.items():
            for k in ("p50", "p90", "p99"):
                s["added_" + k] = s[k] - d[k] if d and t != "direct" else math.nan
            s["rps_rel"] = s["rps"] / d["rps"] if d and d["rps"] else math.nan
    return dict(cells)


def inside(run_dir: pathlib.Path) -> dict:
    """{(upstream, mode, size, conc): {target: {compression_ms, overhead_ms, records}}} from the request records a
    sidecar target reported after each measured run (`*.requests`: its latest 256, and `since`, its newest request
    before the run): per run the p50 of the records after `since` (all of them when `since` is not among them: more
    than 256 came after it) that were answered and are of the run's mode, then the median over rounds. `compression_ms`:
    the compressor's time in the sidecar (NaN when nothing was compressed); `overhead_ms`: the record's
    `timings_ms.overhead`, the sidecar's time upstream excluded, as it measures it."""
    per: dict[tuple, list[tuple[float, float, int]]] = defaultdict(list)
    for path in sorted(run_dir.glob("*.requests")):
        m = NAME.match(path.with_suffix(".log").name)
        if not m:
            continue
        try:
            saved = json.loads(path.read_text())
            records, since = saved["records"]["data"], saved.get("since") or None
        except (ValueError, KeyError, TypeError):
            continue
        ids = [r.get("request_id") for r in records]
        if since in ids:
            records = records[ids.index(since) + 1:]
        stream = m["mode"] == "stream"
        records = [r for r in records if r.get("stream") == stream and r.get("status") == 200]
        if not records:
            continue
        comp = sorted(r["compression"]["duration_ms"] for r in records if r.get("compression"))
        over = sorted(r["timings_ms"]["overhead"] for r in records if (r.get("timings_ms") or {}).get("overhead")
                      is not None)
        per[(m["upstream"], m["mode"], m["size"], int(m["conc"]), m["target"])].append(
            (percentile(comp, 50), percentile(over, 50), len(records)))
    out: dict[tuple, dict] = defaultdict(dict)
    for (u, mo, si, c, t), runs in per.items():
        out[(u, mo, si, c)][t] = {"compression_ms": nanmedian(r[0] for r in runs),
                                  "overhead_ms": nanmedian(r[1] for r in runs), "records": sum(r[2] for r in runs)}
    return dict(out)


def inside_lines(ins: dict) -> list[str]:
    lines = []
    for (u, mo, si, c), cell in sorted(ins.items()):
        for t, s in sorted(cell.items(), key=lambda kv: ORDER.get(kv[0], 9)):
            comp = "-" if math.isnan(s["compression_ms"]) else f"{s['compression_ms'] * 1000:,.0f}"
            over = "-" if math.isnan(s["overhead_ms"]) else f"{s['overhead_ms'] * 1000:,.0f}"
            lines.append(f"| {u} | {mo} | {si} | {c} | {LABEL.get(t, t)} | {comp} | {over} | {s['records']:,} |")
    if not lines:
        return []
    return ["", "The sidecars' own account (`/v1/optimizer/requests` after each run: that run's answered requests, "
            "at most its latest 256; p50 per run, median over rounds): the compressor's time, and the sidecar's overhead as it "
            "measures it (from the request's last byte to its dispatch upstream, plus its handling of the response; "
            "h2load's added latency also holds reading the request, the loopback hops and the event loop's "
            "scheduling).", "",
            "| upstream | mode | prompt | c | target | compression p50 us | sidecar overhead p50 us | records |",
            "|---|---|---|---:|---|---:|---:|---:|", *lines]


H2LOAD_REQUESTS = re.compile(r"requests: \d+ total, (\d+) started, \d+ done, (\d+) succeeded")


def accounting(run_dir: pathlib.Path) -> dict:
    """{(upstream, target): {recorded, dropped, started, done, complete}} for every sidecar whose savings ledger
    overhead.sh read (`savings-U-T.json`: each sidecar target after the load and the streaming requests, each soak
    sidecar after the soak): `started` / `done` add up h2load's requests of every run against it (its `runs`, else
    the measured runs `U-T-*.out` and warm-ups `U-T-*.warmup`) and the requests sent outside h2load (`checks`, all
    answered: the checks before the load, the streaming requests); `done` counts the requests answered with a 2xx
    (they certainly passed through the sidecar). Complete: no record dropped and done <= recorded <= started (a
    request h2load started but abandoned at the end of its run, or one that failed, may or may not have reached the
    sidecar). None (unknown) when a run has no h2load summary (killed by its timeout) or the ledger was still
    changing when read."""
    result = {}
    for path in sorted(run_dir.glob("savings-*.json")):
        d = json.loads(path.read_text())
        u, t = d["upstream"], d["target"]
        started = done = d["checks"]
        unread = 0
        runs = ([run_dir / name for name in d["runs"]] if d.get("runs") is not None
                else list(run_dir.glob(f"{u}-{t}-*.out")) + list(run_dir.glob(f"{u}-{t}-*.warmup")))
        for out in runs:
            m = H2LOAD_REQUESTS.search(out.read_text()) if out.exists() else None
            if m:
                started += int(m.group(1))
                done += int(m.group(2))
            else:
                unread += 1
        recorded, dropped = d["savings"]["total"]["requests"], d["savings"]["records_dropped"]
        complete = dropped == 0 and done <= recorded <= started
        if complete and (unread or not d.get("settled", True)):
            complete = None
        result[(u, t)] = {"recorded": recorded, "dropped": dropped, "started": started, "done": done,
                          "unread_runs": unread, "settled": d.get("settled", True), "complete": complete}
    return result


def accounting_lines(acc: dict) -> list[str]:
    verdict = {True: "complete", False: "INCOMPLETE", None: "unknown"}
    return [f"- {u} {LABEL.get(t, t)}: {a['recorded']:,} requests in the savings ledger; h2load had "
            f"{a['done']:,} answered (2xx) and {a['started']:,} started (warm-ups and the requests sent outside h2load included); "
            f"{a['dropped']:,} records dropped; **{verdict[a['complete']]}**"
            + (f" ({a['unread_runs']} runs without an h2load summary)" if a["unread_runs"] else "")
            + ("" if a["settled"] else " (the ledger was still changing when read)")
            for (u, t), a in sorted(acc.items())]


def fmt(x: float, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def signed(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:+,.0f}"


def table(cells: dict) -> list[str]:
    lines = ["| upstream | mode | prompt | c | target | p50 us | p90 us | p99 us | added p50 | added p90 | added p99 "
             "| req/s | vs direct | CPU us/req | requests (failed) |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(cells, key=lambda k: (k[0], k[1], k[2] != "small", k[3])):
        u, mo, si, c = key
        for t, s in sorted(cells[key].items(), key=lambda kv: ORDER.get(kv[0], 9)):
            d = t == "direct"
            lines.append(f"| {u} | {mo} | {si} | {c} | {LABEL.get(t, t)} | {fmt(s['p50'])} | {fmt(s['p90'])} | "
                         f"{fmt(s['p99'])} | {'-' if d else signed(s['added_p50'])} | "
                         f"{'-' if d else signed(s['added_p90'])} | {'-' if d else signed(s['added_p99'])} | "
                         f"{fmt(s['rps'], 0)} | {'-' if d else fmt(s['rps_rel'], 2)} | {fmt(s['cpu_per_req_us'], 0)} | "
                         f"{s['n']} ({s['failed']}) |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=pathlib.Path)
    ap.add_argument("--meta", action="append", default=[], help="KEY=VALUE lines for the report header")
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()

    cells = summarize(args.run_dir)
    if not cells:
        print(f"no h2load logs in {args.run_dir}", file=sys.stderr)
        return 1
    lines = ["# Proxy overhead benchmark", ""]
    for kv in args.meta:
        k, _, v = kv.partition("=")
        lines.append(f"- **{k}**: {v}")
    lines += ["", "Medians over rounds; added = target minus direct in the same cell (us); CPU = the target's "
              "processes' utime + stime per request (the upstream's for direct).", ""] + table(cells)
    ratios = []
    for (u, mo, si, c), cell in sorted(cells.items()):
        sc, ng = cell.get("sidecar"), cell.get("nginx")
        for t, name, note in (("sidecar", "sidecar", ""),
                              ("niorelay", "SwiftNIO byte relay", " (the floor of a SwiftNIO proxy)")):
            s = cell.get(t)
            if s and ng and ng["added_p50"] > 0:
                ratios.append(f"- {u} {mo} {si} c={c}: {name} added p50 {s['added_p50']:,.0f} us / nginx "
                              f"{ng['added_p50']:,.0f} us = **{s['added_p50'] / ng['added_p50']:.2f}x**{note}")
        tel = cell.get("telemetry")
        if sc and tel and sc["added_p50"] > 0:
            ratios.append(f"- {u} {mo} {si} c={c}: added p50 with telemetry {tel['added_p50']:,.0f} us vs without "
                          f"{sc['added_p50']:,.0f} us = **{signed((tel['added_p50'] / sc['added_p50'] - 1) * 100)}%**")
    if ratios:
        lines += ["", *ratios]
    lines += inside_lines(inside(args.run_dir))
    lines += ["", "Per-round p50 (us), in run order:"]
    for (u, mo, si, c), cell in sorted(cells.items()):
        for t, s in sorted(cell.items(), key=lambda kv: ORDER.get(kv[0], 9)):
            lines.append(f"- {u} {mo} {si} c={c} {t}: {', '.join(fmt(x) for x in s['p50_all'])}")
    acc = accounting(args.run_dir)
    if acc:
        lines += ["", "Accounting under load (each sidecar's `/v1/optimizer/savings` after the load and the streaming "
                  "requests, a soak sidecar's after the soak, its queue drained):",
                  *accounting_lines(acc)]
    failed = sum(s["failed"] for cell in cells.values() for s in cell.values())
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
