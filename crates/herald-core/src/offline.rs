//! The offline work queue: events for users who were not connected, put
//! there by herald-publish under the `FALLBACK` policy and taken by the
//! mobile-push worker. One JetStream stream with work-queue retention, so
//! a message is gone once a worker acknowledges it.

use std::time::Duration;

use async_nats::jetstream::stream;

use herald_domain::subject::{UserId, decode_token, encode_token};

use crate::history::{HistoryArgs, Storage};

/// The stream's name.
pub const STREAM: &str = "HERALD_OFFLINE";
/// Prefix of the per-user subjects `herald.offline.<user>`.
pub const PREFIX: &str = "herald.offline.";
/// Header naming the user (raw id) on each queued event.
pub const USER_HEADER: &str = "Herald-User";

/// The queue subject of `user`.
pub fn subject(user: &UserId) -> String {
    format!("{PREFIX}{}", encode_token(user.as_str()))
}

/// The user a queue subject belongs to, if it is one.
pub fn user_of(subject: &str) -> Option<UserId> {
    let id = decode_token(subject.strip_prefix(PREFIX)?)?;
    UserId::parse(&id).ok()
}

/// The stream configuration: storage and replicas as for history, and
/// events older than history's max age are not worth a push any more.
pub fn stream_config(history: &HistoryArgs) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![format!("{PREFIX}*")],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: match history.history_storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: usize::from(history.history_replicas),
        max_age: history.history_max_age,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_one_user_and_map_back() {
        for raw in ["alice", "a.>", "*", "ü b"] {
            let user = UserId::parse(raw).unwrap();
            let subject = subject(&user);
            assert_eq!(subject.matches('.').count(), 2, "{subject}");
            assert_eq!(user_of(&subject), Some(user));
        }
        assert_eq!(user_of("herald.u.alice"), None);
        assert_eq!(user_of("herald.offline.~zz"), None);
    }
}
