//! An incremental `text/event-stream` parser per the WHATWG rules, for
//! `herald subscribe`. Unlike `eventsource-stream` (what the tests read
//! streams with), it reports what a terminal user needs besides events:
//! comments (the edge's `: closing: <reason>`) and `retry:` fields that
//! come in a block with no data (the edge's first and last frames).

/// One event, as dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// The `id:` of this event's own block, if it had one (ephemeral
    /// events have none; the stream's last id stays as it was).
    pub id: Option<String>,
    /// `event:`, or `message` when the block named no type.
    pub event: String,
    pub data: String,
}

/// What the stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    Event(Event),
    /// A `retry:` field: the reconnection time in milliseconds.
    Retry(u64),
    /// A comment line, without its colon and one leading space.
    Comment(String),
}

/// A line or an event longer than this ends the stream as broken: a
/// server (or something posing as one) cannot make the CLI buffer without
/// bound. Herald's own payload limit is far below it.
pub(crate) const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The stream broke the size limit.
#[derive(Debug, thiserror::Error)]
#[error("an event over {MAX_EVENT_BYTES} bytes; the stream is not read further")]
pub(crate) struct TooLong;

/// Parser state across chunks.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    /// The current line so far.
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF starting this one ends no line.
    after_cr: bool,
    /// Past the stream's first bytes, where a BOM would be.
    started: bool,
    /// The block's `data:` lines, each followed by LF.
    data: String,
    event: String,
    /// The block's own `id:`.
    id: Option<String>,
    /// The stream's last event id, which a reconnect sends back.
    last_event_id: String,
}

impl Parser {
    /// Parses `bytes`, pushing what they complete onto `out`.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Item>) -> Result<(), TooLong> {
        if !self.started {
            // Wait for three bytes before deciding on a BOM.
            self.line.extend_from_slice(bytes);
            if self.line.len() < 3 && "\u{feff}".as_bytes().starts_with(&self.line) {
                return Ok(());
            }
            self.started = true;
            let head = std::mem::take(&mut self.line);
            let head = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&head);
            return self.feed(head, out);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        if self.after_cr && bytes[0] == b'\n' {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..end]);
            let line = std::mem::take(&mut self.line);
            self.line(&line, out)?;
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            self.after_cr = bytes[end] == b'\r' && end + 1 == bytes.len();
            bytes = &bytes[end + if crlf { 2 } else { 1 }..];
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(TooLong);
        }
        Ok(())
    }

    /// The id a reconnect sends as `Last-Event-ID` (empty: none).
    pub(crate) fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Starts from `id`, as a reconnect after a resume does.
    pub(crate) fn set_last_event_id(&mut self, id: &str) {
        self.last_event_id = id.to_owned();
    }

    /// Forgets a partial line and block: a new connection starts clean,
    /// keeping only the last event id.
    pub(crate) fn reset_connection(&mut self) {
        let last_event_id = std::mem::take(&mut self.last_event_id);
        *self = Self {
            last_event_id,
            ..Self::default()
        };
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Item>) -> Result<(), TooLong> {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix(':') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            out.push(Item::Comment(comment.to_owned()));
            return Ok(());
        }
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if self.data.len() + value.len() > MAX_EVENT_BYTES {
                    return Err(TooLong);
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event = value.to_owned(),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // All digits: only an absurd length fails, and is ignored.
                if let Ok(ms) = value.parse() {
                    out.push(Item::Retry(ms));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A blank line: the block ends; an event is dispatched if it had data.
    fn dispatch(&mut self, out: &mut Vec<Item>) {
        let id = self.id.take();
        if let Some(id) = &id {
            self.last_event_id.clone_from(id);
        }
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return;
        }
        data.pop();
        out.push(Item::Event(Event {
            id,
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<Item>, String) {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out).unwrap();
        }
        (out, parser.last_event_id().to_owned())
    }

    fn event(id: Option<&str>, event: &str, data: &str) -> Item {
        Item::Event(Event {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        })
    }

    #[test]
    fn the_edges_frames_parse_into_retry_comments_and_events() {
        let stream = b"retry: 2000\n: herald edge e1\n\n\
            id: c1\nevent: headline\ndata: hello\n\n\
            data: ephemeral\n\n\
            : heartbeat\n\n\
            : closing: drain\nretry: 1500\n\n";
        let (items, last) = parse_chunks(&[stream]);
        assert_eq!(
            items,
            vec![
                Item::Retry(2000),
                Item::Comment("herald edge e1".into()),
                event(Some("c1"), "headline", "hello"),
                event(None, "message", "ephemeral"),
                Item::Comment("heartbeat".into()),
                Item::Comment("closing: drain".into()),
                Item::Retry(1500),
            ]
        );
        assert_eq!(last, "c1", "an event without id keeps the last one");
    }

    #[test]
    fn every_split_of_a_stream_parses_the_same() {
        let stream: &[u8] =
            b"\xEF\xBB\xBFid: 1\r\ndata: a\r\ndata:b\r\rdata: caf\xC3\xA9\n\r\n: x\r\nretry: 7\n";
        let (whole, last) = parse_chunks(&[stream]);
        assert_eq!(
            whole,
            vec![
                event(Some("1"), "message", "a\nb"),
                event(None, "message", "café"),
                Item::Comment("x".into()),
                Item::Retry(7),
            ]
        );
        assert_eq!(last, "1");
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let split = parse_chunks(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(split, (whole.clone(), last.clone()), "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn fields_follow_the_spec_edge_cases() {
        let (items, last) = parse_chunks(&[b"data\n\n\
            data:  two spaces\n\n\
            id: 5\n\n\
            id: bad\0\ndata: x\n\n\
            retry: 12a\nretry:\nretry: 99999999999999999999999\nretry: -1\n\
            event: only-a-type\n\n\
            nocolon\ndata: y\nunknown: z\n\n\
            id\ndata: z\n\n"]);
        assert_eq!(
            items,
            vec![
                event(None, "message", ""),
                event(None, "message", " two spaces"),
                event(None, "message", "x"),
                event(None, "message", "y"),
                event(Some(""), "message", "z"),
            ]
        );
        // `id: 5` set it, the NUL one was ignored, the bare `id` cleared it.
        assert_eq!(last, "");
    }

    #[test]
    fn an_id_only_block_moves_the_last_event_id() {
        let (items, last) = parse_chunks(&[b"id: 7\n\n"]);
        assert!(items.is_empty());
        assert_eq!(last, "7");
    }

    #[test]
    fn a_reset_connection_forgets_the_partial_block_not_the_id() {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        parser
            .feed(b"id: 3\ndata: a\n\nevent: x\ndata: part", &mut out)
            .unwrap();
        parser.reset_connection();
        parser.feed(b"\xEF\xBB\xBFdata: b\n\n", &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                event(Some("3"), "message", "a"),
                event(None, "message", "b")
            ]
        );
        assert_eq!(parser.last_event_id(), "3");
    }

    #[test]
    fn an_endless_line_or_event_is_refused() {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        let chunk = vec![b'x'; 1024 * 1024];
        parser.feed(b"data: ", &mut out).unwrap();
        let result = (0..20).try_for_each(|_| parser.feed(&chunk, &mut out));
        assert!(result.is_err());

        let mut parser = Parser::default();
        let line = [b"data: ".as_slice(), &chunk, b"\n"].concat();
        let result = (0..20).try_for_each(|_| parser.feed(&line, &mut out));
        assert!(result.is_err(), "many data lines add up");
        assert!(out.is_empty());
    }
}
