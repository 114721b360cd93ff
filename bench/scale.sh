#!/usr/bin/env bash
# STREAMS concurrent SSE streams on this machine (default 100,000): a
# 3-node NATS cluster with JetStream, herald-publish, enough herald-edge
# processes to stay under the 20,000 fds a process may hold, and one
# load-generator process per edge, each on its own 127.0.0.x source
# addresses. Half the streams follow only their user, half also one of
# TOPICS topics. Phases: open, idle through two heartbeats, a topic
# fan-out burst, a unicast ramp across the cluster; one JSON line per
# phase, then
#   scale: <streams> streams, <KiB> KiB/stream, fan-out <deliveries/s> p99 <ms>, unicast <events/s> p99 <ms>, lost <n>
# Bounded: the load run has a deadline (RUN_SECS), every process is
# stopped on exit. The lines also go to bench/results/scale-<time>.txt.
#
#   bench/scale.sh                     # 100,000 streams
#   STREAMS=5000 RATES=500,1000 bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
STREAMS="${STREAMS:-100000}"
PER_EDGE="${PER_EDGE:-17000}"       # streams per edge and per load generator
TOPICS="${TOPICS:-4}"
HEARTBEAT_SECS="${HEARTBEAT_SECS:-5}"
FANOUT_EVENTS="${FANOUT_EVENTS:-25}" # per topic
RATES="${RATES:-1000,2000,3000,4000,5000,7500,10000}"
SECS="${SECS:-5}"
RUN_SECS="${RUN_SECS:-480}"
PORT_BASE="${PORT_BASE:-30000}"     # below the ephemeral range: NATS 30222.., edges 30080..

nats_server="$(scripts/nats-server.sh)"
source bench/nats-cluster.sh
if [[ "${SKIP_BUILD:-}" != 1 ]]; then
  echo "building release binaries..." >&2
  cargo build --locked --release --workspace --bins >&2
fi
bin="$root/target/release"
ulimit -n "$(ulimit -Hn)"
edges=$(((STREAMS + PER_EDGE - 1) / PER_EDGE))

work="$(mktemp -d)"
pids=()
cluster_pids=()
cleanup() {
  local status=$?
  if [[ $status != 0 ]]; then
    echo "error: bench/scale.sh failed ($status); last log lines:" >&2
    tail -n 3 "$work"/*.log >&2 2>/dev/null || true
  fi
  # Agents exit when the coordinator's pipes close; the rest by pid, NATS
  # last so the services leave it cleanly.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n "${KEEP:-}" ]] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_port() {
  for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: nothing listens on 127.0.0.1:$1" >&2
  exit 1
}
wait_ok() { # url: until it answers 2xx (JetStream ready, service ready)
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: $1 is not ready" >&2
  exit 1
}

# NATS: three routed nodes with JetStream (memory history, 3 replicas).
start_nats_cluster herald-scale $((PORT_BASE + 222)) $((PORT_BASE + 322)) $((PORT_BASE + 822)) \
  "$work" "max_memory_store: 2GB"
nats_urls=("${cluster_urls[@]}")
nats_pids=()
for pid in "${cluster_pids[@]}"; do nats_pids+=("--cpu-pid" "nats=$pid"); done

export HERALD_JWT_SECRET="scale-secret-0123456789-0123456789"
history=(--history-storage memory --history-replicas 3)
"$bin/herald-publish" --nats-url "${nats_urls[1]}" "${history[@]}" --node-id scale-publish \
  --listen "127.0.0.1:$((PORT_BASE + 51))" --admin-listen "127.0.0.1:$((PORT_BASE + 91))" \
  >"$work/publish.log" 2>&1 &
pids+=($!)
publish_pid=$!
edge_args=()
edge_list=()
for g in $(seq 0 $((edges - 1))); do
  port=$((PORT_BASE + 80 + g))
  "$bin/herald-edge" --nats-url "${nats_urls[$((g % 3))]}" "${history[@]}" --node-id "scale-edge-$g" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((PORT_BASE + 180 + g))" \
    --heartbeat "${HEARTBEAT_SECS}s" --max-connections 19000 >"$work/edge-$g.log" 2>&1 &
  pids+=($!)
  edge_args+=(--edge-pid "$!")
  edge_list+=("127.0.0.1:$port")
done
wait_ok "http://127.0.0.1:$((PORT_BASE + 91))/readyz"
for g in $(seq 0 $((edges - 1))); do wait_ok "http://127.0.0.1:$((PORT_BASE + 180 + g))/readyz"; done
sleep 1

# Two source addresses per load generator, none shared with bench/run.sh.
sources=$(for a in $(seq 100 $((100 + 2 * edges - 1))); do printf '127.0.0.%s,' "$a"; done)
results="$root/bench/results"
mkdir -p "$results"
out="$results/scale-$(date -u +%Y%m%dT%H%M%SZ).txt"
echo "== $STREAMS streams on $edges edges, 3 NATS nodes" >&2
raw="$work/scale.out"
: >"$raw"
# In the background, so a signal reaches the trap at once; `timeout`
# passes the trap's TERM on, and the agents exit when their pipes close.
timeout --signal=INT "$RUN_SECS" "$bin/herald-bench" --peer herald \
  --publish "http://127.0.0.1:$((PORT_BASE + 51))" --timeout 240 \
  scale --edges "$(IFS=,; echo "${edge_list[*]}")" "${edge_args[@]}" "${nats_pids[@]}" \
  --cpu-pid "publish=$publish_pid" --streams "$STREAMS" --topics "$TOPICS" \
  --sources "${sources%,}" --heartbeat-secs "$HEARTBEAT_SECS" \
  --fanout-events "$FANOUT_EVENTS" --rates "$RATES" --secs "$SECS" >"$raw" &
bench=$!
pids+=("$bench")
tail -n +1 -f --pid="$bench" "$raw" | sed -u 's/^RESULT //' &
shown=$!
status=0
wait "$bench" || status=$?
wait "$shown" || true
sed 's/^RESULT //' "$raw" >"$out"
[[ $status == 0 ]] || exit "$status"
echo "raw results: $out" >&2
