//! SSE framing per the WHATWG event-stream rules.
//!
//! The parser splits lines on CR, LF and CRLF alike, so every line break in
//! a payload becomes its own `data:` line and the client rebuilds the data
//! joined with LF. Nothing in a payload can start a new field: each of its
//! lines is written after `data: `. This is the hot path, written by hand:
//! one pass over the payload into one buffer, shared by every recipient.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, header};

/// An SSE response around `body`: not cached, not buffered by proxies.
pub fn response<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Whether `Accept` names `text/event-stream` (EventSource always sends
/// it), with a q-value above zero. Wildcards do not count: they are sent
/// by clients that can read JSON errors.
pub fn accepted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(names_event_stream)
}

/// One `Accept` element: `type/subtype *(; param)`.
fn names_event_stream(element: &str) -> bool {
    let mut parts = element.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    media.eq_ignore_ascii_case("text/event-stream") && parts.all(|param| !refuses(param))
}

/// `q=0` (however written) means "not acceptable".
fn refuses(param: &str) -> bool {
    let Some((name, value)) = param.split_once('=') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("q") && !value.trim().parse::<f32>().is_ok_and(|q| q > 0.0)
}

/// A reconnect delay drawn uniformly from [`base_ms`, 2 × `base_ms`], so
/// clients told to come back at once do not come back in the same instant.
pub fn jittered(base_ms: u64) -> u64 {
    base_ms.saturating_add(fastrand::u64(0..=base_ms))
}

