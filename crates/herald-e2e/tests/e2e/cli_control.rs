//! `herald disconnect`, `revoke`, `follow`, `unfollow`, `topics`,
//! `history` and `lifecycle` as an operator runs them (events sent with
//! `herald publish`): the binary against a real NATS, herald-publish and
//! edges, its one-line answers checked and their effect seen on live
//! streams.

use std::process::Stdio;
use std::time::Duration;

use herald_e2e::*;
use herald_testing::eventually;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign, now};
use serde_json::{Value, json};

const TOKEN: &str = "cli-control-api-token-0123";
const WAIT: Duration = Duration::from_secs(20);

/// What one run of `herald` printed, and how it exited.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The run succeeded and printed exactly `lines`.
    #[track_caller]
    fn printed(&self, lines: &[&str]) {
        assert_eq!(self.code, Some(0), "{self:?}");
        assert_eq!(self.stdout.lines().collect::<Vec<_>>(), lines, "{self:?}");
    }
}

/// Runs `herald args...` against herald-publish at `addr`, its token in
/// the environment, as an operator's shell would.
async fn herald(addr: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(binary("herald"))
        .args(args)
        .env_clear()
        .env("HERALD_PUBLISH_ADDR", addr)
        .env("HERALD_API_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run herald");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// NATS, herald-publish with [`TOKEN`] and `n` edges, in-process.
async fn stack(n: usize) -> Stack {
    let mut config = publish_config();
    config.api_token = Some(TOKEN.into());
    let mut stack = Stack::builder().publish(config);
    for i in 0..n {
        stack = stack.edge(edge_config(&format!("e{i}")));
    }
    stack.start().await
}

/// Publishes `data` to `topic` with `herald publish`.
async fn to_topic(addr: &str, topic: &str, data: &str) {
    let run = herald(addr, &["publish", "--topic", topic, "--data", data]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
}

/// `user`'s stream on `edge`, with a token issued ten seconds ago (so a
/// revoke made now refuses it).
async fn open(edge: &Running, user: &str, topics: &[&str]) -> SseStream {
    let token = Claims {
        iat: Some(now() - 10),
        ..Claims::new(user)
    }
    .hs256(SECRET);
    SseStream::open(&reqwest::Client::new(), &events_url(edge, topics), &token).await
}

/// Waits until herald-publish counts `users` users online: it waits for
/// the answers of the edges it knows.
async fn until_publish_sees(publish: &Running, users: f64) {
    eventually(WAIT, "publish to see the connections", || async {
        let online = publish.metric("herald_publish_presence_users_online").await;
        (online == users).then_some(())
    })
    .await;
}

/// The stream's next event is `herald.disconnect` with `data`, then its end.
async fn ends_with_disconnect(stream: &mut SseStream, data: Value) {
    let event = stream.next().await;
    assert_eq!(event.event, "herald.disconnect");
    assert_eq!(serde_json::from_str::<Value>(&event.data).unwrap(), data);
    assert!(stream.next_within(WAIT).await.is_none(), "the stream ends");
}

#[tokio::test]
async fn disconnect_and_revoke_end_the_users_streams_and_say_how_many() {
    let stack = stack(2).await;
    let (publish, edges) = (stack.publish(), &stack.edges);
    let addr = publish.url();
    let mut alice = [
        open(&edges[0], "alice", &[]).await,
        open(&edges[1], "alice", &[]).await,
    ];
    let mut bob = open(&edges[0], "bob", &[]).await;
    until_publish_sees(publish, 2.0).await;

    let run = herald(&addr, &["disconnect", "bob", "nobody"]).await;
    run.printed(&["ended 1 stream on 2 edges"]);
    ends_with_disconnect(&mut bob, json!({"reason": "", "reconnect": true})).await;
    let run = herald(
        &addr,
        &[
            "disconnect",
            "alice",
            "--reason",
            "logout",
            "--no-reconnect",
        ],
    )
    .await;
    run.printed(&["ended 2 streams on 2 edges"]);
    for stream in &mut alice {
        let data = json!({"reason": "logout", "reconnect": false});
        ends_with_disconnect(stream, data).await;
    }

    // Revoke: the open stream ends, the same token is refused afterwards.
    let mut alice = open(&edges[1], "alice", &[]).await;
    until_publish_sees(publish, 1.0).await;
    let run = herald(&addr, &["revoke", "alice", "--reason", "stolen laptop"]).await;
    run.printed(&["revoked 1 user; ended 1 stream"]);
    let data = json!({"reason": "stolen laptop", "reconnect": false});
    ends_with_disconnect(&mut alice, data).await;
    let token = Claims {
        iat: Some(now() - 10),
        ..Claims::new("alice")
    }
    .hs256(SECRET);
    let refused = reqwest::Client::new()
        .get(events_url(&edges[0], &[]))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "token_revoked", "{body}");

    // Refusals end the command with their reason and exit code 1; a
    // command without a user does not run (exit code 2).
    let run = herald(
        &addr,
        &["revoke", "alice", "--api-token", "wrong-token-wrong"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("Unauthenticated"), "{run:?}");
    let run = herald(&addr, &["disconnect", "bad\u{1}id"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("InvalidArgument: user_ids[0]"),
        "{run:?}"
    );
    let run = herald(&addr, &["disconnect"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
}

#[tokio::test]
async fn follow_and_unfollow_change_live_streams_and_topics_lists_them() {
    let stack = stack(1).await;
    let (publish, edges) = (stack.publish(), &stack.edges);
    let addr = publish.url();
    let mut alice = open(&edges[0], "alice", &[]).await;
    until_publish_sees(publish, 1.0).await;

    let follow = ["follow", "--user", "alice", "--topic", "news"];
    let run = herald(&addr, &[&follow[..], &["--topic", "sport"]].concat()).await;
    run.printed(&["followed 2 topics for 1 user; 1 live stream changed"]);
    to_topic(&addr, "sport", "goal").await;
    assert_eq!(alice.next().await.data, "goal");

    herald(&addr, &["topics"])
        .await
        .printed(&["news streams=1 edges=1", "sport streams=1 edges=1"]);
    herald(&addr, &["topics", "--prefix", "sp"])
        .await
        .printed(&["sport streams=1 edges=1"]);

    let run = herald(&addr, &["unfollow", "--user", "alice", "--topic", "sport"]).await;
    run.printed(&["unfollowed 1 topic for 1 user; 1 live stream changed"]);
    to_topic(&addr, "sport", "offside").await;
    to_topic(&addr, "news", "headline").await;
    assert_eq!(
        alice.next().await.data,
        "headline",
        "sport is no longer followed, news still is"
    );
    herald(&addr, &["topics"])
        .await
        .printed(&["news streams=1 edges=1"]);

    // A user with no stream: the follow is kept for their next connect.
    herald(&addr, &["follow", "--user", "carol", "--topic", "news"])
        .await
        .printed(&["followed 1 topic for 1 user; 0 live streams changed"]);
    let mut carol = open(&edges[0], "carol", &[]).await;
    to_topic(&addr, "news", "for both").await;
    assert_eq!(carol.next().await.data, "for both");

    let run = herald(&addr, &["follow", "--user", "alice", "--topic", "a b"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("InvalidArgument: topics[0]"), "{run:?}");
    let run = herald(&addr, &["follow", "--user", "alice"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
}

#[tokio::test]
async fn history_prints_a_users_or_a_topics_events_like_subscribe() {
    let stack = stack(0).await;
    let publish = stack.publish();
    let addr = publish.url();
    for data in ["one", "two", "three"] {
        to_topic(&addr, "news", data).await;
    }
    let run = herald(&addr, &["history", "--topic", "news", "--limit", "2"]).await;
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(lines[0].ends_with(" event=message data=two"), "{run:?}");
    assert!(lines[1].ends_with(" data=three"), "{run:?}");
    assert!(
        run.stderr.contains("truncated"),
        "older events left out: {run:?}"
    );

    // From an id it printed: what came after.
    let since = lines[0]
        .strip_prefix("id=")
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let run = herald(
        &addr,
        &["history", "--topic", "news", "--since", since, "--json"],
    )
    .await;
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{run:?}");
    assert_eq!(events[0]["data"], "three");

    let run = herald(&addr, &["history", "--user", "nobody"]).await;
    run.printed(&[]);
    let run = herald(
        &addr,
        &["history", "--topic", "news", "--since", "garbage!"],
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("InvalidArgument"), "{run:?}");
    // Exactly one of --user and --topic.
    for args in [
        &["history"][..],
        &["history", "--user", "a", "--topic", "t"],
    ] {
        let run = herald(&addr, args).await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
    }
}

#[tokio::test]
async fn lifecycle_tails_one_users_connects_and_disconnects() {
    use tokio::io::AsyncBufReadExt;
    let mut config = edge_config("e1");
    config.lifecycle_events = true;
    let stack = Stack::builder().edge(config).start().await;
    let edge = stack.edge();
    let mut tail = tokio::process::Command::new(binary("herald"))
        .args([
            "lifecycle",
            "--nats-url",
            &stack.nats_url(),
            "--user",
            "a.b",
        ])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run herald lifecycle");
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    // Its subscription is made once it runs: streams until one is told.
    let mut told = None;
    for _ in 0..40 {
        let stream = open(edge, "a.b", &[]).await;
        let _other = open(edge, "someone-else", &[]).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
            assert!(!line.contains("someone-else"), "{line}");
            if line.contains(" connect a.b ") {
                told = Some(line);
            }
        }
        if let Some(connect) = told.take() {
            assert!(connect.ends_with(" topics="), "{connect}");
            let stream_id = connect.split(' ').nth(3).unwrap().to_owned();
            assert!(stream_id.starts_with("e1-"), "{connect}");
            drop(stream);
            loop {
                let line = tokio::time::timeout(WAIT, lines.next_line()).await;
                let line = line.expect("a line in time").unwrap().expect("a line");
                if line.contains(&format!(" disconnect a.b {stream_id} ")) {
                    assert!(line.ends_with(": client_gone"), "{line}");
                    return;
                }
            }
        }
    }
    panic!("herald lifecycle printed no connect");
}
