//! Server-side follows: the topics each user follows because the app said
//! so (`Control.Follow`), in memory (see `bucket`). A connect follows
//! them besides what it asks for; a change reaches the user's open
//! streams at once (see `orders`).

use std::collections::HashMap;
use std::sync::RwLock;

use herald_domain::control::{self, Follows as Followed};
use herald_domain::subject::{Topic, UserId};
use tokio::sync::watch;

use crate::orders::bucket::Change;

/// Every user's server-side follows, by user id.
pub(crate) struct Follows {
    users: RwLock<HashMap<String, Vec<Topic>>>,
    loaded: watch::Sender<bool>,
}

impl Default for Follows {
    fn default() -> Self {
        Self {
            users: RwLock::default(),
            loaded: watch::Sender::new(false),
        }
    }
}

impl Follows {
    /// Turned true once loaded (see [`crate::orders::bucket::follow`]).
    pub(crate) fn loaded(&self) -> watch::Sender<bool> {
        self.loaded.clone()
    }

    /// The topics `user` follows server-side.
    pub(crate) fn of(&self, user: &UserId) -> Vec<Topic> {
        let users = self.users.read().unwrap();
        users.get(user.as_str()).cloned().unwrap_or_default()
    }

    /// Sets `user`'s follows (an order, or the bucket); returns whether
    /// they changed.
    pub(crate) fn set(&self, user: &str, follows: &Followed) -> bool {
        let topics: Vec<Topic> = follows.valid_topics().collect();
        let mut users = self.users.write().unwrap();
        if topics.is_empty() {
            return users.remove(user).is_some();
        }
        users.insert(user.to_owned(), topics.clone()) != Some(topics)
    }

    /// A change read from the bucket: the user, if their follows changed.
    pub(crate) fn apply(&self, change: Change<'_>) -> Option<UserId> {
        let (key, follows) = match change {
            Change::Put { key, value } => match serde_json::from_slice::<Followed>(value) {
                Ok(follows) => (key, follows),
                Err(_) => {
                    tracing::warn!(key, "follows in the bucket do not parse; skipped");
                    return None;
                }
            },
            Change::Gone { key } => (key, Followed::default()),
        };
        let user = control::user_of_key(key)?;
        self.set(user.as_str(), &follows).then_some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_are_set_and_read_back_by_user() {
        let follows = Follows::default();
        let alice = UserId::parse("a.>").unwrap();
        let key = control::bucket_key(&alice);
        let value = br#"{"topics":["news","bad topic","sport"]}"#;
        assert_eq!(
            follows.apply(Change::Put { key: &key, value }),
            Some(alice.clone())
        );
        let names: Vec<_> = follows
            .of(&alice)
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        assert_eq!(names, ["news", "sport"]);
        assert_eq!(
            follows.apply(Change::Put { key: &key, value }),
            None,
            "no change"
        );
        assert_eq!(
            follows.apply(Change::Gone { key: &key }),
            Some(alice.clone())
        );
        assert!(follows.of(&alice).is_empty());
        assert_eq!(follows.apply(Change::Put { key: "x.y", value }), None);
        assert_eq!(
            follows.apply(Change::Put {
                key: &key,
                value: b"["
            }),
            None
        );
    }
}
