//! Herald's NATS side: connecting with a service's own credentials, TLS
//! and inbox, the envelope an event travels in, the JetStream history
//! streams and the settings every service and region must share about
//! them, the control plane's buckets, the offline queue, and following
//! presence. The rules of subjects, regions, cursors and presence are
//! herald-domain's; serving, telemetry and metrics are herald-core's,
//! which builds on this crate. Nothing here needs gRPC, an HTTP server,
//! OpenTelemetry or a metrics library, so the edge's lean connection
//! (herald-subscriptions) logs in from here alone.
//!
//! # Layout
//! - [`connection`]: connecting to NATS: credentials, TLS, inbox prefix,
//!   lame duck, round trips; [`keys`]: its key files, read at every connect.
//! - [`pem`]: certificates read from PEM files, for TLS to NATS (and herald-core's listeners).
//! - [`envelope`]: how an event travels on NATS (payload + `Herald-Event` header).
//! - [`history`]: the sharded JetStream history streams.
//! - [`agreement`]: the settings every service and region share, checked against existing streams.
//! - [`buckets`]: the control plane's key-value buckets (revocations, follows).
//! - [`offline`]: the work queue of events for users who were not connected.
//! - [`presence`]: following who is connected where, from the edges' messages.
//! - [`duration`]: durations as flags take them, here (history's) and in every service.

pub mod agreement;
pub mod buckets;
pub mod connection;
pub mod duration;
pub mod envelope;
pub mod history;
pub mod keys;
pub mod offline;
pub mod pem;
pub mod presence;
