//! `delay`: a TCP relay that holds every byte for `--ms` milliseconds
//! each way, standing in for a WAN link between regions where the kernel
//! has no `netem` (this machine's: `tc qdisc add … netem` answers
//! "Specified qdisc kind is unknown"). Order is kept; bandwidth is not
//! limited. Runs until `--for` seconds have passed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the relay listens.
    #[arg(long)]
    listen: SocketAddr,
    /// Where it relays to.
    #[arg(long)]
    to: SocketAddr,
    /// One-way delay, in milliseconds.
    #[arg(long, default_value_t = 20)]
    ms: u64,
    /// The relay stops after this many seconds.
    #[arg(long = "for", default_value_t = 600)]
    seconds: u64,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let delay = Duration::from_millis(args.ms);
    let relaying = async {
        loop {
            let (inbound, _) = listener.accept().await?;
            let to = args.to;
            tokio::spawn(async move {
                if let Ok(outbound) = TcpStream::connect(to).await {
                    relay(inbound, outbound, delay).await;
                }
            });
        }
    };
    let result: anyhow::Result<()> = tokio::select! {
        r = relaying => r,
        () = tokio::time::sleep(Duration::from_secs(args.seconds)) => Ok(()),
    };
    result
}

/// Both directions, until either side closes.
async fn relay(a: TcpStream, b: TcpStream, delay: Duration) {
    let _ = (a.set_nodelay(true), b.set_nodelay(true));
    let (a_read, a_write) = a.into_split();
    let (b_read, b_write) = b.into_split();
    tokio::select! {
        () = one_way(a_read, b_write, delay) => {}
        () = one_way(b_read, a_write, delay) => {}
    }
}

/// Reads as bytes come and writes each chunk `delay` after it was read.
async fn one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (chunks, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, Bytes)>();
    let reading = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            if chunks.send((Instant::now() + delay, chunk)).is_err() {
                return;
            }
        }
    };
    let writing = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reading, writing);
}
