#!/usr/bin/env bash
# The full test suite: setup (with the LLM extras and Arize Phoenix), Swift unit tests (debug), release build,
# Python integration tests against the release binary. Exits non-zero if anything fails.
#
# Env:
#   TEST_TIMEOUT_BUILD   seconds allowed for each swift build step (default 2400)
#   TEST_TIMEOUT_PYTEST  seconds allowed for the integration tests (default 900)
#   PYTEST_ARGS          extra pytest arguments (e.g. "-k sdk -x")
#   SKIP_SWIFT_TESTS=1   skip `swift build --build-tests` + `swift test` (integration tests only)
#   AUTO_OPTIMIZER_BIN   test this binary instead of building .build/release/auto-optimizer (developer use)
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

BUILD_TIMEOUT="${TEST_TIMEOUT_BUILD:-2400}"
PYTEST_TIMEOUT="${TEST_TIMEOUT_PYTEST:-900}"
t0=$(date +%s)
step() { log "=== $* (t+$(( $(date +%s) - t0 ))s)"; }

step "setup"
# The llama-cpp-python wheel is built once per machine (8-17 min) and cached; see scripts/setup.sh.
timeout "$BUILD_TIMEOUT" "$REPO_ROOT/scripts/setup.sh" --with-llm --with-phoenix
ensure_swift

if [ "${SKIP_SWIFT_TESTS:-0}" != 1 ]; then
    step "swift build --build-tests (debug)"
    timeout "$BUILD_TIMEOUT" swift build --build-tests
    step "swift test"
    timeout 900 swift test --skip-build
fi

if [ -n "${AUTO_OPTIMIZER_BIN:-}" ]; then
    log "AUTO_OPTIMIZER_BIN=$AUTO_OPTIMIZER_BIN: not building the release binary"
else
    step "swift build -c release --product auto-optimizer"
    timeout "$BUILD_TIMEOUT" swift build -c release --product auto-optimizer
    export AUTO_OPTIMIZER_BIN="$REPO_ROOT/.build/release/auto-optimizer"
fi

step "integration tests (pytest Tests/Integration, $AUTO_OPTIMIZER_BIN)"
export AUTO_OPTIMIZER_REQUIRE_LLM=1   # CI must run the real-LLM test, not skip it
export AUTO_OPTIMIZER_REQUIRE_PHOENIX=1   # ... and the Phoenix telemetry recipe
# shellcheck disable=SC2086
timeout "$PYTEST_TIMEOUT" "$VENV_DIR/bin/python" -m pytest Tests/Integration -v -rfEs --durations=10 ${PYTEST_ARGS:-}
step "all tests passed"
