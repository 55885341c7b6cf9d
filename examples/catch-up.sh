#!/usr/bin/env bash
# How long a fresh node takes to catch up through a snapshot, and how much memory the nodes use.
#
# Starts a local 3-node cluster, stores SIZE_MIB MiB of incompressible file data in 16 MiB
# files (1 MiB appends under one lock), then starts node 4 and adds it with
# `raftlock cluster add`. Prints the time the add took, the time until node 4 had applied the
# leader's commit index, the snapshot the leader sent (size, bytes sent, rate), and every node's
# resident memory (VmRSS, VmHWM) before and after. Not a test: a measurement for
# docs/performance.md.
#
# Usage: examples/catch-up.sh [SIZE_MIB]     (default 1024; run from the repository root after
#        `cargo build --release --bins`; each node holds about 3 x SIZE_MIB of memory at its peak)
set -euo pipefail

SIZE_MIB=${1:-1024}
BIN=${BIN:-target/release}
BASE_PORT=${BASE_PORT:-17700}
DIR=$(mktemp -d)
trap 'pkill -f -- "--data-dir $DIR/" || true; rm -rf "$DIR"' EXIT

port() { echo "127.0.0.1:$((BASE_PORT + $1))"; }
metrics() { echo "127.0.0.1:$((BASE_PORT + 10 + $1))"; }
PEERS="1=$(port 1),2=$(port 2),3=$(port 3)"
head -c 32 /dev/urandom > "$DIR/key"
QUOTA=$(( (SIZE_MIB + 64) * 1024 * 1024 ))
COMMON=(--cluster-key-file "$DIR/key"
        --max-file-bytes 16777216 --max-total-file-bytes "$QUOTA")

start() { # id, extra args...
    local id=$1; shift
    "$BIN/raftlockd" --id "$id" --listen "$(port "$id")" --data-dir "$DIR/n$id/" \
        --metrics-listen "$(metrics "$id")" "${COMMON[@]}" "$@" \
        > "$DIR/n$id.out" 2> "$DIR/n$id.log" &
    echo $! > "$DIR/n$id.pid"
}
rss() { # id
    awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2 / 1024}' "/proc/$(cat "$DIR/n$1.pid")/status"
}
applied() { # id
    "$BIN/raftlock" --servers "$(port "$1")" status --json 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["applied_index"])' 2>/dev/null ||
        echo 0
}
counter() { # id, metric line prefix
    curl -s "http://$(metrics "$1")/metrics" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {print s + 0}'
}

for id in 1 2 3; do start "$id" --peer "$PEERS" --bootstrap; done
export RAFTLOCK_SERVERS="$(port 1),$(port 2),$(port 3)"
deadline=$((SECONDS + 30))
until "$BIN/raftlock" status > /dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "no leader after 30 s" >&2; exit 1; }
    sleep 0.2
done

echo "writing $SIZE_MIB MiB in 16 MiB files..."
head -c 1048576 /dev/urandom > "$DIR/chunk"
t0=$(date +%s.%N)
"$BIN/raftlock" lock bulk -- bash -c '
    for ((m = 0; m < '"$SIZE_MIB"'; m++)); do
        '"$BIN"'/raftlock append "file-$((m / 16))" --data-file '"$DIR"'/chunk > /dev/null || exit 1
    done'
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN {printf "written in %.1f s\n", b - a}'
for id in 1 2 3; do echo "node $id: $(rss "$id")"; done

leader_commit=$("$BIN/raftlock" status --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["commit_index"])')
start 4 --join --peer "$PEERS,4=$(port 4)"
t2=$(date +%s.%N)
"$BIN/raftlock" --timeout 600s cluster add 4 "$(port 4)" > /dev/null
t3=$(date +%s.%N)
deadline=$((SECONDS + 600))
until [ "$(applied 4)" -ge "$leader_commit" ]; do
    [ $SECONDS -lt $deadline ] || { echo "node 4 did not catch up in 600 s" >&2; exit 1; }
    sleep 0.1
done
t4=$(date +%s.%N)

sent=0; size=0
for id in 1 2 3; do
    sent=$((sent + $(counter "$id" 'raftlock_snapshot_sent_bytes_total{peer="4"}')))
    s=$(counter "$id" 'raftlock_snapshot_size_bytes')
    [ "${s%.*}" -gt "$size" ] && size=${s%.*}
done
awk -v t2="$t2" -v t3="$t3" -v t4="$t4" -v commit="$leader_commit" -v size="$size" -v sent="$sent" 'BEGIN {
    caught = t4 - t2
    printf "cluster add: %.2f s; node 4 applied index %d after %.2f s\n", t3 - t2, commit, caught
    printf "snapshot %d bytes, %d bytes sent to node 4: %.0f MB/s, %.1f s per GiB of snapshot\n",
        size, sent, size / caught / 1e6, caught * 1073741824 / size
}'
for id in 1 2 3 4; do echo "node $id: $(rss "$id")"; done
