//! A real browser: headless Chromium opens the demo page, the edge under it
//! is killed and restarted, and Chromium's own EventSource reconnect (with
//! its own `Last-Event-ID`) brings every event it missed, even when none
//! had reached it before (the opening's id); the README's
//! typed event shows on the demo page with its type.

use std::time::Duration;

use herald_e2e::*;
use herald_testing::browser::Browser;
use herald_testing::token::{Claims, Sign};
use serde_json::{Value, json};

const API_TOKEN: &str = "browser-test-api-token-0123";

/// Waits until `expression` evaluates to `want` in the page.
async fn page_until(browser: &mut Browser, expression: &str, want: Value) {
    browser
        .wait_for(expression, want, Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_gets_every_event_across_an_edge_restart() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    let mut edge = EdgeProcess::start(&stack.nats_url(), None).await;
    let token = Claims::new("alice").hs256(SECRET);
    let mut browser = Browser::open(&format!("http://{}/demo?token={token}", edge.addr)).await;
    page_until(&mut browser, "window.herald.state", "open".into()).await;

    let mut client = publisher(publish).await;
    for i in 0..5 {
        publish_to_users(&mut client, &["alice"], &format!("e{i}")).await;
    }
    page_until(&mut browser, "window.herald.events.length", 5.into()).await;

    edge.kill();
    page_until(&mut browser, "window.herald.state", "connecting".into()).await;
    for i in 5..10 {
        publish_to_users(&mut client, &["alice"], &format!("e{i}")).await; // missed
    }
    let edge = EdgeProcess::start(&stack.nats_url(), Some(edge.addr)).await;
    page_until(&mut browser, "window.herald.events.length", 10.into()).await;
    publish_to_users(&mut client, &["alice"], "e10").await;
    page_until(&mut browser, "window.herald.events.length", 11.into()).await;

    let data = browser
        .eval("window.herald.events.map((e) => e.data)")
        .await;
    let expected: Vec<String> = (0..11).map(|i| format!("e{i}")).collect();
    assert_eq!(
        data,
        serde_json::json!(expected),
        "every event once, in order"
    );
    let ids = browser.eval("window.herald.events.map((e) => e.id)").await;
    assert!(
        ids.as_array()
            .unwrap()
            .iter()
            .all(|id| id.as_str().is_some_and(|s| !s.is_empty()))
    );
    assert_eq!(browser.eval("window.herald.resets").await, 0);
    assert_eq!(browser.eval("window.herald.state").await, "open");
    drop(edge);
}

/// The stream's opening carries its starting id: a page whose edge dies
/// before any event reached it still resumes from there, and gets what was
/// stored on its user and topic meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_that_saw_no_event_gets_what_was_stored_while_it_was_away() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    let mut client = publisher(publish).await;
    // History before the page opened is not the page's to get.
    publish_to_topic(&mut client, "news", "before").await;
    let mut edge = EdgeProcess::start(&stack.nats_url(), None).await;
    let token = Claims::new("alice").topics(&["news"]).hs256(SECRET);
    let page = format!("http://{}/demo?token={token}&topic=news", edge.addr);
    let mut browser = Browser::open(&page).await;
    page_until(&mut browser, "window.herald.state", "open".into()).await;

    edge.kill();
    page_until(&mut browser, "window.herald.state", "connecting".into()).await;
    publish_to_users(&mut client, &["alice"], "to alice").await;
    publish_to_topic(&mut client, "news", "to news").await;
    let edge = EdgeProcess::start(&stack.nats_url(), Some(edge.addr)).await;
    page_until(&mut browser, "window.herald.events.length", 2.into()).await;
    page_until(&mut browser, "window.herald.state", "open".into()).await;
    publish_to_topic(&mut client, "news", "live").await;
    page_until(&mut browser, "window.herald.events.length", 3.into()).await;

    let mut data: Vec<String> = serde_json::from_value(
        browser
            .eval("window.herald.events.map((e) => e.data)")
            .await,
    )
    .unwrap();
    data[..2].sort();
    assert_eq!(data, ["to alice", "to news", "live"]);
    assert_eq!(browser.eval("window.herald.resets").await, 0);
    drop(edge);
}

/// Runs `herald publish` with `args` against `publish`, as the README does.
async fn herald_publish(publish: &Running, args: &[&str]) {
    let mut command = std::process::Command::new(binary("herald"));
    command
        .args(["publish", "--addr", &publish.url()])
        .args(args)
        .env_clear()
        .env("HERALD_API_TOKEN", API_TOKEN);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "herald publish {args:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_the_readmes_typed_event_with_its_type() {
    let mut config = publish_config();
    config.api_token = Some(API_TOKEN.to_owned());
    let stack = Stack::builder()
        .publish(config)
        .edge(edge_config("edge"))
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let token = Claims::new("alice").topics(&["news"]).hs256(SECRET);
    // The README's demo URL and publish command.
    let url = format!("{}/demo?token={token}&topic=news&type=headline", edge.url());
    let mut browser = Browser::open(&url).await;
    page_until(&mut browser, "window.herald.state", "open".into()).await;
    let headline = [
        "--topic",
        "news",
        "--event",
        "headline",
        "--data",
        "hello news",
    ];
    herald_publish(publish, &headline).await;
    page_until(&mut browser, "window.herald.events.length", 1.into()).await;
    let event = browser.eval("window.herald.events[0]").await;
    assert_eq!(event["type"], "headline");
    assert_eq!(event["data"], "hello news");
    let cells = "[...document.querySelectorAll('#events td')].map((td) => td.textContent)";
    let row = browser.eval(cells).await;
    assert_eq!(row[0], "headline", "the page shows the type: {row}");
    assert_eq!(row[1], "hello news");

    // A type nobody named is dropped by the browser: the plain event
    // published after it (same topic, so in order) shows, it does not.
    herald_publish(
        publish,
        &["--topic", "news", "--event", "order", "--data", "o1"],
    )
    .await;
    herald_publish(publish, &["--topic", "news", "--data", "plain"]).await;
    page_until(&mut browser, "window.herald.events.length", 2.into()).await;
    // Named in the box, it shows from then on, on the same stream.
    let add = r#"(() => {
      const box = document.getElementById("types");
      box.value = "headline, order";
      box.dispatchEvent(new Event("change"));
      return window.herald.types;
    })()"#;
    assert_eq!(browser.eval(add).await, json!(["headline", "order"]));
    herald_publish(
        publish,
        &["--topic", "news", "--event", "order", "--data", "o2"],
    )
    .await;
    page_until(&mut browser, "window.herald.events.length", 3.into()).await;
    let seen = browser
        .eval("window.herald.events.map((e) => e.type + ':' + e.data)")
        .await;
    assert_eq!(
        seen,
        json!(["headline:hello news", "message:plain", "order:o2"])
    );
    assert_eq!(
        browser.eval("window.herald.state").await,
        "open",
        "never reconnected"
    );
    let connects = edge.metric("herald_edge_connects_total").await;
    assert_eq!(connects, 1.0, "one stream throughout");
}
