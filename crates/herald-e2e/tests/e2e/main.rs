//! The end-to-end suites, one module each, linked into one test binary.
//! As 35 binaries, each linked the whole dependency graph on its own: on
//! 2 cores a rebuild after a change to the support library took ~35 s,
//! a clean build of herald-e2e's tests ~170 s; as one, ~4 s and ~15–30 s.
//!
//! One suite: `cargo nextest run -p herald-e2e cluster::` (or
//! `cargo test -p herald-e2e --test e2e cluster::`). The repository's own
//! checks, `layout` and `docs`, stay binaries of their own beside it:
//! they start no service.

mod admin_page;
mod bench_smoke;
mod browser;
mod browser_client;
mod browser_control;
mod browser_cors;
mod cli_control;
mod cli_ndjson;
mod cli_subscribe;
mod cluster;
mod cold_start;
mod control;
mod control_history;
mod cors;
mod delivery;
mod failover;
mod hostile;
mod listeners;
mod metrics;
mod nats_permissions;
mod offline;
mod plain_http1;
mod presence;
mod publish_api;
mod publish_batch;
mod publish_http;
mod reflection;
mod refusals;
mod regions;
mod resume;
mod resume_cost;
mod rolling_deploy;
mod tls;
mod tokens;
mod tracing;
