//! What a `GET /v1/events` request asks for, read from its query string and
//! headers: the token, the topics, the resume cursor. Pure functions over
//! untrusted input (a leaf module), so that the fuzz targets and property
//! tests call exactly what the server runs.

use crate::cursor::{Cursor, CursorError};
use crate::subject::{IdError, Topic};
use http::HeaderMap;

/// Name of the cookie that may carry the token.
pub const TOKEN_COOKIE: &str = "herald_token";

/// The topics and cursor of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Topics to follow besides the user's stream: valid, distinct, in the
    /// order first asked for, at most the configured number.
    pub topics: Vec<Topic>,
    /// Where to resume; empty to start from now.
    pub cursor: Cursor,
}

/// Why a request's target was refused (each a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("topic {name:?}: {source}")]
    Topic { name: String, source: IdError },
    #[error("at most {max} topics per connection")]
    TooManyTopics { max: usize },
    #[error("Last-Event-ID is not ASCII")]
    CursorNotAscii,
    #[error("{0}; reconnect without it to start from now")]
    Cursor(#[from] CursorError),
}

/// The request's topics and cursor. Topics are checked against the token's
/// claim by the caller, once the token is verified.
pub fn parse_target(
    headers: &HeaderMap,
    query: Option<&str>,
    max_topics: usize,
) -> Result<Target, RequestError> {
    Ok(Target {
        topics: topics(query, max_topics)?,
        cursor: last_event_id(headers, query)?,
    })
}

/// The `topic` query parameters, valid and distinct; stops at the first
/// topic beyond `max`, so a long query costs no more than `max` topics.
pub fn topics(query: Option<&str>, max: usize) -> Result<Vec<Topic>, RequestError> {
    let mut topics: Vec<Topic> = Vec::new();
    for (_, name) in params(query).filter(|(k, _)| k == "topic") {
        let topic = Topic::parse(&name).map_err(|source| RequestError::Topic {
            name: name.clone().into_owned(),
            source,
        })?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
        if topics.len() > max {
            return Err(RequestError::TooManyTopics { max });
        }
    }
    Ok(topics)
}

/// The resume cursor from `Last-Event-ID` or the `last_event_id` query
/// parameter (for clients that cannot set headers); empty if neither.
pub fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Result<Cursor, RequestError> {
    let id = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| RequestError::CursorNotAscii)?
                .to_owned(),
        ),
        None => params(query)
            .find(|(k, _)| k == "last_event_id")
            .map(|(_, v)| v.into_owned()),
    };
    match id.as_deref().map(str::trim) {
        None | Some("") => Ok(Cursor::default()),
        Some(id) => Ok(Cursor::decode(id)?),
    }
}

/// The client's token: `Authorization: Bearer` first, then the cookie,
/// then the `access_token` query parameter (the order of how deliberate
/// each is); an empty one counts as absent.
pub fn token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    let cookie = || {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == TOKEN_COOKIE)
            .map(|(_, value)| value.to_owned())
    };
    let query = || {
        params(query)
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    };
    let present = |t: &String| !t.is_empty();
    bearer
        .filter(present)
        .or_else(|| cookie().filter(present))
        .or_else(|| query().filter(present))
}

