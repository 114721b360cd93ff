# Herald's common tasks. `just` is optional: each recipe is a script or a
# cargo command you can run directly.

# List the recipes.
default:
    @just --list

# Start nats-server, herald-publish, herald-edge and herald-presence on 127.0.0.1 (Ctrl-C stops).
stack:
    scripts/stack.sh

# Every check: fmt, clippy, all tests against real nats-server.
test:
    scripts/test.sh

# Install (or find) the supported nats-server and print its path.
nats-server:
    scripts/nats-server.sh

# Format the code.
fmt:
    cargo fmt --all

# Lint as CI does.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Release binaries under target/release (the build bench/run.sh and bench/scale.sh share).
build:
    cargo build --locked --release --workspace --bins
