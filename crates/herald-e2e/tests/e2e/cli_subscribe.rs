//! `herald subscribe` as a terminal user runs it, against a real NATS,
//! herald-publish and edge: events printed with id, type and data (or as
//! JSON), topics followed, a restart of the edge survived without a loss,
//! the server's reasons for closing shown, refusals ending the command.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::tls::TlsArgs;
use herald_e2e::*;
use herald_testing::eventually;
use herald_testing::token::{Claims, Sign, now};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);

/// A running `herald subscribe`, its output collected line by line.
struct Subscriber {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The tasks reading the pipes, done at their end.
    readers: Vec<JoinHandle<()>>,
}

impl Subscriber {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(binary("herald"))
            .arg("subscribe")
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run herald");
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for `n` event lines on stdout.
    async fn events(&self, n: usize) -> Vec<String> {
        let what = format!("{n} events printed");
        eventually(WAIT, &what, || async {
            let lines = self.stdout();
            (lines.len() >= n).then_some(lines)
        })
        .await
    }

    /// Waits for the `n`th stderr line that contains `text`.
    async fn said(&self, text: &str, n: usize) {
        let what = format!("stderr to say {text:?} {n} times");
        eventually(WAIT, &what, || async {
            let count = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(text))
                .count();
            (count >= n).then_some(())
        })
        .await;
    }

    /// Waits for the process to exit and its output to be read.
    async fn exit(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("herald subscribe did not exit: {}", self.stderr()))
            .unwrap();
        for reader in self.readers.drain(..) {
            reader.await.unwrap();
        }
        status
    }

    async fn signal(&mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        self.exit().await
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

/// Collects `pipe`'s lines until it closes.
fn collect(pipe: impl AsyncRead + Unpin + Send + 'static) -> (Lines, JoinHandle<()>) {
    let lines = Lines::default();
    let sink = lines.clone();
    let reader = tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

/// The `id=…` of a readable line.
fn id_of(line: &str) -> &str {
    let rest = line.strip_prefix("id=").expect("an id");
    &rest[..rest.find(' ').unwrap()]
}

#[tokio::test]
async fn prints_typed_and_untyped_events_from_the_user_and_its_topics() {
    let stack = Stack::start(edge_config("e1")).await;
    let url = stack.edge().url();
    let mut sub = Subscriber::start(&[
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
        "--user",
        "alice",
        "--topic",
        "news",
        "--topic",
        "room.42",
    ]);
    sub.said("connected to", 1).await;
    let mut client = stack.publisher().await;
    let first = publish_to_users(&mut client, &["alice"], "hello alice").await;
    sub.events(1).await;
    publish_ephemeral(&mut client, &["alice"], "typing…").await;
    let request = herald_proto::v1::PublishRequest {
        target: Some(herald_proto::v1::publish_request::Target::Topic(
            "news".into(),
        )),
        event: "headline".into(),
        data: "two\nlines".into(),
        ..Default::default()
    };
    let headline = client.publish(request).await.unwrap().into_inner();
    publish_to_topic(&mut client, "room.42", "in the room").await;
    publish_to_topic(&mut client, "elsewhere", "not followed").await;
    publish_to_users(&mut client, &["bob"], "not for alice").await;
    publish_to_users(&mut client, &["alice"], "last").await;

    let lines = sub.events(5).await;
    assert_eq!(
        lines[0],
        format!("id={} event=message data=hello alice", id_of(&lines[0]))
    );
    assert!(!first.event_id.is_empty());
    assert_eq!(lines[1], "event=message data=typing…", "ephemeral: no id");
    assert!(
        lines[2].ends_with(" event=headline data=two\\nlines"),
        "{}",
        lines[2]
    );
    assert!(!headline.event_id.is_empty());
    assert!(
        lines[3].ends_with(" event=message data=in the room"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].ends_with(" event=message data=last"),
        "{}",
        lines[4]
    );
    // Each persisted event's id is the stream's cursor: all differ.
    let ids: std::collections::HashSet<&str> =
        [0, 2, 3, 4].iter().map(|&i| id_of(&lines[i])).collect();
    assert_eq!(ids.len(), 4, "{lines:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sub.stdout().len(),
        5,
        "nothing unfollowed: {:?}",
        sub.stdout()
    );

    assert!(sub.signal("-INT").await.success(), "Ctrl-C exits 0");
}

#[tokio::test]
async fn json_lines_carry_exact_data_with_a_given_token() {
    let stack = Stack::start(edge_config("e1")).await;
    let token = Claims::new("carol").topics(&["prices.*"]).hs256(SECRET);
    let url = stack.edge().url();
    let mut sub = Subscriber::start(&[
        "--url",
        &url,
        "--token",
        &token,
        "--topic",
        "prices.eu",
        "--json",
    ]);
    sub.said("connected to", 1).await;
    let mut client = stack.publisher().await;
    let data = "{\"bid\": 1.5}\nsecond line \\ \u{1b}";
    publish_to_topic(&mut client, "prices.eu", data).await;
    publish_ephemeral(&mut client, &["carol"], "blink").await;

    let lines = sub.events(2).await;
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["event"], "message");
    assert_eq!(first["data"], data);
    assert!(first["id"].as_str().is_some_and(|id| !id.is_empty()));
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        second,
        serde_json::json!({"id": null, "event": "message", "data": "blink"})
    );
    assert!(sub.signal("-TERM").await.success(), "SIGTERM exits 0");
}

