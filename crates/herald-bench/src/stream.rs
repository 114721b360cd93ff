//! SSE streams over raw TCP: cheap enough to hold thousands per process.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// An open SSE response: the connection, and body bytes that arrived
/// with the response head.
pub(crate) struct Sse {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// Sends `request` (see `Target::sse_request`) from `source` and checks
/// for a 200. Body bytes read along with the head are kept: a resumed
/// stream's replay often arrives in the same segment.
pub(crate) async fn open(edge: SocketAddr, source: IpAddr, request: &str) -> anyhow::Result<Sse> {
    let socket = bound(source)?;
    let mut stream = socket
        .connect(edge)
        .await
        .with_context(|| format!("connect from {source}"))?;
    stream.write_all(request.as_bytes()).await?;
    let (head, pending) = tokio::time::timeout(HEAD_WAIT, read_head(&mut stream))
        .await
        .context("no response head within 30 s")??;
    answered_ok(&head)?;
    Ok(Sse { stream, pending })
}

/// Longest wait for a response head (for [`open`]).
const HEAD_WAIT: Duration = Duration::from_secs(30);

/// Reads an HTTP/1.1 response head: its bytes up to and including the
/// blank line, and the body bytes that came with it.
pub(crate) async fn read_head(
    stream: &mut (impl AsyncRead + Unpin),
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("server closed before answering");
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = head.split_off(end + 4);
            return Ok((head, body));
        }
        if head.len() > 16 * 1024 {
            bail!("response head too long");
        }
    }
}

/// Fails unless `head` (see [`read_head`]) is a 200's.
pub(crate) fn answered_ok(head: &[u8]) -> anyhow::Result<()> {
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!("server answered {}", String::from_utf8_lossy(head));
    }
    Ok(())
}

/// A socket bound to `source`, its port left for the kernel to pick at
/// connect, by the whole address pair (`IP_BIND_ADDRESS_NO_PORT`). A port
/// picked at bind must differ from every port bound on that address,
/// TIME_WAIT included, and past half the ephemeral range the kernel
/// searches for it: 11 µs per bind with up to 12,000 ports held on one
/// address, 7-12 ms from 16,000 (measured here), which stalled the load
/// generator's runtime in runs that followed other scenarios on the same
/// source addresses.
pub(crate) fn bound(source: IpAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    port_at_connect(&socket)?;
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(socket)
}

/// The load generator's only unsafe code: a socket option with no safe
/// wrapper in the crates it uses.
#[allow(unsafe_code)]
fn port_at_connect(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: `socket` owns a valid descriptor for the whole call, and the
    // option's value is a c_int of the length given.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Calls `on_data` with every `data:` line's value, carrying partial lines
/// across reads, until the stream ends.
pub(crate) async fn for_each_data(sse: &mut Sse, mut on_data: impl FnMut(&[u8])) {
    for_each_line(sse, |line| {
        if let Some(data) = line.strip_prefix(b"data: ") {
            on_data(data);
        }
    })
    .await;
}

/// Calls `on_line` with every line (without its line break) until the
/// stream ends. Chunked-encoding size lines come through as lines of their
/// own (servers write whole events per chunk), which no caller mistakes
/// for a field.
pub(crate) async fn for_each_line(sse: &mut Sse, mut on_line: impl FnMut(&[u8])) {
    let mut buf = std::mem::take(&mut sse.pending);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let mut start = 0;
        while let Some(end) = buf[start..].iter().position(|&b| b == b'\n') {
            on_line(&buf[start..start + end]);
            start += end + 1;
        }
        buf.drain(..start);
        let n = match sse.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Streams held open by their reading tasks.
pub(crate) type Readers = Vec<tokio::task::JoinHandle<anyhow::Result<()>>>;

/// At most this many streams connect at once, unless a peer needs fewer
/// ([`crate::peer::Kind::connecting`]).
pub(crate) const CONNECTING: usize = 256;

/// Opens `count` streams to `edge`, spread over `sources` loopback source
/// addresses (127.0.0.1..=N), at most `connecting` at once; stream `i`
/// sends `request(i)` and hands each `data:` line to `on_data(i)`. Returns
/// once all are open; an error if any failed to open.
pub(crate) async fn open_many<F>(
    edge: SocketAddr,
    connecting: usize,
    count: usize,
    sources: u8,
    request: impl Fn(usize) -> anyhow::Result<String>,
    on_data: impl Fn(usize) -> F,
) -> anyhow::Result<Readers>
where
    F: FnMut(&[u8]) + Send + 'static,
{
    let limit = connecting.max(1);
    let connecting = std::sync::Arc::new(tokio::sync::Semaphore::new(limit));
    let mut readers = Vec::with_capacity(count);
    for i in 0..count {
        // Taken here, not in the task: holding every permit below must
        // mean every stream has connected, not that few tasks have started.
        let permit = connecting.clone().acquire_owned().await?;
        let source = source(i, sources);
        let request = request(i)?;
        let on_data = on_data(i);
        readers.push(tokio::spawn(async move {
            let stream = open(edge, source, &request).await;
            drop(permit);
            for_each_data(&mut stream?, on_data).await;
            anyhow::Ok(())
        }));
    }
    let _all = connecting.acquire_many(limit as u32).await?;
    all_open(readers, "streams").await
}

/// `readers` once every one has opened (none has ended yet); else how
/// many ended, and why the first did (a stream may also have opened and
/// ended already). `what` names them in the error.
pub(crate) async fn all_open(readers: Readers, what: &str) -> anyhow::Result<Readers> {
    let failed = readers.iter().filter(|r| r.is_finished()).count();
    if failed > 0 {
        let first = readers.into_iter().find(|r| r.is_finished());
        let why = match first {
            Some(reader) => match reader.await {
                Ok(Err(e)) => format!("{e:#}"),
                Ok(Ok(())) => "the server ended the stream".to_owned(),
                Err(e) => e.to_string(),
            },
            None => String::new(),
        };
        bail!("{failed} {what} failed to open; the first: {why}");
    }
    Ok(readers)
}

/// The loopback source address of stream `i` spread over `sources`
/// addresses: 127.0.0.1 up to 127.0.0.`sources`.
pub(crate) fn source(i: usize, sources: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, 1 + (i % usize::from(sources)) as u8])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bound with the option, a socket has no port until it connects, and
    /// two sockets to different servers may then share one.
    #[tokio::test]
    async fn a_bound_socket_takes_its_port_at_connect() {
        let source = IpAddr::from([127, 0, 0, 1]);
        let socket = bound(source).unwrap();
        assert_eq!(socket.local_addr().unwrap().port(), 0, "no port at bind");
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = socket.connect(server.local_addr().unwrap()).await.unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), source);
        assert_ne!(local.port(), 0, "a port once connected");
    }
}
