//! TLS on Herald's listeners: the edge over HTTPS with HTTP/2 chosen by
//! ALPN, its certificate renewed on disk and served without a restart, and
//! clients that stop reading closed; gRPC with mutual TLS, and a client
//! certificate from elsewhere refused.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use herald_core::tls::TlsArgs;
use herald_e2e::*;
use herald_testing::NatsServer;
use herald_testing::pki::{Issued, TestCa};
use herald_testing::token::{Claims, Sign};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn write(dir: &Path, name: &str, issued: &Issued) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

/// A TLS client trusting `ca`, offering h2 and http/1.1.
fn trusting(ca: &TestCa) -> TlsConnector {
    offering(ca, &[b"h2", b"http/1.1"])
}

/// A TLS client trusting `ca`, offering `alpn`.
fn offering(ca: &TestCa, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn handshake(connector: &TlsConnector, addr: std::net::SocketAddr) -> Tls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

fn served_cert(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn the_edge_serves_sse_over_https_with_http2_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("herald test CA");
    let first = ca.server();
    let (cert, key) = write(dir.path(), "edge", &first);
    let mut config = edge_config("edge-tls");
    let tls = TlsArgs {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        tls_client_ca: None,
    };
    config.tls = tls.server_config(&[b"h2", b"http/1.1"]).unwrap();
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());

    // An EventSource-style GET over HTTP/2, negotiated by ALPN.
    let connector = trusting(&ca);
    let stream = handshake(&connector, edge.addr).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        served_cert(&stream),
        CertificateDer::from_pem_slice(first.cert_pem.as_bytes())
            .unwrap()
            .to_vec()
    );
    let (mut h2, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let token = Claims::new("alice").hs256(SECRET);
    let request = http::Request::get(format!("https://localhost:{}/v1/events", edge.addr.port()))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "text/event-stream")
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut client = publisher(publish).await;
    publish_to_users(&mut client, &["alice"], "over TLS").await;
    let mut seen = String::new();
    while !seen.contains("data: over TLS\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.data())
            .await
            .expect("the event arrives")
            .unwrap()
            .unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }

    // The certificate is renewed on disk: new handshakes get the new one.
    let renewed = ca.server();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    let want = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes())
        .unwrap()
        .to_vec();
    herald_testing::eventually(
        Duration::from_secs(15),
        "the renewed certificate",
        || async { (served_cert(&handshake(&connector, edge.addr).await) == want).then_some(()) },
    )
    .await;

    // A client that does not trust the CA gets no stream.
    let stranger = trusting(&TestCa::new("another CA"));
    let tcp = TcpStream::connect(edge.addr).await.unwrap();
    let refused = stranger
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(refused.is_err());
}

