//! The event envelope: how an event travels on NATS between services.
//!
//! The NATS payload is the event's data, byte for byte; the SSE event type
//! rides in the `Herald-Event` header so that data never needs re-encoding.

use async_nats::HeaderMap;
use bytes::Bytes;

/// Header carrying the SSE event type; absent means the default `message`.
pub const EVENT_HEADER: &str = "Herald-Event";

/// Header carrying the id `Publish` returned, on every stored or queued copy.
pub const EVENT_ID_HEADER: &str = "Herald-Event-Id";

/// Event types starting with this prefix are Herald's own (e.g. `herald.reset`).
pub const RESERVED_EVENT_PREFIX: &str = "herald.";

/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// One event as publishers hand it to Herald.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// SSE event type; `None` for the default.
    pub event: Option<String>,
    /// UTF-8 payload.
    pub data: Bytes,
}

/// Why a publisher's event type was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    #[error("event type is {0} bytes; the limit is {MAX_EVENT_TYPE_LEN}")]
    TooLong(usize),
    #[error("event type must be printable without whitespace (it becomes one SSE `event:` line)")]
    Syntax,
    #[error("event types starting with \"herald.\" are reserved for Herald itself")]
    Reserved,
}

/// Checks a publisher-chosen event type; empty means the default.
pub fn check_event_type(event: &str) -> Result<(), EventTypeError> {
    if event.len() > MAX_EVENT_TYPE_LEN {
        return Err(EventTypeError::TooLong(event.len()));
    }
    if event.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(EventTypeError::Syntax);
    }
    if event.starts_with(RESERVED_EVENT_PREFIX) {
        return Err(EventTypeError::Reserved);
    }
    Ok(())
}

/// Header carrying when `Publish` accepted the event, in microseconds
/// since the Unix epoch: the edges measure publish→delivery latency by it.
pub const PUBLISHED_AT_HEADER: &str = "Herald-Published-At";

impl Envelope {
    /// Headers to publish with: the event type, if any, and the time now.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(event) = self.event.as_deref() {
            headers.insert(EVENT_HEADER, event);
        }
        headers.insert(PUBLISHED_AT_HEADER, unix_micros().to_string().as_str());
        headers
    }

    /// Reads an envelope back from a NATS message.
    pub fn from_message(message: &async_nats::Message) -> Self {
        Self::from_parts(message.headers.as_ref(), &message.payload)
    }

    /// From a message's headers and payload (e.g. one read from history).
    pub fn from_parts(headers: Option<&HeaderMap>, payload: &Bytes) -> Self {
        let event = headers
            .and_then(|h| h.get(EVENT_HEADER))
            .map(|v| v.as_str().to_owned())
            .filter(|e| !e.is_empty());
        Self {
            event,
            data: payload.clone(),
        }
    }
}

/// Microseconds since the Unix epoch, by this machine's clock.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How long ago a message was published, from its [`PUBLISHED_AT_HEADER`];
/// `None` without one (or from a clock ahead of ours).
pub fn age(headers: Option<&HeaderMap>) -> Option<std::time::Duration> {
    let published: u64 = headers?.get(PUBLISHED_AT_HEADER)?.as_str().parse().ok()?;
    let micros = unix_micros().checked_sub(published)?;
    Some(std::time::Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_that_would_break_framing_are_refused() {
        assert_eq!(check_event_type(""), Ok(()));
        assert_eq!(check_event_type("order.updated"), Ok(()));
        assert_eq!(check_event_type("a\nid: 1"), Err(EventTypeError::Syntax));
        assert_eq!(check_event_type("a\rb"), Err(EventTypeError::Syntax));
        assert_eq!(check_event_type("a b"), Err(EventTypeError::Syntax));
        assert_eq!(
            check_event_type("herald.reset"),
            Err(EventTypeError::Reserved)
        );
        assert_eq!(
            check_event_type(&"e".repeat(MAX_EVENT_TYPE_LEN + 1)),
            Err(EventTypeError::TooLong(MAX_EVENT_TYPE_LEN + 1))
        );
    }

    #[test]
    fn headers_carry_the_event_type_and_the_publish_time() {
        let env = Envelope {
            event: None,
            data: Bytes::from_static(b"x"),
        };
        let headers = env.headers();
        assert!(headers.get(EVENT_HEADER).is_none());
        let age = age(Some(&headers)).unwrap();
        assert!(age < std::time::Duration::from_secs(5), "{age:?}");
        let typed = Envelope {
            event: Some("price".into()),
            data: Bytes::new(),
        };
        assert_eq!(typed.headers().get(EVENT_HEADER).unwrap().as_str(), "price");
    }

    #[test]
    fn garbage_or_future_publish_times_have_no_age() {
        assert_eq!(age(None), None);
        for bad in [
            "",
            "soon",
            "-5",
            "99999999999999999999999",
            &u64::MAX.to_string(),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(PUBLISHED_AT_HEADER, bad);
            assert_eq!(age(Some(&headers)), None, "{bad:?}");
        }
    }
}
