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
//!
//! In a supercluster each region has its own shards, placed in its own
//! cluster, and stores what is published there (see
//! `herald_domain::region`): the subjects above gain the region as a last
//! token (`herald.h.<n>.u.x.<region>`, republished on `herald.u.x.<region>`)
//! and the streams are named `HERALD_H<n>_<region>`.

use std::time::Duration;

use async_nats::jetstream::stream;
use herald_domain::region::{Region, of_origin};

/// Header with the stream sequence on republished messages.
pub const SEQUENCE_HEADER: &str = "Nats-Sequence";

/// Header with the subject's previous stream sequence on republished
/// messages: 0 when the stream held none of the subject's events, or its
/// last one was deleted.
pub const LAST_SEQUENCE_HEADER: &str = "Nats-Last-Sequence";

/// Stream metadata key holding the shard count the history streams were
/// made for (see `agreement`).
pub const SHARDS_METADATA: &str = "herald.shards";

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

/// Which shard holds an origin subject (a live subject, with its region's
/// token in a supercluster): FNV-1a, stable across processes and versions.
pub fn shard_of(origin: &str, shards: u16) -> u16 {
    (herald_domain::cursor::key(origin) % u32::from(shards)) as u16
}

/// The stream name of a region's shard.
pub fn stream_name(region: &Region, shard: u16) -> String {
    match region.is_unnamed() {
        true => format!("HERALD_H{shard}"),
        false => format!("HERALD_H{shard}_{region}"),
    }
}

/// The stream that holds `origin`'s events, of `shards`.
pub fn stream_of(origin: &str, shards: u16) -> String {
    stream_name(&of_origin(origin), shard_of(origin, shards))
}

/// The stored subject of an origin subject (`herald.u.x` →
/// `herald.h.<n>.u.x`, `herald.u.x.eu` → `herald.h.<n>.u.x.eu`).
pub fn stored_subject(origin: &str, shard: u16) -> String {
    let rest = origin.strip_prefix("herald.").unwrap_or(origin);
    format!("herald.h.{shard}.{rest}")
}

impl HistoryArgs {
    /// The stream configuration of one of `region`'s shards, placed in
    /// its cluster.
    pub fn stream_config(&self, region: &Region, shard: u16) -> stream::Config {
        let stored = region.origin(&format!("herald.h.{shard}.*.*"));
        stream::Config {
            name: stream_name(region, shard),
            subjects: vec![stored.clone()],
            storage: self.storage_type(),
            num_replicas: usize::from(self.history_replicas),
            placement: placement(region),
            metadata: [(SHARDS_METADATA.to_owned(), self.history_shards.to_string())].into(),
            max_messages_per_subject: self.history_max_per_subject,
            max_age: self.history_max_age,
            // Identical publishes within this window are stored once.
            duplicate_window: Duration::from_secs(120),
            // Resumes read a few events each; direct gets skip the
            // JetStream API queue, which a storm of resumes saturates.
            allow_direct: true,
            republish: Some(stream::Republish {
                source: stored,
                destination: region.origin("herald.{{wildcard(1)}}.{{wildcard(2)}}"),
                headers_only: false,
            }),
            ..Default::default()
        }
    }

    /// Every shard's stream configuration in `region` (herald-publish
    /// creates them).
    pub fn stream_configs<'a>(
        &'a self,
        region: &'a Region,
    ) -> impl Iterator<Item = stream::Config> + 'a {
        (0..self.history_shards).map(|shard| self.stream_config(region, shard))
    }

    /// JetStream's storage for `--history-storage`.
    pub fn storage_type(&self) -> stream::StorageType {
        match self.history_storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        }
    }
}

/// Where a region's streams are placed: in its cluster (a named region's
/// NATS cluster bears its name); anywhere for the unnamed region.
pub fn placement(region: &Region) -> Option<stream::Placement> {
    (!region.is_unnamed()).then(|| stream::Placement {
        cluster: Some(region.as_str().to_owned()),
        tags: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_map_between_live_and_stored() {
        assert_eq!(stored_subject("herald.u.alice", 3), "herald.h.3.u.alice");
        assert_eq!(stored_subject("herald.t.news", 0), "herald.h.0.t.news");
        assert_eq!(
            stored_subject("herald.u.alice.eu", 3),
            "herald.h.3.u.alice.eu"
        );
    }

    #[test]
    fn each_region_has_its_own_streams_and_subjects() {
        let args = HistoryArgs {
            history_shards: 4,
            history_storage: Storage::File,
            history_replicas: 3,
            history_max_per_subject: 10,
            history_max_age: Duration::from_secs(60),
        };
        let unnamed = args.stream_config(&Region::default(), 2);
        assert_eq!(unnamed.name, "HERALD_H2");
        assert_eq!(unnamed.subjects, ["herald.h.2.*.*"]);
        assert!(unnamed.placement.is_none());
        let eu = Region::parse("eu").unwrap();
        let config = args.stream_config(&eu, 2);
        assert_eq!(config.name, "HERALD_H2_eu");
        assert_eq!(config.subjects, ["herald.h.2.*.*.eu"]);
        assert_eq!(config.placement.unwrap().cluster.as_deref(), Some("eu"));
        let republish = config.republish.unwrap();
        assert_eq!(
            republish.destination,
            "herald.{{wildcard(1)}}.{{wildcard(2)}}.eu"
        );
        let origin = eu.origin("herald.u.alice");
        let shard = shard_of(&origin, 4);
        assert_eq!(stream_of(&origin, 4), format!("HERALD_H{shard}_eu"));
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
