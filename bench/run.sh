#!/usr/bin/env bash
# Herald against Nchan, same machine, same load generator, same run.
# Installs what it lacks (nginx + Nchan from Debian, the pinned nats-server),
# builds release binaries, starts NATS + herald-publish + herald-edge and
# nginx with bench/nchan.conf on 127.0.0.1, runs each scenario against both,
# and prints one table with the ratio Herald/Nchan per figure. Raw results
# (one JSON line per run) go to bench/results/.
#
#   CONNECTIONS=10000 FANOUT_RATES=5,10,20,50,100,200,400 bench/run.sh
#   SCENARIOS="idle storm" bench/run.sh      # only some scenarios
#   SCENARIOS=idle IDLE_SECS=60 bench/run.sh # idle CPU over four heartbeats
#   SCENARIOS=idle-shared bench/run.sh       # idle streams, ten tabs per user
#   SCENARIOS=churn CHURN_SECS=180 bench/run.sh   # memory under churn and after
#   SCENARIOS=unicast VIAS="grpc batch" bench/run.sh  # unicast by Publish and PublishBatch only
#   SCENARIOS=cluster bench/run.sh          # unicast across a 3-node NATS cluster (Herald only)
#   EDGE_FLAGS=--lifecycle-events SCENARIOS="idle storm" bench/run.sh  # the edge with extra flags
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-15000}"
# Seconds the idle streams are held while CPU is measured (heartbeats every 15 s).
IDLE_SECS="${IDLE_SECS:-20}"
CONNECTIONS="${CONNECTIONS:-10000}"
FANOUT_RATES="${FANOUT_RATES:-5,10,20,50,100,200,400}"
USERS="${USERS:-15000}"
RATES="${RATES:-1000,2000,5000,10000,20000,40000}"
SECS="${SECS:-5}"
STORM_CLIENTS="${STORM_CLIENTS:-15000}"
SOURCES="${SOURCES:-8}"
CHURN_SECS="${CHURN_SECS:-180}"
# cluster: publish and the edge on different nodes of a 3-node cluster.
CLUSTER_USERS="${CLUSTER_USERS:-5000}"
CLUSTER_RATES="${CLUSTER_RATES:-10000,20000}"
# churn (memory under churn and after it, Herald only) and cluster run when asked.
SCENARIOS="${SCENARIOS:-idle idle-shared fanout unicast storm}"

