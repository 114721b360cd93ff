//! Constructors for a Publish request's target, which prost does not
//! generate and every caller would otherwise build field by field.

use crate::v1::{UserTarget, publish_request::Target};

impl UserTarget {
    /// The users with ids `user_ids`, in order.
    pub fn new<I>(user_ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self {
            user_ids: user_ids
                .into_iter()
                .map(|id| id.as_ref().to_owned())
                .collect(),
        }
    }
}

impl Target {
    /// A [`UserTarget`] of `user_ids`.
    pub fn users<I>(user_ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::Users(UserTarget::new(user_ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_order() {
        let Target::Users(users) = Target::users(["b", "a"]) else {
            panic!("users expected");
        };
        assert_eq!(users.user_ids, ["b", "a"]);
        assert_eq!(UserTarget::new(vec!["x".to_owned()]).user_ids, ["x"]);
    }
}
