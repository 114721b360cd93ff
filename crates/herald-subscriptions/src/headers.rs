//! The header block of an `HMSG`: `NATS/1.0[ code[ description]]` then
//! `Name: value` lines.
//!
//! Headers come from publishers, not from the server, so a malformed line
//! is skipped rather than failing the message or, worse, the connection
//! that every subscription on this node shares.

use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// A parsed header block.
#[derive(Debug, Default)]
pub(crate) struct Block {
    pub headers: HeaderMap,
    pub status: Option<StatusCode>,
    pub description: Option<String>,
}

pub(crate) fn parse(block: &[u8]) -> Block {
    let mut parsed = Block::default();
    let text = String::from_utf8_lossy(block);
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .peekable();
    let Some(version) = lines.next().and_then(|l| l.strip_prefix("NATS/1.0")) else {
        return parsed;
    };
    let version = version.trim();
    let (status, description) = version.split_once(' ').unwrap_or((version, ""));
    parsed.status = StatusCode::from_str(status.trim()).ok();
    let description = description.trim();
    parsed.description = (!description.is_empty()).then(|| description.to_owned());
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':').filter(|(name, _)| !name.is_empty()) else {
            continue;
        };
        let mut value = value.trim_start().to_owned();
        // Folded continuation lines belong to this value.
        while let Some(more) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            value.push_str(more);
        }
        value.truncate(value.trim_end().len());
        if let (Ok(name), Ok(value)) = (HeaderName::from_str(name), HeaderValue::from_str(&value)) {
            parsed.headers.append(name, value);
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_status_and_repeats() {
        let block = parse(b"NATS/1.0\r\nA: 1\r\nNats-Sequence: 42\r\nA:  2 \r\n\r\n");
        assert_eq!(block.status, None);
        assert_eq!(block.description, None);
        let all: Vec<_> = block
            .headers
            .get_all("A")
            .map(|v| v.as_str().to_owned())
            .collect();
        assert_eq!(all, ["1", "2"]);
        assert_eq!(block.headers.get("Nats-Sequence").unwrap().as_str(), "42");

        let status = parse(b"NATS/1.0 404 No Messages\r\n\r\n");
        assert_eq!(status.status, Some(StatusCode::NOT_FOUND));
        assert_eq!(status.description.as_deref(), Some("No Messages"));
        let bare = parse(b"NATS/1.0 503\r\n\r\n");
        assert_eq!(bare.status, Some(StatusCode::NO_RESPONDERS));
        assert_eq!(bare.description, None);
    }

    #[test]
    fn folded_values_are_joined() {
        let block = parse(b"NATS/1.0\r\nLong: a\r\n  b\r\n\r\n");
        assert_eq!(block.headers.get("Long").unwrap().as_str(), "a  b");
    }

    #[test]
    fn malformed_lines_are_skipped_not_fatal() {
        let block = parse(b"NATS/1.0 abc\r\nno colon\r\nBad Name: x\r\nok: a\rx\r\nGood: y\r\n");
        assert_eq!(block.status, None);
        assert_eq!(block.headers.len(), 1);
        assert_eq!(block.headers.get("Good").unwrap().as_str(), "y");
        assert!(parse(b"HTTP/1.1 200\r\nA: 1\r\n").headers.is_empty());
        assert!(parse(b"").headers.is_empty());
        assert!(parse(b"NATS/1.0\r\n\xff\xfe: \xff\r\n").headers.len() <= 1);
    }
}
