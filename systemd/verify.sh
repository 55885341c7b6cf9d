#!/usr/bin/env bash
# Checks systemd/raftlockd.service and the template raftlockd@.service with `systemd-analyze verify` (CI-friendly: works without a
# running systemd and without raftlockd installed).
#
# Usage: systemd/verify.sh [path/to/raftlockd]
# The unit's ExecStart names /usr/local/bin/raftlockd; verify needs an existing executable, so a
# temporary copy of the unit points at the given binary, the installed one, or /bin/true.
# Also checks that every RAFTLOCKD_* variable in the example env file is one raftlockd knows.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
unit="$here/raftlockd.service"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "systemd-analyze not found; installing systemd" >&2
    apt-get update -qq && apt-get install -y -qq systemd >/dev/null
fi

binary="${1:-}"
real=1
if [[ -z "$binary" ]]; then
    if [[ -x /usr/local/bin/raftlockd ]]; then binary=/usr/local/bin/raftlockd; else binary=/bin/true real=0; fi
fi
binary="$(readlink -f "$binary")"
[[ -x "$binary" ]] || { echo "not an executable: $binary" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# verify prints problems and, with --man=no, ignores missing man pages; any output is a failure
# so that warnings (unknown keys, bad values) fail CI too.
check() {
    local source="$1" name="$2"
    sed "s|^ExecStart=.*|ExecStart=$binary|" "$source" > "$tmp/$name"
    local output problems
    output="$(systemd-analyze verify --man=no "$tmp/$name" 2>&1 || true)"
    # A container without a booted systemd may warn about itself; those lines are not the unit's.
    problems="$(printf '%s\n' "$output" | grep -v -e '^$' -e 'Failed to connect to' -e 'System has not been booted' -e 'Cannot determine cgroup' -e "$name: Failed to load environment files" || true)"
    if [[ -n "$problems" ]]; then
        echo "systemd-analyze verify reported problems in $(basename "$source"):" >&2
        printf '%s\n' "$problems" >&2
        exit 1
    fi
}
check "$unit" raftlockd.service
# The template needs an instance name to be verified.
check "$here/raftlockd@.service" raftlockd@node1.service

# The example env file names only variables the daemon reads (when the real binary is at hand).
if [[ "$real" == 1 ]]; then
    help="$("$binary" --help)"
    for env in "$here/raftlockd.env.example" "$here"/node*.env; do
        for var in $(grep -o 'RAFTLOCKD_[A-Z_]*' "$env" | sort -u); do
            if ! grep -q "$var" <<<"$help"; then
                echo "$(basename "$env") names $var, which raftlockd does not read" >&2
                exit 1
            fi
        done
    done
fi
echo "systemd/raftlockd.service, systemd/raftlockd@.service: OK"
