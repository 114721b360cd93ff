//! Persisted history: JetStream streams sharded by a hash of the live
//! subject, so no single stream leader is the ceiling.
//!
//! Shard `n` is the stream `HERALD_H<n>`, storing `herald.h.<n>.<kind>.<token>`
//! (kind `u` or `t`). JetStream RePublish emits each stored message on the
//! live subject `herald.<kind>.<token>` with its stream sequence in the
//! `Nats-Sequence` header: one publish, server-side order, and the edge
//! learns each event's position without asking. `Nats-Last-Sequence`
//! carries the subject's previous sequence in the stream (0 if it holds
//! none), so the edge also sees an event it missed (checked on nats-server
//! 2.10.26).

use std::time::Duration;

use async_nats::jetstream::stream;

/// Header with the stream sequence on republished messages.
pub const SEQUENCE_HEADER: &str = "Nats-Sequence";

/// Header with the subject's previous stream sequence on republished
/// messages: 0 when the stream held none of the subject's events, or its
/// last one was deleted.
pub const LAST_SEQUENCE_HEADER: &str = "Nats-Last-Sequence";

/// Most shards.
pub const MAX_SHARDS: u16 = 64;

/// How history is kept; both herald-publish and herald-edge take these flags.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// Number of history streams (shards); every service must agree.
    #[arg(long, env = "HERALD_HISTORY_SHARDS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=MAX_SHARDS as i64))]
    pub history_shards: u16,

    /// Where history lives: `file` survives restarts, `memory` is faster.
    #[arg(long, env = "HERALD_HISTORY_STORAGE", default_value = "file")]
    pub history_storage: Storage,

    /// Copies of each history stream (1, or 3 in a cluster).
    #[arg(long, env = "HERALD_HISTORY_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub history_replicas: u8,

    /// Events kept per user or topic.
    #[arg(long, env = "HERALD_HISTORY_MAX_PER_SUBJECT", default_value_t = 1000)]
    pub history_max_per_subject: i64,

    /// How long events are kept, e.g. `24h`.
    #[arg(long, env = "HERALD_HISTORY_MAX_AGE", default_value = "24h", value_parser = crate::duration::parse_duration)]
    pub history_max_age: Duration,
}

/// Storage backend of the history streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    File,
    Memory,
}

/// Which shard holds a live subject: FNV-1a, stable across processes and versions.
pub fn shard_of(live_subject: &str, shards: u16) -> u16 {
    (herald_domain::cursor::key(live_subject) % u32::from(shards)) as u16
}

/// The stream name of a shard.
pub fn stream_name(shard: u16) -> String {
    format!("HERALD_H{shard}")
}

/// The stored subject of a live subject (`herald.u.x` → `herald.h.<n>.u.x`).
pub fn stored_subject(live_subject: &str, shard: u16) -> String {
    let rest = live_subject.strip_prefix("herald.").unwrap_or(live_subject);
    format!("herald.h.{shard}.{rest}")
}

impl HistoryArgs {
    /// The stream configuration of one shard.
    pub fn stream_config(&self, shard: u16) -> stream::Config {
        stream::Config {
            name: stream_name(shard),
            subjects: vec![format!("herald.h.{shard}.*.*")],
            storage: match self.history_storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            num_replicas: usize::from(self.history_replicas),
            max_messages_per_subject: self.history_max_per_subject,
            max_age: self.history_max_age,
            // Identical publishes within this window are stored once.
            duplicate_window: Duration::from_secs(120),
            // Resumes read a few events each; direct gets skip the
            // JetStream API queue, which a storm of resumes saturates.
            allow_direct: true,
            republish: Some(stream::Republish {
                source: format!("herald.h.{shard}.*.*"),
                destination: "herald.{{wildcard(1)}}.{{wildcard(2)}}".to_owned(),
                headers_only: false,
            }),
            ..Default::default()
        }
    }

    /// Every shard's stream configuration (herald-publish creates them).
    pub fn stream_configs(&self) -> impl Iterator<Item = stream::Config> + '_ {
        (0..self.history_shards).map(|shard| self.stream_config(shard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_map_between_live_and_stored() {
        assert_eq!(stored_subject("herald.u.alice", 3), "herald.h.3.u.alice");
        assert_eq!(stored_subject("herald.t.news", 0), "herald.h.0.t.news");
    }

    #[test]
    fn shards_spread_and_stay_stable() {
        // A change here would strand stored history in the wrong shard.
        assert_eq!(shard_of("a", 64), (0xe40c_292c_u32 % 64) as u16);
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[usize::from(shard_of(&format!("herald.u.user-{i}"), 4))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert!((0..100).all(|i| shard_of(&format!("herald.t.{i}"), 1) == 0));
    }
}
