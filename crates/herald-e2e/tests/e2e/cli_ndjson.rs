//! `herald publish --ndjson`: events from stdin through PublishBatch in
//! chunks, failed lines reported by number, the exit code telling.

use std::io::Write;
use std::process::{Command, Stdio};

use herald_e2e::*;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};

const TOKEN: &str = "ndjson-api-token-0123";

#[tokio::test]
async fn many_lines_are_published_in_order_and_bad_ones_named_by_line() {
    let mut config = publish_config();
    config.api_token = Some(TOKEN.into());
    let stack = Stack::builder()
        .publish(config)
        .edge(edge_config("edge"))
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let token = Claims::new("alice").hs256(SECRET);
    let mut alice = SseStream::open(&reqwest::Client::new(), &events_url(edge, &[]), &token).await;

    // 1,200 good lines (three chunks of 500 at most), a blank one, and
    // three bad ones: broken JSON, a misspelt field, an empty user id.
    let mut input = String::new();
    for i in 0..1200 {
        input.push_str(&format!(
            "{{\"users\":{{\"userIds\":[\"alice\"]}},\"data\":\"{i}\"}}\n"
        ));
        match i {
            10 => input.push_str("{\"users\":\n"),
            20 => input.push('\n'),
            700 => input.push_str("{\"topic\":\"news\",\"dat\":\"x\"}\n"),
            900 => input.push_str("{\"users\":{\"userIds\":[\"\"]},\"data\":\"x\"}\n"),
            _ => {}
        }
    }
    let mut child = Command::new(binary("herald"))
        .args(["publish", "--addr", &publish.url(), "--ndjson"])
        .env_clear()
        .env("HERALD_API_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run herald");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "published 1200, failed 3", "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    // Line numbers: event i is on line i + 1, plus the lines inserted before it.
    assert!(
        lines[0].starts_with("line 12: invalid JSON"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("line 704: invalid JSON: unknown field `dat`"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("line 905: INVALID_ARGUMENT: user_ids[0]"),
        "{}",
        lines[2]
    );

    for i in 0..1200 {
        assert_eq!(alice.next().await.data, i.to_string());
    }
}

#[tokio::test]
async fn a_wrong_token_fails_every_line_and_exits_1() {
    let mut config = publish_config();
    config.api_token = Some(TOKEN.into());
    let stack = Stack::builder().publish(config).start().await;
    let publish = stack.publish();
    let mut child = Command::new(binary("herald"))
        .args(["publish", "--addr", &publish.url(), "--ndjson"])
        .args(["--api-token", "wrong-token-wrong-token"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run herald");
    let line = "{\"topic\":\"news\",\"data\":\"x\"}\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line.repeat(2).as_bytes())
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "published 0, failed 2"
    );
    assert!(
        stderr.starts_with("line 1: UNAUTHENTICATED: wrong API token"),
        "{stderr}"
    );
}