/// A TLS connection on a socket with a tiny receive buffer.
async fn stalling(connector: &TlsConnector, addr: std::net::SocketAddr) -> Tls {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Opens a stream for `user` over HTTP/2 and returns once its response
/// head is in, with the connection, which the caller then stops polling:
/// nothing more is read from the socket. The windows are a browser's,
/// far above what the test sends, so only the socket holds the edge back.
async fn h2_stream_then_deaf(tls: Tls, port: u16, user: &str) -> impl Sized {
    let (mut h2, connection) = h2::client::Builder::new()
        .initial_window_size(16 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, bytes::Bytes>(tls)
        .await
        .unwrap();
    let mut connection = Box::pin(connection);
    let token = Claims::new(user).hs256(SECRET);
    let request = http::Request::get(format!("https://localhost:{port}/v1/events"))
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let response = tokio::select! {
        response = response => response.unwrap(),
        _ = &mut connection => panic!("the connection ended"),
    };
    assert_eq!(response.status(), 200);
    (h2, connection, response)
}

/// Opens a stream for `user` over HTTP/1.1 and reads nothing after the
/// response head.
async fn h1_stream_then_deaf(mut tls: Tls, user: &str) -> Tls {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = Claims::new(user).hs256(SECRET);
    let request = format!(
        "GET /v1/events HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = tls.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tls
}

/// Over TLS the edge's streams are served by hyper, which has no write
/// timeout: the edge times the connection's socket. Two clients that stop
/// reading, one over HTTP/2 and one over HTTP/1.1, are closed once their
/// sockets have taken nothing for `--write-timeout`, counted, and their
/// slots and subscriptions freed.
#[tokio::test]
async fn tls_clients_that_stop_reading_are_closed_with_their_connections() {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("herald test CA");
    let (cert, key) = write(dir.path(), "edge", &ca.server());
    let mut config = edge_config("edge-tls");
    let tls = TlsArgs {
        tls_cert: Some(cert),
        tls_key: Some(key),
        tls_client_ca: None,
    };
    config.tls = tls.server_config(&[b"h2", b"http/1.1"]).unwrap();
    config.write_timeout = WRITE_TIMEOUT;
    config.heartbeat = Duration::from_secs(1);
    config.max_connections_per_user = 1;
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());

    let h2 = stalling(&offering(&ca, &[b"h2"]), edge.addr).await;
    let _h2 = h2_stream_then_deaf(h2, edge.addr.port(), "deaf-h2").await;
    let h1 = stalling(&offering(&ca, &[b"http/1.1"]), edge.addr).await;
    let _h1 = h1_stream_then_deaf(h1, "deaf-h1").await;
    let users = ["deaf-h2", "deaf-h1"];
    let subjects: Vec<String> = users
        .iter()
        .map(|u| herald_domain::subject::UserId::parse(u).unwrap().subject())
        .collect();
    let held = || async {
        let subscribed = stack.nats().client_subjects().await;
        let subscribed = subjects.iter().filter(|s| subscribed.contains(s)).count();
        let streams = edge.metric("herald_edge_connections").await;
        let sockets = edge.metric("herald_edge_sockets_open").await;
        (streams, sockets, subscribed)
    };
    assert_eq!(held().await, (2.0, 2.0, 2));

    let mut client = publisher(publish).await;
    let payload = "x".repeat(60 * 1024);
    let started = tokio::time::Instant::now();
    for _ in 0..120 {
        publish_ephemeral(&mut client, &users, &payload).await;
    }
    let published = started.elapsed();
    let timed_out = "herald_edge_closes_total{reason=\"write_timeout\"}";
    let closed = herald_testing::eventually(Duration::from_secs(20), "both closed", || async {
        (edge.metric(timed_out).await == 2.0).then(|| started.elapsed())
    })
    .await;
    println!("published in {published:?}, closed after {closed:?}");
    assert!(closed >= WRITE_TIMEOUT, "closed after {closed:?}");
    let latest = published + WRITE_TIMEOUT + Duration::from_secs(4);
    assert!(
        closed <= latest,
        "closed after {closed:?}, published in {published:?}"
    );
    herald_testing::eventually(Duration::from_secs(5), "all they held freed", || async {
        (held().await == (0.0, 0.0, 0)).then_some(())
    })
    .await;

    // Their slots are free: each user, allowed one stream, connects again.
    let again = handshake(&trusting(&ca), edge.addr).await;
    let _again = h2_stream_then_deaf(again, edge.addr.port(), "deaf-h2").await;
}

#[test]
fn broken_tls_files_are_refused_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("herald test CA");
    let (cert, key) = write(dir.path(), "edge", &ca.server());
    let other = write(dir.path(), "other", &ca.server()).1;
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (garbage.clone(), key.clone(), None, "--tls-cert"),
        (missing.clone(), key.clone(), None, "--tls-cert"),
        (cert.clone(), garbage.clone(), None, "--tls-cert"),
        (cert.clone(), other, None, "--tls-cert"),
        (cert.clone(), key.clone(), Some(garbage), "--tls-client-ca"),
        (cert, key, Some(missing), "--tls-client-ca"),
    ];
    for (cert, key, ca, flag) in cases {
        let args = TlsArgs {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            tls_client_ca: ca.clone(),
        };
        let Err(refused) = args.server_config(&[b"h2"]) else {
            panic!("{cert:?} {key:?} {ca:?} was accepted");
        };
        assert_eq!(refused.flag, flag, "{refused}");
    }
}

/// A gRPC Publish client over TLS trusting `ca`, presenting `identity`.
async fn publish_over_tls(
    addr: std::net::SocketAddr,
    ca: &TestCa,
    identity: Option<&Issued>,
) -> Result<herald_proto::v1::PublishResponse, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let chain = vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
                .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let connect = tower::service_fn(move |_| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(connect)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = herald_proto::v1::publisher_client::PublisherClient::new(channel);
    let request = herald_proto::v1::PublishRequest {
        target: Some(herald_proto::v1::publish_request::Target::Topic(
            "news".into(),
        )),
        data: "over mTLS".into(),
        ephemeral: true,
        ..Default::default()
    };
    client
        .publish(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("publish: {e}"))
}

