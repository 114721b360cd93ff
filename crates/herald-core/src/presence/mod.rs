//! Presence: who is connected, on which edge.
//!
//! - [`wire`]: the messages edges and followers exchange over NATS.
//! - [`directory`]: the state built from them (pure logic).
//! - [`follower`]: a task that keeps a directory current over NATS.

pub mod directory;
pub mod follower;
pub mod wire;

pub use directory::{Directory, UserPresence};
pub use follower::{Follower, FollowerMetrics};
