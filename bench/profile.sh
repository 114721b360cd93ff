#!/usr/bin/env bash
# Where a unicast event's CPU goes: one NATS node, herald-publish and one
# herald-edge on loopback (as bench/hops.sh), `herald-bench unicast` at
# RATE events/s to USERS streams for SECS seconds, while `perf record`
# samples each service; prints the CPU per event the load generator
# measured and each service's hottest symbols (kernel ones included).
# Bounded: every process is stopped on exit.
#
#   bench/profile.sh                                # 20,000/s, ephemeral, gRPC
#   MODE=persisted VIA=http RATE=10000 bench/profile.sh
#   PUBLISH_ENV=TOKIO_WORKER_THREADS=1 EDGE_ENV=TOKIO_WORKER_THREADS=1 bench/profile.sh
#
# Needs Debian's perf (linux-perf) and perf_event_paranoid <= 1 or root.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-20000}"
USERS="${USERS:-1000}"
SECS="${SECS:-10}"
VIA="${VIA:-grpc}"
MODE="${MODE:-ephemeral}"
TOP="${TOP:-25}"
PORT_BASE="${PORT_BASE:-32000}" # below the ephemeral range
command -v perf >/dev/null || { echo "error: perf missing (apt-get install linux-perf)" >&2; exit 1; }
nats_server="$(scripts/nats-server.sh)"
source bench/processes.sh
release_binaries herald-edge herald-publish herald-bench
start_work

export HERALD_JWT_SECRET="profile-bench-secret-0123456789-01234" HERALD_API_TOKEN="profile-bench-api-token-0123456789"
start_one_node profile

flags=()
[[ $MODE == ephemeral ]] && flags=(--ephemeral)
/usr/bin/time -f "%U %S" -o "$work/load.time" timeout 180 "$bin/herald-bench" --peer herald --edge "127.0.0.1:$edge_port" \
  --publish "http://127.0.0.1:$publish_port" --api-token "$HERALD_API_TOKEN" \
  unicast --users "$USERS" --rates "$RATE" --secs "$SECS" --via "$VIA" "${flags[@]}" \
  --cpu-pid "publish=$publish_pid" --cpu-pid "edge=$edge_pid" --cpu-pid "nats=$nats_pid" >"$work/unicast.out" 2>&1 &
load=$!
# Sample once the streams are open and the rate holds.
for _ in $(seq 1 600); do
  grep -q 'streams open' "$work/unicast.out" 2>/dev/null && break
  sleep 0.1
done
sleep 1
for name in publish edge; do
  pid_var="${name}_pid"
  perf record -q -F 1999 -g -p "${!pid_var}" -o "$work/$name.perf" -- sleep $((SECS - 3)) 2>/dev/null &
  pids+=($!)
done
wait "$load"
sleep 1

mkdir -p bench/results
out="bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "== $MODE, $VIA, $RATE events/s to $USERS streams"
  sed -n 's/^RESULT //p' "$work/unicast.out" >"$work/unicast.json"
  python3 - "$work/unicast.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_us_per_event"].items())
    print(f"load generator: {r['achieved_rate']:.0f} events/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, lost {r['lost']}; CPU µs/event: {cpu}")
PY
  # The load generator's own CPU over its whole run (opening the streams
  # too), per event sent.
  read -r user sys <"$work/load.time"
  python3 -c "print(f'load generator (publishing and reading): {($user + $sys) * 1e6 / ($RATE * $SECS):.1f} µs/event over its run')"
  for name in publish edge; do
    echo "== $name: hottest symbols (self time), then by shared object"
    perf report -i "$work/$name.perf" --no-children --sort symbol --stdio -q -g none 2>/dev/null |
      grep -E '^ +[0-9]' | head -n "$TOP" | cut -c1-150 | sed 's/ *$//' || true
    perf report -i "$work/$name.perf" --no-children --sort dso --stdio -q -g none 2>/dev/null |
      grep -E '^ +[0-9]' | head -n 6 | sed 's/ *$//' || true
  done
} | tee "$out"
echo "perf data kept with KEEP_WORK=1 in $work; summary: $out" >&2