/// One event, framed: optional `event:` line, `data:` lines, blank line.
pub fn event(event_type: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    if let Some(t) = event_type {
        out.put_slice(b"event: ");
        // A type with a line break would start a new field; the publisher
        // refuses such types, and this keeps a stray one on the same line.
        for &b in t.as_bytes() {
            out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        out.put_u8(b'\n');
    }
    let mut rest = data;
    loop {
        out.put_slice(b"data: ");
        // memchr2 scans with SIMD: line breaks are rare, payloads long.
        match memchr::memchr2(b'\n', b'\r', rest) {
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                break;
            }
            Some(i) => {
                out.put_slice(&rest[..i]);
                out.put_u8(b'\n');
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
            }
        }
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The stream's first bytes: the reconnect delay and a comment, so clients
/// and proxies see the stream open at once; and the stream's starting id,
/// if it has one. A block without data dispatches no event, but an
/// EventSource keeps its id for the next reconnect.
pub fn opening(retry_ms: u64, node: &str, id: Option<&str>) -> Bytes {
    let id = id
        .map(|id| format!("id: {}\n", one_line(id)))
        .unwrap_or_default();
    Bytes::from(format!(
        "retry: {retry_ms}\n{id}: herald edge {}\n\n",
        one_line(node)
    ))
}

/// A heartbeat comment: keeps proxies from cutting an idle stream.
pub fn heartbeat() -> Bytes {
    Bytes::from_static(b": heartbeat\n\n")
}

/// The last bytes of a stream the server ends: when to come back, and why.
pub fn closing(retry_ms: u64, reason: &str) -> Bytes {
    Bytes::from(format!(
        ": closing: {}\nretry: {retry_ms}\n\n",
        one_line(reason)
    ))
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dispatch per the WHATWG algorithm, enough to check the framing:
    /// returns (event type, data, id) of each event.
    fn parse(stream: &[u8]) -> Vec<(String, String, Option<String>)> {
        let text = String::from_utf8(stream.to_vec()).unwrap();
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let (mut events, mut data, mut event, mut id) =
            (vec![], String::new(), String::new(), None);
        for line in text.split('\n') {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    let kind = if event.is_empty() {
                        "message".to_owned()
                    } else {
                        event.clone()
                    };
                    events.push((kind, std::mem::take(&mut data), id.clone()));
                }
                event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "event" => event = value.to_owned(),
                "id" => id = Some(value.to_owned()),
                _ => {}
            }
        }
        events
    }

    #[test]
    fn single_line() {
        assert_eq!(&event(None, b"hello")[..], b"data: hello\n\n");
        assert_eq!(
            &event(Some("price"), b"1")[..],
            b"event: price\ndata: 1\n\n"
        );
    }

    #[test]
    fn every_kind_of_line_break_round_trips_as_lf() {
        let cases: [(&str, &str); 8] = [
            ("a\nb", "a\nb"),
            ("a\r\nb", "a\nb"),
            ("a\rb", "a\nb"),
            ("\n", "\n"),
            ("a\n\nb\n", "a\n\nb\n"),
            ("", ""),
            ("\r\r\n\n", "\n\n\n"),
            ("  leading spaces", "  leading spaces"),
        ];
        for (sent, received) in cases {
            let parsed = parse(&event(None, sent.as_bytes()));
            assert_eq!(parsed.len(), 1, "{sent:?}");
            assert_eq!(parsed[0].1, received, "{sent:?}");
        }
    }

    #[test]
    fn payload_cannot_inject_fields() {
        let hostile = "x\nid: 999\nevent: admin\r\nretry: 1\rdata: y\n\n: comment\n\nz";
        let parsed = parse(&event(Some("msg"), hostile.as_bytes()));
        assert_eq!(parsed.len(), 1);
        let (kind, data, id) = &parsed[0];
        assert_eq!(kind, "msg");
        assert_eq!(id, &None);
        assert_eq!(data, &hostile.replace("\r\n", "\n").replace('\r', "\n"));
    }

    #[test]
    fn stray_line_break_in_event_type_stays_on_its_line() {
        let parsed = parse(&event(Some("a\ndata: evil"), b"ok"));
        assert_eq!(
            parsed,
            vec![("a data: evil".to_owned(), "ok".to_owned(), None)]
        );
    }

    fn accept(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        accepted(&headers)
    }

    #[test]
    fn accept_names_the_event_stream() {
        assert!(accept(&["text/event-stream"]));
        assert!(accept(&["Text/Event-Stream"]));
        assert!(accept(&["application/json, text/event-stream;q=0.5"]));
        assert!(accept(&["text/html", " text/event-stream ; charset=utf-8"]));
        assert!(accept(&["text/event-stream; q=1"]));
    }

    #[test]
    fn accept_without_the_event_stream_or_refusing_it() {
        let hostile = [
            "",
            "*/*",
            "text/*",
            "application/json",
            "text/event-stream-x",
            "xtext/event-stream",
            "text/event-stream;q=0",
            "text/event-stream; Q=0.000",
            "text/event-stream;q=-1",
            "text/event-stream;q=nan",
            "text/event-stream;q=",
            "text/plain; note=\"text/event-stream\"",
            ";;;,,,;=;q=",
        ];
        for value in hostile {
            assert!(!accept(&[value]), "{value:?}");
        }
        assert!(!accept(&[]));
        let mut headers = HeaderMap::new();
        let latin1 = HeaderValue::from_bytes(b"text/event-stream\xff").unwrap();
        headers.insert(header::ACCEPT, latin1);
        assert!(!accepted(&headers), "not text, not accepted");
    }

    #[test]
    fn jitter_stays_within_one_to_two_times() {
        let drawn: Vec<u64> = (0..200).map(|_| jittered(1000)).collect();
        assert!(drawn.iter().all(|ms| (1000..=2000).contains(ms)));
        assert!(drawn.iter().any(|ms| *ms < 1500));
        assert!(drawn.iter().any(|ms| *ms > 1500));
        assert_eq!(jittered(0), 0);
        assert!(jittered(u64::MAX) == u64::MAX, "saturates");
    }

    #[test]
    fn control_frames_dispatch_no_event() {
        let mut all = opening(2000, "edge-1\nid: 5", Some("AQE\ndata: x")).to_vec();
        assert!(all.starts_with(b"retry: 2000\nid: AQE data: x\n: herald edge edge-1 id: 5\n"));
        all.extend_from_slice(&heartbeat());
        all.extend_from_slice(&closing(1000, "drain\ndata: x"));
        assert!(parse(&all).is_empty());
    }
}
