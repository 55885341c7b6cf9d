#!/usr/bin/env bash
# Starts a throwaway raftlockd on a free loopback port and runs demo.py against it.
# Usage: examples/python/run-demo.sh [path/to/raftlockd]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
daemon="${1:-raftlockd}"
data="$(mktemp -d)"
out="$data/stdout"
"$daemon" --listen 127.0.0.1:0 --data-dir "$data/node" >"$out" 2>"$data/stderr" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT

# Wait (bounded) for the daemon to print its address.
addr=""
for _ in $(seq 1 200); do
  addr="$(sed -n 's/^raftlockd listening on //p' "$out")"
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/stderr" >&2; echo "raftlockd exited" >&2; exit 1; }
  sleep 0.05
done
[ -n "$addr" ] || { echo "raftlockd did not start in 10 s" >&2; cat "$data/stderr" >&2; exit 1; }

python3 "$here/demo.py" --server "$addr"
