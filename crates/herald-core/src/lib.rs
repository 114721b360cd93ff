//! What runs Herald's services: flags, listeners and serving, TLS,
//! telemetry and metrics, the admin port and shutdown. The rules
//! of ids, subjects, cursors, tokens and presence are herald-domain's;
//! what is said to NATS (connecting, envelopes, streams) is herald-nats's;
//! this crate is where they meet sockets, traces and metrics.
//!
//! # Layout
//! - [`cli`]: common flags and the exit-code-2 handling of misconfiguration.
//! - [`config_error`]: the error of a flag whose value cannot work, naming the flag.
//! - [`telemetry`]: `tracing` setup, text or JSON; OTLP export and W3C trace context.
//! - [`nats_metrics`]: a service's NATS connection on `/metrics`.
//! - [`presence_metrics`]: what a presence follower (herald-nats) sees, as metrics.
//! - [`api_token`]: the bearer token of the internal gRPC APIs.
//! - [`listener`]: every port's accept loop, socket cap and header deadline.
//! - [`tls`]: TLS for Herald's listeners, with certificate reload and mutual TLS.
//! - [`conn`]: an accepted connection's bytes: plain, [`prefixed`] or TLS.
//! - [`prefixed`]: a socket whose first bytes were already read.
//! - [`activity`]: a connection's requests in flight, for its idle timeout.
//! - [`stall`]: when a connection's socket stopped taking bytes, for a
//!   write timeout; [`stamp`] keeps such instants in four bytes.
//! - [`backoff`]: pauses after failed accepts.
//! - [`serve`]: the accept loop, and HTTP connections driven within the listener's bounds.
//! - [`grpc`]: a gRPC service served with health, reflection, TLS, readiness, graceful stop.
//! - [`reflection`]: gRPC server reflection, v1 and v1alpha.
//! - [`readiness`]: whether a service should be sent work, for `/readyz` and gRPC health alike.
//! - [`admin`]: the `/healthz`, `/readyz`, `/metrics` port.
//! - [`shutdown`]: SIGTERM/SIGINT as a cancellation token.
//! - [`memory`]: giving the allocator's free memory back to the system.
//! - [`service`]: start-up (logging, binding, NATS) and the admin port beside a service.

pub mod activity;
pub mod admin;
pub mod api_token;
pub mod backoff;
pub mod cli;
pub mod config_error;
pub mod conn;
pub mod grpc;
pub mod listener;
pub mod memory;
pub mod nats_metrics;
pub mod prefixed;
pub mod presence_metrics;
pub mod readiness;
pub mod reflection;
pub mod serve;
pub mod service;
pub mod shutdown;
pub mod stall;
pub mod stamp;
pub mod telemetry;
pub mod tls;