#[tokio::test]
async fn resumes_after_an_edge_restart_without_loss_or_duplicates() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    let mut edge = EdgeProcess::start(&stack.nats_url(), None).await;
    let url = format!("http://{}", edge.addr);
    let sub = Subscriber::start(&["--url", &url, "--jwt-secret", SECRET, "--user", "dave"]);
    sub.said("connected to", 1).await;
    let mut client = publisher(publish).await;
    for i in 0..3 {
        publish_to_users(&mut client, &["dave"], &format!("e{i}")).await;
    }
    sub.events(3).await;

    edge.terminate(WAIT).await;
    sub.said("the server closed the stream: drain", 1).await;
    // Stored while no edge runs; the subscriber keeps trying meanwhile.
    for i in 3..6 {
        publish_to_users(&mut client, &["dave"], &format!("e{i}")).await;
    }
    sub.said("cannot reach", 1).await;
    let _edge = EdgeProcess::start(&stack.nats_url(), Some(edge.addr)).await;
    sub.said("resuming after", 1).await;
    publish_to_users(&mut client, &["dave"], "e6").await;

    let lines = sub.events(7).await;
    let data: Vec<&str> = lines
        .iter()
        .map(|l| l.rsplit("data=").next().unwrap())
        .collect();
    assert_eq!(
        data,
        ["e0", "e1", "e2", "e3", "e4", "e5", "e6"],
        "{}",
        sub.stderr()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sub.stdout().len(), 7, "no duplicates: {:?}", sub.stdout());
    let stderr = sub.stderr();
    let resumed_after = id_of(&lines[2]);
    assert!(
        stderr.contains(&format!("resuming after {resumed_after}")),
        "resumes from the last id printed: {stderr}"
    );
}

#[tokio::test]
async fn an_expired_token_is_reported_and_ends_the_command() {
    let stack = Stack::start(edge_config("e1")).await;
    let url = stack.edge().url();

    let expired = Claims::new("erin").expires_at(now() - 600).hs256(SECRET);
    let mut sub = Subscriber::start(&["--url", &url, "--token", &expired]);
    let status = sub.exit().await;
    let stderr = sub.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
    assert!(stderr.contains("token expired"), "{stderr}");
    assert!(sub.stdout().is_empty());

    // One that expires while the stream is open: the edge says why it
    // closes it, and the reconnect with the same token is refused.
    let expiring = Claims::new("erin").expires_at(now() + 2).hs256(SECRET);
    let mut sub = Subscriber::start(&["--url", &url, "--token", &expiring]);
    sub.said("connected to", 1).await;
    let status = sub.exit().await;
    let stderr = sub.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the server closed the stream: token_expired"),
        "{stderr}"
    );
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
}

