//! The control plane between herald-publish's Control API and the edges:
//! the NATS subjects its orders travel on, the orders and the edges'
//! answers, and the key-value buckets that keep what must outlive a
//! message (revocations, server-side follows), so that an edge that was
//! away, or starts later, still enforces them.
//!
//! Orders are JSON requests sent to every edge at once; each edge answers
//! on the request's inbox with what it did, and the caller counts the
//! answers of the edges presence knows.

use serde::{Deserialize, Serialize};

use crate::subject::{IdError, Topic, UserId, decode_token, encode_token};

/// Ends the named users' streams: [`Disconnect`] → [`Done`].
pub const DISCONNECT_SUBJECT: &str = "herald.control.disconnect";
/// Refuses the named users' older tokens: [`Revoke`] → [`Done`].
pub const REVOKE_SUBJECT: &str = "herald.control.revoke";
/// The named users' server-side follows changed: [`FollowsChanged`] → [`Done`].
pub const FOLLOWS_SUBJECT: &str = "herald.control.follows";
/// Which topics the edges' streams follow: [`TopicsQuery`] → [`EdgeTopics`].
pub const TOPICS_SUBJECT: &str = "herald.control.topics";
/// Every control subject, for an edge's one subscription.
pub const CONTROL_WILDCARD: &str = "herald.control.*";

/// Prefix of the subjects streams' connects and disconnects are published
/// on (`herald.lifecycle.<user token>`), with `--lifecycle-events`.
pub const LIFECYCLE_PREFIX: &str = "herald.lifecycle.";
/// Every lifecycle event.
pub const LIFECYCLE_WILDCARD: &str = "herald.lifecycle.*";

/// The revocations bucket: key [`bucket_key`] of the user, value a
/// [`Revocation`].
pub const REVOCATIONS_BUCKET: &str = "herald_revocations";
/// The server-side follows bucket: key [`bucket_key`] of the user, value
/// a [`Follows`].
pub const FOLLOWS_BUCKET: &str = "herald_follows";

/// At most this many users in one call: one order stays well under NATS's
/// default 1 MiB payload.
pub const MAX_USERS: usize = 1_000;
/// The longest reason, in bytes.
pub const MAX_REASON_LEN: usize = 256;

/// A user's key in a bucket: the user's subject token, with `~` (which
/// keys may not hold) as `=` (which tokens never hold): one key per user.
pub fn bucket_key(user: &UserId) -> String {
    encode_token(user.as_str()).replace('~', "=")
}

/// The user a bucket key names; `None` for a key [`bucket_key`] did not make.
pub fn user_of_key(key: &str) -> Option<UserId> {
    if key.contains('~') {
        return None;
    }
    let id = decode_token(&key.replace('=', "~"))?;
    UserId::parse(&id).ok()
}

/// Ends every stream of `users`, each with a `herald.disconnect` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    pub users: Vec<String>,
    pub reason: String,
    /// What `herald.js` does next: reconnect, or stop for good.
    pub reconnect: bool,
}

/// A user's revocation, as the bucket keeps it: tokens issued before
/// `issued_before` (Unix seconds), or without `iat`, are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub issued_before: u64,
    pub reason: String,
    /// When the bucket drops it (Unix seconds): no token it refuses is
    /// valid by then, so an edge forgets it too.
    pub expires: u64,
}

impl Revocation {
    /// Whether a token issued at `iat` (Unix seconds; `None`: no `iat`)
    /// is refused.
    pub fn refuses(&self, iat: Option<u64>) -> bool {
        iat.is_none_or(|iat| iat < self.issued_before)
    }

    /// The later of two revocations of one user, kept as long as either:
    /// both stay in force.
    pub fn merge(&mut self, other: Revocation) {
        let expires = self.expires.max(other.expires);
        if other.issued_before >= self.issued_before {
            *self = other;
        }
        self.expires = expires;
    }
}

/// Revokes `users`' tokens as `revocation` says and ends their streams
/// that carry such tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoke {
    pub users: Vec<String>,
    pub revocation: Revocation,
}

/// A user's server-side follows, as the bucket keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Follows {
    pub topics: Vec<String>,
}

impl Follows {
    /// The topics, each checked (a bucket may hold what an older or a
    /// hostile writer put there: a bad entry is skipped, not obeyed).
    pub fn valid_topics(&self) -> impl Iterator<Item = Topic> + '_ {
        self.topics.iter().filter_map(|t| Topic::parse(t).ok())
    }
}

