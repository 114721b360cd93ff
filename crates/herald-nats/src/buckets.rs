//! The key-value buckets of the control plane (see
//! `herald_domain::control`): revocations, kept for `--revocation-ttl`,
//! and server-side follows, kept until unfollowed. herald-publish creates
//! them with the history streams (same storage and replicas: they must
//! survive what history survives); edges read and follow them.

use std::time::Duration;

use async_nats::jetstream::stream;
use herald_domain::control::{FOLLOWS_BUCKET, REVOCATIONS_BUCKET};

use crate::history::HistoryArgs;

/// Largest value kept: a user's follows at the largest `--max-topics`.
const MAX_VALUE_SIZE: i32 = 256 * 1024;

/// The flags of the control plane's state.
#[derive(Debug, Clone, clap::Args)]
pub struct BucketArgs {
    /// How long a revocation is kept: at least the longest lifetime of
    /// the client tokens you accept (a token older than this is expired
    /// anyway), e.g. `24h`.
    #[arg(long, env = "HERALD_REVOCATION_TTL", default_value = "24h", value_parser = crate::duration::parse_duration)]
    pub revocation_ttl: Duration,
}

/// The revocations bucket's stream: entries expire after `ttl`.
pub fn revocations_config(history: &HistoryArgs, ttl: Duration) -> stream::Config {
    bucket_config(REVOCATIONS_BUCKET, history, ttl)
}

/// The follows bucket's stream: entries are kept until removed.
pub fn follows_config(history: &HistoryArgs) -> stream::Config {
    bucket_config(FOLLOWS_BUCKET, history, Duration::ZERO)
}

/// A stream laid out as JetStream key-value buckets are (what
/// `jetstream::Context::get_key_value` opens), created with the history
/// streams' retry rather than `create_key_value`, which refuses a bucket
/// that exists with another configuration.
fn bucket_config(bucket: &str, history: &HistoryArgs, max_age: Duration) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        storage: history.storage_type(),
        num_replicas: usize::from(history.history_replicas),
        max_messages_per_subject: 1,
        max_age,
        max_message_size: MAX_VALUE_SIZE,
        // No longer than the entries live (JetStream refuses a longer one).
        duplicate_window: if max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            max_age.min(Duration::from_secs(120))
        },
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    }
}
