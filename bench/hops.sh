#!/usr/bin/env bash
# The latency floor, hop by hop: one NATS node, herald-publish and one
# herald-edge on loopback; `herald-bench unicast` at RATE events/s (default
# 1,000) to USERS streams for SECS seconds, ephemeral then persisted,
# while tcpdump captures loopback; bench/hops.py then times each event at
# every hop (load generator → publish → NATS → edge → socket) and prints
# p50/p90/p99 per hop, beside the load generator's own publish→receive
# figures. Bounded: every process is stopped on exit.
#
#   bench/hops.sh
#   RATE=1000 VIA=grpc SKIP_BUILD=1 bench/hops.sh
#   PUBLISH_ENV=TOKIO_WORKER_THREADS=1 bench/hops.sh   # herald-publish on one worker thread
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/meta.sh
bench_command=$(command_line bench/hops.sh RATE USERS SECS VIA PUBLISH_ENV EDGE_ENV PUBLISH_FLAGS EDGE_FLAGS)
RATE="${RATE:-1000}"
USERS="${USERS:-1000}"
SECS="${SECS:-10}"
VIA="${VIA:-grpc}"
PORT_BASE="${PORT_BASE:-32000}" # below the ephemeral range
if ! command -v tcpdump >/dev/null || ! python3 -c 'import dpkt' 2>/dev/null; then
  echo "error: needs tcpdump and python's dpkt: apt-get install tcpdump && pip install dpkt" >&2
  exit 1
fi
nats_server="$(scripts/nats-server.sh)"
source bench/processes.sh
release_binaries herald-edge herald-publish herald-bench
start_work

export HERALD_JWT_SECRET="hops-bench-secret-0123456789-0123456" HERALD_API_TOKEN="hops-bench-api-token-0123456789"
start_one_node hops

mkdir -p bench/results
out="bench/results/hops-$(date -u +%Y%m%dT%H%M%SZ).txt"
write_meta "$out" "$bench_command"
for mode in ephemeral persisted; do
  flags=()
  [[ $mode == ephemeral ]] && flags=(--ephemeral)
  tcpdump -i lo -s 0 -B 65536 -w "$work/$mode.pcap" \
    "tcp port $publish_port or tcp port $nats_port or tcp port $edge_port" 2>"$work/tcpdump.log" &
  dump=$!
  sleep 1
  timeout 120 "$bin/herald-bench" --peer herald --edge "127.0.0.1:$edge_port" \
    --publish "http://127.0.0.1:$publish_port" --api-token "$HERALD_API_TOKEN" \
    unicast --users "$USERS" --rates "$RATE" --secs "$SECS" --via "$VIA" "${flags[@]}" \
    --cpu-pid "publish=$publish_pid" --cpu-pid "edge=$edge_pid" |
    sed -n 's/^RESULT //p' >"$work/$mode.json"
  sleep 1
  kill -INT "$dump"
  wait "$dump" 2>/dev/null || true
  {
    echo "== $mode, $VIA, $RATE events/s to $USERS streams"
    python3 - "$work/$mode.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_us_per_event"].items())
    print(f"load generator: {r['achieved_rate']:.0f} events/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, lost {r['lost']}; CPU µs/event: {cpu}")
PY
    python3 bench/hops.py "$work/$mode.pcap" "$publish_port" "$nats_port" "$edge_port"
  } | tee -a "$out"
done
