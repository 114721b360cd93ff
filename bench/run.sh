#!/usr/bin/env bash
# Herald against Nchan, same machine, same load generator, same run.
# Installs what it lacks (nginx + Nchan from Debian, the pinned nats-server),
# builds release binaries, starts NATS + herald-publish + herald-edge and
# nginx with bench/nchan.conf on 127.0.0.1, runs each scenario against both,
# and prints one table with the ratio Herald/Nchan per figure. Raw results
# (one JSON line per run) go to bench/results/.
#
#   CONNECTIONS=10000 EVENTS=200 bench/run.sh
#   SCENARIOS="storm" bench/run.sh      # only some scenarios
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
CONNECTIONS="${CONNECTIONS:-10000}"
EVENTS="${EVENTS:-200}"
USERS="${USERS:-15000}"
RATES="${RATES:-1000,2000,5000,10000,20000,40000}"
SECS="${SECS:-5}"
STORM_CLIENTS="${STORM_CLIENTS:-15000}"
SOURCES="${SOURCES:-8}"
SCENARIOS="${SCENARIOS:-fanout unicast storm}"

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
echo "building release binaries..." >&2
cargo build --locked --release -p herald-edge -p herald-publish -p herald-bench >&2
bin="$root/target/release"
ulimit -n "$(ulimit -Hn)"

work="$(mktemp -d)"
results="$root/bench/results"
mkdir -p "$results"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
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

export HERALD_JWT_SECRET="bench-secret-0123456789"
export HERALD_NATS_URL="nats://127.0.0.1:24222"
"$nats_server" -a 127.0.0.1 -p 24222 -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port 24222
"$bin/herald-publish" --listen 127.0.0.1:25051 --admin-listen 127.0.0.1:25091 --node-id bench-publish \
  --history-storage memory >"$work/publish.log" 2>&1 &
pids+=($!)
"$bin/herald-edge" --listen 127.0.0.1:25080 --admin-listen 127.0.0.1:25090 --node-id bench-edge \
  --max-connections 19000 >"$work/edge.log" 2>&1 &
edge_pid=$!
pids+=($edge_pid)
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
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
if want fanout; then
run herald --edge 127.0.0.1:25080 --publish http://127.0.0.1:25051 \
  fanout --pid "$edge_pid" --connections "$CONNECTIONS" --events "$EVENTS" --sources "$SOURCES"
# shellcheck disable=SC2086
run nchan --edge 127.0.0.1:28080 --publish http://127.0.0.1:28080 \
  fanout $nginx_pids --connections "$CONNECTIONS" --events "$EVENTS" --sources "$SOURCES"
fi
if want unicast; then
unicast=(unicast --users "$USERS" --sources "$SOURCES" --rates "$RATES" --secs "$SECS")
run herald --edge 127.0.0.1:25080 --publish http://127.0.0.1:25051 "${unicast[@]}" --ephemeral
run herald --edge 127.0.0.1:25080 --publish http://127.0.0.1:25051 "${unicast[@]}"
run nchan --edge 127.0.0.1:28080 --publish http://127.0.0.1:28080 "${unicast[@]}"
run nats --publish "$HERALD_NATS_URL" "${unicast[@]}"
fi
if want storm; then
run herald --edge 127.0.0.1:25080 --publish http://127.0.0.1:25051 storm --clients "$STORM_CLIENTS" --sources "$SOURCES"
run nchan --edge 127.0.0.1:28080 --publish http://127.0.0.1:28080 storm --clients "$STORM_CLIENTS" --sources "$SOURCES"
fi

python3 - "$out" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
by = {r["peer"]: r for r in runs if "connections" in r}
h, n = by["herald"], by["nchan"]
rows = [
    ("KiB per idle stream", "kib_per_idle_stream", "lower is better"),
    ("idle CPU %", "idle_cpu_percent", "lower is better"),
    ("fan-out deliveries/s", "deliveries_per_sec", "higher is better"),
    ("deliveries received", "deliveries", f"of {h['expected']}"),
]
print(f"{'figure':<24}{'Herald':>14}{'Nchan':>14}{'Herald/Nchan':>14}  note")
for name, key, note in rows:
    ratio = f"{h[key] / n[key]:.2f}" if n[key] else "n/a"
    print(f"{name:<24}{h[key]:>14.1f}{n[key]:>14.1f}{ratio:>14}  {note}")

# Unicast: the highest rate each system sustained (p99 within the limit,
# nothing lost, at least 95% of the target rate reached).
def sustained(peer, ephemeral):
    steps = [r for r in runs if r.get("peer") == peer and "target_rate" in r
             and r["ephemeral"] == ephemeral]
    good = [r for r in steps if r["p99_ms"] <= 50 and r["lost"] == 0
            and r["achieved_rate"] >= 0.95 * r["target_rate"]]
    return max(good, key=lambda r: r["achieved_rate"], default=None)

print()
print(f"{'unicast, sustained':<28}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p999 ms':>9}")
best = {}
for label, peer, eph in [("Herald ephemeral", "herald", True), ("Herald persisted", "herald", False),
                         ("Nchan", "nchan", False), ("NATS alone (ceiling)", "nats", False)]:
    r = best[label] = sustained(peer, eph)
    if r is None:
        print(f"{label:<28}{'none':>10}")
    else:
        print(f"{label:<28}{r['achieved_rate']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['p999_ms']:>9.2f}")
def rate(label):
    return best[label]["achieved_rate"] if best[label] else 0.0
for a, b in [("Herald ephemeral", "Nchan"), ("Herald persisted", "Nchan"),
             ("Herald ephemeral", "NATS alone (ceiling)")]:
    ratio = f"{rate(a) / rate(b):.2f}" if rate(b) else "n/a"
    print(f"{a} / {b}: {ratio}")
print("(rates tried: the ramp stops at the first rate that misses; raise RATES to find a ceiling)")

storms = {r["peer"]: r for r in runs if "all_open_secs" in r}
print()
print(f"{'reconnect storm':<20}{'clients':>9}{'all open s':>12}{'caught up s':>13}{'errors':>8}{'lost':>7}{'dup':>6}")
for peer in ("herald", "nchan"):
    r = storms.get(peer)
    if r:
        print(f"{peer:<20}{r['clients']:>9}{r['all_open_secs']:>12.2f}{r['all_caught_up_secs']:>13.2f}"
              f"{r['errors']:>8}{r['lost']:>7}{r['duplicated']:>6}")
PY
python3 bench/plot.py "$out" >"${out%.jsonl}.svg"
echo "raw results: $out; plot: ${out%.jsonl}.svg" >&2
