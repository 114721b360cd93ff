#!/usr/bin/env bash
# A rolling NATS upgrade under load: STREAMS streams (default 10,000) on
# two herald-edge processes, a 3-node NATS cluster with history
# replicated 3 times, continuous persisted publishing to every user, and
# each NATS node in turn put in lame duck mode (grace period 6 s), left
# to exit, and started again. It is the end-to-end test
# `failover::a_rolling_nats_restart_closes_no_stream_and_loses_nothing`
# at full size; it prints
#   rolling: <streams> streams on 2 edges, 3 NATS nodes restarted in <time> while <n> events were published; <closed> streams closed (<%>), none of the others missed an event; ...
# and fails if more than 1 % of the streams closed or an open one missed
# an event. The line also goes to bench/results/rolling-<time>.txt.
#
#   bench/rolling.sh                   # 10,000 streams, release build
#   STREAMS=2000 PROFILE=dev bench/rolling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/meta.sh
bench_command=$(command_line bench/rolling.sh STREAMS PROFILE)
STREAMS="${STREAMS:-10000}"
PROFILE="${PROFILE:-release}"
HERALD_NATS_SERVER="$(scripts/nats-server.sh)"
export HERALD_NATS_SERVER
ulimit -n "$(ulimit -Hn)"
mkdir -p bench/results
out="bench/results/rolling-$(date -u +%Y%m%dT%H%M%SZ).txt"
write_meta "$out" "$bench_command"
echo "building ($PROFILE)..." >&2
cargo build --locked --profile "$PROFILE" -p herald-edge --bins >&2
HERALD_ROLLING_STREAMS="$STREAMS" cargo nextest run --locked --cargo-profile "$PROFILE" \
  -p herald-e2e --test e2e --no-capture \
  -E 'test(failover::a_rolling_nats_restart_closes_no_stream_and_loses_nothing)' 2>&1 |
  tee /dev/stderr | grep -E '^(rolling:|[0-9]+ streams open)' | tee "$out"
