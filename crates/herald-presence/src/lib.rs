//! herald-presence: follows the edges' connect and disconnect reports and
//! answers who is connected where, over gRPC and NATS request/reply.
//! Several replicas may run; each holds the whole state.
//!
//! # Layout
//! - [`config`]: flags, env vars, validation.
//! - [`server`]: a replica: the follower, the gRPC server, the NATS responder.
//! - [`service`]: the answers, shared by both APIs.
//! - [`responder`]: NATS request/reply.
//! - [`metrics`]: request counts.

pub mod config;
pub mod metrics;
pub mod responder;
pub mod server;
pub mod service;

pub use config::{Args, Config};
pub use server::PresenceServer;
