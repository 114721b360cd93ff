//! Turning a `PublishRequest` into subjects and an envelope, or a clear
//! `INVALID_ARGUMENT`. Everything is checked before anything is published,
//! so a refused request has published nothing.

use bytes::Bytes;
use herald_domain::subject::{Topic, UserId};
use herald_nats::envelope::{Envelope, check_event_type};
use herald_proto::v1::{OfflinePolicy, PublishRequest, publish_request::Target};

use crate::config::Config;

/// A request that passed every check.
#[derive(Debug)]
pub struct Publication {
    /// Names the event across retries, when the caller gave one.
    pub idempotency_key: Option<String>,
    /// Live subjects to publish on, one per distinct user or the topic.
    pub subjects: Vec<String>,
    /// The distinct users, in request order, matching `subjects`; empty
    /// for a topic.
    pub users: Vec<UserId>,
    /// What to do for users who are not connected.
    pub offline: OfflinePolicy,
    pub envelope: Envelope,
    pub kind: TargetKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Users,
    Topic,
}

/// What was wrong with a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRequest {
    #[error("no target: set `users` (with at least one user id) or `topic`")]
    NoTarget,
    #[error("{count} users in one request; the limit is {max}")]
    TooManyUsers { count: usize, max: usize },
    #[error("user_ids[{index}]: {reason}")]
    User { index: usize, reason: String },
    #[error("topic: {0}")]
    Topic(String),
    #[error("event: {0}")]
    Event(String),
    #[error("data is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("idempotency_key must be 1-128 printable characters without whitespace")]
    IdempotencyKey,
    #[error("offline: {0} is not an OfflinePolicy")]
    UnknownPolicy(i32),
    #[error("offline: DROP and FALLBACK apply to users; a topic has no one to be offline")]
    PolicyOnTopic,
}

/// Longest accepted idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

impl From<InvalidRequest> for tonic::Status {
    fn from(e: InvalidRequest) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Checks `request` against the configured limits.
pub fn validate(request: PublishRequest, config: &Config) -> Result<Publication, InvalidRequest> {
    if request.data.len() > config.max_payload {
        return Err(InvalidRequest::TooLarge {
            len: request.data.len(),
            max: config.max_payload,
        });
    }
    check_event_type(&request.event).map_err(|e| InvalidRequest::Event(e.to_string()))?;
    let key = &request.idempotency_key;
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || key.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(InvalidRequest::IdempotencyKey);
    }
    let idempotency_key = Some(request.idempotency_key.clone()).filter(|k| !k.is_empty());
    let offline = match OfflinePolicy::try_from(request.offline) {
        Ok(OfflinePolicy::Unspecified) => OfflinePolicy::Store,
        Ok(policy) => policy,
        Err(_) => return Err(InvalidRequest::UnknownPolicy(request.offline)),
    };
    let (users, subjects, kind) = match request.target {
        Some(Target::Users(users)) if !users.user_ids.is_empty() => {
            let users = distinct_users(&users.user_ids, config.max_users)?;
            let subjects = users.iter().map(UserId::subject).collect();
            (users, subjects, TargetKind::Users)
        }
        Some(Target::Topic(_)) if offline != OfflinePolicy::Store => {
            return Err(InvalidRequest::PolicyOnTopic);
        }
        Some(Target::Topic(topic)) => {
            let topic = Topic::parse(&topic).map_err(|e| InvalidRequest::Topic(e.to_string()))?;
            (Vec::new(), vec![topic.subject()], TargetKind::Topic)
        }
        _ => return Err(InvalidRequest::NoTarget),
    };
    let event = Some(request.event).filter(|e| !e.is_empty());
    Ok(Publication {
        idempotency_key,
        subjects,
        users,
        offline,
        envelope: Envelope {
            event,
            data: Bytes::from(request.data),
        },
        kind,
    })
}

