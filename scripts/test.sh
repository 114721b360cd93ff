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

HERALD_NATS_SERVER="$(scripts/nats-server.sh)"
export HERALD_NATS_SERVER
echo "using $("$HERALD_NATS_SERVER" --version)"

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace
else
  echo "note: cargo-nextest not found (cargo install cargo-nextest --locked); using cargo test" >&2
  cargo test --locked --workspace
fi
