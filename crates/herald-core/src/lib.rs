//! What Herald's services share, and nothing else.
//!
//! # Layout
//! - [`subject`]: user ids and topics, validated and encoded into safe NATS subjects.
//! - [`cursor`]: event ids, one stream position per history shard.
//! - [`envelope`]: how an event travels on NATS (payload + `Herald-Event` header).
//! - [`history`]: the sharded JetStream history streams.
//! - [`cli`]: common flags and the exit-code-2 handling of misconfiguration.
//! - [`config_error`]: the error of a flag whose value cannot work, naming the flag.
//! - [`telemetry`]: `tracing` setup, text or JSON; OTLP export and W3C trace context.
//! - [`tls`]: TLS for Herald's listeners, with certificate reload and mutual TLS.
//! - [`nats`]: connecting to NATS.
//! - [`offline`]: the work queue of events for users who were not connected.
//! - [`presence`]: who is connected where, over NATS.
//! - [`api_token`]: the bearer token of the internal gRPC APIs.
//! - [`listener`]: every port's accept loop, socket cap and header deadline.
//! - [`prefixed`]: a socket whose first bytes were already read.
//! - [`serve`]: HTTP and gRPC connections driven within those bounds.
//! - [`reflection`]: gRPC server reflection, v1 and v1alpha.
//! - [`activity`]: a connection's requests in flight, for its idle timeout.
//! - [`admin`]: the `/healthz`, `/readyz`, `/metrics` port.
//! - [`shutdown`]: SIGTERM/SIGINT as a cancellation token.
//! - [`memory`]: giving the allocator's free memory back to the system.
//! - [`service`]: start-up (logging, binding, NATS) and the admin port beside a service.

pub mod activity;
pub mod admin;
pub mod api_token;
pub mod cli;
pub mod config_error;
pub mod cursor;
pub mod envelope;
pub mod history;
pub mod listener;
pub mod memory;
pub mod nats;
pub mod offline;
pub mod prefixed;
pub mod presence;
pub mod reflection;
pub mod serve;
pub mod service;
pub mod shutdown;
pub mod subject;
pub mod telemetry;
pub mod tls;
