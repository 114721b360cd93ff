//! Test support for Herald: real `nats-server` processes on free loopback
//! ports, routed clusters, monitoring queries, SSE clients and tokens.
//!
//! # Layout
//! - [`browser`]: headless Chromium driven over the DevTools protocol.
//! - [`eventsource`]: npm's `eventsource` package, many streams in one `node`.
//! - [`fcm`]: a local fake of FCM and its OAuth endpoint (the only fake).
//! - [`grpc`]: health checks and server reflection, as any client asks them.
//! - [`nats`]: [`NatsServer`] and [`NatsCluster`], killed and cleaned up on drop.
//! - [`nats_auth`]: decentralized NATS auth: operator, account and user JWTs, a creds file.
//! - [`nginx`]: nginx run from a deployment's config, its logs kept.
//! - [`otlp`]: an OTLP trace receiver (gRPC and HTTP) that keeps the spans it receives.
//! - [`page`]: a web app's origin: one static page on a port of its own.
//! - [`pki`]: a private CA and the certificates tests serve and present.
//! - [`process`]: Herald's binaries as processes: clean environment, stderr kept, SIGTERM.
//! - [`sse`]: a spec-following SSE client over reqwest.
//! - [`supercluster`]: clusters joined by gateways, one per region.
//! - [`token`]: minting client JWTs.
//! - [`wait`]: [`eventually`], polling a condition instead of sleeping.

pub mod browser;
pub mod eventsource;
pub mod fcm;
pub mod grpc;
pub mod nats;
pub mod nats_auth;
pub mod nginx;
pub mod otlp;
pub mod page;
pub mod pki;
pub mod process;
pub mod sse;
pub mod supercluster;
pub mod token;
pub mod wait;

pub use nats::{NatsCluster, NatsServer, route_interest, route_out_msgs};
pub use wait::eventually;
