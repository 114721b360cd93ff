#!/usr/bin/env bash
# Where an idle stream's memory goes: the edge under heaptrack, killed
# while it holds STREAMS idle streams (each on its user subject and one
# topic), then again with none; bench/heap.py prints the difference per
# stream by what allocated it. Also prints the edge's PSS and the kernel's
# socket objects per stream (slab deltas; both ends of each loopback
# connection are on this machine).
#
#   bench/heap.sh                 # 15,000 streams, one user each
#   USERS=1500 bench/heap.sh      # ten tabs per user
#
# Needs Debian's heaptrack; builds the release binaries with line tables
# (inlined frames named; the code is the same). Run it alone:
#   flock /tmp/herald-bench.lock bench/heap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
STREAMS="${STREAMS:-15000}"
USERS="${USERS:-$STREAMS}"
# Seconds after the last stream opened: a heartbeat interval (15 s) and more.
SETTLE="${SETTLE:-20}"
command -v heaptrack >/dev/null || { echo "error: heaptrack missing (apt-get install heaptrack)" >&2; exit 1; }
nats_server="$(scripts/nats-server.sh)"
echo "building release binaries with line tables..." >&2
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --locked --release -p herald-edge -p herald-publish -p herald-bench >&2
bin="$root/target/release"
ulimit -n "$(ulimit -Hn)"
out="$root/bench/results/heap-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export HERALD_JWT_SECRET="bench-secret-0123456789-0123456789"
export HERALD_NATS_URL="nats://127.0.0.1:26422"
"$nats_server" -a 127.0.0.1 -p 26422 -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
sleep 1
"$bin/herald-publish" --listen 127.0.0.1:26251 --admin-listen 127.0.0.1:26291 --node-id heap-publish \
  --history-storage memory >"$work/publish.log" 2>&1 &
pids+=($!)

# /proc/self/smaps_rollup and /proc/slabinfo lines worth comparing.
snapshot() { # pid
  grep -E '^(Pss|Anonymous):' "/proc/$1/smaps_rollup"
  grep -E '^(TCP|sock_inode_cache|filp|dentry|eventpoll_epi) ' /proc/slabinfo | awk '{print $1, $2, $4}'
}

# One edge under heaptrack holding $2 streams of $3 users, killed while
# they are open: heaptrack's file then holds what was live at that moment.
measure() { # name streams users
  local name="$1" streams="$2" users="$3"
  heaptrack -o "$out/$name" "$bin/herald-edge" --listen 127.0.0.1:26280 --admin-listen 127.0.0.1:26290 \
    --node-id heap-edge --max-connections 19000 --history-storage memory >"$out/$name.log" 2>&1 &
  local wrapper=$! edge=""
  for _ in $(seq 1 100); do
    edge="$(ss -ltnpH 'sport = :26280' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)"
    [[ -n "$edge" ]] && curl -sf http://127.0.0.1:26290/readyz >/dev/null && break
    sleep 0.2
  done
  [[ -n "$edge" ]] || { echo "error: the edge did not start" >&2; exit 1; }
  sleep 2
  snapshot "$edge" >"$out/$name.before"
  "$bin/herald-bench" --peer herald --edge 127.0.0.1:26280 --publish http://127.0.0.1:26251 \
    fanout --pid "$edge" --connections "$streams" --users "$users" --sources 8 \
    --idle-only --idle-secs $((SETTLE + 60)) >"$out/$name.bench" 2>&1 &
  local bench=$!
  until grep -q '^opened ' "$out/$name.bench"; do
    kill -0 "$bench" 2>/dev/null || { cat "$out/$name.bench" >&2; exit 1; }
    sleep 0.2
  done
  grep '^opened ' "$out/$name.bench" >&2
  sleep "$SETTLE"
  snapshot "$edge" >"$out/$name.idle"
  kill -KILL "$edge"
  wait "$wrapper" || true # heaptrack writes its file once the edge is gone
  kill "$bench" 2>/dev/null || true
  wait "$bench" 2>/dev/null || true
}

measure base 0 1
measure run "$STREAMS" "$USERS"

echo "== $STREAMS idle streams of $USERS users; heap per stream (heaptrack, run - base):"
python3 bench/heap.py "$out/base.zst" "$out/run.zst" "$STREAMS"
echo "== per stream, from the edge's smaps_rollup (PSS, as herald-bench reports) and /proc/slabinfo:"
paste "$out/run.before" "$out/run.idle" | awk -v n="$STREAMS" '
  /^(Pss|Anonymous):/ { printf "%-18s %6.0f B (edge process)\n", $1, ($5 - $2) * 1024 / n; next }
  { printf "%-18s %6.0f B (kernel: %.2f objects of %d B; both ends, and the machine'"'"'s other work)\n", $1, ($5 - $2) * $3 / n, ($5 - $2) / n, $3 }'
echo "heaptrack files: $out"
