//! The scale agent's streams, held as cheaply as a reader can: a million
//! of them share one machine with the edges that serve them.
//!
//! A stream is one small task that waits for its socket to be readable
//! and then reads into its worker thread's buffer, so no read buffer
//! lives per stream. A line cut by a read is the only thing a stream
//! keeps between reads, and only until its end arrives. Opening (the
//! request, the response head) runs in a boxed future that is freed once
//! the stream is open, so the task that then reads stays small.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Longest wait for a response head.
const HEAD_WAIT: Duration = Duration::from_secs(60);

/// Bytes read at once: a burst of events to one stream comes in few reads.
const READ_BUFFER: usize = 64 * 1024;

thread_local! {
    /// One read buffer per worker thread, shared by every stream it runs.
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUFFER]);
}

/// Connects from `source`, sends `request` and checks for a 200. Returns
/// the socket and the body bytes that came with the head (the opening
/// `retry:` and comment often do).
pub(crate) async fn open(
    edge: SocketAddr,
    source: IpAddr,
    request: String,
) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let socket = crate::stream::bound(source)?;
    let mut stream = socket
        .connect(edge)
        .await
        .with_context(|| format!("connect from {source}"))?;
    stream.write_all(request.as_bytes()).await?;
    drop(request);
    let (head, pending) = tokio::time::timeout(HEAD_WAIT, crate::stream::read_head(&mut stream))
        .await
        .context("no response head within 60 s")??;
    if let Some(refused) = Refused::of(&String::from_utf8_lossy(&head)) {
        return Err(refused.into());
    }
    crate::stream::answered_ok(&head)?;
    Ok((stream, pending))
}

/// A transient refusal (503 or 429 with `retry-after`): a client comes
/// back after the wait, as an EventSource does.
#[derive(Debug, thiserror::Error)]
#[error("refused for now ({status}); retry after {retry_after:?}")]
pub(crate) struct Refused {
    pub status: u16,
    pub retry_after: Duration,
}

impl Refused {
    fn of(head: &str) -> Option<Self> {
        let status: u16 = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
        if status != 503 && status != 429 {
            return None;
        }
        let seconds = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("retry-after")
                .then(|| value.trim().parse::<u64>().ok())?
        })?;
        Some(Self {
            status,
            retry_after: Duration::from_secs(seconds),
        })
    }
}

/// Calls `on_line` with every line of the stream (without its line break)
/// until it ends: first those in `pending`, then what the socket brings.
/// Chunked-encoding size lines come through as lines of their own, which
/// no caller mistakes for an SSE field.
pub(crate) async fn for_each_line(
    socket: TcpStream,
    pending: Vec<u8>,
    mut on_line: impl FnMut(&[u8]),
) {
    let mut carry = Vec::new();
    split(&mut carry, &pending, &mut on_line);
    drop(pending);
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let ended = BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            loop {
                match socket.try_read(&mut buffer) {
                    Ok(0) => return true,
                    Ok(n) => split(&mut carry, &buffer[..n], &mut on_line),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            }
        });
        if ended {
            return;
        }
    }
}

/// Hands every whole line of `carry` + `bytes` to `on_line` and keeps the
/// cut one in `carry` (which holds no allocation while it is empty).
fn split(carry: &mut Vec<u8>, mut bytes: &[u8], on_line: &mut impl FnMut(&[u8])) {
    if !carry.is_empty() {
        let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
            carry.extend_from_slice(bytes);
            return;
        };
        carry.extend_from_slice(&bytes[..end]);
        on_line(carry);
        *carry = Vec::new();
        bytes = &bytes[end + 1..];
    }
    let mut start = 0;
    while let Some(end) = bytes[start..].iter().position(|&b| b == b'\n') {
        on_line(&bytes[start..start + end]);
        start += end + 1;
    }
    carry.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_refusal_says_when_to_come_back() {
        let head = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nRetry-After: 2\r\n\r\n";
        let refused = Refused::of(head).unwrap();
        assert_eq!(
            (refused.status, refused.retry_after),
            (503, Duration::from_secs(2))
        );
        assert!(Refused::of("HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\n\r\n").is_some());
        assert!(
            Refused::of("HTTP/1.1 503 Service Unavailable\r\n\r\n").is_none(),
            "no wait given"
        );
        assert!(Refused::of("HTTP/1.1 401 Unauthorized\r\nretry-after: 2\r\n\r\n").is_none());
        assert!(Refused::of("HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(Refused::of("garbage").is_none());
    }

    fn lines(reads: &[&[u8]]) -> (Vec<String>, usize) {
        let (mut carry, mut seen) = (Vec::new(), Vec::new());
        for read in reads {
            split(&mut carry, read, &mut |l: &[u8]| {
                seen.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        (seen, carry.capacity())
    }

    #[test]
    fn lines_cut_by_reads_are_joined() {
        let (seen, _) = lines(&[b"a\nb", b"c", b"d\ne\n"]);
        assert_eq!(seen, ["a", "bcd", "e"]);
    }

    #[test]
    fn nothing_is_kept_between_whole_lines() {
        let (seen, capacity) = lines(&[b"x\n", b"y\nz", b"\n"]);
        assert_eq!(seen, ["x", "y", "z"]);
        assert_eq!(capacity, 0);
    }
}
