#!/usr/bin/env bash
# STREAMS concurrent SSE streams on this machine (default 100,000): a
# 3-node NATS cluster with JetStream, herald-publish, enough herald-edge
# processes to stay under the 20,000 fds a process may hold, and one
# load-generator process per edge, each on its own 127.0.0.x source
# addresses. Half the streams follow only their user, half also one of
# TOPICS topics. Phases: open, idle through one or two heartbeats, a
# topic fan-out burst, a unicast ramp across the cluster; one JSON line
# per phase, then
#   scale: <streams> streams, <KiB> KiB/stream, fan-out <deliveries/s> p99 <ms>, unicast <events/s> p99 <ms>, lost <n>
# Bounded: the load run has a deadline (RUN_SECS), every process is
# stopped on exit. The lines also go to bench/results/scale-<time>.txt.
#
#   bench/scale.sh                     # 100,000 streams
#   STREAMS=1000000 bench/scale.sh     # the headline run (docs/million-streams.md)
#   STREAMS=5000 RATES=500,1000 bench/scale.sh
#
# Before starting anything it checks what a run this size needs from the
# machine (open files, ports, memory, TCP buffer memory) and says what
# falls short.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source bench/meta.sh
bench_command=$(command_line bench/scale.sh STREAMS PER_EDGE TOPICS HEARTBEAT_SECS IDLE_HEARTBEATS FANOUT_EVENTS \
  RATES SECS OPEN_RATE OPEN_ATTEMPTS OPEN_SECS RUN_SECS FORCE)
STREAMS="${STREAMS:-100000}"
PER_EDGE="${PER_EDGE:-17000}"       # streams per edge and per load generator
TOPICS="${TOPICS:-4}"
# Heartbeats cost a write and a read each: above 100,000 streams the
# interval grows so the edges write ~20,000 a second at most (as 100,000
# streams at 5 s do), and the idle phase then holds the streams through
# one interval instead of two (every stream must get its heartbeat).
HEARTBEAT_SECS="${HEARTBEAT_SECS:-$(((STREAMS + 19999) / 20000 < 5 ? 5 : (STREAMS + 19999) / 20000))}"
IDLE_HEARTBEATS="${IDLE_HEARTBEATS:-$((HEARTBEAT_SECS > 15 ? 1 : 2))}"
FANOUT_EVENTS="${FANOUT_EVENTS:-25}" # per topic
RATES="${RATES:-1000,2000,3000,4000,5000,7500,10000}"
SECS="${SECS:-5}"
# Connects per second, all load generators together (0: unpaced). Each
# connect costs NATS a subscription (told to every node) and a read of the
# user's newest stored event from its history stream's leader; unpaced,
# 400,000 opens overran NATS's JetStream API queue, and at 5,000/s still
# did (docs/million-streams.md).
OPEN_RATE="${OPEN_RATE:-$((STREAMS > 100000 ? 2000 : 0))}"
# Tries per stream: OPEN_ATTEMPTS=5 brings a refused stream back after its
# retry-after, as an EventSource does. At a million that retry storm
# overloaded the box until NATS's routes went stale and the edges lost
# NATS (docs/million-streams.md), so by default a refusal counts.
OPEN_ATTEMPTS="${OPEN_ATTEMPTS:-1}"
OPEN_SECS="${OPEN_SECS:-$((240 + (OPEN_RATE > 0 ? STREAMS / OPEN_RATE : STREAMS * 240 / 1000000)))}" # longest wait for the opens
RUN_SECS="${RUN_SECS:-$((300 + OPEN_SECS))}" # the load run's deadline
PORT_BASE="${PORT_BASE:-30000}"     # below the ephemeral range: NATS 30222..,
                                    # edges 31000.. (admin 32000..)

nats_server="$(scripts/nats-server.sh)"
source bench/nats-cluster.sh
if [[ "${SKIP_BUILD:-}" != 1 ]]; then
  echo "building release binaries..." >&2
  cargo build --locked --release --workspace --bins >&2
fi
bin="$root/target/release"
ulimit -n "$(ulimit -Hn)"
edges=$(((STREAMS + PER_EDGE - 1) / PER_EDGE))
if ((edges > 700)); then
  echo "error: $edges edges; at most 700 fit the port layout (raise PER_EDGE)" >&2
  exit 2
fi

