//! Presence: who is connected, on which edge.
//!
//! - [`wire`]: the messages edges and followers exchange over NATS.
//! - [`directory`]: the state built from them (pure logic).
//!
//! herald-core's `presence` keeps a directory current over NATS.

pub mod directory;
pub mod wire;
