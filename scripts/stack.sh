#!/usr/bin/env bash
# Starts a local Herald stack in the foreground: nats-server with JetStream,
# herald-publish, herald-edge and herald-presence, all on 127.0.0.1 (and
# herald-push-worker when HERALD_FCM_CREDENTIALS names a Firebase
# service-account file). Prints how to connect and publish; Ctrl-C stops
# everything.
#
# The internal APIs (publish, presence, push worker) require a bearer token:
# HERALD_API_TOKEN if set, else a random one made here and printed. The
# edge's HS256 secret is HERALD_JWT_SECRET if set, else random too.
#
# Ports (override with the environment): NATS 4222 (monitoring 8222),
# edge 8080 (admin 9090), publish 50051 (admin 9091), presence 50052
# (admin 9092), push worker 50053 (admin 9093).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

NATS_PORT="${NATS_PORT:-4222}"
NATS_MONITOR_PORT="${NATS_MONITOR_PORT:-8222}"
EDGE_PORT="${EDGE_PORT:-8080}"
EDGE_ADMIN_PORT="${EDGE_ADMIN_PORT:-9090}"
PUBLISH_PORT="${PUBLISH_PORT:-50051}"
PUBLISH_ADMIN_PORT="${PUBLISH_ADMIN_PORT:-9091}"
PRESENCE_PORT="${PRESENCE_PORT:-50052}"
PRESENCE_ADMIN_PORT="${PRESENCE_ADMIN_PORT:-9092}"
PUSH_PORT="${PUSH_PORT:-50053}"
PUSH_ADMIN_PORT="${PUSH_ADMIN_PORT:-9093}"
# Fresh secrets per run unless given; production gets them from a secret store.
random_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
export HERALD_JWT_SECRET="${HERALD_JWT_SECRET:-$(random_hex)}"
export HERALD_API_TOKEN="${HERALD_API_TOKEN:-$(random_hex)}"
api_token="$HERALD_API_TOKEN"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$NATS_PORT" "$NATS_MONITOR_PORT" "$EDGE_PORT" "$EDGE_ADMIN_PORT" "$PUBLISH_PORT" "$PUBLISH_ADMIN_PORT" \
  "$PRESENCE_PORT" "$PRESENCE_ADMIN_PORT" "$PUSH_PORT" "$PUSH_ADMIN_PORT"; do
  if port_busy "$port"; then
    echo "error: port $port on 127.0.0.1 is in use; stop what holds it or set the matching *_PORT variable" >&2
    exit 1
  fi
done

nats_server="$(scripts/nats-server.sh)"
echo "building Herald (the first build takes a few minutes)..." >&2
# Exactly scripts/test.sh's build: one feature set, so after the tests this
# is a no-op. (`--bins` alone resolves features without the dev-dependencies
# that `--benches` and the test build bring in, and would rebuild ~45 crates.)
cargo build --locked --workspace --bins --benches
bin="$root/target/debug"

state="$root/.stack"
mkdir -p "$state/nats"
pids=()
nats_pid=""
cleanup() {
  trap - INT TERM EXIT
  echo >&2
  echo "stopping..." >&2
  # Services first, NATS last: a stopping service hands NATS what it
  # published before it exits.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  if ((${#pids[@]})); then wait "${pids[@]}" 2>/dev/null || true; fi
  if [[ -n "$nats_pid" ]]; then kill -TERM "$nats_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

wait_http() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: nothing listens on 127.0.0.1:$1 after 10s; see $state/*.log" >&2
  exit 1
}

"$nats_server" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -js -sd "$state/nats" >"$state/nats.log" 2>&1 &
nats_pid=$!
wait_http "$NATS_PORT"

export HERALD_NATS_URL="nats://127.0.0.1:$NATS_PORT"
"$bin/herald-publish" --listen "127.0.0.1:$PUBLISH_PORT" --admin-listen "127.0.0.1:$PUBLISH_ADMIN_PORT" \
  --node-id publish-1 >"$state/publish.log" 2>&1 &
pids+=($!)
"$bin/herald-edge" --listen "127.0.0.1:$EDGE_PORT" --admin-listen "127.0.0.1:$EDGE_ADMIN_PORT" \
  --node-id edge-1 >"$state/edge.log" 2>&1 &
pids+=($!)
"$bin/herald-presence" --listen "127.0.0.1:$PRESENCE_PORT" --admin-listen "127.0.0.1:$PRESENCE_ADMIN_PORT" \
  --node-id presence-1 >"$state/presence.log" 2>&1 &
pids+=($!)
push_line="  herald-push-worker not started: set HERALD_FCM_CREDENTIALS to a Firebase service-account file"
if [[ -n "${HERALD_FCM_CREDENTIALS:-}" ]]; then
  "$bin/herald-push-worker" --listen "127.0.0.1:$PUSH_PORT" --admin-listen "127.0.0.1:$PUSH_ADMIN_PORT" \
    --node-id push-1 >"$state/push.log" 2>&1 &
  pids+=($!)
  push_line="  herald-push-worker http://127.0.0.1:$PUSH_PORT/v1/devices/{user}   (admin http://127.0.0.1:$PUSH_ADMIN_PORT/metrics)"
fi
wait_http "$PUBLISH_PORT"
wait_http "$EDGE_PORT"
wait_http "$PRESENCE_PORT"

token="$("$bin/herald" token --sub alice --topic news --ttl 24h)"
cat <<MSG

Herald is running (logs in $state/):
  NATS          nats://127.0.0.1:$NATS_PORT   (monitoring http://127.0.0.1:$NATS_MONITOR_PORT)
  herald-edge   http://127.0.0.1:$EDGE_PORT/v1/events   (admin http://127.0.0.1:$EDGE_ADMIN_PORT/metrics)
  herald-publish 127.0.0.1:$PUBLISH_PORT gRPC   (admin http://127.0.0.1:$PUBLISH_ADMIN_PORT/metrics)
  herald-presence 127.0.0.1:$PRESENCE_PORT gRPC  (admin http://127.0.0.1:$PRESENCE_ADMIN_PORT/metrics)
$push_line

In another terminal, follow alice's stream and the "news" topic:

  $bin/herald subscribe --url http://127.0.0.1:$EDGE_PORT --token $token --topic news

(or with curl: curl -N -H 'Authorization: Bearer $token' 'http://127.0.0.1:$EDGE_PORT/v1/events?topic=news')

and in a third, publish (the API token of this stack is $api_token):

  $bin/herald publish --addr http://127.0.0.1:$PUBLISH_PORT --api-token $api_token --user alice --data 'hello alice'
  $bin/herald publish --addr http://127.0.0.1:$PUBLISH_PORT --api-token $api_token --topic news --event headline --data 'hello news'

Each user publish prints a receipt per user (online, and DELIVERED / STORED /
FALLBACK / DROPPED per --offline). Who is connected:

  $bin/herald presence --addr http://127.0.0.1:$PRESENCE_PORT --api-token $api_token alice bob

or, once per shell, export HERALD_API_TOKEN=$api_token and leave out --api-token.

Mint tokens for other users with:
  HERALD_JWT_SECRET=$HERALD_JWT_SECRET $bin/herald token --sub bob --topic news

Ctrl-C stops the stack.
MSG

wait -n "$nats_pid" "${pids[@]}" || true
echo "a service exited; see $state/*.log" >&2
