"""Smoke test of the benchmark suite's report (Benchmarks/overhead_report.py, Benchmarks/suite_report.py) on a small
synthetic run directory: cells, added latency, CPU per request, and the met / NOT MET marks. No peers, no binary;
the suite itself (Benchmarks/suite.sh, ~30 minutes) is not part of the test run."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def write_cell(load: pathlib.Path, upstream, target, mode, size, conc, durations_us, rps, cpu_s):
    base = load / f"{upstream}-{target}-{mode}-{size}-c{conc}-r1"
    base.with_suffix(".log").write_text("".join(f"1700000000000000\t200\t{d}\n" for d in durations_us))
    n = len(durations_us)
    base.with_suffix(".out").write_text(f"finished in 2.00s, {rps:.2f} req/s, 1.00MB/s\nrequests: {n} total, "
                                        f"{n + 1} started, {n} done, {n} succeeded, 0 failed, 0 errored, 0 timeout\n")
    sample = {"cpu_s": 0.0, "rss_kb": 1000, "hwm_kb": 1000, "procs": 1}
    base.with_suffix(".proc").write_text(json.dumps({"before": sample, "after": dict(sample, cpu_s=cpu_s)}))


def test_report_marks_targets(tmp_path):
    load = tmp_path / "load"
    load.mkdir()
    # c=1: direct 100 us, sidecar +100, nginx +80 (1.25x: met), envoy +300, LiteLLM +30000 (300x: met)
    for t, d in {"direct": 100, "sidecar": 200, "nginx": 180, "envoy": 400, "litellm": 30100, "full": 250}.items():
        write_cell(load, "mock", t, "plain", "small", 1, [d] * 100, 1e6 / d, 0.01)
        write_cell(load, "mock", t, "plain", "large", 1, [d + 500 if t == "full" else d] * 100, 1e6 / d, 0.01)
    # the full policy with its analysis cache off: +2,150 us on the large prompt (NOT MET); cached: +650 us (met)
    write_cell(load, "mock", "fullcold", "plain", "large", 1, [2250] * 100, 1e6 / 2250, 0.01)
    # static upstream, c=1: sidecar +90, nginx +70 (1.29x: met), the SwiftNIO relay floor +60
    for t, d in {"direct": 100, "sidecar": 190, "nginx": 170, "niorelay": 160}.items():
        write_cell(load, "static", t, "plain", "small", 1, [d] * 100, 1e6 / d, 0.01)
    # c=16: the sidecar below Envoy's throughput (NOT MET)
    for t, rps in {"direct": 9000, "sidecar": 3000, "envoy": 3500}.items():
        write_cell(load, "mock", t, "plain", "small", 16, [1000] * 100, rps, 0.02)
    (load / "proc-mock-sidecar.json").write_text(json.dumps(
        {"target": "sidecar", "upstream": "mock", "ready_ms": 60.0, "idle": {"cpu_s": 0, "rss_kb": 20000, "hwm_kb": 20000, "procs": 1}}))
    (load / "starts.jsonl").write_text('{"target":"sidecar","ready_ms":70.0}\n')
    soak = [{"t": t, "target": "soak_sidecar", "sample": {"cpu_s": 1, "rss_kb": 20000 + t, "hwm_kb": 21000, "procs": 1}}
            for t in range(0, 610, 10)]
    (load / "soak.jsonl").write_text("".join(json.dumps(s) + "\n" for s in soak))
    # the savings ledgers read after the load: the passthrough sidecar has every request (2 checks, 3 runs of 100
    # done and 101 started, a warm-up of 100), the full-policy one dropped 3 records (2 checks + 2 x 100 done)
    def savings(target, requests, dropped, checks=2, runs=None):
        (load / f"savings-mock-{target}.json").write_text(json.dumps(
            {"upstream": "mock", "target": target, "checks": checks, "runs": runs,
             "savings": {"total": {"requests": requests}, "records_dropped": dropped}}))
    savings("sidecar", 402, 0)
    (load / "mock-sidecar-plain-small-c1-r1.warmup").write_text(
        "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout\n")
    savings("full", 199, 3)
    # the soak sidecars' ledgers, read after the soak against their own h2load runs (named soak-T-*.out): the
    # passthrough one has every request (250 + 249 answered, 502 started); the full one's second run has no summary
    # (unknown)
    (load / "soak-soak_sidecar-plain.out").write_text(
        "requests: 250 total, 251 started, 250 done, 250 succeeded, 0 failed, 0 errored, 0 timeout\n")
    (load / "soak-soak_sidecar-stream.out").write_text(
        "requests: 250 total, 251 started, 250 done, 249 succeeded, 1 failed, 0 errored, 0 timeout\n")
    savings("soak_sidecar", 500, 0, checks=0, runs=["soak-soak_sidecar-plain.out", "soak-soak_sidecar-stream.out"])
    savings("soak_full", 250, 0, checks=0, runs=["soak-soak_sidecar-plain.out", "soak-soak_full-large.out"])
    # the sidecars' own records after a run: the full-policy one compressed this run's requests in 0.4-0.6 ms; the
    # records up to `since` (an earlier cell's, a warm-up's), a streamed request and a failed one are left out
    def record(rid, compression_ms, overhead_ms, stream=False, status=200):
        return {"request_id": rid, "stream": stream, "status": status,
                "compression": None if compression_ms is None else {"duration_ms": compression_ms},
                "timings_ms": {"overhead": overhead_ms}}
    earlier = [record(f"e{i}", 0.01, 0.05) for i in range(40)]
    records = earlier + [record(f"r{i}", 0.4 + i / 1000, 0.5 + i / 1000) for i in range(201)]
    records += [record("s", 9.0, 9.0, stream=True), record("f", 9.0, 9.0, status=502)]
    (load / "mock-full-plain-large-c1-r1.requests").write_text(json.dumps(
        {"since": "e39", "records": {"object": "list", "data": records}}))
    # more than 256 requests since the last one before the run: every record in the window is this run's
    (load / "mock-sidecar-plain-large-c1-r1.requests").write_text(json.dumps(
        {"since": "gone", "records": {"object": "list", "data": [record(f"p{i}", None, 0.2) for i in range(10)]}}))
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(ROOT / "Benchmarks" / "suite_report.py"), str(tmp_path), "--out", str(out),
                           "--meta", "date=test"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    met = {t["target"].split(" ")[0] + " " + t["target"].split(" ")[1]: t["met"] for t in summary["targets"]}
    full = [(t["measured"], t["met"]) for t in summary["targets"] if t["target"].startswith("Full policy")]
    assert met["Passthrough added"] is True            # 100 us vs nginx 80 us = 1.25x
    assert full == [("650 us (passthrough on the same prompt: 100 us)", True),  # context seen before
                    ("2,150 us", False)]                                        # every context new
    assert met["Passthrough throughput"] is False      # 3,000 < 3,500 req/s
    assert met["Added latency"] is True                # 30,000 / 100 = 300x
    assert met["Idle RSS"] is True                     # 19.5 MB, +0.6 KB over the soak
    assert met["Ready within"] is True                 # 60 and 70 ms
    assert met["(A check,"] is False                   # the full-policy sidecar dropped 3 records
    assert summary["accounting"]["mock/sidecar"] == {"recorded": 402, "dropped": 0, "started": 405, "done": 402,
                                                     "unread_runs": 0, "settled": True, "complete": True}
    assert summary["accounting"]["mock/full"]["complete"] is False
    assert summary["accounting"]["mock/soak_sidecar"] == {"recorded": 500, "dropped": 0, "started": 502, "done": 499,
                                                          "unread_runs": 0, "settled": True, "complete": True}
    assert summary["accounting"]["mock/soak_full"]["unread_runs"] == 1
    assert summary["accounting"]["mock/soak_full"]["complete"] is None
    text = (out / "report.md").read_text()
    assert "**NOT MET**" in text and "| sidecar passthrough | 100 / 100 / 100 |" in text
    assert "static: 90 us vs nginx 70 us = 1.29x; SwiftNIO byte relay 60 us" in text
    assert "SwiftNIO byte relay (floor)" in text  # its row in the per-cell tables
    assert "mock full: INCOMPLETE (199 recorded, 202-204 sent, 3 dropped)" in text
    assert "mock soak_full: unknown" in text
    assert "- mock sidecar passthrough, soak: 500 requests in the savings ledger; h2load had 499 answered" in text
    assert "| mock | plain | large | 1 | sidecar passthrough | - | 200 | 10 |" in text
    assert "| mock | plain | large | 1 | sidecar full policy | 500 | 600 | 201 |" in text
    cells = (out / "cells.csv").read_text().splitlines()
    assert any(line.startswith("mock,plain,small,1,sidecar,1,100,0,200.0,200.0,200.0,100.0,") for line in cells)


def test_report_gives_no_ratio_when_nginx_is_below_direct(tmp_path):
    """A cell whose noise is larger than nginx's cost (nginx's added p50 below zero) has no ratio: the report says so
    instead of dividing by it, and the target is not marked met on it."""
    load = tmp_path / "load"
    load.mkdir()
    for t, d in {"direct": 2351, "sidecar": 2371, "nginx": 2336}.items():
        write_cell(load, "mock", t, "plain", "small", 1, [d] * 100, 1e6 / d, 0.01)
    for t, d in {"direct": 103, "sidecar": 163, "nginx": 146}.items():
        write_cell(load, "static", t, "plain", "small", 1, [d] * 100, 1e6 / d, 0.01)
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(ROOT / "Benchmarks" / "suite_report.py"), str(tmp_path), "--out", str(out),
                           "--meta", "date=test"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    check = next(t for t in summary["targets"] if t["target"].startswith("Passthrough added"))
    assert check["measured"] == ("mock: 20 us vs nginx -15 us (no ratio: nginx's added p50 is not above zero, below "
                                 "this cell's noise); static: 60 us vs nginx 43 us = 1.40x")
    assert check["met"] is False
