//! The offline work queue: events for users who were not connected, put
//! there by herald-publish under the `FALLBACK` policy and taken by the
//! mobile-push worker. One JetStream stream with work-queue retention, so
//! a message is gone once a worker acknowledges it. In a supercluster
//! each region has its own queue (`HERALD_OFFLINE_<region>`, subjects
//! `herald.offline.<user>.<region>`), placed there and emptied by the
//! region's own workers: a push queued in a region never waits on another.

use std::time::Duration;

use async_nats::jetstream::stream;

use herald_domain::region::Region;
use herald_domain::subject::{UserId, decode_token, encode_token};

use crate::history::{HistoryArgs, placement};

/// The unnamed region's stream name.
pub const STREAM: &str = "HERALD_OFFLINE";
/// Prefix of the per-user subjects `herald.offline.<user>[.<region>]`.
pub const PREFIX: &str = "herald.offline.";
/// Header naming the user (raw id) on each queued event.
pub const USER_HEADER: &str = "Herald-User";

/// The name of `region`'s queue.
pub fn stream_name(region: &Region) -> String {
    match region.is_unnamed() {
        true => STREAM.to_owned(),
        false => format!("{STREAM}_{region}"),
    }
}

/// The queue subject of `user` in `region`.
pub fn subject(user: &UserId, region: &Region) -> String {
    region.origin(&format!("{PREFIX}{}", encode_token(user.as_str())))
}

/// The user a queue subject belongs to, if it is one.
pub fn user_of(subject: &str) -> Option<UserId> {
    let rest = subject.strip_prefix(PREFIX)?;
    let token = rest.split_once('.').map_or(rest, |(token, _region)| token);
    UserId::parse(&decode_token(token)?).ok()
}

/// `region`'s queue: storage and replicas as for history, and events
/// older than history's max age are not worth a push any more.
pub fn stream_config(history: &HistoryArgs, region: &Region) -> stream::Config {
    stream::Config {
        name: stream_name(region),
        subjects: vec![region.origin(&format!("{PREFIX}*"))],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: history.storage_type(),
        num_replicas: usize::from(history.history_replicas),
        placement: placement(region),
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
        let eu = Region::parse("eu").unwrap();
        for raw in ["alice", "a.>", "*", "ü b"] {
            let user = UserId::parse(raw).unwrap();
            let subject = subject(&user, &Region::default());
            assert_eq!(subject.matches('.').count(), 2, "{subject}");
            assert_eq!(user_of(&subject).as_ref(), Some(&user));
            let regional = super::subject(&user, &eu);
            assert_eq!(regional.matches('.').count(), 3, "{regional}");
            assert_eq!(user_of(&regional), Some(user));
        }
        assert_eq!(user_of("herald.u.alice"), None);
        assert_eq!(user_of("herald.offline.~zz"), None);
    }
}