/// The distinct users, in request order.
fn distinct_users(ids: &[String], max: usize) -> Result<Vec<UserId>, InvalidRequest> {
    if ids.len() > max {
        return Err(InvalidRequest::TooManyUsers {
            count: ids.len(),
            max,
        });
    }
    let mut users: Vec<UserId> = Vec::with_capacity(ids.len());
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for (index, id) in ids.iter().enumerate() {
        let user = UserId::parse(id).map_err(|e| InvalidRequest::User {
            index,
            reason: e.to_string(),
        })?;
        if seen.insert(id.as_str()) {
            users.push(user);
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(ids: &[&str]) -> Option<Target> {
        Some(Target::users(ids))
    }

    fn request(target: Option<Target>, data: &str) -> PublishRequest {
        PublishRequest {
            target,
            data: data.to_owned(),
            ..Default::default()
        }
    }

    fn config() -> Config {
        Config {
            max_payload: 8,
            max_users: 3,
            ..Config::defaults("t")
        }
    }

    #[test]
    fn users_become_distinct_safe_subjects() {
        let p = validate(request(users(&["a.>", "b", "a.>"]), "hi"), &config()).unwrap();
        assert_eq!(p.subjects, vec!["herald.u.a~2E~3E", "herald.u.b"]);
        let users: Vec<_> = p.users.iter().map(UserId::as_str).collect();
        assert_eq!(users, ["a.>", "b"]);
        assert_eq!(p.offline, OfflinePolicy::Store, "unspecified means STORE");
        assert_eq!(p.kind, TargetKind::Users);
        assert_eq!(p.envelope.event, None);
    }

    #[test]
    fn every_bad_request_is_named() {
        let c = config();
        assert_eq!(
            validate(request(None, ""), &c).unwrap_err(),
            InvalidRequest::NoTarget
        );
        assert_eq!(
            validate(request(users(&[]), ""), &c).unwrap_err(),
            InvalidRequest::NoTarget
        );
        assert!(matches!(
            validate(request(users(&["ok", ""]), ""), &c).unwrap_err(),
            InvalidRequest::User { index: 1, .. }
        ));
        assert!(matches!(
            validate(request(users(&["a", "b", "c", "d"]), ""), &c).unwrap_err(),
            InvalidRequest::TooManyUsers { count: 4, max: 3 }
        ));
        assert_eq!(
            validate(request(users(&["a"]), "123456789"), &c).unwrap_err(),
            InvalidRequest::TooLarge { len: 9, max: 8 }
        );
        assert!(matches!(
            validate(request(Some(Target::Topic("a b".into())), ""), &c).unwrap_err(),
            InvalidRequest::Topic(_)
        ));
        assert!(matches!(
            validate(request(Some(Target::Topic(String::new())), ""), &c).unwrap_err(),
            InvalidRequest::Topic(_)
        ));
        for key in ["has space", "tab\t", &"k".repeat(129)] {
            let mut bad_key = request(users(&["a"]), "");
            bad_key.idempotency_key = key.to_owned();
            assert_eq!(
                validate(bad_key, &c).unwrap_err(),
                InvalidRequest::IdempotencyKey,
                "{key:?}"
            );
        }
        let mut unknown = request(users(&["a"]), "");
        unknown.offline = 9;
        assert_eq!(
            validate(unknown, &c).unwrap_err(),
            InvalidRequest::UnknownPolicy(9)
        );
        let mut on_topic = request(Some(Target::Topic("news".into())), "");
        on_topic.offline = OfflinePolicy::Fallback as i32;
        assert_eq!(
            validate(on_topic, &c).unwrap_err(),
            InvalidRequest::PolicyOnTopic
        );
        let mut evil_event = request(users(&["a"]), "");
        evil_event.event = "x\nid: 1".into();
        assert!(matches!(
            validate(evil_event, &c).unwrap_err(),
            InvalidRequest::Event(_)
        ));
    }
}
