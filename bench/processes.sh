# Sourced by bench/control.sh, hops.sh, regions.sh and tls.sh: release binaries, a
# work directory, and the processes a run starts, all stopped on exit.
#
#   release_binaries PACKAGE...   builds them unless SKIP_BUILD=1; sets $bin
#   start_work                    sets $work and the exit trap; add pids to $pids
#   wait_ok URL [SECONDS]         until URL answers 2xx (default 60 s)
#   start_nats PORT               NATS with JetStream on 127.0.0.1:PORT (the
#                                 binary in $nats_server), its store in
#                                 $work; sets $nats to its URL and $nats_pid
#   start_one_node NAME           NATS, herald-publish and one herald-edge
#                                 from $PORT_BASE (NATS +222, publish +51,
#                                 edge +80, admin +91/+90), memory history,
#                                 nodes named NAME-publish and NAME-edge;
#                                 PUBLISH_ENV/EDGE_ENV and PUBLISH_FLAGS/
#                                 EDGE_FLAGS add to them; sets the *_port and
#                                 *_pid variables
#
# KEEP_WORK=1 keeps the work directory (logs, NATS stores) after the run.

release_binaries() {
  if [[ "${SKIP_BUILD:-}" != 1 ]]; then
    echo "building release binaries..." >&2
    cargo build --locked --release $(printf -- '-p %s ' "$@") --bins >&2
  fi
  bin="$(pwd)/target/release"
}

start_work() {
  ulimit -n "$(ulimit -Hn)"
  work="$(mktemp -d)"
  pids=()
  trap stop_work EXIT
  trap 'exit 130' INT TERM
}

stop_work() {
  local status=$?
  [[ $status != 0 ]] && tail -n 3 "$work"/*.log >&2 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$work"
}

wait_ok() {
  local tries=$((${2:-60} * 10))
  for _ in $(seq 1 "$tries"); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: $1 is not ready" >&2
  exit 1
}

start_nats() {
  "$nats_server" -a 127.0.0.1 -p "$1" -js -sd "$work/js" >"$work/nats.log" 2>&1 &
  nats_pid=$!
  pids+=($nats_pid)
  nats="nats://127.0.0.1:$1"
}

start_one_node() {
  nats_port=$((PORT_BASE + 222)) publish_port=$((PORT_BASE + 51)) edge_port=$((PORT_BASE + 80))
  start_nats "$nats_port"
  sleep 0.5
  # shellcheck disable=SC2086
  env ${PUBLISH_ENV:-} "$bin/herald-publish" --nats-url "$nats" --node-id "$1-publish" --history-storage memory \
    --listen "127.0.0.1:$publish_port" --admin-listen "127.0.0.1:$((PORT_BASE + 91))" \
    ${PUBLISH_FLAGS:-} >"$work/publish.log" 2>&1 &
  publish_pid=$!
  pids+=($publish_pid)
  # shellcheck disable=SC2086
  env ${EDGE_ENV:-} "$bin/herald-edge" --nats-url "$nats" --node-id "$1-edge" --history-storage memory \
    --listen "127.0.0.1:$edge_port" --admin-listen "127.0.0.1:$((PORT_BASE + 90))" \
    ${EDGE_FLAGS:-} >"$work/edge.log" 2>&1 &
  edge_pid=$!
  pids+=($edge_pid)
  wait_ok "http://127.0.0.1:$((PORT_BASE + 91))/readyz"
  wait_ok "http://127.0.0.1:$((PORT_BASE + 90))/readyz"
}
