#!/usr/bin/env bash
# Set up the machine (without the LLM test extras), build the release binary and start the sidecar.
#   sudo ./scripts/run.sh [serve options...]
# e.g. ./scripts/run.sh --host 127.0.0.1 --port 8080 --upstream https://api.openai.com/v1
# (see `.build/release/auto-optimizer serve --help`; AUTO_OPTIMIZER_HOST/PORT/UPSTREAM work too)
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/setup.sh" --no-llm
ensure_swift
log "building release binary (first build takes ~10 minutes)"
swift build -c release --product auto-optimizer
exec "$REPO_ROOT/.build/release/auto-optimizer" serve "$@"
