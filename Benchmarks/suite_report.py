#!/usr/bin/env python3
"""The benchmark suite's report: Markdown tables, PNG plots (matplotlib), summary.json and cells.csv.

    python Benchmarks/suite_report.py RUN_DIR --out DIR [--meta KEY=VALUE ...]

RUN_DIR is what Benchmarks/suite.sh wrote: load/ (Benchmarks/overhead.sh's raw data for both upstreams: h2load logs,
/proc samples, start-up times, streaming gaps, soak samples), *.jmh (micro benchmarks, ordo-one/benchmark's JMH
export), tokenizer.json (Benchmarks/tokenizer_vs_tiktoken.py), inputs/inputs.json. Only measured numbers are
reported; a target that is not met is marked NOT MET.
"""
import argparse
import csv
import glob
import json
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import overhead_report as orep  # noqa: E402

LABEL = orep.LABEL
ORDER = orep.ORDER
PROXIES = ["sidecar", "full", "nginx", "envoy", "litellm"]


def nan(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def f0(x, unit=""):
    return "n/a" if nan(x) else f"{x:,.0f}{unit}"


def f1(x, unit=""):
    return "n/a" if nan(x) else f"{x:,.1f}{unit}"


def f2(x, unit=""):
    return "n/a" if nan(x) else f"{x:,.2f}{unit}"


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_jsonl(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def verdict(ok):
    return "met" if ok else "**NOT MET**"


# ---- micro benchmarks (JMH export of ordo-one/benchmark) ------------------------------------------------------------

def read_micro(run):
    """{benchmark name: {metric name: {p50, p90, p99, unit}}} from the JMH export (a JSON list, one record per
    benchmark: throughput as the primary metric, "Time (wall clock)", "Malloc (total)", ... as secondary ones)."""
    out = {}
    for path in glob.glob(os.path.join(run, "*.jmh*")):
        for rec in read_json(path, []):
            name = rec["benchmark"].rsplit("HotPath.", 1)[-1].replace("_", " ")
            metrics = dict(rec.get("secondaryMetrics", {}), **{"Throughput": rec["primaryMetric"]})
            out[name] = {k: {"p50": v["scorePercentiles"].get("50.0"), "p90": v["scorePercentiles"].get("90.0"),
                             "p99": v["scorePercentiles"].get("99.0"), "unit": v.get("scoreUnit", ""),
                             "iterations": rec.get("measurementIterations")} for k, v in metrics.items()}
    return out


def metric(micro, name, key, want="p50"):
    for k, v in micro.get(name, {}).items():
        if key.lower() in k.lower():
            return v.get(want), v.get("unit", "")
    return math.nan, ""


def ns(value, unit):
    """A time value of the JMH export in nanoseconds."""
    return value * {"ns": 1, "us": 1e3, "\u03bcs": 1e3, "ms": 1e6, "s": 1e9}.get(unit.strip(), 1)


# ---- plots -------------------------------------------------------------------------------------------------------

def finish(plt, fig, ax, out, name, made, caption, grid=True):
    ax.legend(fontsize=8)
    if grid:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)
    made.append((name, caption))


def plots(out, cells, stream, soak, starts):
    try:
        import matplotlib
    except ImportError:  # the suite's venv has it; a report from another interpreter just has no plots
        print("matplotlib not installed: no plots", file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    colors = {"sidecar": "#1f77b4", "full": "#17becf", "nginx": "#2ca02c", "envoy": "#ff7f0e", "litellm": "#d62728",
              "telemetry": "#9467bd"}

    # 1. added p50 per target, c=1, by upstream / mode / prompt (log scale: LiteLLM is orders of magnitude above)
    keys = sorted([k for k in cells if k[3] == 1], key=lambda k: (k[0], k[1], k[2] != "small"))
    if keys:
        fig, ax = plt.subplots(figsize=(11, 4.8))
        width = 0.8 / len(PROXIES)
        for i, t in enumerate(PROXIES):
            ys = [max(cells[k].get(t, {}).get("added_p50", math.nan), 1) for k in keys]
            ax.bar([x + i * width for x in range(len(keys))], ys, width, label=LABEL[t], color=colors[t])
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(keys))])
        ax.set_xticklabels(["%s\n%s %s" % (k[0], k[1], k[2]) for k in keys])
        ax.set_yscale("log")
        ax.set_ylabel("added p50 vs direct (us, log; values <= 1 drawn at 1)")
        ax.set_title("Added latency at concurrency 1 (median over rounds)")
        finish(plt, fig, ax, out, "added-p50-c1.png", made, "Added p50 at concurrency 1, per target and cell", False)

    # 2. throughput relative to direct by concurrency, plain small, per upstream
    for up in sorted({k[0] for k in cells}):
        ks = sorted([k for k in cells if k[0] == up and k[1] == "plain" and k[2] == "small"], key=lambda k: k[3])
        if len(ks) < 1:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for t in PROXIES:
            ys = [cells[k].get(t, {}).get("rps_rel", math.nan) for k in ks]
            if all(nan(y) for y in ys):
                continue
            ax.plot([k[3] for k in ks], ys, marker="o", label=LABEL[t], color=colors[t])
        ax.set_xscale("log", base=2)
        ax.set_xticks([k[3] for k in ks])
        ax.set_xticklabels([str(k[3]) for k in ks])
        ax.set_xlabel("concurrency")
        ax.set_ylabel("req/s relative to direct")
        ax.set_title("Throughput, %s upstream, plain ~200-token requests" % up)
        finish(plt, fig, ax, out, "throughput-%s.png" % up, made, "Throughput relative to direct, %s upstream" % up)

    # 3. soak RSS over time
    if soak:
        fig, ax = plt.subplots(figsize=(7, 4))
        for t in sorted({s["target"] for s in soak}):
            pts = [(s["t"], s["sample"]["rss_kb"] / 1024) for s in soak if s["target"] == t and not s.get("idle_after")]
            base = t.replace("soak_", "")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=LABEL.get(base, t), color=colors.get(base))
        ax.set_xlabel("seconds into the soak")
        ax.set_ylabel("VmRSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title("Sidecar memory under a steady load")
        finish(plt, fig, ax, out, "soak-rss.png", made, "Resident memory during the soak")

    # 4. streaming: inter-event gaps
    if stream:
        fig, ax = plt.subplots(figsize=(7, 4))
        names = [t for t in ["direct"] + PROXIES if t in stream]
        for i, t in enumerate(names):
            s = stream[t]
            ax.errorbar([i], [s["gap_ms_p50"]], yerr=[[s["gap_ms_p50"] - s["gap_ms_p10"]], [s["gap_ms_p90"] - s["gap_ms_p50"]]],
                        fmt="o", capsize=6, color=colors.get(t, "black"))
        ax.axhline(list(stream.values())[0]["expected_gap_ms"], ls="--", color="grey", lw=1, label="mock's pacing")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([LABEL.get(t, t) for t in names], rotation=15, fontsize=8)
        ax.set_ylabel("gap between SSE events at the client (ms)")
        ax.set_ylim(bottom=0)
        ax.set_title("Streaming: inter-event gaps, p10 / p50 / p90")
        finish(plt, fig, ax, out, "stream-gaps.png", made,
               "Inter-event gaps of a paced stream, direct and through each proxy", False)
    return made


# ---- report ------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--meta", action="append", default=[])
    args = ap.parse_args()
    run, out = args.run, args.out
    os.makedirs(out, exist_ok=True)
    load = os.path.join(run, "load")
    load_dir = __import__("pathlib").Path(load)
    cells = orep.summarize(load_dir)
    procs = {}
    for p in glob.glob(os.path.join(load, "proc-*-*.json")):
        base = os.path.basename(p)[5:-5]
        up, _, rest = base.partition("-")
        d = read_json(p, {})
        if rest.endswith("-end"):
            procs.setdefault((up, rest[:-4]), {})["end"] = d
        else:
            procs.setdefault((up, rest), {}).update(d)
    starts = read_jsonl(os.path.join(load, "starts.jsonl"))
    stream = read_json(os.path.join(load, "stream-gaps.json"), {})
    soak = read_jsonl(os.path.join(load, "soak.jsonl"))
    micro = read_micro(run)
    tok = read_json(os.path.join(run, "tokenizer.json"), [])
    inputs = read_json(os.path.join(run, "inputs", "inputs.json"), {})

    md = ["# Benchmark suite: the sidecar against direct, nginx, Envoy and LiteLLM", ""]
    for kv in args.meta:
        k, _, v = kv.partition("=")
        md.append(f"- **{k}**: {v}")
    md += ["- **note**: the machine is a shared 2-core VM on a noisy host; other engineers' builds may have been running "
           "during this run (see the load average above), which inflates and scatters absolute numbers. Targets are "
           "interleaved and medians taken so that drift hits every target alike.", ""]

    # targets ---------------------------------------------------------------------------------------------------
    checks = []

    def cell(up, mode, size, c):
        return cells.get((up, mode, size, c), {})

    # 1. passthrough vs nginx at c=1
    parts, oks = [], []
    for up in ("mock", "static"):
        cl = cell(up, "plain", "small", 1)
        if "sidecar" in cl and "nginx" in cl:
            a, n = cl["sidecar"]["added_p50"], cl["nginx"]["added_p50"]
            # nginx at or below direct: the cell's noise is larger than nginx's cost, no ratio (and not met).
            ok = n > 0 and a <= 1.5 * n
            oks.append(ok)
            floor = f"; SwiftNIO byte relay {f0(cl['niorelay']['added_p50'])} us" if "niorelay" in cl else ""
            ratio = f"= {f2(a / n)}x" if n > 0 else "(no ratio: nginx's added p50 is not above zero, below this cell's noise)"
            parts.append(f"{up}: {f0(a)} us vs nginx {f0(n)} us {ratio}{floor}")
    checks.append(("Passthrough added p50 at concurrency 1 <= 1.5x nginx's (plain ~200-token request; both upstreams)",
                   "; ".join(parts) or "not measured", bool(oks) and all(oks)))
    # 2. full policy + compression on the 8k prompt
    #    The benchmark sends one prompt again and again: `full` finds its context in the analysis cache and only
    #    ranks it against the question; `fullcold` (cache off) analyses every context anew. Each is its own check.
    cl = cell("mock", "plain", "large", 1)
    a = cl.get("full", {}).get("added_p50", math.nan)
    checks.append(("Full policy with compression, ~8k-token prompt: added p50 <= 1 ms (concurrency 1), a context "
                   "seen before (the benchmark's repeated prompt; analysis cached)",
                   f"{f0(a)} us" + (f" (passthrough on the same prompt: {f0(cl['sidecar']['added_p50'])} us)"
                                    if "sidecar" in cl else ""), not nan(a) and a <= 1000))
    if "fullcold" in cl:
        a = cl["fullcold"]["added_p50"]
        checks.append(("Full policy with compression, ~8k-token prompt: added p50 <= 1 ms (concurrency 1), every "
                       "context new (analysis cache off)", f"{f0(a)} us", not nan(a) and a <= 1000))
    # 3. throughput at c=16 >= Envoy's
    parts, oks = [], []
    for up in ("mock", "static"):
        cl = cell(up, "plain", "small", 16)
        if "sidecar" in cl and "envoy" in cl:
            s, e = cl["sidecar"]["rps"], cl["envoy"]["rps"]
            oks.append(s >= e)
            parts.append(f"{up}: {f0(s)} req/s vs Envoy {f0(e)} req/s")
    checks.append(("Passthrough throughput at concurrency 16 >= Envoy's (plain ~200-token request; both upstreams)",
                   "; ".join(parts) or "not measured", bool(oks) and all(oks)))
    # 4. 20x lower added latency than LiteLLM
    parts, oks = [], []
    for up in ("mock", "static"):
        cl = cell(up, "plain", "small", 1)
        if "sidecar" in cl and "litellm" in cl:
            s, l = cl["sidecar"]["added_p50"], cl["litellm"]["added_p50"]
            ratio = l / s if s > 0 else math.inf
            oks.append(ratio >= 20)
            parts.append(f"{up}: LiteLLM {f0(l)} us / sidecar {f0(s)} us = {f1(ratio)}x")
    checks.append(("Added latency >= 20x lower than LiteLLM's (p50, concurrency 1, plain ~200-token request)",
                   "; ".join(parts) or "not measured", bool(oks) and all(oks)))
    # 5. idle RSS <= 30 MB and flat over the soak (idle: 1 s after ready, every passthrough sidecar started)
    idles = [procs.get((up, t), {}).get("idle", {}).get("rss_kb", math.nan) / 1024
             for up in ("mock", "static") for t in ("sidecar", "soak_sidecar")]
    idles = [x for x in idles if not nan(x)]
    idle = max(idles) if idles else math.nan
    soak_txt, flat_ok = [], bool(soak)
    soak_len = max((s["t"] for s in soak if not s.get("idle_after")), default=0)
    soak_stats = {}
    for t in sorted({s["target"] for s in soak}):
        pts = [s for s in soak if s["target"] == t and not s.get("idle_after")]
        ref = next((s for s in pts if s["t"] >= 0.1 * soak_len), pts[0])
        last = pts[-1]
        after = next((s for s in soak if s["target"] == t and s.get("idle_after")), None)
        growth = (last["sample"]["rss_kb"] - ref["sample"]["rss_kb"]) / 1024
        allowed = max(2.0, 0.05 * ref["sample"]["rss_kb"] / 1024)
        ok = growth <= allowed
        flat_ok = flat_ok and ok
        soak_stats[t] = {"ref_t": ref["t"], "ref_rss_mb": ref["sample"]["rss_kb"] / 1024,
                         "end_rss_mb": last["sample"]["rss_kb"] / 1024, "growth_mb": growth, "allowed_mb": allowed,
                         "idle_after_mb": after["sample"]["rss_kb"] / 1024 if after else math.nan,
                         "peak_mb": last["sample"]["hwm_kb"] / 1024, "flat": ok}
        soak_txt.append(f"{LABEL.get(t.replace('soak_', ''), t)}: {f1(soak_stats[t]['ref_rss_mb'])} MB at {ref['t']} s -> "
                        f"{f1(soak_stats[t]['end_rss_mb'])} MB at {last['t']} s ({growth:+.1f} MB, allowed "
                        f"+{allowed:.1f}), {f1(soak_stats[t]['idle_after_mb'])} MB idle after")
    checks.append((f"Idle RSS <= 30 MB and flat over a {soak_len}-second soak (flat: growth from 10% into the soak to "
                   f"its end <= max(2 MB, 5%))",
                   f"passthrough idle RSS 1 s after ready: {', '.join(f1(x) for x in idles)} MB (max {f1(idle)}); " + "; ".join(soak_txt or ["no soak"]),
                   not nan(idle) and idle <= 30 and flat_ok))
    # 6. ready within 150 ms
    parts, oks = [], []
    for t in ("sidecar", "full"):
        ms = [s["ready_ms"] for s in starts if s["target"] == t]
        ms += [d["ready_ms"] for (up, tt), d in procs.items() if tt == t and "ready_ms" in d]
        if ms:
            oks.append(max(ms) <= 150)
            parts.append(f"{LABEL[t]}: median {f0(statistics.median(ms))} ms, max {f0(max(ms))} ms over {len(ms)} starts")
    checks.append(("Ready within 150 ms of start (exec to the first 200 from /ready, every start)",
                   "; ".join(parts) or "not measured", bool(oks) and all(oks)))

    # 7. (not one of the targets; the brief's "nothing is lost") every request in the ledger under load
    acc = orep.accounting(load_dir)
    if acc:
        dropped = sum(a["dropped"] for a in acc.values())
        checks.append(("(A check, not one of the issue's targets) Every request the sidecar proxied under load is in "
                       "its savings ledger, no accounting record dropped (every sidecar target, every cell, both "
                       "upstreams, the streaming requests, the soak)",
                       f"{sum(a['recorded'] for a in acc.values()):,} requests recorded by {len(acc)} sidecar runs, "
                       f"{dropped:,} dropped" + "".join(f"; {u} {t}: INCOMPLETE ({a['recorded']:,} recorded, "
                                                        f"{a['done']:,}-{a['started']:,} sent, {a['dropped']:,} dropped)"
                                                        for (u, t), a in sorted(acc.items()) if a["complete"] is False)
                       + "".join(f"; {u} {t}: unknown" for (u, t), a in sorted(acc.items()) if a["complete"] is None),
                       all(a["complete"] is True for a in acc.values())))

    md += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    md += [f"| {a} | {b} | {verdict(c)} |" for a, b, c in checks]

    # per-target summary -------------------------------------------------------------------------------------------
    md += ["", "## Per target (mock upstream, plain ~200-token requests)", "",
           "Added latency = target minus direct in the same cell, medians over rounds (us). Throughput relative to "
           "direct at the same concurrency. CPU per request: utime + stime of the target's processes over the "
           "measured requests (concurrency 16). RSS: VmRSS 1 s after ready (idle) and the sum of the processes' "
           "VmHWM at the end of the load (peak). Ready: exec to the first 200 from the health URL.", "",
           "| target | added p50 / p90 / p99 c=1 | c=16 | c=64 | req/s vs direct c=1 / 16 / 64 | CPU us/req (c=16) "
           "| RSS idle MB | RSS peak MB | ready ms (median) |",
           "|---|---|---|---|---|---:|---:|---:|---:|"]
    concs = sorted({k[3] for k in cells})
    for t in ["direct"] + PROXIES:
        if not any(t in cells.get(("mock", "plain", "small", c), {}) for c in concs):
            continue
        lat = []
        for c in (1, 16, 64):
            s = cells.get(("mock", "plain", "small", c), {}).get(t)
            lat.append("-" if not s or t == "direct" else
                       f"{f0(s['added_p50'])} / {f0(s['added_p90'])} / {f0(s['added_p99'])}")
        rel = " / ".join("-" if t == "direct" else f2(cells.get(("mock", "plain", "small", c), {}).get(t, {}).get("rps_rel"))
                         for c in concs)
        cpu = cells.get(("mock", "plain", "small", 16), {}).get(t, {}).get("cpu_per_req_us", math.nan)
        pkey = ("mock", "upstream" if t == "direct" else t)
        p = procs.get(pkey, {})
        idle_mb = p.get("idle", {}).get("rss_kb", math.nan) / 1024
        peak_mb = p.get("end", {}).get("hwm_kb", math.nan) / 1024
        rd = [s["ready_ms"] for s in starts if s["target"] == t] + [d["ready_ms"] for (u, tt), d in procs.items()
                                                                   if tt == (pkey[1]) and "ready_ms" in d]
        md.append(f"| {LABEL[t]} | {lat[0]} | {lat[1]} | {lat[2]} | {rel} | {f0(cpu)} | {f1(idle_mb)} | {f1(peak_mb)} | "
                  f"{f0(statistics.median(rd)) if rd else 'n/a'} |")

    # streaming ------------------------------------------------------------------------------------------------------
    if stream:
        d = stream.get("direct", {})
        md += ["", "## Streaming", "",
               f"The mock streams one SSE event every {f0(d.get('expected_gap_ms'))} ms (20 completion tokens); "
               f"{d.get('requests', '?')} requests per target, one connection each, timed by a plain recv() loop "
               "(Benchmarks/stream_gaps.py). \"Batched\" = share of inter-event gaps under 2 ms (events that "
               "arrived together). Added time to first chunk is also in the load tables (streamed cells, p50 of the "
               "whole stream).", "",
               "| target | events | first event ms | added first event ms | gap p10 / p50 / p90 ms | batched |",
               "|---|---:|---:|---:|---|---:|"]
        for t in ["direct"] + PROXIES:
            if t not in stream:
                continue
            s = stream[t]
            md.append(f"| {LABEL[t]} | {s['events']:.0f} | {f2(s['ttfc_ms_p50'])} | "
                      f"{'-' if t == 'direct' else f2(s['ttfc_ms_p50'] - d.get('ttfc_ms_p50', math.nan))} | "
                      f"{f1(s['gap_ms_p10'])} / {f1(s['gap_ms_p50'])} / {f1(s['gap_ms_p90'])} | "
                      f"{s['batched_share'] * 100:.0f}% |")

    # all cells ------------------------------------------------------------------------------------------------------
    md += ["", "## All load cells", "",
           "Upstream `mock`: `auto-optimizer mock-upstream` with a fixed latency (see settings); `static`: nginx "
           "returning one fixed completion. Prompt `small` ~200 tokens, `large` ~8k tokens "
           f"({inputs.get('body-large.json', {}).get('content_tokens', '?')} o200k tokens of message content).", ""]
    md += orep.table(cells)
    md += orep.inside_lines(orep.inside(load_dir))

    # micro ----------------------------------------------------------------------------------------------------------
    if micro or tok:
        md += ["", "## Micro benchmarks", "",
               "ordo-one/benchmark (Benchmarks/Micro, release build, MallocInterposer malloc counts), p50 over the "
               "iterations; derived columns divide by the unit of work.", "",
               "| benchmark | iterations | wall p50 | wall p99 | derived (p50) | mallocs p50 |", "|---|---:|---:|---:|---|---:|"]
        rag_tokens = inputs.get("rag-8k.json", {}).get("content_tokens")
        for name in sorted(micro):
            wall, unit = metric(micro, name, "wall clock")
            mallocs, _ = metric(micro, name, "malloc (total)")
            w = ns(wall, unit) if not nan(wall) else math.nan
            derived = ""
            if "1KB" in name and "Wire" in name:
                derived = f"{f0(w / 1.054)} ns per KB"
            elif "100KB" in name:
                derived = f"{f0(w / 102.76)} ns per KB"
            elif "1MB" in name:
                derived = f"{f1(w / 1e3)} us per MB ({f0(1e3 / (w / 1e6)) if w else 'n/a'} MB/s)"
            elif "8k-token" in name and rag_tokens:
                derived = f"{f1(w / 1e3 / (rag_tokens / 1000))} us per 1k tokens"
            w99 = metric(micro, name, "wall clock", "p99")[0]
            iters = micro[name].get("Throughput", {}).get("iterations")
            md.append(f"| {name} | {iters} | {f1(w / 1e3)} us | {f1(ns(w99, unit) / 1e3) if not nan(w99) else 'n/a'} us | "
                      f"{derived} | {f0(mallocs)} |")
        reqs = {t: metric(micro, f"Request 1KB in-process ({t})", "malloc (total)")[0] for t in ("direct", "passthrough", "full policy")}
        if not nan(reqs["direct"]):
            md += ["", "Allocations per proxied request (in-process mock, sidecar and client; the proxied count minus "
                   f"the direct count): passthrough {f0(reqs['passthrough'] - reqs['direct'])}, full policy without "
                   f"telemetry {f0(reqs['full policy'] - reqs['direct'])} (direct alone: {f0(reqs['direct'])})."]
        if tok:
            md += ["", "Tokenizer next to tiktoken, same texts, same run (Benchmarks/tokenizer_vs_tiktoken.py, single "
                   "thread, best of 3):", "", "| encoding | text | tokens | tiktoken MB/s | swift MB/s | ratio |",
                   "|---|---|---:|---:|---:|---:|"]
            for r in tok:
                ratio = r["swift_mb_s"] / r["tiktoken_mb_s"] if r.get("tiktoken_mb_s") else math.nan
                md.append(f"| {r['encoding']} | {r['text']} | {r['tokens']:,} | "
                          f"{f1(r['tiktoken_mb_s']) if r.get('tiktoken_mb_s') else 'failed: ' + str(r.get('tiktoken_failure'))[:40]} | "
                          f"{f1(r['swift_mb_s'])} | {f1(ratio, 'x')} |")

    made = plots(out, cells, stream, soak, starts)
    if made:
        md += ["", "## Plots", ""] + [f"![{t}]({n})" for n, t in made]
    if acc:
        md += ["", "## Accounting under load", "",
               "Each sidecar's `/v1/optimizer/savings` read after its load, once the accounting queue had drained, "
               "against the requests h2load started and completed (measured runs, warm-ups, the checks before and "
               "the streaming requests; for a soak sidecar, its soak runs):",
               "", *orep.accounting_lines(acc)]
    collector = read_json(os.path.join(load, "collector-mock.json"))
    if collector:
        md += ["", f"The OTLP sink received from the full-policy sidecar (mock phase): {json.dumps(collector)}."]
    # exact commands and configurations of this run (ports were picked free at run time)
    cmds = []
    for up in ("mock", "static"):
        path = os.path.join(load, f"commands-{up}.txt")
        if os.path.exists(path):
            with open(path) as f:
                cmds += [f"# upstream {up}"] + [line.rstrip() for line in f if line.strip()]
    if micro or tok:
        cmds += ["# micro benchmarks and the tokenizer next to tiktoken (INPUTS: bench_inputs.py's output)",
                 "cd Benchmarks/Micro && AO_MICRO_INPUTS=INPUTS AO_MICRO_SECONDS=N swift package "
                 "--allow-writing-to-directory RUN benchmark --target HotPath --no-progress --format jmh --path RUN",
                 "python Benchmarks/tokenizer_vs_tiktoken.py .build/release/tokbench Sources/Tokenizer/Resources "
                 "--english fixtures/qa/nq-open-oracle.jsonl.gz --rounds 3 --json tokenizer.json"]
    if cmds:
        md += ["", "## Exact commands", "", "As run by Benchmarks/overhead.sh (ports picked free at run time; the "
               "configuration files are copied to `configs/`):", "", "```", *cmds, "```"]
    cfg_dir = os.path.join(out, "configs")
    for src, name in [("policy-full.yaml", "policy-full.yaml"), ("envoy.yaml", "envoy.yaml"),
                      ("litellm.yaml", "litellm.yaml"), ("nginx/nginx.conf", "nginx-reverse-proxy.conf"),
                      ("static/nginx.conf", "nginx-static-upstream.conf")]:
        if os.path.exists(os.path.join(load, src)):
            os.makedirs(cfg_dir, exist_ok=True)
            with open(os.path.join(load, src)) as f, open(os.path.join(cfg_dir, name), "w") as g:
                g.write(f.read())
    md += ["", "Raw per-round data: `cells.csv`; everything above in `summary.json`."]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    with open(os.path.join(out, "cells.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["upstream", "mode", "prompt", "concurrency", "target", "rounds", "requests", "failed", "p50_us",
                    "p90_us", "p99_us", "added_p50_us", "added_p90_us", "added_p99_us", "req_s", "req_s_vs_direct",
                    "cpu_us_per_req", "p50_per_round_us"])
        for (u, mo, si, c), cl in sorted(cells.items()):
            for t, s in sorted(cl.items(), key=lambda kv: ORDER.get(kv[0], 9)):
                w.writerow([u, mo, si, c, t, s["rounds"], s["n"], s["failed"]] +
                           [round(s[k], 1) if not nan(s[k]) else "" for k in
                            ("p50", "p90", "p99", "added_p50", "added_p90", "added_p99", "rps", "rps_rel",
                             "cpu_per_req_us")] + [" ".join(str(int(x)) for x in s["p50_all"])])
    summary = {"meta": dict(kv.partition("=")[::2] for kv in args.meta),
               "targets": [{"target": a, "measured": b, "met": c} for a, b, c in checks],
               "processes": {f"{u}/{t}": d for (u, t), d in procs.items()}, "starts": starts, "stream": stream,
               "soak": soak_stats, "accounting": {f"{u}/{t}": a for (u, t), a in acc.items()}, "micro": micro,
               "tokenizer": tok, "inputs": inputs}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=lambda x: None)
    print("\n".join(f"{verdict(c):>12}  {a}: {b}" for a, b, c in checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
