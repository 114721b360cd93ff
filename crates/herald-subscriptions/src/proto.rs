//! What a NATS server sends, parsed from the front of a read buffer.
//!
//! Pure: bytes in, operations out, no I/O. A message's subject, reply and
//! payload are zero-copy slices of the buffer; its payload is found by the
//! byte counts in its control line, never by looking for CRLF in it.

use async_nats::{Message, Subject};
use bytes::{Buf, BytesMut};

use crate::deliver::Sid;

/// The longest control line accepted (an INFO from a big cluster lists
/// many URLs; anything longer is not NATS).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// One operation from the server.
#[derive(Debug)]
pub(crate) enum ServerOp {
    Msg {
        sid: Sid,
        message: Message,
    },
    /// A message that cannot be handed on (its subject or reply is not
    /// UTF-8); the connection itself is fine.
    Unreadable {
        sid: Sid,
        why: &'static str,
    },
    /// A message over the size limit: its bytes are skipped, the
    /// connection is fine.
    Oversized {
        sid: Sid,
        size: usize,
    },
    Ping,
    Pong,
    Ok,
    Err(String),
    Info(Box<Info>),
}

/// What [`parse`] found at the front of the buffer.
#[derive(Debug)]
pub(crate) enum Parsed {
    Op(ServerOp),
    /// Incomplete: the next operation needs at least this many bytes in the
    /// buffer (its size once its control line is known).
    Need(usize),
}

/// The server's INFO, the fields this client uses.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Info {
    pub server_id: String,
    pub server_name: String,
    pub max_payload: usize,
    pub tls_required: bool,
    pub tls_available: bool,
    pub nonce: Option<String>,
    pub connect_urls: Vec<String>,
    /// Lame duck mode: the server is about to shut down.
    pub ldm: bool,
}

/// Input that is not the NATS protocol; the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtoError {
    #[error("a control line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("unknown operation {0:?}")]
    Unknown(String),
    #[error("malformed {0} arguments")]
    BadArguments(&'static str),
    #[error("a message payload not followed by CRLF")]
    MissingCrlf,
    #[error("malformed INFO: {0}")]
    BadInfo(String),
}

/// Reads operations off the front of a connection's read buffer.
#[derive(Debug)]
pub(crate) struct Parser {
    /// Messages larger than this (headers and payload) are skipped.
    max_message: usize,
    /// Bytes of an oversized message still to drop as they arrive.
    skip: usize,
}

impl Parser {
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            skip: 0,
        }
    }

    /// Takes the first complete operation off `buf`. A message over the
    /// limit is answered with [`ServerOp::Oversized`] as soon as its
    /// control line is read, and its bytes are dropped as they come, so
    /// it never sits in memory.
    pub(crate) fn parse(&mut self, buf: &mut BytesMut) -> Result<Parsed, ProtoError> {
        self.drop_skipped(buf);
        if self.skip > 0 {
            return Ok(Parsed::Need(1));
        }
        let parsed = parse(buf, self.max_message)?;
        if let Parsed::Op(ServerOp::Oversized { size, .. }) = &parsed {
            // The payload and its CRLF.
            self.skip = size.saturating_add(2);
            self.drop_skipped(buf);
        }
        Ok(parsed)
    }

    /// Whether the bytes arriving now are an oversized message's, dropped.
    pub(crate) fn is_skipping(&self) -> bool {
        self.skip > 0
    }

    fn drop_skipped(&mut self, buf: &mut BytesMut) {
        let dropped = self.skip.min(buf.len());
        buf.advance(dropped);
        self.skip -= dropped;
    }
}

/// Takes the first complete operation off `buf`; of a message larger than
/// `max_message` bytes (headers and payload), only the control line.
fn parse(buf: &mut BytesMut, max_message: usize) -> Result<Parsed, ProtoError> {
    let searched = &buf[..buf.len().min(MAX_LINE + 1)];
    let Some(newline) = memchr::memchr(b'\n', searched) else {
        if buf.len() > MAX_LINE {
            return Err(ProtoError::LineTooLong);
        }
        return Ok(Parsed::Need(buf.len() + 1));
    };
    let line = buf[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..newline]);
    let verb_end = line
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(line.len());
    let verb = &line[..verb_end];
    let is = |name: &[u8]| verb.eq_ignore_ascii_case(name);
    let op = if is(b"MSG") {
        return message(buf, newline, verb_end, false, max_message);
    } else if is(b"HMSG") {
        return message(buf, newline, verb_end, true, max_message);
    } else if is(b"PING") {
        ServerOp::Ping
    } else if is(b"PONG") {
        ServerOp::Pong
    } else if is(b"+OK") {
        ServerOp::Ok
    } else if is(b"-ERR") {
        ServerOp::Err(error_text(&line[verb_end..]))
    } else if is(b"INFO") {
        let info = serde_json::from_slice(&line[verb_end..])
            .map_err(|e| ProtoError::BadInfo(e.to_string()))?;
        ServerOp::Info(Box::new(info))
    } else {
        let shown = String::from_utf8_lossy(&line[..line.len().min(32)]).into_owned();
        return Err(ProtoError::Unknown(shown));
    };
    buf.advance(newline + 1);
    Ok(Parsed::Op(op))
}

