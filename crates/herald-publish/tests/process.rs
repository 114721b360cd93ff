//! The herald-publish binary as operators run it: it refuses to serve an
//! open API on a reachable address, and loses no acknowledged event when
//! it is stopped.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_proto::v1::publisher_client::PublisherClient;
use herald_proto::v1::{OfflinePolicy, PublishRequest, publish_request::Target};
use herald_testing::process::{Service, assert_misconfigured, free_addr, run};
use herald_testing::{NatsServer, grpc};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

const TOKEN: &str = "process-api-token-0123456789";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald-publish"))
}

fn request(user: &str, data: String, ephemeral: bool, offline: OfflinePolicy) -> PublishRequest {
    PublishRequest {
        target: Some(Target::users([user])),
        data,
        ephemeral,
        offline: offline as i32,
        ..Default::default()
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

async fn client(listen: &str) -> PublisherClient<Channel> {
    PublisherClient::connect(format!("http://{listen}"))
        .await
        .unwrap()
}

/// Starts herald-publish on `nats` with `listen` and `args`; returns it ready.
async fn start(nats: &NatsServer, listen: &str, args: &[&str], envs: &[(&str, &str)]) -> Service {
    let url = nats.client_url();
    let mut all = vec!["--nats-url", &url, "--listen", listen];
    all.extend(args);
    let mut service = Service::spawn(binary(), &all, envs);
    service.ready().await;
    service
}

#[test]
fn a_max_payload_nats_would_refuse_does_not_start() {
    let nats = NatsServer::start_with("max_payload: 1024\n");
    let (url, listen, admin) = (nats.client_url(), free_addr(), free_addr());
    let (listen, admin) = (listen.to_string(), admin.to_string());
    // Logging is on by then (the limit is NATS's, known once connected):
    // `--log warn` leaves the refusal alone on stderr.
    let args = [
        ["--nats-url", url.as_str(), "--listen", listen.as_str()],
        ["--admin-listen", admin.as_str(), "--max-payload", "2048"],
        ["--log", "warn", "--log-format", "text"],
    ]
    .concat();
    assert_misconfigured(&run(binary(), &args, &[]), "--max-payload");
}

#[test]
fn an_open_api_on_a_reachable_address_does_not_start() {
    // NATS is unreachable: the token rule is checked before connecting.
    let dead = format!("nats://{}", free_addr());
    let reachable = format!("0.0.0.0:{}", free_addr().port());
    let base = ["--nats-url", dead.as_str(), "--listen", reachable.as_str()];
    assert_misconfigured(&run(binary(), &base, &[]), "--api-token");
    // The default address is every interface.
    assert_misconfigured(&run(binary(), &["--nats-url", &dead], &[]), "--api-token");
    let no = [("HERALD_INSECURE_NO_AUTH", "false")];
    assert_misconfigured(&run(binary(), &base, &no), "--api-token");
    let short = [base.as_slice(), &["--api-token", "short"]].concat();
    assert_misconfigured(&run(binary(), &short, &[]), "--api-token");
    // With the rule satisfied, the next problem is NATS.
    let tokened = [base.as_slice(), &["--api-token", TOKEN]].concat();
    assert_misconfigured(&run(binary(), &tokened, &[]), "--nats-url");
    let insecure = [("HERALD_INSECURE_NO_AUTH", "true")];
    assert_misconfigured(&run(binary(), &base, &insecure), "--nats-url");
}

#[test]
fn help_names_the_token_flags_and_their_variables() {
    let output = run(binary(), &["--help"], &[]);
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "--api-token",
        "HERALD_API_TOKEN",
        "--insecure-no-auth",
        "HERALD_INSECURE_NO_AUTH",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[tokio::test]
async fn on_loopback_it_starts_without_a_token() {
    let nats = NatsServer::start();
    let listen = free_addr().to_string();
    let service = start(&nats, &listen, &[], &[]).await;
    let answer = client(&listen)
        .await
        .publish(request("alice", "hi".into(), true, OfflinePolicy::Drop))
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    assert!(
        !service.stderr().contains("insecure"),
        "{}",
        service.stderr()
    );
}

#[tokio::test]
async fn insecure_no_auth_starts_on_every_interface_and_warns() {
    let nats = NatsServer::start();
    let port = free_addr().port();
    let listen = format!("0.0.0.0:{port}");
    let service = start(&nats, &listen, &["--insecure-no-auth"], &[]).await;
    service.logged(&["WARN", "--insecure-no-auth"]).await;
    let answer = client(&format!("127.0.0.1:{port}"))
        .await
        .publish(request("alice", "hi".into(), true, OfflinePolicy::Drop))
        .await;
    assert!(answer.is_ok(), "{answer:?}");
}

#[tokio::test]
async fn with_a_token_only_health_and_reflection_answer_without_it() {
    let nats = NatsServer::start();
    let port = free_addr().port();
    let listen = format!("0.0.0.0:{port}");
    let _service = start(&nats, &listen, &[], &[("HERALD_API_TOKEN", TOKEN)]).await;
    let address = format!("127.0.0.1:{port}");
    let mut publisher = client(&address).await;
    let event = || request("alice", "hi".into(), true, OfflinePolicy::Drop);

    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let refused = publisher.publish(with_token(event(), token)).await;
        let code = refused.map(|_| ()).unwrap_err().code();
        assert_eq!(code, tonic::Code::Unauthenticated, "{token:?}");
    }
    let accepted = publisher.publish(with_token(event(), Some(TOKEN))).await;
    assert!(accepted.is_ok(), "{accepted:?}");

    let channel = grpc::channel(&address).await;
    let health = grpc::health(channel.clone(), "herald.v1.Publisher").await;
    assert_eq!(health.unwrap(), ServingStatus::Serving);
    let services = grpc::reflected_services(channel).await.unwrap();
    assert!(
        services.contains(&"herald.v1.Publisher".to_owned()),
        "{services:?}"
    );
}

/// A history configuration JetStream will never take (three replicas on a
/// lone server) waits for an operator: logged as an error naming the
/// stream, shown by `/readyz` and gRPC health, while ephemeral events still
/// go out.
#[tokio::test]
async fn streams_jetstream_refuses_for_good_show_in_the_log_and_readyz() {
    let nats = NatsServer::start();
    let listen = free_addr().to_string();
    let url = nats.client_url();
    let args = ["--nats-url", &url, "--listen", &listen];
    let service = Service::spawn(
        binary(),
        &[&args[..], &["--history-replicas", "3"]].concat(),
        &[],
    );
    service
        .logged(&[
            "ERROR",
            "JetStream refuses the stream",
            "HERALD_H0",
            "replicas",
        ])
        .await;
    let (status, body) = service.readyz().await;
    assert_eq!(status, 503);
    assert!(
        body.contains("history streams") && body.contains("replicas"),
        "{body}"
    );
    let channel = grpc::channel(&listen).await;
    let health = grpc::health(channel, "herald.v1.Publisher").await;
    assert_eq!(health.unwrap(), ServingStatus::NotServing);
    let ephemeral = request("alice", "hi".into(), true, OfflinePolicy::Drop);
    assert!(client(&listen).await.publish(ephemeral).await.is_ok());
}

/// Settings every service must share are checked against the streams
/// that exist: a herald-publish with another storage or shard count than
/// the history streams it finds exits 2, naming the flag and the value
/// the streams have, rather than storing where no edge reads.
#[tokio::test]
async fn settings_that_disagree_with_existing_streams_end_the_service() {
    let nats = NatsServer::start();
    let first = start(&nats, &free_addr().to_string(), &[], &[]).await;
    drop(first);
    let url = nats.client_url();
    for (flag, value, found) in [
        ("--history-storage", "memory", "has file"),
        ("--history-shards", "8", "has 4 shards"),
    ] {
        let (listen, admin) = (free_addr().to_string(), free_addr().to_string());
        let args = [
            ["--nats-url", url.as_str(), "--listen", listen.as_str()],
            ["--admin-listen", admin.as_str(), "--log", "error"],
            [flag, value, "--history-max-age", "1h"],
        ];
        let output = run(binary(), &args.concat(), &[]);
        assert_misconfigured(&output, flag);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(found), "{stderr}");
        assert!(stderr.contains("HERALD_H"), "names the stream: {stderr}");
    }
}

/// Events acknowledged just before SIGTERM: ephemeral ones and DROP-policy
/// ones for offline users, which go out on core NATS without storage.
const EVENTS: usize = 400;
/// Together they are more than the kernel's socket buffers hold, so most
/// wait in the NATS client while the server is stalled.
const PAYLOAD: usize = 16 * 1024;

#[tokio::test]
async fn sigterm_loses_no_acknowledged_event() {
    let nats = NatsServer::start();
    let listen = free_addr().to_string();
    let mut service = start(&nats, &listen, &[], &[]).await;
    let watcher = async_nats::connect(nats.client_url()).await.unwrap();
    let mut live = watcher.subscribe("herald.u.>").await.unwrap();
    watcher.flush().await.unwrap();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let seeing = seen.clone();
    tokio::spawn(async move {
        while let Some(message) = live.next().await {
            let data = String::from_utf8_lossy(&message.payload);
            if let Some((id, _)) = data.split_once(' ') {
                seeing.lock().unwrap().insert(id.to_owned());
            }
        }
    });

    // A stalled server (a slow network, a busy node): acknowledged events
    // wait in the publisher's NATS client, where an exit would lose them.
    nats.pause();
    let publisher = client(&listen).await;
    let padding = "x".repeat(PAYLOAD);
    let calls = (0..EVENTS).map(|i| {
        let mut publisher = publisher.clone();
        let (ephemeral, policy) = if i % 2 == 0 {
            (true, OfflinePolicy::Store)
        } else {
            (false, OfflinePolicy::Drop)
        };
        let data = format!("e{i} {padding}");
        let event = request(&format!("u{}", i % 16), data, ephemeral, policy);
        async move { publisher.publish(event).await.map(|_| format!("e{i}")) }
    });
    let acknowledged: HashSet<String> = futures::stream::iter(calls)
        .buffer_unordered(32)
        .map(|answer| answer.expect("published"))
        .collect()
        .await;
    service.terminate();
    // The server recovers once the publisher is on its way out: handing
    // its queue over, or gone without doing so.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !service.stderr().contains("before exit") && !service.has_exited() {
        assert!(Instant::now() < deadline, "{}", service.stderr());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nats.resume();
    let status = service.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", service.stderr());

    let missing = || acknowledged.difference(&seen.lock().unwrap()).count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while missing() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(missing(), 0, "acknowledged events lost, of {EVENTS}");
}
