//! The herald-edge binary as operators run it: misconfiguration exits with
//! one line and code 2; SIGTERM drains.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use futures::StreamExt;
use herald_testing::token::{Claims, Sign};
use herald_testing::{NatsServer, eventually};

const SECRET: &str = "process-test-secret-0123456789-abcdef";

fn free_addr() -> String {
    herald_testing::process::free_addr().to_string()
}

fn edge(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald-edge"));
    command.args(args).env_clear().stdin(Stdio::null());
    command
}

fn run(args: &[&str]) -> Output {
    edge(args).output().unwrap()
}

/// Asserts exit code 2 and one stderr line that mentions `flag`.
fn assert_misconfigured(output: Output, flag: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(flag), "{stderr:?} should name {flag}");
}

#[test]
fn misconfiguration_is_one_line_and_exit_code_2() {
    let nats = NatsServer::start();
    let url = nats.client_url();
    let listen = free_addr();
    let admin = free_addr();
    let base = [
        "--nats-url",
        &url,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
    ];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run_with = |extra: &[&'static str]| {
        let args = with(extra);
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert_misconfigured(run_with(&[]), "--jwt-secret");
    assert_misconfigured(run_with(&["--jwt-secret", "short"]), "--jwt-secret");
    // RFC 7518: an HS256 key has at least 256 bits; one byte short is refused,
    // with a way to make a good one.
    let output = run_with(&["--jwt-secret", "0123456789abcdef0123456789abcde"]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_misconfigured(output, "--jwt-secret");
    assert!(
        stderr.contains("32 bytes") && stderr.contains("openssl rand -base64 32"),
        "{stderr}"
    );
    assert_misconfigured(
        run_with(&["--jwt-secret", SECRET, "--jwt-audience", ""]),
        "--jwt-audience",
    );
    assert_misconfigured(
        run_with(&["--jwt-secret", SECRET, "--jwt-issuer", " "]),
        "--jwt-issuer",
    );
    assert_misconfigured(
        run_with(&["--jwt-secret", SECRET, "--jwt-leeway", "10m"]),
        "--jwt-leeway",
    );
    assert_misconfigured(
        run_with(&["--jwt-public-key", "/nonexistent.pem"]),
        "--jwt-public-key",
    );
    assert_misconfigured(
        run_with(&["--jwt-secret", SECRET, "--heartbeat", "soon"]),
        "--heartbeat",
    );
    for timeout in ["0s", "2h"] {
        assert_misconfigured(
            run_with(&["--jwt-secret", SECRET, "--write-timeout", timeout]),
            "--write-timeout",
        );
    }
    assert_misconfigured(
        run(&["--listen", "not-an-address", "--jwt-secret", SECRET]),
        "--listen",
    );
    for origins in [
        "https://app.example.com/",
        "app.example.com",
        "*,https://app.example.com",
        "null",
        "https://a.example,,https://b.example",
    ] {
        assert_misconfigured(
            run_with(&["--jwt-secret", SECRET, "--allowed-origins", origins]),
            "--allowed-origins",
        );
    }
    let dead = free_addr();
    let unreachable = format!("nats://{dead}");
    assert_misconfigured(
        run(&[
            "--nats-url",
            &unreachable,
            "--jwt-secret",
            SECRET,
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
        ]),
        "--nats-url",
    );
    // The environment works as well as flags.
    let output = edge(&[])
        .env("HERALD_LISTEN", "nope")
        .env("HERALD_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert_misconfigured(output, "--listen");
    let output = edge(&["--jwt-secret", SECRET])
        .env("HERALD_ALLOWED_ORIGINS", "https://app.example.com/app")
        .output()
        .unwrap();
    assert_misconfigured(output, "--allowed-origins");
}

/// An edge whose shard count or storage differs from the history streams
/// it finds would read the wrong streams: it exits 2 at start, naming the
/// flag and the value the streams have.
#[tokio::test]
async fn history_settings_that_disagree_with_the_streams_end_the_edge() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.client_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // As herald-publish makes it with the defaults.
    let history = herald_nats::history::HistoryArgs {
        history_shards: 4,
        history_storage: herald_nats::history::Storage::File,
        history_replicas: 1,
        history_max_per_subject: 1000,
        history_max_age: Duration::from_secs(24 * 3600),
    };
    let config = history.stream_config(&Default::default(), 0);
    js.create_stream(config).await.unwrap();
    let url = nats.client_url();
    for (flag, value, found) in [
        ("--history-shards", "8", "has 4 shards"),
        ("--history-storage", "memory", "has file"),
    ] {
        let (listen, admin) = (free_addr(), free_addr());
        let output = run(&[
            "--nats-url",
            &url,
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
            "--jwt-secret",
            SECRET,
            "--log",
            "error",
            flag,
            value,
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(stderr.contains(found), "{stderr}");
        assert_misconfigured(output, flag);
    }
}

#[test]
fn help_explains_every_flag_and_its_variable() {
    let output = run(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "HERALD_NATS_URL",
        "HERALD_LISTEN",
        "HERALD_ADMIN_LISTEN",
        "HERALD_NODE_ID",
        "HERALD_JWT_SECRET",
        "HERALD_JWT_PUBLIC_KEY",
        "HERALD_JWT_AUDIENCE",
        "HERALD_JWT_ISSUER",
        "HERALD_JWT_LEEWAY",
        "HERALD_ALLOWED_ORIGINS",
        "HERALD_HEARTBEAT",
        "HERALD_WRITE_TIMEOUT",
        "HERALD_LOG_FORMAT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sigterm_drains_readiness_new_connects_and_open_streams() {
    let nats = NatsServer::start();
    let (listen, admin) = (free_addr(), free_addr());
    let url = nats.client_url();
    let args = [
        "--nats-url",
        &url,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
        "--jwt-secret",
        SECRET,
        "--drain-window",
        "1s",
        "--drain-grace",
        "10s",
        "--log-format",
        "json",
    ];
    let mut process = Process(edge(&args).stderr(Stdio::null()).spawn().unwrap());
    let http = reqwest::Client::new();
    let readyz = format!("http://{admin}/readyz");
    eventually(Duration::from_secs(10), "the edge to be ready", || async {
        let r = http.get(&readyz).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let events = format!("http://{listen}/v1/events");
    let mut streams = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let response = http
            .get(&events)
            .bearer_auth(Claims::new(user).hs256(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"retry: "));
        streams.push(body);
    }

    assert!(
        Command::new("kill")
            .args(["-TERM", &process.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );

    eventually(
        Duration::from_secs(5),
        "/readyz to turn unready",
        || async {
            let r = http.get(&readyz).send().await.ok()?;
            (r.status() == 503).then_some(())
        },
    )
    .await;
    let refused = http
        .get(&events)
        .bearer_auth(Claims::new("dave").hs256(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "draining");

    for mut stream in streams {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(chunk) = stream.next().await {
                rest.extend_from_slice(&chunk.expect("the stream ends cleanly, not with an error"));
            }
        });
        ended
            .await
            .expect("the stream ends within the drain window");
        let text = String::from_utf8_lossy(&rest);
        let last = text.trim_end().lines().last().unwrap_or_default();
        let retry: u64 = last
            .strip_prefix("retry: ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{text:?}"));
        assert!(
            (2000..=4000).contains(&retry),
            "jittered retry hint {retry}"
        );
        assert!(text.contains(": closing: drain\n"), "{text:?}");
    }

    let status = tokio::task::spawn_blocking(move || process.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "the edge exits cleanly after draining: {status:?}"
    );
}

/// With its NATS server gone, a stopping edge cannot say goodbye to
/// presence; it must exit anyway rather than wait for NATS forever. Its
/// open streams close over the drain window, each queueing a presence
/// delta, well over what async-nats queues while disconnected (2,048),
/// after which a publish waits for NATS to come back.
#[tokio::test]
async fn sigterm_exits_even_when_nats_is_gone() {
    const STREAMS: usize = 5_000;
    let mut nats = NatsServer::start();
    let (listen, admin) = (free_addr(), free_addr());
    let url = nats.client_url();
    let args = [
        "--nats-url",
        &url,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
        "--jwt-secret",
        SECRET,
        "--drain-window",
        "4s",
        "--drain-grace",
        "6s",
    ];
    let mut process = Process(edge(&args).stderr(Stdio::null()).spawn().unwrap());
    let readyz = format!("http://{admin}/readyz");
    eventually(Duration::from_secs(10), "the edge to be ready", || async {
        let r = reqwest::get(&readyz).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let mut streams = Vec::with_capacity(STREAMS);
    for n in 0..STREAMS {
        streams.push(open_stream(&listen, &format!("user-{n}")).await);
    }
    nats.kill();
    let pid = process.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exited = eventually(Duration::from_secs(20), "the edge to exit", || {
        let status = process.0.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(exited.success(), "{exited:?}");
}

/// An edge whose only NATS server is gone cannot serve new clients (their
/// streams would be refused or deaf): `/readyz` says 503 within a couple
/// of seconds, so load balancers send them elsewhere, and 200 again once
/// both of its connections are back.
#[tokio::test]
async fn readyz_is_unready_while_nats_is_down() {
    let mut nats = NatsServer::start();
    let (listen, admin) = (free_addr(), free_addr());
    let url = nats.client_url();
    let args = [
        "--nats-url",
        &url,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
        "--jwt-secret",
        SECRET,
    ];
    let _process = Process(edge(&args).stderr(Stdio::null()).spawn().unwrap());
    let readyz = format!("http://{admin}/readyz");
    let status = || async { Some(reqwest::get(&readyz).await.ok()?.status().as_u16()) };
    eventually(Duration::from_secs(10), "the edge to be ready", || async {
        (status().await? == 200).then_some(())
    })
    .await;

    nats.kill();
    let killed = std::time::Instant::now();
    eventually(Duration::from_secs(3), "/readyz 503", || async {
        (status().await? == 503).then_some(())
    })
    .await;
    eprintln!(
        "503 {:?} after the NATS server was killed",
        killed.elapsed()
    );
    let body = reqwest::get(&readyz).await.unwrap().text().await.unwrap();
    assert!(body.contains("not connected to NATS"), "{body}");

    nats.restart();
    let restarted = std::time::Instant::now();
    eventually(Duration::from_secs(15), "/readyz 200 again", || async {
        (status().await? == 200).then_some(())
    })
    .await;
    eprintln!("200 {:?} after it was restarted", restarted.elapsed());
}

/// A raw HTTP/1.1 stream for `user`, read up to its first frame.
async fn open_stream(listen: &str, user: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(listen).await.unwrap();
    let token = Claims::new(user).hs256(SECRET);
    let head = format!("GET /v1/events?access_token={token} HTTP/1.1\r\nhost: edge\r\n\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    while !read.windows(6).any(|w| w == b"retry:") {
        let mut buf = [0u8; 1024];
        let n = socket.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "{user}'s stream closed: {}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&buf[..n]);
    }
    assert!(
        read.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&read)
    );
    socket
}
