//! Revoked tokens: each user's revocation, in memory (see `bucket`), so a
//! connect is checked without a network round trip. A token issued
//! before the user's revocation (or without `iat`) gets 401
//! `token_revoked`; the user's open streams with such tokens are ended.

use std::collections::HashMap;
use std::sync::RwLock;

use herald_domain::control::{self, Revocation};
use herald_domain::subject::UserId;
use tokio::sync::watch;

use crate::orders::bucket::Change;

/// Every revocation in force, by user id.
pub(crate) struct Revocations {
    users: RwLock<HashMap<String, Revocation>>,
    loaded: watch::Sender<bool>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            users: RwLock::default(),
            loaded: watch::Sender::new(false),
        }
    }
}

impl Revocations {
    /// Whether every revocation stored is known yet: until then a connect
    /// cannot be checked.
    pub(crate) fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Turned true once loaded (see [`crate::orders::bucket::follow`]).
    pub(crate) fn loaded(&self) -> watch::Sender<bool> {
        self.loaded.clone()
    }

    /// The revocation that refuses a token of `user` issued at `iat`, if any.
    pub(crate) fn refusing(&self, user: &UserId, iat: Option<u64>, now: u64) -> Option<Revocation> {
        let users = self.users.read().unwrap();
        let revocation = users.get(user.as_str())?;
        (revocation.expires > now && revocation.refuses(iat)).then(|| revocation.clone())
    }

    /// Keeps `revocation` of `user` (the later of it and any kept).
    pub(crate) fn add(&self, user: &str, revocation: Revocation) {
        let mut users = self.users.write().unwrap();
        match users.get_mut(user) {
            Some(kept) => kept.merge(revocation),
            None => {
                users.insert(user.to_owned(), revocation);
            }
        }
    }

    /// A change read from the bucket: the user and the revocation now in
    /// force, if one was added. Expired revocations are forgotten on the
    /// way (the bucket drops them without a word).
    pub(crate) fn apply(&self, change: Change<'_>, now: u64) -> Option<(UserId, Revocation)> {
        match change {
            Change::Put { key, value } => {
                let (Some(user), Ok(revocation)) = (
                    control::user_of_key(key),
                    serde_json::from_slice::<Revocation>(value),
                ) else {
                    tracing::warn!(key, "a revocation in the bucket does not parse; skipped");
                    return None;
                };
                self.add(user.as_str(), revocation);
                let mut users = self.users.write().unwrap();
                // Amortized: a sweep each time the map doubles.
                if users.len() >= 1024 && users.len().is_power_of_two() {
                    users.retain(|_, r| r.expires > now);
                }
                let kept = users.get(user.as_str())?.clone();
                (kept.expires > now).then_some((user, kept))
            }
            Change::Gone { key } => {
                if let Some(user) = control::user_of_key(key) {
                    self.users.write().unwrap().remove(user.as_str());
                }
                None
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocation(issued_before: u64, expires: u64) -> Revocation {
        Revocation {
            issued_before,
            reason: "r".into(),
            expires,
        }
    }

    #[test]
    fn older_tokens_are_refused_until_the_revocation_expires() {
        let revocations = Revocations::default();
        let alice = UserId::parse("alice").unwrap();
        assert!(revocations.refusing(&alice, None, 10).is_none());
        let key = control::bucket_key(&alice);
        let value = serde_json::to_vec(&revocation(100, 1_000)).unwrap();
        revocations.apply(
            Change::Put {
                key: &key,
                value: &value,
            },
            50,
        );
        assert!(revocations.refusing(&alice, Some(99), 50).is_some());
        assert!(revocations.refusing(&alice, None, 50).is_some());
        assert!(revocations.refusing(&alice, Some(100), 50).is_none());
        assert!(
            revocations.refusing(&alice, Some(99), 1_000).is_none(),
            "expired"
        );
        let bob = UserId::parse("bob").unwrap();
        assert!(revocations.refusing(&bob, None, 50).is_none());

        // An order applied before the bucket's entry: the later wins.
        revocations.add("alice", revocation(200, 2_000));
        revocations.apply(
            Change::Put {
                key: &key,
                value: &value,
            },
            50,
        );
        assert!(revocations.refusing(&alice, Some(150), 50).is_some());

        revocations.apply(Change::Gone { key: &key }, 50);
        assert!(revocations.refusing(&alice, None, 50).is_none());
    }

    #[test]
    fn hostile_bucket_entries_are_skipped() {
        let revocations = Revocations::default();
        for (key, value) in [("a.b", &b"{}"[..]), ("alice", b"garbage"), ("~", b"{}")] {
            revocations.apply(Change::Put { key, value }, 0);
        }
        assert!(revocations.users.read().unwrap().is_empty());
    }
}
