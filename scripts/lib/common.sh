# shellcheck shell=bash disable=SC2034
# Shared helpers for scripts/*.sh. Source it; do not execute it.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV_DIR="${AUTO_OPTIMIZER_VENV:-$REPO_ROOT/.venv}"
LLAMA_CPP_VERSION="0.3.36"

log()  { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die()  { log "ERROR: $*"; exit 1; }

# Run a command as root: directly when we are root, via sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# Put swift on PATH (it lives in /opt/swift/usr/bin on the project's machines).
ensure_swift() {
    if ! command -v swift >/dev/null 2>&1; then
        local d
        for d in ${SWIFT_HOME:+"$SWIFT_HOME/usr/bin"} /opt/swift/usr/bin /usr/share/swift/usr/bin; do
            if [ -x "$d/swift" ]; then
                export PATH="$d:$PATH"
                break
            fi
        done
    fi
    if ! command -v swift >/dev/null 2>&1; then
        die "swift not found on PATH nor in /opt/swift/usr/bin. Install a Swift 6.2+ toolchain (https://www.swift.org/install/linux/) and put its usr/bin on PATH, or set SWIFT_HOME."
    fi
}