/// `-ERR 'text'` → `text`.
fn error_text(rest: &[u8]) -> String {
    let text = String::from_utf8_lossy(rest);
    text.trim().trim_matches('\'').to_owned()
}

/// `MSG <subject> <sid> [reply] <size>` or
/// `HMSG <subject> <sid> [reply] <header size> <size>`, then the bytes.
fn message(
    buf: &mut BytesMut,
    newline: usize,
    args_start: usize,
    headers: bool,
    max_message: usize,
) -> Result<Parsed, ProtoError> {
    let what = if headers { "HMSG" } else { "MSG" };
    let bad = ProtoError::BadArguments(what);
    let line_end = if newline > 0 && buf[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    };
    let args = arguments(&buf[..line_end], args_start);
    let counts = if headers { 2 } else { 1 };
    let (subject, sid, reply, sizes) = match args.len().checked_sub(counts) {
        Some(2) => (args[0].clone(), args[1].clone(), None, &args[2..]),
        Some(3) => (
            args[0].clone(),
            args[1].clone(),
            Some(args[2].clone()),
            &args[3..],
        ),
        _ => return Err(bad),
    };
    let number = |range: &std::ops::Range<usize>| decimal(&buf[range.clone()]).ok_or(bad.clone());
    let sid: Sid = number(&sid)?;
    let size = |range| usize::try_from(number(range)?).map_err(|_| bad.clone());
    let total = size(sizes.last().ok_or(bad.clone())?)?;
    let header_len = if headers { size(&sizes[0])? } else { 0 };
    if header_len > total {
        return Err(bad);
    }
    if total > max_message {
        buf.advance(newline + 1);
        return Ok(Parsed::Op(ServerOp::Oversized { sid, size: total }));
    }
    let payload_start = newline + 1;
    let end = payload_start + total + 2;
    if buf.len() < end {
        return Ok(Parsed::Need(end));
    }
    if &buf[end - 2..end] != b"\r\n" {
        return Err(ProtoError::MissingCrlf);
    }
    let op = buf.split_to(end).freeze();
    let subject = match Subject::try_from(op.slice(subject)) {
        Ok(subject) => subject,
        Err(_) => return unreadable(sid, "its subject is not UTF-8"),
    };
    let reply = match reply.map(|r| Subject::try_from(op.slice(r))).transpose() {
        Ok(reply) => reply,
        Err(_) => return unreadable(sid, "its reply subject is not UTF-8"),
    };
    let body = payload_start..payload_start + total;
    let (headers, status, description) = if headers {
        let block = crate::headers::parse(&op[payload_start..payload_start + header_len]);
        (Some(block.headers), block.status, block.description)
    } else {
        (None, None, None)
    };
    let length = reply.as_ref().map_or(0, |r| r.len()) + subject.len() + total;
    let message = Message {
        subject,
        reply,
        payload: op.slice(body.start + header_len..body.end),
        headers,
        status,
        description,
        length,
    };
    Ok(Parsed::Op(ServerOp::Msg { sid, message }))
}

fn unreadable(sid: Sid, why: &'static str) -> Result<Parsed, ProtoError> {
    Ok(Parsed::Op(ServerOp::Unreadable { sid, why }))
}

/// The byte ranges of the space- or tab-separated words of `line` from
/// `start`; at most 6 (more is malformed anyway).
fn arguments(line: &[u8], start: usize) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::with_capacity(6);
    let mut at = start;
    while at < line.len() && ranges.len() <= 6 {
        let blank = |b: &u8| *b == b' ' || *b == b'\t';
        match line[at..].iter().position(|b| !blank(b)) {
            None => break,
            Some(skip) => at += skip,
        }
        let len = line[at..].iter().position(blank).unwrap_or(line.len() - at);
        ranges.push(at..at + len);
        at += len;
    }
    ranges
}

/// A plain decimal number (no sign, no spaces), or `None`.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The bytes of `MSG`/`HMSG` as a server writes them; for tests.
#[cfg(test)]
pub(crate) fn encode(
    sid: Sid,
    subject: &str,
    reply: Option<&str>,
    header: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
    let mut out = if header.is_empty() {
        format!("MSG {subject} {sid}{reply} {}\r\n", payload.len()).into_bytes()
    } else {
        let total = header.len() + payload.len();
        format!("HMSG {subject} {sid}{reply} {} {total}\r\n", header.len()).into_bytes()
    };
    out.extend_from_slice(header);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