work="$(mktemp -d)"
pids=()
cluster_pids=()
# What the services warned of, kept beside the results: a run that loses
# streams says why (the logs themselves go with $work).
log_digest() {
  [[ -n "${out:-}" ]] || return 0
  local digest="${out%.txt}-warnings.txt" f
  for f in "$work"/*.log; do
    [[ -f "$f" ]] || continue
    sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -E ' (WARN|ERROR) |\[(WRN|ERR)\]' >"$work/warned" || continue
    echo "== $(basename "$f"): $(wc -l <"$work/warned") warnings and errors; first and last:"
    head -n 5 "$work/warned"
    tail -n 5 "$work/warned"
  done >"$digest"
  echo "warnings and errors: $digest" >&2
}
cleanup() {
  local status=$?
  log_digest || true
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
# What a run this size needs from the machine, against what it has; says
# what falls short (and what would fix it) before anything starts.
# Per stream, measured at 400,000 (docs/million-streams.md, "The budget"):
# two sockets, 9.8 KiB of kernel slab together; 4.6 KiB in an edge; 1.5
# KiB in a load generator; 5.5 KiB in NATS (1.85 KiB on each node: every
# node holds every user's interest); 0.4 KiB in herald-publish (presence).
# Per process ~5 MiB more.
check_budget() {
  local files_max files_used ports_lo ports_hi per_source avail_mib need_mib short=0
  files_max=$(cut -f1 /proc/sys/fs/file-max)
  files_used=$(cut -f1 /proc/sys/fs/file-nr)
  read -r ports_lo ports_hi </proc/sys/net/ipv4/ip_local_port_range
  per_source=$(((PER_EDGE + 1) / 2))
  avail_mib=$(($(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) / 1024))
  need_mib=$((STREAMS * (98 + 46 + 15 + 55 + 4) / 10 / 1024 + (2 * edges + 5) * 5))
  echo "budget: $STREAMS streams need ~$((2 * STREAMS)) files (free: $((files_max - files_used))), ~$need_mib MiB (available: $avail_mib), $per_source ports per source address (range: $((ports_hi - ports_lo + 1)))" >&2
  if ((2 * STREAMS + 10000 > files_max - files_used)); then
    echo "budget: too few files: raise fs.file-max (sysctl -w fs.file-max=$((4 * STREAMS)))" >&2
    short=1
  fi
  if ((per_source > ports_hi - ports_lo + 1)); then
    echo "budget: too few ephemeral ports per source address: lower PER_EDGE" >&2
    short=1
  fi
  if ((need_mib > avail_mib)); then
    echo "budget: likely short of memory ($need_mib MiB needed, $avail_mib available)" >&2
    short=1
  fi
  # Loopback streams are tracked only if some netfilter rule asks for it;
  # then every stream takes a conntrack entry.
  if [[ -r /proc/sys/net/netfilter/nf_conntrack_count ]] &&
    (($(cat /proc/sys/net/netfilter/nf_conntrack_count) > 0)) &&
    (($(cat /proc/sys/net/netfilter/nf_conntrack_max) < STREAMS + 10000)); then
    echo "budget: connections are tracked and nf_conntrack_max is $(cat /proc/sys/net/netfilter/nf_conntrack_max): sysctl -w net.netfilter.nf_conntrack_max=$((2 * STREAMS))" >&2
    short=1
  fi
  if ((short)) && [[ "${FORCE:-}" != 1 ]]; then
    echo "error: the machine falls short (FORCE=1 runs anyway)" >&2
    exit 2
  fi
}
wait_ok() { # url: until it answers 2xx (JetStream ready, service ready)
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: $1 is not ready" >&2
  exit 1
}

check_budget

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
  port=$((PORT_BASE + 1000 + g))
  "$bin/herald-edge" --nats-url "${nats_urls[$((g % 3))]}" "${history[@]}" --node-id "scale-edge-$g" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((PORT_BASE + 2000 + g))" \
    --heartbeat "${HEARTBEAT_SECS}s" --max-connections 19000 >"$work/edge-$g.log" 2>&1 &
  pids+=($!)
  edge_args+=(--edge-pid "$!")
  edge_list+=("127.0.0.1:$port")
done
wait_ok "http://127.0.0.1:$((PORT_BASE + 91))/readyz"
for g in $(seq 0 $((edges - 1))); do wait_ok "http://127.0.0.1:$((PORT_BASE + 2000 + g))/readyz"; done
sleep 1

# Two source addresses per load generator (each has the whole ephemeral
# port range), in 127.1.0.0/16: none shared with bench/run.sh.
sources=$(for a in $(seq 0 $((2 * edges - 1))); do printf '127.1.%s.%s,' $((a / 200)) $((a % 200 + 10)); done)
results="$root/bench/results"
mkdir -p "$results"
out="$results/scale-$(date -u +%Y%m%dT%H%M%SZ).txt"
write_meta "$out" "$bench_command"
echo "== $STREAMS streams on $edges edges, 3 NATS nodes, heartbeat ${HEARTBEAT_SECS}s (idle through $IDLE_HEARTBEATS)" >&2
raw="$work/scale.out"
: >"$raw"
# In the background, so a signal reaches the trap at once; `timeout`
# passes the trap's TERM on, and the agents exit when their pipes close.
timeout --signal=INT "$RUN_SECS" "$bin/herald-bench" --peer herald \
  --publish "http://127.0.0.1:$((PORT_BASE + 51))" --timeout "$OPEN_SECS" \
  scale --edges "$(IFS=,; echo "${edge_list[*]}")" "${edge_args[@]}" "${nats_pids[@]}" \
  --cpu-pid "publish=$publish_pid" --streams "$STREAMS" --topics "$TOPICS" --open-rate "$OPEN_RATE" --open-attempts "$OPEN_ATTEMPTS" \
  --sources "${sources%,}" --heartbeat-secs "$HEARTBEAT_SECS" --idle-heartbeats "$IDLE_HEARTBEATS" \
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
report_reminder "$out"