/// Percent-decoded query parameters (`+` is a space, as forms send it).
fn params(query: Option<&str>) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn finds_token_in_header_cookie_and_query_in_that_order() {
        let q = Some("access_token=q");
        assert_eq!(token(&HeaderMap::new(), q), Some("q".into()));
        let cookie = headers(&[("cookie", "a=1; herald_token=c; b=2")]);
        assert_eq!(token(&cookie, q), Some("c".into()));
        let both = headers(&[
            ("cookie", "a=1; herald_token=c; b=2"),
            ("authorization", "Bearer h"),
        ]);
        assert_eq!(token(&both, q), Some("h".into()));
        assert_eq!(
            token(&HeaderMap::new(), Some("topic=x&access_token=")),
            None
        );
        assert_eq!(token(&HeaderMap::new(), None), None);
    }

    #[test]
    fn hostile_token_carriers_find_nothing_or_the_next_carrier() {
        let q = Some("access_token=q");
        for (name, value) in [
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("authorization", "Bearer"),
            ("authorization", "Bearer    "),
            ("authorization", "BEARER h"),
            ("cookie", "herald_token"),
            ("cookie", "xherald_token=c"),
            ("cookie", ";;;=;"),
            ("cookie", "herald_token="),
        ] {
            assert_eq!(
                token(&headers(&[(name, value)]), q),
                Some("q".into()),
                "{name}: {value}"
            );
        }
        let mut opaque = HeaderMap::new();
        let value = http::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap();
        opaque.insert("authorization", value);
        assert_eq!(token(&opaque, q), Some("q".into()));
    }

    #[test]
    fn topics_are_validated_deduplicated_and_counted() {
        let names = |q: &str, max| {
            topics(Some(q), max).map(|t| t.iter().map(|t| t.as_str().to_owned()).collect())
        };
        assert_eq!(
            names("topic=a&topic=b&topic=a&x=1", 2),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            names("topic=room%2E42&topic=caf%C3%A9", 2),
            Ok(vec!["room.42".to_owned(), "café".to_owned()])
        );
        assert_eq!(
            names("topic=a&topic=b&topic=c", 2),
            Err(RequestError::TooManyTopics { max: 2 })
        );
        for bad in [
            "topic=",
            "topic=a+b",
            "topic=a%20b",
            "topic=news*",
            "topic=%00",
        ] {
            let err = names(bad, 2).unwrap_err();
            assert!(matches!(err, RequestError::Topic { .. }), "{bad}: {err}");
        }
        let long = format!("topic={}", "x".repeat(257));
        assert!(matches!(
            names(&long, 2).unwrap_err(),
            RequestError::Topic { .. }
        ));
    }

    #[test]
    fn a_flood_of_topics_stops_at_the_limit() {
        let query: String = (0..100_000).map(|i| format!("topic=t{i}&")).collect();
        assert_eq!(
            topics(Some(&query), 32),
            Err(RequestError::TooManyTopics { max: 32 })
        );
        let repeated = "topic=same&".repeat(100_000);
        assert_eq!(topics(Some(&repeated), 32).unwrap().len(), 1);
    }

    #[test]
    fn the_cursor_comes_from_the_header_before_the_query() {
        let mut cursor = Cursor::default();
        cursor.set(7, 42);
        let id = cursor.encode();
        let query = format!("last_event_id={id}");
        assert_eq!(
            last_event_id(&HeaderMap::new(), Some(&query)),
            Ok(cursor.clone())
        );
        let header = headers(&[("last-event-id", &id)]);
        assert_eq!(
            last_event_id(&header, Some("last_event_id=junk")),
            Ok(cursor)
        );
        assert_eq!(
            last_event_id(&headers(&[("last-event-id", "  ")]), Some(&query)),
            Ok(Cursor::default()),
            "an empty header means start from now"
        );
        assert_eq!(
            last_event_id(&HeaderMap::new(), None),
            Ok(Cursor::default())
        );
    }

    #[test]
    fn hostile_cursors_are_400s() {
        let mut not_ascii = HeaderMap::new();
        not_ascii.insert(
            "last-event-id",
            http::HeaderValue::from_bytes(b"\xffab").unwrap(),
        );
        assert_eq!(
            last_event_id(&not_ascii, None),
            Err(RequestError::CursorNotAscii)
        );
        for q in ["last_event_id=!!", "last_event_id=AQ", "last_event_id=%FF"] {
            let err = last_event_id(&HeaderMap::new(), Some(q)).unwrap_err();
            assert!(matches!(err, RequestError::Cursor(_)), "{q}: {err}");
        }
        let long = format!("last_event_id={}", "A".repeat(100_000));
        assert_eq!(
            last_event_id(&HeaderMap::new(), Some(&long)),
            Err(RequestError::Cursor(CursorError::TooLong))
        );
    }

    /// Valid topic names, including bytes a query must percent-encode.
    fn topic_name() -> impl Strategy<Value = String> {
        "[a-z0-9._~!&=+%#é中-]{1,12}"
    }

    fn encode(pairs: &[(&str, &str)]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    proptest! {
        /// Whatever a query and headers hold, parsing answers without panicking.
        #[test]
        fn any_request_parses_or_is_refused(
            query in proptest::option::of("\\PC{0,200}"),
            authorization in proptest::option::of("[ -~]{0,40}"),
            cookie in proptest::option::of("[ -~]{0,40}"),
            last_event_id in proptest::option::of("[ -~]{0,40}"),
            max in 0..40usize,
        ) {
            let mut map = HeaderMap::new();
            for (name, value) in [("authorization", authorization), ("cookie", cookie), ("last-event-id", last_event_id)] {
                if let Some(value) = value.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
                    map.insert(name, value);
                }
            }
            if let Ok(target) = parse_target(&map, query.as_deref(), max) {
                prop_assert!(target.topics.len() <= max);
            }
            if let Some(token) = token(&map, query.as_deref()) {
                prop_assert!(!token.is_empty());
            }
        }

        /// What a client encodes, the edge reads back: topics in order
        /// without repeats, the cursor, and the token.
        #[test]
        fn an_encoded_request_round_trips(
            names in proptest::collection::vec(topic_name(), 0..40),
            entries in proptest::collection::btree_map(any::<u32>(), any::<u64>(), 0..8),
            access_token in "[A-Za-z0-9._-]{1,60}",
            max in 0..40usize,
        ) {
            let mut cursor = Cursor::default();
            for (key, seq) in entries {
                cursor.set(key, seq);
            }
            let id = cursor.encode();
            let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| ("topic", n.as_str())).collect();
            pairs.push(("last_event_id", &id));
            pairs.push(("access_token", &access_token));
            let query = encode(&pairs);
            let mut distinct: Vec<&str> = Vec::new();
            for name in &names {
                if !distinct.contains(&name.as_str()) {
                    distinct.push(name);
                }
            }
            let parsed = parse_target(&HeaderMap::new(), Some(&query), max);
            if distinct.len() > max {
                prop_assert_eq!(parsed, Err(RequestError::TooManyTopics { max }));
            } else {
                let target = parsed.unwrap();
                let got: Vec<&str> = target.topics.iter().map(Topic::as_str).collect();
                prop_assert_eq!(got, distinct);
                prop_assert_eq!(target.cursor, cursor);
            }
            prop_assert_eq!(token(&HeaderMap::new(), Some(&query)), Some(access_token));
        }
    }
}
