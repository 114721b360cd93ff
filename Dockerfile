# syntax=docker/dockerfile:1
# Builds every Herald binary; pick one with the container command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY proto proto
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p herald-edge -p herald-publish -p herald-presence -p herald-push -p herald-cli \
 && mkdir -p /out \
 && cp target/release/herald-edge target/release/herald-publish target/release/herald-presence \
       target/release/herald-push-worker target/release/herald /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home herald
COPY --from=build /out/ /usr/local/bin/
USER 10001
ENV HERALD_LOG_FORMAT=json
EXPOSE 8080 9090 50051 9091 50052 9092 50053 9093
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fsS "http://127.0.0.1:${HERALD_ADMIN_PORT:-9090}/healthz" || exit 1
CMD ["herald-edge"]
