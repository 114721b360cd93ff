//! What a verified token lets one connect follow: every topic it asks for
//! must be allowed by the token's `topics` claim, and no two of the
//! subjects it follows may share a cursor key. Pure checks, beside the
//! claims, so the property tests and fuzz targets reach what the edge runs.

use crate::claims::Claims;
use crate::cursor;
use crate::region::{self, Region};
use crate::subject::{Topic, UserId};

/// Why a connect may not follow what it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("the token's `topics` claim does not allow topic {0:?}")]
    TopicNotAllowed(String),
    /// Names the two subjects, as a reader knows them.
    #[error(
        "{0} and {1} cannot be followed on one connection (their event ids would collide); rename one of them"
    )]
    SubjectCollision(String, String),
}

/// The token must allow every topic, and no two followed subjects may
/// share a cursor key.
pub fn check(
    user: &UserId,
    topics: &[Topic],
    claims: &Claims,
    regions: &[Region],
) -> Result<(), AccessError> {
    if let Some(topic) = topics.iter().find(|t| !claims.allows_topic(t.as_str())) {
        return Err(AccessError::TopicNotAllowed(topic.as_str().to_owned()));
    }
    distinct_keys(user, topics, regions)
}

/// Refuses subjects whose cursor keys collide: they would share one entry
/// of the event id, and a resume would skip one's events at the other's
/// position. Keys are 32 bits, so such names can be made on purpose. Each
/// subject counts once per region, as each region's origin subject.
pub fn distinct_keys(
    user: &UserId,
    topics: &[Topic],
    regions: &[Region],
) -> Result<(), AccessError> {
    let subjects: Vec<String> = topics.iter().map(Topic::subject).collect();
    let followed = std::iter::once(user.subject()).chain(subjects.iter().cloned());
    let origins: Vec<String> = followed
        .flat_map(|live| region::origins(&live, regions).collect::<Vec<_>>())
        .collect();
    let Some((a, b)) = cursor::collision(origins.iter().map(String::as_str)) else {
        return Ok(());
    };
    let name = |origin: &str| {
        let live = region::live_of(origin);
        match topics.iter().zip(&subjects).find(|(_, s)| *s == live) {
            Some((topic, _)) => format!("topic {:?}", topic.as_str()),
            None => "the user's own stream".to_owned(),
        }
    };
    Err(AccessError::SubjectCollision(name(a), name(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topics(names: &[&str]) -> Vec<Topic> {
        names.iter().map(|n| Topic::parse(n).unwrap()).collect()
    }

    fn here() -> Vec<Region> {
        vec![Region::parse("").unwrap()]
    }

    /// Two topic names whose cursor keys collide, found once by a
    /// birthday search over `room-<n>` (keys are 32 bits).
    const COLLIDING: (&str, &str) = ("room-8699", "room-526476");

    #[test]
    fn a_topic_the_claim_does_not_allow_is_named() {
        let user = UserId::parse("alice").unwrap();
        let claims = Claims::new("alice").topics(&["news.*", "sport"]);
        assert_eq!(
            check(&user, &topics(&["news.eu", "sport"]), &claims, &here()),
            Ok(())
        );
        assert_eq!(
            check(&user, &topics(&["sport", "sports"]), &claims, &here()),
            Err(AccessError::TopicNotAllowed("sports".into()))
        );
    }

    #[test]
    fn colliding_topics_are_refused_and_named() {
        let (a, b) = COLLIDING;
        let key = |t: &str| cursor::key(&Topic::parse(t).unwrap().subject());
        assert_eq!(key(a), key(b));
        let user = UserId::parse("alice").unwrap();
        let claims = Claims::new("alice").topics(&["*"]);
        let err = check(&user, &topics(&[a, "other", b]), &claims, &here()).unwrap_err();
        let AccessError::SubjectCollision(first, second) = &err else {
            panic!("{err}");
        };
        let mut named = [first.as_str(), second.as_str()];
        named.sort_unstable();
        assert_eq!(named, [format!("topic {b:?}"), format!("topic {a:?}")]);
        assert_eq!(
            distinct_keys(&user, &topics(&[a, "other"]), &here()),
            Ok(())
        );
    }

    proptest! {
        /// Access is granted exactly when every topic is allowed and the
        /// followed subjects' keys are distinct in every region.
        #[test]
        fn check_grants_exactly_what_the_rules_say(
            names in proptest::collection::btree_set("[a-c]{1,3}", 0..5),
            pair in proptest::sample::subsequence(vec![COLLIDING.0, COLLIDING.1], 0..=2),
            allowed in proptest::collection::vec("([a-c]{0,2}|room-)\\*?", 0..4),
            regions in proptest::collection::btree_set("[a-b]{0,1}", 1..3),
        ) {
            let user = UserId::parse("u").unwrap();
            let names: Vec<&str> = names.iter().map(String::as_str).chain(pair).collect();
            let topics = topics(&names);
            let claims = Claims::new("u").topics(&allowed);
            let regions: Vec<Region> = regions.iter().map(|r| Region::parse(r).unwrap()).collect();
            let all_allowed = names.iter().all(|n| claims.allows_topic(n));
            let mut keys: Vec<u32> = std::iter::once(user.subject())
                .chain(topics.iter().map(Topic::subject))
                .flat_map(|live| regions.iter().map(move |r| cursor::key(&r.origin(&live))))
                .collect();
            let count = keys.len();
            keys.sort_unstable();
            keys.dedup();
            let distinct = keys.len() == count;
            prop_assert_eq!(check(&user, &topics, &claims, &regions).is_ok(), all_allowed && distinct);
        }
    }
}
