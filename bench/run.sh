#!/usr/bin/env bash
# Herald against its peers (Nchan, Pushpin; NATS alone for unicast), same
# machine, same load generator, same run. Installs what it lacks (nginx +
# Nchan and Pushpin from Debian, the pinned nats-server), builds release
# binaries, starts NATS + herald-publish + herald-edge, nginx with
# bench/nchan.conf and Pushpin with bench/pushpin.conf (its GRIP origin is
# `herald-bench pushpin-origin`) on 127.0.0.1, runs each scenario against
# each, and prints one table with the ratio Herald/peer per figure and
# peer. Raw results (one JSON line per run) go to bench/results/.
#
#   CONNECTIONS=10000 FANOUT_RATES=5,10,20,50,100,200,400 bench/run.sh
#   SCENARIOS="idle storm" bench/run.sh      # only some scenarios
#   PEERS=nchan bench/run.sh                 # only some peers (default: nchan pushpin)
#   SCENARIOS=idle IDLE_SECS=60 bench/run.sh # idle CPU over four heartbeats
#   SCENARIOS=idle-shared bench/run.sh       # idle streams, ten tabs per user
#   SCENARIOS=churn CHURN_SECS=180 bench/run.sh   # memory under churn and after
#   SCENARIOS=unicast VIAS="grpc batch" bench/run.sh  # unicast by Publish and PublishBatch only
#   SCENARIOS=unicast UNICAST_REPEAT=1 bench/run.sh   # one round of unicast (default 2)
#   SCENARIOS=cluster bench/run.sh          # unicast across a 3-node NATS cluster (Herald only)
#   EDGE_FLAGS=--lifecycle-events SCENARIOS="idle storm" bench/run.sh  # the edge with extra flags
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source bench/meta.sh
# The command as typed (before defaults), for the results' meta file.
bench_command=$(command_line bench/run.sh IDLE_CONNECTIONS IDLE_SECS CONNECTIONS FANOUT_RATES USERS RATES \
  NATS_EXTRA_RATES REFINE_GAP SECS UNICAST_REPEAT STORM_CLIENTS SOURCES CHURN_SECS CLUSTER_USERS \
  CLUSTER_RATES SCENARIOS PEERS VIAS BATCH_SIZE EDGE_FLAGS)
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-15000}"
# Seconds the idle streams are held while CPU is measured (heartbeats every 15 s).
IDLE_SECS="${IDLE_SECS:-20}"
CONNECTIONS="${CONNECTIONS:-10000}"
FANOUT_RATES="${FANOUT_RATES:-5,10,20,50,100,200,400}"
USERS="${USERS:-15000}"
# The coarse unicast ramp; herald-bench refines between the last rate that
# held and the first that missed (rates 10 % apart, REFINE_GAP=1.1).
RATES="${RATES:-1000,2000,5000,10000,20000,40000,80000,160000}"
NATS_EXTRA_RATES="${NATS_EXTRA_RATES:-320000,640000}" # NATS alone goes on to these
REFINE_GAP="${REFINE_GAP:-1.1}"
SECS="${SECS:-5}"
# Unicast rounds; every system is started afresh before each of its ramps' rounds.
UNICAST_REPEAT="${UNICAST_REPEAT:-2}"
STORM_CLIENTS="${STORM_CLIENTS:-15000}"
SOURCES="${SOURCES:-8}"
CHURN_SECS="${CHURN_SECS:-180}"
# cluster: publish and the edge on different nodes of a 3-node cluster.
CLUSTER_USERS="${CLUSTER_USERS:-5000}"
CLUSTER_RATES="${CLUSTER_RATES:-10000,20000}"
# churn (memory under churn and after it, Herald only) and cluster run when asked.
SCENARIOS="${SCENARIOS:-idle idle-shared fanout unicast storm}"
PEERS="${PEERS:-nchan pushpin}"

peer_on() { [[ " $PEERS " == *" $1 "* ]]; }
for peer in $PEERS; do
  case "$peer" in
    nchan | pushpin) ;;
    *) echo "error: PEERS has '$peer'; known peers: nchan pushpin" >&2; exit 2 ;;
  esac
