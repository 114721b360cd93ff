//! SSE streams over raw TCP: cheap enough to hold thousands per process.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Sends `request` (see `Target::sse_request`) from `source` and checks
/// for a 200.
pub async fn open(edge: SocketAddr, source: IpAddr, request: &str) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket
        .connect(edge)
        .await
        .with_context(|| format!("connect from {source}"))?;
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut head)).await??;
    if !head[..n].starts_with(b"HTTP/1.1 200") {
        bail!("server answered {}", String::from_utf8_lossy(&head[..n]));
    }
    Ok(stream)
}

/// Calls `on_data` with every `data:` line's value, carrying partial lines
/// across reads, until the stream ends.
pub async fn for_each_data(stream: &mut TcpStream, mut on_data: impl FnMut(&[u8])) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(end) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + end];
            if let Some(data) = line.strip_prefix(b"data: ") {
                on_data(data);
            }
            start += end + 1;
        }
        buf.drain(..start);
    }
}
