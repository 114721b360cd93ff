//! A web app's origin for browser tests: one static HTML page served on a
//! loopback port of its own (`http://127.0.0.1:<port>` is another origin
//! than the edge's, though the same site).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Serves `html` for every request until dropped.
pub struct PageServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl PageServer {
    pub async fn start(html: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, html));
            }
        });
        Self { addr, task }
    }

    /// The page's origin, `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads one request head and answers with the page; one request per
/// connection.
async fn answer(mut stream: TcpStream, html: &'static str) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{html}",
        html.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
