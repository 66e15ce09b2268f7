#!/usr/bin/env bash
# Latency/throughput overhead of the sidecar vs calling the upstream directly, with nginx as a plain reverse
# proxy for reference, all measured in the same run against the mock upstream (release build).
#
#   Benchmarks/overhead.sh                       # 5 rounds x 5 s, concurrency 1 and 16
#   BENCH_ROUNDS=3 BENCH_DURATION=3 Benchmarks/overhead.sh
#
# Targets (same request, same mock upstream):
#   direct   h2load -> mock-upstream
#   sidecar  h2load -> auto-optimizer serve -> mock-upstream (telemetry off, no /metrics)
#   nginx    h2load -> nginx (proxy_pass, upstream keepalive 64, HTTP/1.1) -> mock-upstream
#   telemetry  the sidecar with telemetry on: OTLP/HTTP spans and metrics (OTEL_BSP_SCHEDULE_DELAY=1000,
#            OTEL_METRIC_EXPORT_INTERVAL=1000) to a minimal local collector (Benchmarks/otlp_sink.py, on the
#            load generator's CPU), Prometheus /metrics on; opt in: BENCH_TARGETS="direct sidecar telemetry"
# Targets are interleaved (direct, sidecar, nginx, direct, ...) for each concurrency in every round, so drift in
# machine load hits all of them alike; the report gives the median over rounds of each round's p50/p99
# (computed from h2load's per-request log) and of req/s.
#
# CPU pinning (BENCH_PIN=1, default; needs taskset and >= 2 CPUs): the load generator runs on CPU 0, the mock
# upstream and the proxy under test share CPU 1. Each proxy therefore competes with the same upstream for the
# same single core, and neither steals cycles from h2load; "direct" has CPU 1 to the mock alone, which is what
# "added" latency is measured against. At concurrency 16 the req/s are bounded by that one server core, so they
# compare the proxies' CPU cost per request rather than the machine's capacity. BENCH_PIN=0 disables pinning.
# Each server process is configured for the one core it gets: nginx `worker_processes 1`, and mock + sidecar
# `--threads 1` (BENCH_THREADS, default 1 when pinned). SwiftNIO's default (one event loop per core) ignores the
# CPU affinity mask and starts 2 loops on the single core; BENCH_THREADS=default keeps that default to measure it.
#
# Env: AUTO_OPTIMIZER_BIN (default .build/release/auto-optimizer), BENCH_ROUNDS (5), BENCH_DURATION (5 s),
#      BENCH_WARMUP (1 s), BENCH_CONCURRENCY ("1 16"), BENCH_TARGETS ("direct sidecar nginx"), BENCH_PIN (1),
#      BENCH_BODY (Benchmarks/body-chat-200tok.json), BENCH_OUT (Benchmarks/results/overhead-DATE.md),
#      BENCH_THREADS (event loops for mock and sidecar: 1 when pinned, else the binary's default; "default" =
#      pass no --threads), BENCH_KEEP=1 keeps the raw run directory.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
BIN="${AUTO_OPTIMIZER_BIN:-$REPO_ROOT/.build/release/auto-optimizer}"
ROUNDS="${BENCH_ROUNDS:-5}"
DURATION="${BENCH_DURATION:-5}"
WARMUP="${BENCH_WARMUP:-1}"
CONCURRENCY="${BENCH_CONCURRENCY:-1 16}"
TARGETS="${BENCH_TARGETS:-direct sidecar nginx}"
PIN="${BENCH_PIN:-1}"
BODY="${BENCH_BODY:-$HERE/body-chat-200tok.json}"
OUT="${BENCH_OUT:-$HERE/results/overhead-$(date +%Y-%m-%d).md}"
PY="$(command -v python3)"
[ -x "$REPO_ROOT/.venv/bin/python" ] && PY="$REPO_ROOT/.venv/bin/python"

log() { printf '[overhead] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -x "$BIN" ] || die "binary $BIN not found: swift build -c release --product auto-optimizer (or set AUTO_OPTIMIZER_BIN)"
command -v h2load >/dev/null || die "h2load missing: apt-get install nghttp2-client (scripts/setup.sh does)"
[[ " $TARGETS " == *" nginx "* ]] && { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || die "nginx missing: apt-get install nginx-light"; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -f "$BODY" ] || die "request body $BODY not found"

LOADGEN=()
SERVER=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    LOADGEN=(taskset -c 0)
    SERVER=(taskset -c 1)
    PINNING="h2load on CPU 0; mock upstream and proxy under test on CPU 1"
else
    PINNING="none"
fi
THREADS="${BENCH_THREADS:-$([ -n "${SERVER[*]}" ] && echo 1 || echo default)}"
THREAD_ARGS=()
[ "$THREADS" = default ] || THREAD_ARGS=(--threads "$THREADS")

RUN="$(mktemp -d /tmp/ao-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then log "raw data and logs kept in $RUN"; else rm -rf "$RUN"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() {  # wait_http URL NAME: up to 20 s for a 200
    local url="$1" name="$2" i
    for i in $(seq 200); do
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "$name not answering on $url; its log:"; tail -n 30 "$RUN/$name.log" >&2 || true
    return 1
}

MOCK_PORT="$(free_port)"
SIDECAR_PORT="$(free_port)"
NGINX_PORT="$(free_port)"

"${SERVER[@]}" "$BIN" mock-upstream --host 127.0.0.1 --port "$MOCK_PORT" --latency-ms 0 "${THREAD_ARGS[@]}" \
    >"$RUN/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/health" mock

