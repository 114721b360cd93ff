//! What runs Herald's services: flags, listeners and serving, TLS,
//! telemetry, NATS and its streams, the admin port and shutdown. The
//! rules of ids, subjects, cursors, tokens and presence are herald-domain's;
//! this crate is where they meet sockets and NATS.
//!
//! # Layout
//! - [`cli`]: common flags and the exit-code-2 handling of misconfiguration.
//! - [`config_error`]: the error of a flag whose value cannot work, naming the flag.
//! - [`duration`]: durations as flags take them.
//! - [`telemetry`]: `tracing` setup, text or JSON; OTLP export and W3C trace context.
//! - [`nats`]: connecting to NATS; [`nats_keys`]: its key files, read at every connect.
//! - [`envelope`]: how an event travels on NATS (payload + `Herald-Event` header).
//! - [`history`]: the sharded JetStream history streams.
//! - [`agreement`]: the settings every service and region share, checked against existing streams.
//! - [`buckets`]: the control plane's key-value buckets (revocations, follows).
//! - [`offline`]: the work queue of events for users who were not connected.
//! - [`presence`]: following who is connected where, over NATS.
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
pub mod agreement;
pub mod api_token;
pub mod backoff;
pub mod buckets;
pub mod cli;
pub mod config_error;
pub mod conn;
pub mod duration;
pub mod envelope;
pub mod grpc;
pub mod history;
pub mod listener;
pub mod memory;
pub mod nats;
pub mod nats_keys;
pub mod offline;
pub mod prefixed;
pub mod presence;
pub mod readiness;
pub mod reflection;
pub mod serve;
pub mod service;
pub mod shutdown;
pub mod stall;
pub mod stamp;
pub mod telemetry;
pub mod tls;
