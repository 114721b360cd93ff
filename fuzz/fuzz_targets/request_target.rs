//! What `GET /v1/events` reads from a request — `topic`s, `last_event_id`,
//! `access_token`, the `Last-Event-ID`, `Authorization` and `Cookie`
//! headers — through the same functions the edge runs: never a panic, the
//! topic limit holds, topics are valid and distinct, what parses
//! re-encodes to a query that parses the same, and the token's `topics`
//! claim is held to (the edge's own access check).
//!
//! Input: 1 byte max topics, then query, authorization, cookie and
//! last-event-id separated by NUL bytes.
#![no_main]

use herald_domain::access::{self, AccessError};
use herald_domain::claims::Claims;
use herald_domain::region::Region;
use herald_domain::request::{self, Target};
use herald_domain::subject::{Topic, UserId};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(max % 64);
    let mut parts = rest.split(|&b| b == 0);
    let query = parts.next().map(String::from_utf8_lossy);
    let mut headers = HeaderMap::new();
    for name in ["authorization", "cookie", "last-event-id"] {
        if let Some(Ok(value)) = parts.next().map(HeaderValue::from_bytes) {
            headers.insert(name, value);
        }
    }
    let query = query.as_deref();

    if let Some(token) = request::token(&headers, query) {
        assert!(!token.is_empty());
    }
    if let Ok(target) = request::parse_target(&headers, query, max) {
        check(&target, max);
        allowed(&target);
    }
});

/// A claim of `a*` lets a connect follow topics starting with `a` only.
fn allowed(target: &Target) {
    let user = UserId::parse("u").unwrap();
    let claims = Claims::new("u").topics(&["a*"]);
    let regions = [Region::parse("").unwrap()];
    let granted = access::check(&user, &target.topics, &claims, &regions);
    if target.topics.iter().any(|t| !t.as_str().starts_with('a')) {
        assert!(matches!(granted, Err(AccessError::TopicNotAllowed(_))));
    } else if let Err(e) = granted {
        assert!(matches!(e, AccessError::SubjectCollision(..)), "{e}");
    }
}

fn check(target: &Target, max: usize) {
    assert!(target.topics.len() <= max);
    for (i, topic) in target.topics.iter().enumerate() {
        assert_eq!(Topic::parse(topic.as_str()).as_ref(), Ok(topic));
        assert!(!target.topics[..i].contains(topic), "{topic:?} twice");
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    for topic in &target.topics {
        query.append_pair("topic", topic.as_str());
    }
    if !target.cursor.is_empty() {
        query.append_pair("last_event_id", &target.cursor.encode());
    }
    let query = query.finish();
    let again = request::parse_target(&HeaderMap::new(), Some(&query), max);
    assert_eq!(again.as_ref(), Ok(target));
}
