//! Herald's SSE edge: clients hold one Server-Sent Events stream
//! (`GET /v1/events`), and the edge delivers the events NATS carries for
//! their user and topics.
//!
//! # Layout
//! - [`config`]: flags, env vars, validation.
//! - [`server`]: the serve loop, HTTP/1.1 + h2c, drain on shutdown;
//!   [`state`] is what its requests share, [`service`] the hyper service
//!   for connections hyper serves, [`body`] every response's body type.
//! - [`plain`]: plain HTTP/1.1 streams served without hyper; [`head`] reads
//!   their request heads, [`wire`] frames their responses; [`line`](mod@line) is
//!   such a stream's socket, and [`beats`] writes their heartbeats and
//!   times every stream's writes ([`watch`] for connections hyper serves).
//! - [`events`]: the `/v1/events` handler; the token, claims and request
//!   rules it applies are herald-domain's (`auth`, `claims`, `request`).
//! - [`cors`]: which other origins' pages may read streams (`--allowed-origins`).
//! - [`admission`]: per-node and per-user connection limits, and the counts presence reports.
//! - [`presence`]: reports this node's connections to the presence service.
//! - [`fanout`]: one NATS subscription per subject, shared by local streams,
//!   on one lean connection (herald-subscriptions), or on async-nats
//!   `Subscriber`s to check it against (`fanout/link.rs`, `fanout/mature.rs`).
//! - [`subject`]: one followed subject: its streams, its recent events, and
//!   the history reads its resuming streams share.
//! - [`gaps`]: the order of a subject's live events: a missed one is read
//!   from history ([`fill`]) before the next goes out.
//! - [`delivery`]: a framed event and the stream queues it goes into.
//! - [`signal`]: how a stream is told to close.
//! - [`queue`]: a stream's event queue, empty of memory while idle.
//! - [`session`]: one stream's body: events with ids, heartbeats, expiry, close.
//! - [`replay`]: resuming from a `Last-Event-ID` cursor; [`sharing`]: one
//!   history read shared by the streams resuming a subject from one place.
//! - [`starts`]: where a stream starts on subjects its id holds no position for.
//! - [`budget`]: what one connect may replay.
//! - [`reads`]: single reads of a subject's history.
//! - [`tails`]: a history stream's tail, read once for many resumes.
//! - [`recent`]: a subject's last events, kept for streams resuming just behind.
//! - [`ratelimit`]: per-user connect rate.
//! - [`lifecycle`]: streams' connects and disconnects published on NATS (`--lifecycle-events`).
//! - [`control`]: the Control API's orders (disconnect, revoke, follows,
//!   topics) carried out here; [`revocations`] and [`follows`] keep their
//!   state in memory, following its buckets ([`bucket`]).
//! - [`sse`]: event-stream framing.
//! - [`drain`]: the jittered drain.
//! - [`metrics`]; [`refusal`]: every refusal's status, code, metric reason and `Retry-After`.

pub mod admission;
pub mod beats;
pub mod body;
pub mod bucket;
pub mod budget;
pub mod config;
pub mod control;
pub mod cors;
pub mod delivery;
pub mod drain;
pub mod events;
pub mod fanout;
pub mod fill;
pub mod follows;
pub mod gaps;
pub mod head;
pub mod lifecycle;
pub mod line;
pub mod metrics;
pub mod plain;
pub mod presence;
pub mod queue;
pub mod ratelimit;
pub mod reads;
pub mod recent;
pub mod refusal;
pub mod replay;
pub mod revocations;
pub mod server;
pub mod service;
pub mod session;
pub mod sharing;
pub mod signal;
pub mod sse;
pub mod starts;
pub mod state;
pub mod subject;
pub mod tails;
pub mod watch;
pub mod wire;

pub use config::{Args, Config};
pub use fanout::NatsSubscriber;
pub use server::{Edge, Nats};