if [[ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing nginx and Nchan (Debian packages)..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light libnginx-mod-nchan >&2
  else
    echo "error: Nchan is missing; run: sudo apt-get install nginx-light libnginx-mod-nchan" >&2
    exit 1
  fi
fi
nats_server="$(scripts/nats-server.sh)"
source bench/nats-cluster.sh
echo "building release binaries..." >&2
# The whole workspace, as bench/scale.sh and `just build` build it: one
# release feature set, so no run rebuilds what another built.
cargo build --locked --release --workspace --bins >&2
bin="$root/target/release"
ulimit -n "$(ulimit -Hn)"

work="$(mktemp -d)"
results="$root/bench/results"
mkdir -p "$results"
pids=()
cluster_pids=()
cleanup() {
  for pid in "${pids[@]}" "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  keep_edge_log
  rm -rf "$work"
}
# The edge's log outlives a run that went wrong (a Herald figure with
# errors, retried or lost streams, or the run itself failing): next to the
# results, its tail printed.
keep_edge_log() {
  local log="$work/edge.log"
  [[ -s "$log" ]] || return 0
  if [[ -z "${out:-}" || ! -s "$out" ]] || ! herald_went_well "$out"; then
    local kept="$results/${stamp:-$(date -u +%Y%m%dT%H%M%SZ)}-edge.log"
    cp "$log" "$kept"
    echo "edge log kept: $kept; its last lines:" >&2
    tail -n 20 "$log" >&2
  fi
}
herald_went_well() {
  python3 - "$1" <<'PY'
import json, sys
bad = [r for r in map(json.loads, open(sys.argv[1])) if r["peer"] == "herald"
       and any(r.get(k) for k in ("errors", "retried", "lost"))]
sys.exit(1 if bad else 0)
PY
}
trap cleanup EXIT
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: nothing listens on 127.0.0.1:$1" >&2
  exit 1
}

export HERALD_JWT_SECRET="bench-secret-0123456789-0123456789"
export HERALD_NATS_URL="nats://127.0.0.1:24222"
"$nats_server" -a 127.0.0.1 -p 24222 -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port 24222
"$bin/herald-publish" --listen 127.0.0.1:25051 --admin-listen 127.0.0.1:25091 --node-id bench-publish \
  --history-storage memory >"$work/publish.log" 2>&1 &
publish_pid=$!
pids+=($publish_pid)
start_edge() {
  "$bin/herald-edge" --listen 127.0.0.1:25080 --admin-listen 127.0.0.1:25090 --node-id bench-edge \
    --max-connections 19000 ${EDGE_FLAGS:-} >>"$work/edge.log" 2>&1 &
  edge_pid=$!
  pids+=($edge_pid)
}
start_edge
mkdir -p "$work/nginx"
nginx -p "$work/nginx" -c "$root/bench/nchan.conf" >"$work/nginx.log" 2>&1 &
nginx_master=$!
pids+=($nginx_master)
wait_port 25051
wait_port 25080
wait_port 28080
sleep 1
# nginx's memory and CPU: the master and its workers together.
nginx_pids=$( (echo "$nginx_master"; pgrep -P "$nginx_master") | sed 's/^/--pid /' | tr '\n' ' ')

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$results/$stamp.jsonl"
run() { # peer, then herald-bench arguments
  local peer="$1"; shift
  echo "== $peer: $*" >&2
  "$bin/herald-bench" --peer "$peer" "$@" | sed -n 's/^RESULT //p' >>"$out"
}
run_as() { # scenario name for the results, then as `run`
  local scenario="$1" peer="$2"; shift 2
  echo "== $scenario, $peer: $*" >&2
  "$bin/herald-bench" --peer "$peer" "$@" | sed -n 's/^RESULT //p' |
    sed "s/\"scenario\":\"[a-z-]*\"/\"scenario\":\"$scenario\"/" >>"$out"
}
wait_ready() { # port [path]: until it answers 2xx
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1${2:-/readyz}" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: 127.0.0.1:$1${2:-/readyz} is not ready" >&2
  exit 1
}
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
herald=(--edge 127.0.0.1:25080 --publish http://127.0.0.1:25051)
nchan=(--edge 127.0.0.1:28080 --publish http://127.0.0.1:28080)
# shellcheck disable=SC2206
nginx_pid_args=($nginx_pids)
if want idle; then
  idle=(--connections "$IDLE_CONNECTIONS" --sources "$SOURCES" --idle-only --idle-secs "$IDLE_SECS")
  run herald "${herald[@]}" fanout --pid "$edge_pid" "${idle[@]}"
  run nchan "${nchan[@]}" fanout "${nginx_pid_args[@]}" "${idle[@]}"
fi
if want idle-shared; then
  # Ten tabs per user: streams share their user's subject as well as the topic.
  shared=(--connections "$IDLE_CONNECTIONS" --users $((IDLE_CONNECTIONS / 10)) --sources "$SOURCES" --idle-only --idle-secs "$IDLE_SECS")
  run herald "${herald[@]}" fanout --pid "$edge_pid" "${shared[@]}"
  run nchan "${nchan[@]}" fanout "${nginx_pid_args[@]}" "${shared[@]}"
fi
if want fanout; then
  fanout=(--connections "$CONNECTIONS" --sources "$SOURCES" --idle-secs 1 --rates "$FANOUT_RATES" --p99-limit-ms 1000)
  run herald "${herald[@]}" fanout --pid "$edge_pid" "${fanout[@]}"
  run nchan "${nchan[@]}" fanout "${nginx_pid_args[@]}" "${fanout[@]}"
fi
if want unicast; then
  unicast=(unicast --users "$USERS" --sources "$SOURCES" --rates "$RATES" --secs "$SECS")
  # Each way into herald-publish, with its CPU and the edge's per event.
  # PublishBatch: few callers, BATCH_SIZE events per call.
  for via in ${VIAS:-grpc batch http}; do
    via_args=(--via "$via" --cpu-pid "publish=$publish_pid" --cpu-pid "edge=$edge_pid")
    [[ $via == batch ]] && via_args+=(--publishers 4 --batch-size "${BATCH_SIZE:-50}")
    run herald "${herald[@]}" "${unicast[@]}" "${via_args[@]}" --ephemeral
    run herald "${herald[@]}" "${unicast[@]}" "${via_args[@]}"
  done
  run nchan "${nchan[@]}" "${unicast[@]}"
  run nats --publish "$HERALD_NATS_URL" "${unicast[@]}"
fi
if want storm; then
  storm=(storm --clients "$STORM_CLIENTS" --sources "$SOURCES")
  run herald "${herald[@]}" "${storm[@]}"
  run nchan "${nchan[@]}" "${storm[@]}"
  # Each client on its own user stream: every resume reads its own history.
  run herald "${herald[@]}" "${storm[@]}" --per-user --before 1 --missed 3
  run nchan "${nchan[@]}" "${storm[@]}" --per-user --before 1 --missed 3
fi
if want cluster; then
  # Publish on node 0, the edge on node 1: every event crosses a route;
  # persisted events are stored with 3 file replicas. Every rate is run,
  # whatever the p99 of the one before.
  # Clients on 24231-24233, routes on 24241-24243.
  start_nats_cluster herald-bench 24231 24241 24251 "$work"
  cluster_history=(--history-storage file --history-replicas 3)
  "$bin/herald-publish" --nats-url "${cluster_urls[0]}" "${cluster_history[@]}" --node-id cluster-publish \
    --listen 127.0.0.1:25151 --admin-listen 127.0.0.1:25191 >"$work/cluster-publish.log" 2>&1 &
  cluster_publish=$!
  pids+=($cluster_publish)
  "$bin/herald-edge" --nats-url "${cluster_urls[1]}" "${cluster_history[@]}" --node-id cluster-edge \
    --listen 127.0.0.1:25180 --admin-listen 127.0.0.1:25190 --max-connections 19000 >"$work/cluster-edge.log" 2>&1 &
  cluster_edge=$!
  pids+=($cluster_edge)
  wait_ready 25191
  wait_ready 25190
  cluster=(--edge 127.0.0.1:25180 --publish http://127.0.0.1:25151
    unicast --users "$CLUSTER_USERS" --sources "$SOURCES" --rates "$CLUSTER_RATES" --secs "$SECS"
    --every-rate --via batch --publishers 4 --batch-size "${BATCH_SIZE:-50}"
    --cpu-pid "publish=$cluster_publish" --cpu-pid "edge=$cluster_edge")
  run_as cluster herald "${cluster[@]}" --ephemeral
  run_as cluster herald "${cluster[@]}"
fi
if want churn; then
  # A fresh edge: its baseline must not hold what earlier scenarios left.
  kill "$edge_pid" && wait "$edge_pid" 2>/dev/null || true
  start_edge
  wait_port 25080
  run herald "${herald[@]}" churn --pid "$edge_pid" --secs "$CHURN_SECS" --sources "$SOURCES"
fi

python3 - "$out" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]

def of(scenario, peer, **fields):
    return [r for r in runs if r.get("scenario") == scenario and r["peer"] == peer
            and all(r.get(k) == v for k, v in fields.items())]

def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"

def best(steps, limit_ms, key):
    """The best step whose p99 stayed within the limit, nothing lost, at
    least 95% of the target rate reached."""
    good = [r for r in steps if r["p99_ms"] <= limit_ms and r["lost"] == 0
            and r["achieved_rate"] >= 0.95 * r["target_rate"]]
    return max(good, key=lambda r: r[key], default=None)

for h in of("idle", "herald"):
    n = of("idle", "nchan", users=h.get("users"))
    if not n:
        continue
    n = n[0]
    streams = f"idle, {h['connections']} streams" + (f" of {h['users']} users" if h.get("users", h["connections"]) < h["connections"] else "")
    print(f"{streams:<36}{'Herald':>12}{'Nchan':>12}{'Herald/Nchan':>14}")
    for name, key in [("KiB per idle stream", "kib_per_idle_stream"),
                      ("idle CPU, % of a core", "idle_cpu_percent"),
                      ("seconds to open all", "open_secs")]:
        print(f"{name:<36}{h[key]:>12.2f}{n[key]:>12.2f}{ratio(h[key], n[key]):>14}")

if of("fanout", "herald"):
    # 100 ms is the target; with 10,000 streams per event on this machine
    # the load generator alone needs about that long to read one event's
    # copies, so the best rate within 1 s is shown too.
    for limit in (100, 1000):
        print()
        print(f"{f'fan-out, p99 <= {limit} ms':<28}{'events/s':>10}{'deliveries/s':>14}{'p50 ms':>9}{'p99 ms':>9}")
        h = best(of("fanout", "herald"), limit, "deliveries_per_sec")
        n = best(of("fanout", "nchan"), limit, "deliveries_per_sec")
        for label, r in [("Herald", h), ("Nchan", n)]:
            if r is None:
                print(f"{label:<28}{'none':>10}")
            else:
                print(f"{label:<28}{r['achieved_rate']:>10.0f}{r['deliveries_per_sec']:>14.0f}"
                      f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")
        if h and n:
            print(f"Herald / Nchan deliveries/s: {ratio(h['deliveries_per_sec'], n['deliveries_per_sec'])}")

print()
print(f"{'unicast, p99 <= 50 ms':<34}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p999 ms':>9}"
      f"{'x Nchan':>9}{'publish µs/ev':>15}{'edge µs/ev':>12}")
sustained = {}
unicast = [r for r in runs if r.get("scenario") == "unicast"]
for r in unicast:
    r.setdefault("via", "grpc")
rows = [(f"Herald {'ephemeral' if eph else 'persisted'}, {via}", "herald", eph, via)
        for via in ("grpc", "batch", "http") for eph in (True, False)]
rows += [("Nchan", "nchan", False, "grpc"), ("NATS alone (ceiling)", "nats", False, "grpc")]
nchan_best = best([r for r in unicast if r["peer"] == "nchan"], 50, "achieved_rate")
for label, peer, eph, via in rows:
    steps = [r for r in unicast if r["peer"] == peer and r["ephemeral"] == eph and r["via"] == via]
    if not steps:
        continue
    r = sustained[label] = best(steps, 50, "achieved_rate")
    if r is None:
        print(f"{label:<34}{'none':>10}")
        continue
    cpu = r.get("cpu_us_per_event") or {}
    x = ratio(r["achieved_rate"], nchan_best["achieved_rate"]) if nchan_best else "n/a"
    print(f"{label:<34}{r['achieved_rate']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['p999_ms']:>9.2f}"
          f"{x:>9}{cpu.get('publish', float('nan')):>15.1f}{cpu.get('edge', float('nan')):>12.1f}")
def rate(label):
    return sustained[label]["achieved_rate"] if sustained.get(label) else 0.0
for a, b in [("Herald ephemeral, grpc", "NATS alone (ceiling)"),
             ("Herald ephemeral, batch", "NATS alone (ceiling)")]:
    print(f"{a} / {b}: {ratio(rate(a), rate(b))}")
print("(CPU per event at the best step that held; clock ticks of 10 ms over the step and its straggler wait)")
print("(each ramp stops at the first rate that misses; raise RATES / FANOUT_RATES to find a ceiling)")

print()
print(f"{'reconnect storm':<24}{'clients':>9}{'all open s':>12}{'caught up s':>13}{'errors':>8}{'retried':>9}{'lost':>7}{'dup':>6}")
for per_user in (False, True):
    for peer in ("herald", "nchan"):
        for r in of("storm", peer, per_user=per_user):
            label = peer + (", per user" if per_user else ", one topic")
            print(f"{label:<24}{r['clients']:>9}{r['all_open_secs']:>12.2f}{r['all_caught_up_secs']:>13.2f}"
                  f"{r['errors']:>8}{r.get('retried', 0):>9}{r['lost']:>7}{r['duplicated']:>6}")

cluster = of("cluster", "herald")
if cluster:
    print()
    print(f"{'cluster (publish node 0, edge node 1)':<40}{'target/s':>9}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'lost':>6}")
    for r in cluster:
        label = "ephemeral" if r["ephemeral"] else "persisted, 3 file replicas"
        print(f"{label:<40}{r['target_rate']:>9.0f}{r['achieved_rate']:>10.0f}{r['p50_ms']:>9.2f}"
              f"{r['p99_ms']:>9.2f}{r['lost']:>6}")

for r in of("churn", "herald"):
    print()
    print(f"churn: {r['live']} streams live for {r['secs']} s, {r['connects']} connects, "
          f"{r['publishes']} publishes, {r['failed_connects']} failed")
    print(f"  RSS MB: warm baseline {r['baseline_rss_kib'] / 1024:.1f}, peak {r['peak_rss_kib'] / 1024:.1f}, "
          f"after close {r['after_close_rss_kib'] / 1024:.1f} "
          f"({r['after_close_rss_kib'] / r['baseline_rss_kib'] * 100 - 100:+.0f}%); anonymous "
          f"{r['baseline_anon_kib'] / 1024:.1f} -> {r['after_close_anon_kib'] / 1024:.1f}")
    growth = r["growth_after_first_minute_percent"]
    print(f"  growth after the first minute: {'n/a' if growth is None else f'{growth:+.1f}%'}")
PY
# Plots only for the plotted scenarios this run measured (plot.py says so
# and fails when a scenario has no results).
plots=()
for scenario in unicast fanout; do
  svg="${out%.jsonl}-$scenario.svg"
  if want "$scenario" && python3 bench/plot.py "$out" "$scenario" >"$svg"; then
    plots+=("$svg")
  else
    rm -f "$svg"
  fi
done
echo "raw results: $out${plots:+; plots: ${plots[*]}}" >&2
