//! Herald's gRPC Publish API: internal services call `Publisher.Publish`,
//! and the event goes out on the NATS subjects of its users or topic.
//!
//! # Layout
//! - [`config`]: flags, env vars, validation.
//! - [`server`]: gRPC serving with health and reflection.
//! - [`service`]: the `Publisher` implementation: store or send, receipts, offline queue.
//! - [`validate`]: request checks, all before anything is published.
//! - [`metrics`].

pub mod config;
pub mod metrics;
pub mod server;
pub mod service;
pub mod validate;

pub use config::{Args, Config};
pub use server::PublishServer;
