#!/usr/bin/env bash
# Two regions on loopback: NATS clusters `a` and `b` (one node each, with
# JetStream) joined by gateways that pass through `herald-bench delay`
# relays, DELAY_MS each way (default 20: a 40 ms round trip; this
# machine's kernel has no netem), and herald-publish and an edge in each
# region with --region. Runs `herald-bench regions`: USERS streams per
# region, EVENTS persisted events per phase at RATE/s. Prints one JSON
# line, then
#   regions (<ms> each way): delivery p50/p99 in a, a->b, in b; persisted publish in
#   a, in b; connect a, b; gateway msgs per event to b, without interest (and idle); lost
# The lines also go to bench/results/regions-<time>.txt. Bounded: every
# process is stopped on exit, the relays stop by themselves.
#
#   bench/regions.sh
#   DELAY_MS=50 USERS=500 SKIP_BUILD=1 bench/regions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DELAY_MS="${DELAY_MS:-20}"
USERS="${USERS:-1000}"
EVENTS="${EVENTS:-1000}"
RATE="${RATE:-200}"
PORT_BASE="${PORT_BASE:-29000}" # below the ephemeral range
nats_server="$(scripts/nats-server.sh)"
source bench/processes.sh
release_binaries herald-edge herald-publish herald-bench
start_work

# Region r (0: a, 1: b): clients on +1+r, monitoring +101+r, routes
# +201+r, gateway +301+r; the relay into region r listens on +311+r.
names=(a b)
for r in 0 1; do
  "$bin/herald-bench" delay --listen "127.0.0.1:$((PORT_BASE + 311 + r))" \
    --to "127.0.0.1:$((PORT_BASE + 301 + r))" --ms "$DELAY_MS" --for 900 >"$work/relay-${names[$r]}.log" 2>&1 &
  pids+=($!)
done
for r in 0 1; do
  name=${names[$r]}
  cat >"$work/nats-$name.conf" <<CONF
server_name: $name-n0
host: 127.0.0.1
port: $((PORT_BASE + 1 + r))
http_port: $((PORT_BASE + 101 + r))
jetstream { store_dir: "$work/js-$name" }
# JetStream in a cluster wants routes; a route to itself is ignored.
cluster { name: $name, listen: 127.0.0.1:$((PORT_BASE + 201 + r)), routes: ["nats://127.0.0.1:$((PORT_BASE + 201 + r))"] }
gateway {
  name: $name
  listen: 127.0.0.1:$((PORT_BASE + 301 + r))
  advertise: "127.0.0.1:$((PORT_BASE + 311 + r))"
  gateways: [
    { name: a, urls: ["nats://127.0.0.1:$((PORT_BASE + 311))"] }
    { name: b, urls: ["nats://127.0.0.1:$((PORT_BASE + 312))"] }
  ]
}
CONF
  "$nats_server" -c "$work/nats-$name.conf" >"$work/nats-$name.log" 2>&1 &
  pids+=($!)
done
for r in 0 1; do wait_ok "http://127.0.0.1:$((PORT_BASE + 101 + r))/healthz" 120; done

export HERALD_JWT_SECRET="regions-bench-secret-0123456789-0123" HERALD_API_TOKEN="regions-bench-api-token-0123456789"
for r in 0 1; do
  name=${names[$r]}
  nats="nats://127.0.0.1:$((PORT_BASE + 1 + r))"
  "$bin/herald-publish" --nats-url "$nats" --region "$name" --node-id "publish-$name" \
    --listen "127.0.0.1:$((PORT_BASE + 51 + r))" --admin-listen "127.0.0.1:$((PORT_BASE + 91 + r))" \
    >"$work/publish-$name.log" 2>&1 &
  pids+=($!)
  "$bin/herald-edge" --nats-url "$nats" --region "$name" --regions a,b --node-id "edge-$name" \
    --listen "127.0.0.1:$((PORT_BASE + 81 + r))" --admin-listen "127.0.0.1:$((PORT_BASE + 181 + r))" \
    --max-connections 19000 >"$work/edge-$name.log" 2>&1 &
  pids+=($!)
done
for r in 0 1; do
  wait_ok "http://127.0.0.1:$((PORT_BASE + 91 + r))/readyz"
  wait_ok "http://127.0.0.1:$((PORT_BASE + 181 + r))/readyz"
done

mkdir -p bench/results
out="bench/results/regions-$(date -u +%Y%m%dT%H%M%SZ).txt"
line=$(timeout 600 "$bin/herald-bench" --peer herald --edge "127.0.0.1:$((PORT_BASE + 81))" \
  --publish "http://127.0.0.1:$((PORT_BASE + 51))" --api-token "$HERALD_API_TOKEN" --timeout 30 \
  regions --second-edge "127.0.0.1:$((PORT_BASE + 82))" --second-publish "http://127.0.0.1:$((PORT_BASE + 52))" \
  --gatewayz "http://127.0.0.1:$((PORT_BASE + 101))/gatewayz" \
  --users "$USERS" --events "$EVENTS" --rate "$RATE")
echo "$line" | tee "$out"
python3 - "$line" "$DELAY_MS" <<'PY' | tee -a "$out"
import json, sys
r, delay = json.loads(sys.argv[1]), sys.argv[2]
f = lambda s: f"{r[s]['p50_ms']:.1f}/{r[s]['p99_ms']:.1f}"
print(f"regions ({delay} ms each way): delivery p50/p99 in a {f('deliver_in_a')} ms, a->b {f('deliver_a_to_b')} ms, "
      f"in b {f('deliver_in_b')} ms; persisted publish in a {f('publish_in_a')} ms, in b {f('publish_in_b')} ms; "
      f"connect a {f('connect_a')} ms, b {f('connect_b')} ms; gateway msgs per event to b {r['gateway_msgs_per_event_to_b']:.2f}, "
      f"without interest {r['gateway_msgs_without_interest']} for {r['events_without_interest']} events "
      f"({r['gateway_msgs_idle']} in as long idle); lost {r['lost']}")
PY