#[tokio::test]
async fn a_minted_token_is_renewed_when_the_edge_closes_an_expired_stream() {
    let stack = Stack::start(edge_config("e1")).await;
    let url = stack.edge().url();
    let sub = Subscriber::start(&[
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
        "--user",
        "fay",
        "--ttl",
        "1s",
    ]);
    sub.said("the server closed the stream: token_expired", 1)
        .await;
    sub.said("connected to", 2).await;
    let mut client = stack.publisher().await;
    publish_to_users(&mut client, &["fay"], "still here").await;
    let lines = sub.events(1).await;
    assert!(lines[0].ends_with("data=still here"), "{lines:?}");
}

#[tokio::test]
async fn hostile_arguments_and_refusals_end_with_a_clear_line() {
    let stack = Stack::start(edge_config("e1")).await;
    let url = stack.edge().url();
    let secret = ["--jwt-secret", SECRET, "--user", "gus"];
    let misuse: [(&[&str], &str); 7] = [
        (&["--url", "ftp://127.0.0.1/"], "--url"),
        (&["--url", "127.0.0.1:8080"], "--url"),
        (&["--url", "http://[::1"], "--url"),
        (&["--url", "http://x/?topic=a"], "--url"),
        (&["--url", &url, "--topic", "a b"], "--topic"),
        (&["--url", &url, "--topic", "news*"], "--topic"),
        (&["--url", &url, "--user", ""], "--user"),
    ];
    for (args, flag) in misuse {
        let mut all = args.to_vec();
        if !args.contains(&"--user") {
            all.extend(secret);
        }
        let mut sub = Subscriber::start(&all);
        let status = sub.exit().await;
        let stderr = sub.stderr();
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    let mut sub = Subscriber::start(&["--url", &url]);
    assert_eq!(sub.exit().await.code(), Some(2));
    assert!(sub.stderr().contains("--token"), "{}", sub.stderr());

    // A topic the token does not allow: 403, final.
    let token = Claims::new("gus").topics(&["news"]).hs256(SECRET);
    let mut sub = Subscriber::start(&["--url", &url, "--token", &token, "--topic", "secret"]);
    assert_eq!(sub.exit().await.code(), Some(1));
    assert!(sub.stderr().contains("403 Forbidden"), "{}", sub.stderr());

    // Not an edge: an answer that is no event stream is final too.
    let admin = format!("http://{}/metrics/", stack.edge().admin);
    let mut sub = Subscriber::start(&["--url", &admin, "--token", &token]);
    assert_eq!(sub.exit().await.code(), Some(1), "{}", sub.stderr());

    // Nobody listening: it keeps trying, backing off, until stopped.
    let nowhere = format!("http://{}", free_addr());
    let mut sub = Subscriber::start(&["--url", &nowhere, "--token", &token]);
    sub.said("cannot reach", 2).await;
    assert!(sub.signal("-TERM").await.success());
}

#[tokio::test]
async fn follows_an_https_edge_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = herald_testing::pki::TestCa::new("herald test CA");
    let issued = ca.server();
    let (cert, key, ca_file) = (
        dir.path().join("edge.pem"),
        dir.path().join("edge.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let mut config = edge_config("e-tls");
    let tls = TlsArgs {
        tls_cert: Some(cert),
        tls_key: Some(key),
        tls_client_ca: None,
    };
    config.tls = tls.server_config(&[b"h2", b"http/1.1"]).unwrap();
    let stack = Stack::start(config).await;
    let url = format!("https://localhost:{}", stack.edge().addr.port());
    let ca_path = ca_file.to_str().unwrap();
    let sub = Subscriber::start(&[
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
        "--user",
        "hal",
        "--ca-file",
        ca_path,
    ]);
    sub.said("connected to", 1).await;
    let mut client = stack.publisher().await;
    publish_to_users(&mut client, &["hal"], "over TLS").await;
    assert!(sub.events(1).await[0].ends_with("data=over TLS"));

    // Without the CA, the certificate is not trusted: it says so and retries.
    let mut untrusting =
        Subscriber::start(&["--url", &url, "--jwt-secret", SECRET, "--user", "hal"]);
    untrusting.said("cannot reach", 1).await;
    assert!(
        untrusting.stderr().to_lowercase().contains("certificate"),
        "{}",
        untrusting.stderr()
    );
    assert!(untrusting.signal("-TERM").await.success());
}
