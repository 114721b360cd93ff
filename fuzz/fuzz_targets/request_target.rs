//! What `GET /v1/events` reads from a request — `topic`s, `last_event_id`,
//! `access_token`, the `Last-Event-ID`, `Authorization` and `Cookie`
//! headers — through the same functions the edge runs: never a panic, the
//! topic limit holds, topics are valid and distinct, and what parses
//! re-encodes to a query that parses the same.
//!
//! Input: 1 byte max topics, then query, authorization, cookie and
//! last-event-id separated by NUL bytes.
#![no_main]

use herald_domain::subject::Topic;
use herald_domain::request::{self, Target};
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
    match request::parse_target(&headers, query, max) {
        Ok(target) => check(&target, max),
        Err(e) => {
            assert!(["invalid_topic", "too_many_topics", "invalid_cursor"].contains(&e.code()))
        }
    }
});

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