if [[ " $TARGETS " == *" sidecar "* ]]; then
    "${SERVER[@]}" "$BIN" serve --host 127.0.0.1 --port "$SIDECAR_PORT" "${THREAD_ARGS[@]}" \
        --telemetry off --metrics-port 0 --upstream "http://127.0.0.1:$MOCK_PORT/v1" >"$RUN/sidecar.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$SIDECAR_PORT/health" sidecar
fi

if [[ " $TARGETS " == *" telemetry "* ]]; then
    COLLECTOR_PORT="$(free_port)"
    TELEMETRY_PORT="$(free_port)"
    "${LOADGEN[@]}" "$PY" "$HERE/otlp_sink.py" "$COLLECTOR_PORT" >"$RUN/collector.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$COLLECTOR_PORT/health" collector
    OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$COLLECTOR_PORT" OTEL_BSP_SCHEDULE_DELAY=1000 \
        OTEL_METRIC_EXPORT_INTERVAL=1000 "${SERVER[@]}" "$BIN" serve --host 127.0.0.1 --port "$TELEMETRY_PORT" \
        "${THREAD_ARGS[@]}" --metrics-port "$(free_port)" --upstream "http://127.0.0.1:$MOCK_PORT/v1" \
        >"$RUN/telemetry.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$TELEMETRY_PORT/health" telemetry
fi

if [[ " $TARGETS " == *" nginx "* ]]; then
    mkdir -p "$RUN/nginx"
    cat >"$RUN/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $RUN/nginx/client_body;
    proxy_temp_path $RUN/nginx/proxy;
    fastcgi_temp_path $RUN/nginx/fastcgi;
    uwsgi_temp_path $RUN/nginx/uwsgi;
    scgi_temp_path $RUN/nginx/scgi;
    client_max_body_size 16m;
    keepalive_requests 1000000;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    "$NGINX" -t -q -p "$RUN/nginx" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf" >"$RUN/nginx.log" 2>&1 \
        || { cat "$RUN/nginx.log" >&2; die "nginx config test failed"; }
    "${SERVER[@]}" "$NGINX" -p "$RUN/nginx" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf" \
        >>"$RUN/nginx.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$NGINX_PORT/health" nginx
fi

url_of() {
    case "$1" in
        direct) echo "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" ;;
        sidecar) echo "http://127.0.0.1:$SIDECAR_PORT/v1/chat/completions" ;;
        telemetry) echo "http://127.0.0.1:$TELEMETRY_PORT/v1/chat/completions" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" ;;
        *) die "unknown target $1" ;;
    esac
}

# Every target must answer the benchmark request with 200 before we time it.
for t in $TARGETS; do
    code="$(curl -sS -o "$RUN/check-$t.json" -w '%{http_code}' --max-time 5 -H 'content-type: application/json' \
        -H 'authorization: Bearer sk-bench' --data-binary "@$BODY" "$(url_of "$t")")" || code=000
    [ "$code" = 200 ] || die "$t answered $code to the benchmark request: $(head -c 300 "$RUN/check-$t.json" 2>/dev/null)"
done

n_runs=$(( ROUNDS * $(wc -w <<<"$CONCURRENCY") * $(wc -w <<<"$TARGETS") ))
log "$n_runs runs of ${DURATION}s (+${WARMUP}s warm-up); pinning: $PINNING; raw data in $RUN"
i=0
for r in $(seq "$ROUNDS"); do
    for c in $CONCURRENCY; do
        for t in $TARGETS; do
            i=$((i + 1))
            curl -fsS -o /dev/null --max-time 2 "$(url_of "$t" | sed 's#/v1/chat/completions$#/health#')" \
                || die "$t failed its health check before round $r"
            # Bounded: h2load stops after WARMUP + DURATION; timeout guards against a hung target.
            timeout $(( DURATION + WARMUP + 30 )) "${LOADGEN[@]}" h2load --h1 -c "$c" -t 1 -m 1 -D "$DURATION" \
                --warm-up-time "$WARMUP" -d "$BODY" -H 'content-type: application/json' \
                -H 'authorization: Bearer sk-bench' --log-file "$RUN/$t-c$c-r$r.log" "$(url_of "$t")" \
                >"$RUN/$t-c$c-r$r.out" 2>&1 || { cat "$RUN/$t-c$c-r$r.out" >&2; die "h2load failed for $t c=$c"; }
            log "[$i/$n_runs] round $r c=$c $t: $(grep -o 'finished in.*req/s' "$RUN/$t-c$c-r$r.out" || echo '?')"
        done
    done
done

mkdir -p "$(dirname "$OUT")"
"$PY" "$HERE/overhead_report.py" "$RUN" --out "$OUT" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --meta "commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)" \
    --meta "binary=$BIN" \
    --meta "machine=$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
    --meta "load=h2load --h1 -t 1 -m 1, ${ROUNDS} rounds x ${DURATION}s (+${WARMUP}s warm-up) per target and concurrency, targets interleaved" \
    --meta "request=POST /v1/chat/completions, $(wc -c <"$BODY") byte body ($(basename "$BODY")), mock upstream --latency-ms 0" \
    --meta "pinning=$PINNING" \
    --meta "event loop threads (mock, sidecar)=$THREADS" \
    --meta "nginx=$("$NGINX" -v 2>&1 | sed 's/.*: //'), worker_processes 1, upstream keepalive 64, proxy_http_version 1.1"
if [[ " $TARGETS " == *" telemetry "* ]]; then
    log "collector received: $(curl -fsS "http://127.0.0.1:$COLLECTOR_PORT/stats" || echo '?')"
fi
log "report written to $OUT"
