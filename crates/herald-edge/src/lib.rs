//! Herald's SSE edge: clients hold one Server-Sent Events stream
//! (`GET /v1/events`), and the edge delivers the events NATS carries for
//! their user and topics.
//!
//! # Layout
//! - [`config`]: flags, env vars, validation.
//! - `server`: the serve loop, HTTP/1.1 + h2c, drain on shutdown; `state`
//!   is what its requests share, `service` the hyper service for
//!   connections hyper serves (`watch` times their writes), `body` every
//!   response's body type.
//! - `http1`: plain HTTP/1.1 streams served without hyper: their heads,
//!   sockets, framing and the node's heartbeat walk.
//! - `events`: the `/v1/events` handler; the token, claims, request and
//!   access rules it applies are herald-domain's (`auth`, `claims`,
//!   `request`, `access`); `refusal`: every refusal's status, code,
//!   metric reason and `Retry-After`.
//! - `session`: one stream's body: events with ids, heartbeats, expiry, close;
//!   [`sse`]: event-stream framing.
//! - [`fanout`]: one NATS subscription per subject, shared by local
//!   streams: the subjects followed here, their events' order and gap
//!   fills, the stream queues events go into, the close signal.
//! - `resume`: a `Last-Event-ID` turned into what the client missed:
//!   replay plans, recent events, shared history reads and tails, starts,
//!   the per-connect budget.
//! - `orders`: the Control API's orders (disconnect, revoke, follows,
//!   topics) carried out here, and the buckets that keep them.
//! - [`cors`]: which other origins' pages may read streams (`--allowed-origins`).
//! - [`admission`]: per-node and per-user connection limits, and the counts
//!   [`report`] tells the presence service; [`ratelimit`]: per-user
//!   connect rate.
//! - `lifecycle`: streams' connects and disconnects published on NATS (`--lifecycle-events`).
//! - `drain`: the jittered drain; [`metrics`].
//!
//! Modules other crates use (tests, benches, the load generator) are
//! public; the rest are the edge's own.

pub mod admission;
mod body;
pub mod config;
pub mod cors;
mod drain;
mod events;
pub mod fanout;
mod http1;
mod lifecycle;
pub mod metrics;
mod orders;
pub mod ratelimit;
mod refusal;
pub mod report;
mod resume;
mod server;
mod service;
mod session;
pub mod sse;
mod state;
mod watch;

pub use config::{Args, Config};
pub use fanout::NatsSubscriber;
pub use server::{Edge, Nats};
