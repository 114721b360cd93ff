#!/usr/bin/env bash
# Runs every check Herald has: formatting, lints, and the whole test suite
# against real nats-server processes (installed by scripts/nats-server.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null; then
      rustup component add "$component"
    else
      echo "error: cargo $component is missing; run: rustup component add $component" >&2
      exit 1
    fi
  fi
done

# Debian packages the process-level tests drive: Chromium (browser tests),
# nginx (the shipped load-balancer config), Node and npm (npm's
# eventsource, a third-party EventSource).
missing=()
if [ -z "${HERALD_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then missing+=(chromium); fi
if [ -z "${HERALD_NGINX:-}" ] && [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null; then missing+=(nginx-light); fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
# python3: bench/report.py checks BENCHMARKS.md against bench/results.
if ! command -v python3 >/dev/null; then missing+=(python3); fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} with apt-get (for the process-level tests)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "error: the tests need ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
# The pinned eventsource package (crates/herald-testing/node/package-lock.json).
npm ci --prefix crates/herald-testing/node --no-audit --no-fund --loglevel=error >&2

HERALD_NATS_SERVER="$(scripts/nats-server.sh)"
export HERALD_NATS_SERVER
echo "using $("$HERALD_NATS_SERVER" --version)"

cargo fmt --all -- --check
# docker-compose.yml, Prometheus rules, the Grafana dashboard: checked
# statically, since no Docker engine runs here.
scripts/validate-deploy.sh
# BENCHMARKS.md's tables are generated from the committed raw results
# (bench/results/); a page edited by hand, or a new result committed
# without regenerating it, fails here.
python3 bench/report.py --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# Every binary, herald-bench included: process-level tests and the bench
# smoke test run them. The Criterion benches are built, not run: their
# figures are for bench/METHOD.md, not pass/fail.
cargo build --locked --workspace --bins --benches
# Every test; then the lean NATS subscriber is checked against the mature client: the
# edge's fan-out, resume, failover and cluster suites (modules of
# herald-e2e's one `e2e` test binary) run again with async-nats
# `Subscriber`s holding the edges' subscriptions. With nextest, the same
# test binary: nothing is rebuilt, ~35 s on 2 cores.
suites=(delivery resume failover cluster)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace
  modules=$(IFS='|'; echo "${suites[*]}")
  HERALD_E2E_NATS_SUBSCRIBER=async-nats cargo nextest run --locked --workspace \
    -E "binary_id(herald-e2e::e2e) & test(/^($modules)::/)"
else
  echo "note: cargo-nextest not found (cargo install cargo-nextest --locked); using cargo test" >&2
  cargo test --locked --workspace
  HERALD_E2E_NATS_SUBSCRIBER=async-nats cargo test --locked -p herald-e2e --test e2e -- \
    $(printf '%s:: ' "${suites[@]}")
fi