#[tokio::test]
async fn grpc_with_mutual_tls_accepts_our_clients_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("herald internal CA");
    let (cert, key) = write(dir.path(), "publish", &ca.server());
    let client_ca = dir.path().join("clients.crt");
    std::fs::write(&client_ca, &ca.cert_pem).unwrap();
    let mut config = publish_config();
    let tls = TlsArgs {
        tls_cert: Some(cert),
        tls_key: Some(key),
        tls_client_ca: Some(client_ca),
    };
    config.tls = tls.server_config(&[b"h2"]).unwrap();
    let stack = Stack::builder().publish(config).start().await;
    let publish = stack.publish();

    let ours = ca.client("billing-service");
    publish_over_tls(publish.addr, &ca, Some(&ours))
        .await
        .expect("a client certificate our CA signed is accepted");

    let elsewhere = TestCa::new("someone else's CA").client("billing-service");
    let refused = publish_over_tls(publish.addr, &ca, Some(&elsewhere)).await;
    assert!(refused.is_err(), "{refused:?}");
    let anonymous = publish_over_tls(publish.addr, &ca, None).await;
    assert!(anonymous.is_err(), "{anonymous:?}");
    // Plain HTTP/2 without TLS gets nowhere either.
    let mut plain = publisher(publish).await;
    let plain = publish_to_topic_result(&mut plain).await;
    assert!(plain.is_err());
}

async fn publish_to_topic_result(
    client: &mut herald_proto::v1::publisher_client::PublisherClient<tonic::transport::Channel>,
) -> Result<(), tonic::Status> {
    let target = herald_proto::v1::publish_request::Target::Topic("news".into());
    publish(client, target, "", "plain").await.map(|_| ())
}

#[tokio::test]
async fn services_reach_nats_over_mutual_tls_with_an_nkey() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("NATS CA");
    let (server_cert, server_key) = write(dir.path(), "nats", &ca.server());
    let (client_cert, client_key) = write(dir.path(), "client", &ca.client("herald-edge"));
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let user = nkeys::KeyPair::new_user();
    let seed = dir.path().join("edge.nk");
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    // NATS alone, not a `Stack`: the edge runs as a process here.
    let nats = NatsServer::start_with(&format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}\n\
         authorization {{ users: [ {{ nkey: {} }} ] }}\n",
        server_cert,
        server_key,
        ca_file,
        user.public_key()
    ));
    let url = nats.client_url().replace("nats://", "tls://");
    let secure = [
        "--nats-tls-ca",
        ca_file.to_str().unwrap(),
        "--nats-tls-cert",
        client_cert.to_str().unwrap(),
        "--nats-tls-key",
        client_key.to_str().unwrap(),
        "--nats-nkey",
        seed.to_str().unwrap(),
    ];
    // Ready means connected and subscribed.
    let mut edge = EdgeProcess::start_with(&url, None, &secure).await;
    edge.kill();

    // Without the NKey, or without a client certificate: refused, exit 2,
    // and the message says why.
    for drop_flags in [6..8, 2..6] {
        let flags: Vec<&str> = secure
            .iter()
            .enumerate()
            .filter(|(i, _)| !drop_flags.contains(i))
            .map(|(_, f)| *f)
            .collect();
        let output = std::process::Command::new(binary("herald-edge"))
            .args(["--nats-url", &url, "--jwt-secret", SECRET])
            .args(&flags)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--nats-url"), "{stderr}");
    }
}

#[tokio::test]
async fn the_device_registration_api_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("herald internal CA");
    let (cert, key) = write(dir.path(), "push", &ca.server());
    let fcm = herald_testing::fcm::FakeFcm::start().await;
    let mut config = push_config(&fcm, dir.path());
    let tls = TlsArgs {
        tls_cert: Some(cert),
        tls_key: Some(key),
        tls_client_ca: None,
    };
    config.tls = tls.server_config(&[b"h2", b"http/1.1"]).unwrap();
    let stack = Stack::builder().push(config).start().await;
    let push = stack.push();

    let stream = handshake(&trusting(&ca), push.addr).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("https://localhost/v1/devices/alice")
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn services_reach_nats_with_a_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let operator = herald_testing::nats_auth::Operator::new();
    // NATS alone, not a `Stack`: the edge runs as a process here.
    let nats = NatsServer::start_with(operator.server_config());
    let creds = dir.path().join("edge.creds");
    std::fs::write(&creds, operator.creds()).unwrap();
    let flags = ["--nats-creds", creds.to_str().unwrap()];
    // Ready means connected and subscribed.
    let mut edge = EdgeProcess::start_with(&nats.client_url(), None, &flags).await;
    edge.kill();

    // Without the credentials, or with someone else's: refused, exit 2.
    let stranger = dir.path().join("stranger.creds");
    let other = herald_testing::nats_auth::Operator::new();
    std::fs::write(&stranger, other.creds()).unwrap();
    for flags in [vec![], vec!["--nats-creds", stranger.to_str().unwrap()]] {
        let output = std::process::Command::new(binary("herald-edge"))
            .args(["--nats-url", &nats.client_url(), "--jwt-secret", SECRET])
            .args(&flags)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
    }
}
