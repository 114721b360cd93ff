# Sourced by bench/control.sh, hops.sh, regions.sh and tls.sh: release binaries, a
# work directory, and the processes a run starts, all stopped on exit.
#
#   release_binaries PACKAGE...   builds them unless SKIP_BUILD=1; sets $bin
#   start_work                    sets $work and the exit trap; add pids to $pids
#   wait_ok URL [SECONDS]         until URL answers 2xx (default 60 s)
#   start_nats PORT               NATS with JetStream on 127.0.0.1:PORT (the
#                                 binary in $nats_server), its store in
#                                 $work; sets $nats to its URL
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
  pids+=($!)
  nats="nats://127.0.0.1:$1"
}
