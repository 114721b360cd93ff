//! Idle streams over TLS, HTTP/1.1 or HTTP/2 (chosen by ALPN): on
//! Herald's edge these are served by hyper, not by the plain HTTP/1.1
//! path, so they cost what hyper and rustls hold per connection. Against
//! nginx's own TLS (and HTTP/2) in front of Nchan. One stream per
//! connection, as a browser tab that opens its own.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::Target;
use crate::fanout::hold_idle;

/// Streams opening at once.
const CONNECTING: usize = 256;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Streams to hold.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Loopback source addresses (127.0.0.1 up to 127.0.0.N).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Server processes whose memory and CPU are measured.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Seconds to hold the streams idle while measuring CPU.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// HTTP/1.1 or HTTP/2 over TLS.
    #[arg(long, value_enum, default_value = "http1")]
    protocol: Protocol,
    /// PEM certificate of the CA that signed the server's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// The name the server's certificate carries.
    #[arg(long, default_value = "localhost")]
    server_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Http1,
    H2,
}

/// The measurement; printed as one JSON line after `RESULT `.
#[derive(Debug, serde::Serialize)]
struct Idle {
    peer: crate::peer::Kind,
    scenario: &'static str,
    protocol: Protocol,
    connections: usize,
    open_secs: f64,
    kib_per_idle_stream: f64,
    idle_cpu_percent: f64,
}

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let connector = connector(&args.ca, args.protocol)?;
    let name = ServerName::try_from(args.server_name.clone())?;
    let opening = open_all(target, args, &connector, &name);
    let (streams, cost) = hold_idle(&args.pids, args.connections, args.idle_secs, opening).await?;
    let idle = Idle {
        peer: target.peer,
        scenario: "idle-tls",
        protocol: args.protocol,
        connections: args.connections,
        open_secs: cost.open_secs,
        kib_per_idle_stream: cost.kib_per_stream,
        idle_cpu_percent: cost.cpu_percent,
    };
    let ended = streams.iter().filter(|s| s.is_finished()).count();
    if ended > 0 {
        bail!("{ended} streams ended while idle");
    }
    eprintln!(
        "{:.1} KiB per idle TLS stream ({:?}); idle CPU {:.2}%",
        idle.kib_per_idle_stream, args.protocol, idle.idle_cpu_percent
    );
    println!("RESULT {}", serde_json::to_string(&idle)?);
    for stream in streams {
        stream.abort();
    }
    Ok(())
}

/// A TLS client trusting `ca`, offering only `protocol`.
fn connector(ca: &PathBuf, protocol: Protocol) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match protocol {
        Protocol::Http1 => b"http/1.1".to_vec(),
        Protocol::H2 => b"h2".to_vec(),
    }];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Opens every stream, at most [`CONNECTING`] at once; each then reads
/// (and drops) what comes until it ends.
async fn open_all(
    target: &Target,
    args: &Args,
    connector: &TlsConnector,
    name: &ServerName<'static>,
) -> anyhow::Result<crate::stream::Readers> {
    let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let mut streams = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let permit = connecting.clone().acquire_owned().await?;
        let source = crate::stream::source(i, args.sources.max(1));
        let request = target.sse_request(&format!("bench-{i}"), Some("bench"))?;
        let (edge, connector, name, protocol) =
            (target.edge, connector.clone(), name.clone(), args.protocol);
        streams.push(tokio::spawn(async move {
            let held = open(edge, source, &connector, name, protocol, &request).await;
            drop(permit);
            held?.await
        }));
    }
    let _all = connecting.acquire_many(CONNECTING as u32).await?;
    crate::stream::all_open(streams, "TLS streams").await
}

/// Connects, opens the stream and checks for a 200; the returned future
/// reads the stream until it ends.
async fn open(
    edge: SocketAddr,
    source: IpAddr,
    connector: &TlsConnector,
    name: ServerName<'static>,
    protocol: Protocol,
    request: &str,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>>> {
    let socket = crate::stream::bound(source)?;
    let tcp = socket.connect(edge).await?;
    let tls = connector
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let held: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> = match protocol {
        Protocol::Http1 => Box::pin(http1(tls, request).await?),
        Protocol::H2 => Box::pin(h2(tls, request).await?),
    };
    Ok(held)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn http1(
    mut tls: Tls,
    request: &str,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>>> {
    tls.write_all(request.as_bytes()).await?;
    let (head, _) = crate::stream::read_head(&mut tls).await?;
    crate::stream::answered_ok(&head)?;
    Ok(async move {
        let mut chunk = [0u8; 1024];
        while tls.read(&mut chunk).await? > 0 {}
        anyhow::Ok(())
    })
}

async fn h2(tls: Tls, request: &str) -> anyhow::Result<impl Future<Output = anyhow::Result<()>>> {
    let (mut sender, connection) = h2::client::handshake(tls).await?;
    let connection = tokio::spawn(connection);
    let request = h2_request(request)?;
    let (response, _) = sender.send_request(request, true)?;
    let response = response.await?;
    if response.status() != http::StatusCode::OK {
        bail!("server answered {}", response.status());
    }
    let mut body = response.into_body();
    Ok(async move {
        while let Some(data) = body.data().await {
            let data = data?;
            body.flow_control().release_capacity(data.len())?;
        }
        connection.abort();
        anyhow::Ok(())
    })
}

/// The HTTP/1.1 request text `Target::sse_request` makes, as an HTTP/2
/// request: its path and headers (`host` becomes the authority).
fn h2_request(text: &str) -> anyhow::Result<http::Request<()>> {
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().context("empty request")?;
    let path = first.split(' ').nth(1).context("request line")?;
    let mut builder = http::Request::get(format!("https://localhost{path}"));
    for line in lines {
        let (name, value) = line.split_once(": ").context("header line")?;
        if !name.eq_ignore_ascii_case("host") {
            builder = builder.header(name, value);
        }
    }
    Ok(builder.body(())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http1_request_becomes_an_h2_request() {
        let text = "GET /v1/events?topic=t HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer x.y.z\r\nlast-event-id: 5\r\n\r\n";
        let request = h2_request(text).unwrap();
        assert_eq!(request.uri().path(), "/v1/events");
        assert_eq!(request.uri().query(), Some("topic=t"));
        assert_eq!(request.headers()["authorization"], "Bearer x.y.z");
        assert_eq!(request.headers()["last-event-id"], "5");
        assert!(request.headers().get("host").is_none());
    }

    #[test]
    fn a_request_without_a_path_is_refused() {
        assert!(h2_request("GET\r\n\r\n").is_err());
        assert!(h2_request("").is_err());
    }
}
