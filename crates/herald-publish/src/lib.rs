//! Herald's gRPC Publish API: internal services call `Publisher.Publish`,
//! and the event goes out on the NATS subjects of its users or topic.
//!
//! # Layout
//! - [`config`]: flags, env vars, validation.
//! - [`server`]: gRPC serving with health and reflection.
//! - [`publish`]: the `Publisher` implementation: each call counted, timed, traced.
//! - [`service`]: the API's state, and the checks before an event is sent.
//! - [`send`]: one event onto NATS (store or send, receipts, offline queue), acks pending.
//! - [`batch`]: `PublishBatch`: its limits, every item sent, then all acks awaited.
//! - [`control`]: the `Control` implementation: disconnect, revoke, follows, history, topics;
//!   [`edges`] asks every edge at once, [`history`] reads a user's or topic's events
//!   ([`scan`] walks them in JetStream).
//! - [`admin_page`]: `GET /admin`, the operators' page over the HTTP API.
//! - [`json_api`]: HTTP `POST /v1/publish`, `/v1/publish:batch` and the Control calls on the gRPC port.
//! - [`streams`]: the history streams, offline queue and control buckets, created in the background.
//! - [`retry`]: when to ask JetStream again for a stream it refused.
//! - [`validate`]: request checks, all before anything is published.
//! - [`metrics`].

pub mod admin_page;
pub mod batch;
pub mod config;
pub mod control;
pub mod edges;
pub mod history;
pub mod json_api;
pub mod metrics;
pub mod publish;
pub mod retry;
pub mod scan;
pub mod send;
pub mod server;
pub mod service;
pub mod streams;
pub mod validate;

pub use config::{Args, Config};
pub use server::PublishServer;
