//! A real browser: headless Chromium opens the demo page, the edge under it
//! is killed and restarted, and Chromium's own EventSource reconnect (with
//! its own `Last-Event-ID`) brings every event it missed.

use std::time::Duration;

use herald_e2e::*;
use herald_testing::NatsServer;
use herald_testing::browser::Browser;
use herald_testing::token::Claims;
use serde_json::Value;

/// Waits until `expression` evaluates to `want` in the page.
async fn page_until(browser: &mut Browser, expression: &str, want: Value) {
    browser
        .wait_for(expression, want, Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_gets_every_event_across_an_edge_restart() {
    let nats = NatsServer::start();
    let publish = start_publish(&nats.client_url(), herald_publish::Config::defaults("p")).await;
    let mut edge = EdgeProcess::start(&nats.client_url(), None).await;
    let token = Claims::new("alice").hs256(SECRET);
    let mut browser = Browser::open(&format!("http://{}/demo?token={token}", edge.addr)).await;
    page_until(&mut browser, "window.herald.state", "open".into()).await;

    let mut client = publisher(&publish).await;
    for i in 0..5 {
        publish_to_users(&mut client, &["alice"], &format!("e{i}")).await;
    }
    page_until(&mut browser, "window.herald.events.length", 5.into()).await;

    edge.kill();
    page_until(&mut browser, "window.herald.state", "connecting".into()).await;
    for i in 5..10 {
        publish_to_users(&mut client, &["alice"], &format!("e{i}")).await; // missed
    }
    let edge = EdgeProcess::start(&nats.client_url(), Some(edge.addr)).await;
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
