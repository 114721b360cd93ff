//! Herald's domain: what its ids, subjects, cursors, tokens and presence
//! messages are, and the rules they follow. Pure code with no I/O and no
//! runtime, so that every service, the tests and the fuzz targets check
//! exactly the same rules; herald-nats carries them over NATS and
//! herald-core serves them (listeners, TLS).
//!
//! # Layout
//! - [`subject`]: user ids and topics, validated and encoded into safe NATS subjects.
//! - [`cursor`]: event ids, one stream position per followed subject.
//! - [`request`]: what a `GET /v1/events` request asks for (token, topics, cursor).
//! - [`auth`]: verifies a client's JWT; [`claims`]: what it says and the rules it must meet.
//! - [`access`]: what a verified token lets one connect follow.
//! - [`control`]: the orders herald-publish's Control API sends the edges, and the buckets that keep them.
//! - [`presence`]: who is connected where: the messages edges send, the state built from them.
//! - [`region`]: region names, and the origin subjects that say which region stored an event.

#![forbid(unsafe_code)]

pub mod access;
pub mod auth;
pub mod claims;
pub mod control;
pub mod cursor;
pub mod presence;
pub mod region;
pub mod request;
pub mod subject;