done
packages=()
if peer_on nchan && [[ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
  packages+=(nginx-light libnginx-mod-nchan)
fi
if peer_on pushpin && ! command -v pushpin >/dev/null; then
  packages+=(pushpin)
fi
if ((${#packages[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${packages[*]} (Debian packages)..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}" >&2
  else
    echo "error: ${packages[*]} missing; run: sudo apt-get install ${packages[*]}" >&2
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
wait_closed() { # port: until nothing listens there (a stopped server let go of it)
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 0
    sleep 0.1
  done
  echo "error: 127.0.0.1:$1 is still open" >&2
  exit 1
}
stop() { # pid...: stop the processes this run started, and wait for them
  local pid
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}
wait_ready() { # port [path]: until it answers 2xx
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1${2:-/readyz}" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: 127.0.0.1:$1${2:-/readyz} is not ready" >&2
  exit 1
}

export HERALD_JWT_SECRET="bench-secret-0123456789-0123456789"
export HERALD_NATS_URL="nats://127.0.0.1:24222"
# Herald: NATS with JetStream (a fresh store each start), herald-publish
# and one edge.
start_herald() {
  rm -rf "$work/nats"
  "$nats_server" -a 127.0.0.1 -p 24222 -js -sd "$work/nats" >>"$work/nats.log" 2>&1 &
  nats_pid=$!
  pids+=($nats_pid)
  wait_port 24222
  "$bin/herald-publish" --listen 127.0.0.1:25051 --admin-listen 127.0.0.1:25091 --node-id bench-publish \
    --history-storage memory >>"$work/publish.log" 2>&1 &
  publish_pid=$!
  pids+=($publish_pid)
  start_edge
  wait_port 25051
  wait_port 25080
  # Listening is not serving: an edge refuses streams until it is ready.
  wait_ready 25091
  wait_ready 25090
}
stop_herald() {
  # NATS last: the services hand it what they hold before they exit.
  stop "$edge_pid" "$publish_pid"
  stop "$nats_pid"
  wait_closed 25080
  wait_closed 24222
}
# The edge's history flags match herald-publish's (it exits 2 on a stream
# stored otherwise, which it finds when publish starts first).
start_edge() {
  "$bin/herald-edge" --listen 127.0.0.1:25080 --admin-listen 127.0.0.1:25090 --node-id bench-edge \
    --history-storage memory --max-connections 19000 ${EDGE_FLAGS:-} >>"$work/edge.log" 2>&1 &
  edge_pid=$!
  pids+=($edge_pid)
}
# Nchan: nginx's master and its workers (memory and CPU: all of them).
start_nchan() {
  mkdir -p "$work/nginx"
  nginx -p "$work/nginx" -c "$root/bench/nchan.conf" >>"$work/nginx.log" 2>&1 &
  nginx_master=$!
  pids+=($nginx_master)
  wait_port 28080
  sleep 1
  # shellcheck disable=SC2207
  nchan_pids=($( (echo "$nginx_master"; pgrep -P "$nginx_master") | sed 's/^/--pid /'))
}
stop_nchan() {
  stop "$nginx_master"
  wait_closed 28080
}
# Pushpin: its runner starts condure (client connections), zurl (requests
# to the origin), pushpin-proxy and pushpin-handler (subscriptions and
# publishing); with its GRIP origin, all count for memory and CPU. Its
# runtime files and logs go to $work/pushpin (bench/pushpin.conf).
start_pushpin() {
  mkdir -p "$work/pushpin"
  "$bin/herald-bench" pushpin-origin --listen 127.0.0.1:27080 >>"$work/pushpin-origin.log" 2>&1 &
  origin_pid=$!
  (cd "$work/pushpin" && exec pushpin --config "$root/bench/pushpin.conf") >>"$work/pushpin.log" 2>&1 &
  pushpin_runner=$!
  pids+=($origin_pid $pushpin_runner)
  wait_port 27080
  wait_port 27999
  wait_port 27561
  sleep 1
  local children
  children=$(pgrep -P "$pushpin_runner" | wc -l)
  if [[ "$children" != 4 ]]; then
    echo "error: Pushpin runs $children processes, not condure, zurl, pushpin-proxy and pushpin-handler; see $work/pushpin/log" >&2
    exit 1
  fi
  # shellcheck disable=SC2207
  pushpin_pids=($( (echo "$pushpin_runner"; pgrep -P "$pushpin_runner"; echo "$origin_pid") | sed 's/^/--pid /'))
}
stop_pushpin() {
  stop "$pushpin_runner" "$origin_pid"
  wait_closed 27999
  wait_closed 27561
}
start_herald
peer_on nchan && start_nchan
peer_on pushpin && start_pushpin

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$results/$stamp.jsonl"
write_meta "$out" "$bench_command"
failures=()
run() { # peer, then herald-bench arguments. Herald failing ends the run; a
  # peer failing is reported at the end, and its figures are missing.
  local peer="$1"; shift
  echo "== $peer: $*" >&2
  if ! "$bin/herald-bench" --peer "$peer" "$@" | sed -n 's/^RESULT //p' >>"$out"; then
    [[ $peer == herald ]] && { echo "error: Herald failed: $*" >&2; exit 1; }
    echo "warning: $peer failed: $*" >&2
    failures+=("$peer failed (its figures are missing): $*")
  fi
}
run_as() { # scenario name for the results, then as `run`
  local scenario="$1" peer="$2"; shift 2
  echo "== $scenario, $peer: $*" >&2
  "$bin/herald-bench" --peer "$peer" "$@" | sed -n 's/^RESULT //p' |
    sed "s/\"scenario\":\"[a-z-]*\"/\"scenario\":\"$scenario\"/" >>"$out"
}
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
herald=(--edge 127.0.0.1:25080 --publish http://127.0.0.1:25051)
peer_args() { # peer: sets target_args (where it listens) and pid_args (its processes)
  case "$1" in
    nchan)
      target_args=(--edge 127.0.0.1:28080 --publish http://127.0.0.1:28080)
      pid_args=("${nchan_pids[@]}")
      ;;
    pushpin)
      target_args=(--edge 127.0.0.1:27999 --publish http://127.0.0.1:27561)
      pid_args=("${pushpin_pids[@]}")
      ;;
  esac
}
peer_cpu_args() { # peer: sets cpu_args, its processes' CPU counted under its name
  cpu_args=()
  local arg
  for arg in "${pid_args[@]}"; do
    [[ $arg == --pid ]] || cpu_args+=(--cpu-pid "$1=$arg")
  done
}
fanout_all() { # fanout arguments: Herald, then every peer
  run herald "${herald[@]}" fanout --pid "$edge_pid" "$@"
  for peer in $PEERS; do
    peer_args "$peer"
    run "$peer" "${target_args[@]}" fanout "${pid_args[@]}" "$@"
  done
}
if want idle; then
  fanout_all --connections "$IDLE_CONNECTIONS" --sources "$SOURCES" --idle-only --idle-secs "$IDLE_SECS"
fi
if want idle-shared; then
  # Ten tabs per user: streams share their user's subject as well as the topic.
  fanout_all --connections "$IDLE_CONNECTIONS" --users $((IDLE_CONNECTIONS / 10)) --sources "$SOURCES" --idle-only --idle-secs "$IDLE_SECS"
fi
if want fanout; then
  fanout_all --connections "$CONNECTIONS" --sources "$SOURCES" --idle-secs 1 --rates "$FANOUT_RATES" --p99-limit-ms 1000
fi
if want unicast; then
  # Each system starts afresh before its ramps in each round, so what
  # earlier scenarios left (memory, buffers, history) does not weigh on it.
  for round in $(seq 1 "$UNICAST_REPEAT"); do
    unicast=(unicast --users "$USERS" --sources "$SOURCES" --rates "$RATES" --secs "$SECS"
      --refine-gap "$REFINE_GAP" --round "$round")
    echo "== unicast round $round of $UNICAST_REPEAT" >&2
    stop_herald
    start_herald
    # Each way into herald-publish, with its CPU and the edge's per event.
    # PublishBatch: few callers, BATCH_SIZE events per call.
    for via in ${VIAS:-grpc batch http}; do
      via_args=(--via "$via" --cpu-pid "publish=$publish_pid" --cpu-pid "edge=$edge_pid" --cpu-pid "nats=$nats_pid")
      [[ $via == batch ]] && via_args+=(--publishers 4 --batch-size "${BATCH_SIZE:-50}")
      run herald "${herald[@]}" "${unicast[@]}" "${via_args[@]}" --ephemeral
      run herald "${herald[@]}" "${unicast[@]}" "${via_args[@]}"
    done
    for peer in $PEERS; do
      "stop_$peer"
      "start_$peer"
      peer_args "$peer"
      peer_cpu_args "$peer"
      run "$peer" "${target_args[@]}" "${unicast[@]}" "${cpu_args[@]}"
    done
    # NATS alone: a fresh core server of its own, no Herald connected.
    "$nats_server" -a 127.0.0.1 -p 24322 >>"$work/nats-alone.log" 2>&1 &
    nats_alone=$!
    pids+=($nats_alone)
    wait_port 24322
    # Its ramp goes on past the others' top, to find its ceiling here.
    nats_unicast=()
    for arg in "${unicast[@]}"; do
      [[ $arg == "$RATES" ]] && arg="$RATES,$NATS_EXTRA_RATES"
      nats_unicast+=("$arg")
    done
    run nats --publish nats://127.0.0.1:24322 "${nats_unicast[@]}" --cpu-pid "nats=$nats_alone"
    stop "$nats_alone"
  done
fi
if want storm; then
  storm=(storm --clients "$STORM_CLIENTS" --sources "$SOURCES")
  # All on one topic, then each client on its own user stream: every
  # resume reads its own history.
  for kind in topic user; do
    per_user=()
    [[ $kind == user ]] && per_user=(--per-user --before 1 --missed 3)
    run herald "${herald[@]}" "${storm[@]}" "${per_user[@]}"
    for peer in $PEERS; do
      peer_args "$peer"
      run "$peer" "${target_args[@]}" "${storm[@]}" "${per_user[@]}"
    done
  done
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

python3 - "$out" $PEERS <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
peers = sys.argv[2:]
NAMES = {"herald": "Herald", "nchan": "Nchan", "pushpin": "Pushpin", "nats": "NATS alone"}

def of(scenario, peer, **fields):
    return [r for r in runs if r.get("scenario") == scenario and r["peer"] == peer
            and all(r.get(k) == v for k, v in fields.items())]

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"

def held(r, limit_ms):
    return (r["p99_ms"] <= limit_ms and r["lost"] == 0
            and r["achieved_rate"] >= 0.95 * r["target_rate"])

def best(steps, limit_ms, key):
    """The best step whose p99 stayed within the limit, nothing lost, at
    least 95% of the target rate reached."""
    return max((r for r in steps if held(r, limit_ms)), key=lambda r: r[key], default=None)

for h in of("idle", "herald"):
    row = [(p, of("idle", p, users=h.get("users"))) for p in peers]
    row = [(p, n[0]) for p, n in row if n]
    if not row:
        continue
    streams = f"idle, {h['connections']} streams" + (f" of {h['users']} users" if h.get("users", h["connections"]) < h["connections"] else "")
    print(f"{streams:<36}{'Herald':>10}" + "".join(f"{NAMES[p]:>10}" for p, _ in row)
          + "".join(f"{'H/' + NAMES[p]:>11}" for p, _ in row))
    for name, key in [("KiB per idle stream", "kib_per_idle_stream"),
                      ("idle CPU, % of a core", "idle_cpu_percent"),
                      ("seconds to open all", "open_secs")]:
        print(f"{name:<36}{h[key]:>10.2f}" + "".join(f"{n[key]:>10.2f}" for _, n in row)
              + "".join(f"{ratio(h[key], n[key]):>11}" for _, n in row))

if of("fanout", "herald"):
    # 100 ms is the target; with 10,000 streams per event on this machine
    # the load generator alone needs about that long to read one event's
    # copies, so the best rate within 1 s is shown too.
    for limit in (100, 1000):
        print()
        print(f"{f'fan-out, p99 <= {limit} ms':<28}{'events/s':>10}{'deliveries/s':>14}{'p50 ms':>9}{'p99 ms':>9}")
        found = {p: best(of("fanout", p), limit, "deliveries_per_sec") for p in ["herald"] + peers}
        for p, r in found.items():
            if r is None:
                print(f"{NAMES[p]:<28}{'none':>10}")
            else:
                print(f"{NAMES[p]:<28}{r['achieved_rate']:>10.0f}{r['deliveries_per_sec']:>14.0f}"
                      f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")
        for p in peers:
            if found["herald"] and found[p]:
                print(f"Herald / {NAMES[p]} deliveries/s: "
                      f"{ratio(found['herald']['deliveries_per_sec'], found[p]['deliveries_per_sec'])}")

unicast = [r for r in runs if r.get("scenario") == "unicast"]
for r in unicast:
    r.setdefault("via", "grpc")
    r.setdefault("round", 1)
rounds = sorted({r["round"] for r in unicast})
def system(cpu):
    """CPU per event of the system under test: all but the load generator."""
    parts = [v for k, v in cpu.items() if k != "load"]
    return sum(parts) if parts else float("nan")
rows = [(f"Herald {'ephemeral' if eph else 'persisted'}, {via}", "herald", eph, via)
        for via in ("grpc", "batch", "http") for eph in (True, False)]
rows += [(NAMES[p], p, False, "grpc") for p in peers] + [("NATS alone", "nats", False, "grpc")]
for rnd in rounds:
    steps_of = lambda peer, eph, via: [r for r in unicast if r["round"] == rnd and r["peer"] == peer
                                       and r["ephemeral"] == eph and r["via"] == via]
    peer_best = {p: best(steps_of(p, False, "grpc"), 50, "achieved_rate") for p in peers + ["nats"]}
    print()
    print(f"{f'unicast round {rnd}, p99 <= 50 ms':<34}{'events/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'p999 ms':>9}"
          + "".join(f"{'x ' + NAMES[p]:>11}" for p in peers)
          + f"{'publish µs/ev':>15}{'edge µs/ev':>12}{'system µs/ev':>14}{'load µs/ev':>12}")
    sustained = {}
    for label, peer, eph, via in rows:
        steps = steps_of(peer, eph, via)
        if not steps:
            continue
        r = sustained[label] = best(steps, 50, "achieved_rate")
        if r is None:
            print(f"{label:<34}{'none':>11}")
            continue
        # Every rate held: the ceiling is higher than the ramp went.
        mark = ">=" if all(held(s, 50) for s in steps) else ""
        cpu = r.get("cpu_us_per_event") or {}
        xs = "".join(f"{ratio(r['achieved_rate'], peer_best[p]['achieved_rate'] if peer_best[p] else None):>11}"
                     for p in peers)
        print(f"{label:<34}{mark + format(r['achieved_rate'], '.0f'):>11}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['p999_ms']:>9.2f}{xs}{cpu.get('publish', float('nan')):>15.1f}{cpu.get('edge', float('nan')):>12.1f}"
              f"{system(cpu):>14.1f}{cpu.get('load', float('nan')):>12.1f}")
    def rate(label):
        return sustained[label]["achieved_rate"] if sustained.get(label) else None
    for a in ("Herald ephemeral, grpc", "Herald ephemeral, batch"):
        print(f"{a} / NATS alone: {ratio(rate(a), rate('NATS alone'))}")
if unicast:
    print("(the highest step held; '>=' where every step held; the coarse ramp is refined to 10 %-apart"
          " rates between the last that held and the first that missed)")
    print("(CPU per event at the best step that held; clock ticks of 10 ms over the step and its straggler wait;"
          " system: every process of the system under test (Herald: publish, NATS, edge); load: the load generator)")

storms = [r for r in runs if r.get("scenario") == "storm"]
if storms:
    print()
    print(f"{'reconnect storm':<24}{'clients':>9}{'answered s':>12}{'all open s':>12}{'caught up s':>13}"
          f"{'errors':>8}{'retried':>9}{'lost':>8}{'dup':>6}")
for per_user in (False, True):
    caught = {}
    for peer in ["herald"] + peers:
        for r in of("storm", peer, per_user=per_user):
            label = NAMES[peer] + (", per user" if per_user else ", one topic")
            replay = r.get("replay", True)
            caught[peer] = r["all_caught_up_secs"] if replay else None
            up = f"{r['all_caught_up_secs']:.2f}" if replay else "no replay"
            answered = r.get("all_answered_secs")
            answered = "n/a" if answered is None else f"{answered:.2f}"
            print(f"{label:<24}{r['clients']:>9}{answered:>12}{r['all_open_secs']:>12.2f}{up:>13}"
                  f"{r['errors']:>8}{r.get('retried', 0):>9}{r['lost']:>8}{r['duplicated']:>6}")
    for peer in peers:
        if "herald" in caught and peer in caught:
            kind = "per user" if per_user else "one topic"
            print(f"  Herald / {NAMES[peer]}, {kind}, caught up: "
                  + (ratio(caught["herald"], caught[peer]) if caught[peer] else "n/a (no replay)"))

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
report_reminder "$out" "${plots[@]}"
for failure in "${failures[@]}"; do echo "warning: $failure" >&2; done
