#!/usr/bin/env bash
# Disconnect at scale: USERS users (default 10,000), one stream each over
# two herald-edge processes, on one NATS node with JetStream and
# herald-publish; then Control.Disconnect for all of them in calls of
# BATCH users. Prints one JSON line with the delay from each call's
# answer to its users' streams ending (p50, p99, max) and the streams the
# answers counted, then
#   disconnect: <users> streams on 2 edges, p99 <ms> ms from the answer to the end (max <ms>), <n> not ended
# The lines also go to bench/results/control-<time>.txt. Bounded: every
# process is stopped on exit, the load has a deadline.
#
#   bench/control.sh
#   USERS=2000 SKIP_BUILD=1 bench/control.sh
set -euo pipefail
cd "$(dirname "$0")/.."
USERS="${USERS:-10000}"
BATCH="${BATCH:-1000}"
PORT_BASE="${PORT_BASE:-31000}" # below the ephemeral range
nats_server="$(scripts/nats-server.sh)"
source bench/processes.sh
release_binaries herald-edge herald-publish herald-bench
start_work

start_nats $((PORT_BASE + 222))
export HERALD_JWT_SECRET="control-bench-secret-0123456789-0123" HERALD_API_TOKEN="control-bench-api-token-0123456789"
sleep 0.5
"$bin/herald-publish" --nats-url "$nats" --node-id control-publish \
  --listen "127.0.0.1:$((PORT_BASE + 51))" --admin-listen "127.0.0.1:$((PORT_BASE + 91))" \
  >"$work/publish.log" 2>&1 &
pids+=($!)
for g in 0 1; do
  "$bin/herald-edge" --nats-url "$nats" --node-id "control-edge-$g" \
    --listen "127.0.0.1:$((PORT_BASE + 80 + g))" --admin-listen "127.0.0.1:$((PORT_BASE + 180 + g))" \
    --max-connections 19000 --max-connections-per-user 4 >"$work/edge-$g.log" 2>&1 &
  pids+=($!)
done
wait_ok "http://127.0.0.1:$((PORT_BASE + 91))/readyz"
for g in 0 1; do wait_ok "http://127.0.0.1:$((PORT_BASE + 180 + g))/readyz"; done

mkdir -p bench/results
out="bench/results/control-$(date -u +%Y%m%dT%H%M%SZ).txt"
line=$(timeout 300 "$bin/herald-bench" --peer herald --edge "127.0.0.1:$((PORT_BASE + 80))" \
  --publish "http://127.0.0.1:$((PORT_BASE + 51))" --api-token "$HERALD_API_TOKEN" --timeout 30 \
  disconnect --users "$USERS" --batch "$BATCH" --second-edge "127.0.0.1:$((PORT_BASE + 81))" --sources 16)
echo "$line" | tee "$out"
python3 - "$line" <<'PY' | tee -a "$out"
import json, sys
r = json.loads(sys.argv[1])
print(f"disconnect: {r['users']} streams on {r['edges']} edges, p99 {r['p99_ms']:.0f} ms from the answer to the end "
      f"(p50 {r['p50_ms']:.0f}, max {r['max_ms']:.0f}), answers counted {r['streams_counted']}, {r['not_ended']} not ended")
PY
