//! The Control API as a browser sees it, in real Chromium on the demo
//! page (`/herald.js`): a server-side Follow reaches the open page at
//! once and the page after a reload; an Unfollow stops it.

use std::time::Duration;

use herald_e2e::*;
use herald_testing::browser::Browser;
use herald_testing::token::{Claims, Sign};
use serde_json::{Value, json};

const API_TOKEN: &str = "browser-control-api-token-0123";

async fn page_until(browser: &mut Browser, expression: &str, want: Value) {
    browser
        .wait_for(expression, want, Duration::from_secs(20))
        .await;
}

/// POSTs `body` to `path` on herald-publish; panics unless it answers 200.
async fn call(publish: &Running, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", publish.url()))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

async fn to_topic(publish: &Running, data: &str) {
    call(
        publish,
        "/v1/publish",
        json!({"topic": "news", "data": data}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_follow_reaches_the_open_page_and_the_reloaded_one() {
    let mut config = publish_config();
    config.api_token = Some(API_TOKEN.into());
    let stack = Stack::builder()
        .publish(config)
        .edge(edge_config("e1"))
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    // No topic claim: server-side follows need none.
    let token = Claims::new("alice").hs256(SECRET);
    let mut browser = Browser::open(&format!("{}/demo?token={token}", edge.url())).await;
    page_until(&mut browser, "window.herald.state", "open".into()).await;

    let answer = call(
        publish,
        "/v1/follow",
        json!({"userIds": ["alice"], "topics": ["news"]}),
    )
    .await;
    assert_eq!(answer["streams"], "1");
    to_topic(publish, "first").await;
    page_until(
        &mut browser,
        "window.herald.events.map((e) => e.data).join()",
        "first".into(),
    )
    .await;

    // The old page answers until the new one replaces it: told apart by a mark.
    browser
        .eval("window.before = true; location.reload()")
        .await;
    page_until(
        &mut browser,
        "window.before === undefined && window.herald.state",
        "open".into(),
    )
    .await;
    to_topic(publish, "after the reload").await;
    // (A resume after the reload may bring "first" back before it.)
    page_until(
        &mut browser,
        "window.herald.events.map((e) => e.data).slice(-1).join()",
        "after the reload".into(),
    )
    .await;

    call(
        publish,
        "/v1/unfollow",
        json!({"userIds": ["alice"], "topics": ["news"]}),
    )
    .await;
    to_topic(publish, "unfollowed").await;
    call(
        publish,
        "/v1/publish",
        json!({"users": {"userIds": ["alice"]}, "data": "own"}),
    )
    .await;
    page_until(
        &mut browser,
        "window.herald.events.map((e) => e.data).slice(-2).join()",
        "after the reload,own".into(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_eventsource_stops_for_good_once_its_token_is_revoked() {
    let mut config = publish_config();
    config.api_token = Some(API_TOKEN.into());
    let stack = Stack::builder()
        .publish(config)
        .edge(edge_config("e1"))
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let token = Claims {
        iat: Some(herald_testing::token::now() - 5),
        ..Claims::new("alice")
    }
    .hs256(SECRET);
    let mut browser = Browser::open(&format!("{}/demo", edge.url())).await;
    page_until(
        &mut browser,
        "location.pathname === '/demo' && document.readyState",
        "complete".into(),
    )
    .await;
    browser
        .eval(&format!(
            "window.plain = new EventSource('/v1/events?access_token={token}'); \
             window.got = []; window.plain.onmessage = (e) => window.got.push(e.data); \
             window.plain.addEventListener('herald.disconnect', (e) => window.got.push(e.data)); 1"
        ))
        .await;
    page_until(&mut browser, "window.plain.readyState", 1.into()).await;

    let answer = call(
        publish,
        "/v1/revoke",
        json!({"userIds": ["alice"], "reason": "stolen"}),
    )
    .await;
    assert_eq!(answer["streams"], "1");
    // The farewell, then its reconnect gets 401: closed, and it stays so.
    page_until(&mut browser, "window.plain.readyState", 2.into()).await;
    assert_eq!(
        browser.eval("window.got").await,
        json!([r#"{"reason":"stolen","reconnect":false}"#])
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(browser.eval("window.plain.readyState").await, json!(2));
}
