//! The admin page in real Chromium: the API token typed in (kept for the
//! tab, never in a URL), the totals, a user's streams, Follow, the topics
//! and their audiences, a test publish that reaches the user's stream,
//! and Disconnect, which ends it; served under a strict CSP. A screenshot
//! is kept as an artifact (`target/artifacts/admin-page.png`).

use std::time::Duration;

use herald_e2e::*;
use herald_testing::browser::Browser;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};
use serde_json::{Value, json};

const API_TOKEN: &str = "admin-page-api-token-0123456789";

async fn until(browser: &mut Browser, expression: &str, want: Value) {
    browser
        .wait_for(expression, want, Duration::from_secs(20))
        .await;
}

/// Sets the value of input `id`.
async fn fill(browser: &mut Browser, id: &str, value: &str) {
    let value = serde_json::to_string(value).unwrap();
    browser
        .eval(&format!("document.getElementById('{id}').value = {value}"))
        .await;
}

async fn click(browser: &mut Browser, id: &str) {
    browser
        .eval(&format!("document.getElementById('{id}').click()"))
        .await;
}

async fn submit(browser: &mut Browser, form: &str) {
    browser
        .eval(&format!(
            "document.getElementById('{form}').requestSubmit()"
        ))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_looks_up_follows_publishes_and_disconnects_from_the_page() {
    let mut config = publish_config();
    config.api_token = Some(API_TOKEN.into());
    let stack = Stack::builder()
        .publish(config)
        .edge(edge_config("edge-1"))
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let token = Claims::new("alice").hs256(SECRET);
    let url = events_url(edge, &[]);
    let mut alice = SseStream::open(&reqwest::Client::new(), &url, &token).await;

    let page = reqwest::get(format!("{}/admin", publish.url()))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'self'"),
        "{policy}"
    );
    assert!(
        !page.text().await.unwrap().contains("<script>"),
        "no inline script"
    );

    let mut browser = Browser::open(&format!("{}/admin", publish.url())).await;
    until(
        &mut browser,
        "document.getElementById('login') !== null && document.readyState === 'complete'",
        true.into(),
    )
    .await;
    fill(&mut browser, "token", API_TOKEN).await;
    submit(&mut browser, "login").await;
    until(
        &mut browser,
        "document.getElementById('connections').textContent",
        "1".into(),
    )
    .await;
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('herald-api-token')")
            .await,
        json!(API_TOKEN)
    );
    assert!(
        !browser
            .eval("location.href")
            .await
            .as_str()
            .unwrap()
            .contains(API_TOKEN)
    );
    assert_eq!(
        browser.eval("document.getElementById('token').value").await,
        json!("")
    );

    fill(&mut browser, "user", "alice").await;
    submit(&mut browser, "user-form").await;
    until(
        &mut browser,
        "document.getElementById('presence').textContent",
        "1 streams on 1 edges".into(),
    )
    .await;

    fill(&mut browser, "follow-topic", "news").await;
    click(&mut browser, "follow").await;
    until(
        &mut browser,
        "JSON.parse(document.getElementById('answer').textContent || '{}').streams",
        "1".into(),
    )
    .await;
    submit(&mut browser, "topics-form").await;
    until(
        &mut browser,
        "document.getElementById('topics').textContent",
        "news11".into(),
    )
    .await;

    fill(&mut browser, "target-kind", "topic").await;
    fill(&mut browser, "target", "news").await;
    fill(&mut browser, "data", "from the admin page").await;
    submit(&mut browser, "publish-form").await;
    assert_eq!(alice.next().await.data, "from the admin page");

    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("admin-page.png");
    browser.screenshot(&shot).await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    fill(&mut browser, "reason", "support call").await;
    click(&mut browser, "disconnect").await;
    let event = alice.next().await;
    assert_eq!(event.event, "herald.disconnect");
    assert_eq!(
        serde_json::from_str::<Value>(&event.data).unwrap(),
        json!({"reason": "support call", "reconnect": false})
    );
    until(
        &mut browser,
        "document.getElementById('presence').textContent",
        "offline".into(),
    )
    .await;

    // A wrong token is said so on the page.
    fill(&mut browser, "token", "wrong-token-wrong-token-wrong").await;
    submit(&mut browser, "login").await;
    until(
        &mut browser,
        "document.getElementById('status').className",
        "error".into(),
    )
    .await;
}