/// Users whose follows are now these: each edge makes its live streams
/// of the user follow exactly them (besides what each stream asked for).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowsChanged {
    pub users: Vec<UserFollows>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFollows {
    pub user: String,
    pub follows: Follows,
}

/// Which topics have followers on an edge: those starting with `prefix`,
/// at most `limit` of them (by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicsQuery {
    pub prefix: String,
    pub limit: u32,
}

/// One edge's answer to a [`TopicsQuery`]: topics and their stream counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeTopics {
    pub node: String,
    pub topics: Vec<(String, u64)>,
}

/// One edge's answer to an order: how many of its streams it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub node: String,
    pub streams: u64,
}

/// Parses `raw` user ids: every one valid, at most [`MAX_USERS`], at
/// least one; the error names the first bad one.
pub fn parse_users(raw: &[String]) -> Result<Vec<UserId>, UsersError> {
    if raw.is_empty() {
        return Err(UsersError::None);
    }
    if raw.len() > MAX_USERS {
        return Err(UsersError::TooMany(raw.len()));
    }
    raw.iter()
        .enumerate()
        .map(|(index, id)| UserId::parse(id).map_err(|error| UsersError::Invalid { index, error }))
        .collect()
}

/// Why a call's user ids are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    #[error("name at least one user in `user_ids`")]
    None,
    #[error("{0} users in one call; the limit is {MAX_USERS}")]
    TooMany(usize),
    #[error("user_ids[{index}]: {error}")]
    Invalid { index: usize, error: IdError },
}

/// Checks a reason: at most [`MAX_REASON_LEN`] bytes, no control characters.
pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.len() > MAX_REASON_LEN {
        return Err(format!(
            "`reason` is {} bytes; the limit is {MAX_REASON_LEN}",
            reason.len()
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err("`reason` must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_has_one_bucket_key_and_back() {
        for id in [
            "alice", "a.b", "a.>", "*", "~", "=", "a=b", "été", "x y", "-_",
        ] {
            let user = UserId::parse(id).unwrap();
            let key = bucket_key(&user);
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
                "{id:?} → {key:?}"
            );
            assert_eq!(user_of_key(&key), Some(user), "{id:?}");
        }
        assert_ne!(
            bucket_key(&UserId::parse("=").unwrap()),
            bucket_key(&UserId::parse("~").unwrap())
        );
        for hostile in ["", "a~2E", "=Z", "=2", "a.b", "=00"] {
            assert_eq!(user_of_key(hostile), None, "{hostile:?}");
        }
    }

    #[test]
    fn a_revocation_refuses_older_tokens_and_tokens_without_iat() {
        let revocation = Revocation {
            issued_before: 1_000,
            reason: "logout".into(),
            expires: 9_000,
        };
        assert!(revocation.refuses(None));
        assert!(revocation.refuses(Some(999)));
        assert!(!revocation.refuses(Some(1_000)));
        assert!(!revocation.refuses(Some(5_000)));

        let mut kept = revocation.clone();
        kept.merge(Revocation {
            issued_before: 500,
            reason: "older".into(),
            expires: 8_000,
        });
        assert_eq!(kept, revocation, "an older revocation changes nothing");
        kept.merge(Revocation {
            issued_before: 2_000,
            reason: "ban".into(),
            expires: 3_000,
        });
        assert_eq!((kept.issued_before, kept.expires), (2_000, 9_000));
    }

    #[test]
    fn users_are_checked_one_by_one() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_users(&[]), Err(UsersError::None));
        assert!(matches!(
            parse_users(&ids(&["a", ""])),
            Err(UsersError::Invalid { index: 1, .. })
        ));
        let many = vec!["u".to_string(); MAX_USERS + 1];
        assert_eq!(parse_users(&many), Err(UsersError::TooMany(MAX_USERS + 1)));
        assert_eq!(parse_users(&ids(&["a.>", "b"])).unwrap().len(), 2);
    }

    #[test]
    fn reasons_are_bounded() {
        assert!(check_reason("logged out").is_ok());
        assert!(check_reason(&"x".repeat(MAX_REASON_LEN + 1)).is_err());
        assert!(check_reason("a\nb").is_err());
    }

    #[test]
    fn bad_follows_in_a_bucket_are_skipped() {
        let follows = Follows {
            topics: vec!["news".into(), "a b".into(), "".into(), "x*".into()],
        };
        let valid: Vec<_> = follows
            .valid_topics()
            .map(|t| t.as_str().to_owned())
            .collect();
        assert_eq!(valid, ["news"]);
    }
}
