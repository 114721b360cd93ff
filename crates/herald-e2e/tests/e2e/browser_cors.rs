//! A web app on one origin reading an edge on another, in headless
//! Chromium: the app's page is served from its own port (another origin
//! than the edge's, the same site), loads `/herald.js` from the edge and
//! opens streams there. Chromium itself decides what the page may read.

use std::time::Duration;

use herald_e2e::*;
use herald_testing::browser::Browser;
use herald_testing::page::PageServer;
use herald_testing::token::{Claims, Sign};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

const PAGE: &str = "<!doctype html><title>app</title><p>an app on its own origin</p>";

/// Opens Chromium on `page` and loads the edge's `/herald.js` into it.
async fn open_app(page: &PageServer, edge: &str) -> Browser {
    let mut browser = Browser::open(&page.origin()).await;
    // Chromium starts on about:blank, whose document is complete too.
    let loaded = "location.origin + ' ' + document.readyState";
    let want = format!("{} complete", page.origin());
    browser.wait_for(loaded, want.into(), WAIT).await;
    let load = format!(
        r#"(() => {{
          window.edge = "{edge}";
          const script = document.createElement("script");
          script.src = "{edge}/herald.js";
          document.head.append(script);
          return location.origin;
        }})()"#
    );
    assert_eq!(browser.eval(&load).await, page.origin().as_str());
    browser
        .wait_for("typeof Herald", "function".into(), WAIT)
        .await;
    browser
}

/// Opens a bare EventSource on the edge as `window[name]`, recording its
/// events (`message` and `headline`) in `window[name + "Got"]` and its
/// errors in `window[name + "Errors"]`. `query` is appended to the URL.
async fn event_source(browser: &mut Browser, name: &str, query: &str, credentials: bool) {
    let script = format!(
        r#"(() => {{
          const got = window["{name}Got"] = [];
          window["{name}Errors"] = 0;
          const source = window["{name}"] = new EventSource(window.edge + "/v1/events{query}", {{ withCredentials: {credentials} }});
          const record = (e) => got.push({{ type: e.type, data: e.data, id: e.lastEventId }});
          source.addEventListener("message", record);
          source.addEventListener("headline", record);
          source.onerror = () => {{ window["{name}Errors"] += 1; }};
          return true;
        }})()"#
    );
    assert_eq!(browser.eval(&script).await, true);
}

/// Puts `token` in the page's `herald_token` cookie (cookies are per host,
/// not per port: the edge's host gets it too).
async fn set_cookie(browser: &mut Browser, token: &str) {
    let cookie = format!("document.cookie = \"herald_token={token}; path=/; SameSite=Lax\"");
    browser.eval(&cookie).await;
}

/// `token` in the cookie, then two EventSources: `byQuery` with the token
/// in its URL (no cookies sent), `byCookie` with `withCredentials`.
async fn by_query_and_by_cookie(browser: &mut Browser, token: &str) {
    set_cookie(browser, token).await;
    let query = format!("?access_token={token}");
    event_source(browser, "byQuery", &query, false).await;
    event_source(browser, "byCookie", "", true).await;
}

async fn datas(browser: &mut Browser, name: &str) -> serde_json::Value {
    browser
        .eval(&format!("window[\"{name}Got\"].map((e) => e.data)"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_reads_streams_by_query_token_and_by_cookie_across_a_restart() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    let page = PageServer::start(PAGE).await;
    let origins = format!("https://app.example.com,{}", page.origin());
    let flags = ["--allowed-origins", origins.as_str()];
    let mut edge = EdgeProcess::start_with(&stack.nats_url(), None, &flags).await;
    let edge_url = format!("http://{}", edge.addr);
    let mut browser = open_app(&page, &edge_url).await;

    // alice's token in the query, through herald.js (no cookies sent).
    let alice = Claims::new("alice").hs256(SECRET);
    let start = format!(
        r#"(() => {{
          window.aliceGot = [];
          window.alice = new Herald(window.edge + "/v1/events", {{ token: "{alice}" }});
          const record = (e) => window.aliceGot.push({{ type: e.type, data: e.data }});
          window.alice.on("message", record).on("headline", record);
          return true;
        }})()"#
    );
    assert_eq!(browser.eval(&start).await, true);
    // bob's in the herald_token cookie, sent with `withCredentials`.
    let bob = Claims::new("bob").hs256(SECRET);
    set_cookie(&mut browser, &bob).await;
    event_source(&mut browser, "bob", "", true).await;
    browser
        .wait_for("window.alice.state", "open".into(), WAIT)
        .await;
    browser
        .wait_for("window.bob.readyState", 1.into(), WAIT)
        .await;

    let mut client = publisher(publish).await;
    publish_to_users(&mut client, &["alice"], "a1").await;
    publish_to_users(&mut client, &["bob"], "b1").await;
    browser
        .wait_for("window.aliceGot.length", 1.into(), WAIT)
        .await;
    browser
        .wait_for("window.bobGot.length", 1.into(), WAIT)
        .await;

    // The browser's own reconnect, cross-origin, with its Last-Event-ID.
    edge.kill();
    browser
        .wait_for("window.bob.readyState", 0.into(), WAIT)
        .await;
    publish_to_users(&mut client, &["alice"], "a2").await; // missed
    publish_to_users(&mut client, &["bob"], "b2").await; // missed
    let _edge = EdgeProcess::start_with(&stack.nats_url(), Some(edge.addr), &flags).await;
    browser
        .wait_for("window.bobGot.length", 2.into(), WAIT)
        .await;
    browser
        .wait_for("window.aliceGot.length", 2.into(), WAIT)
        .await;
    assert_eq!(datas(&mut browser, "alice").await, json!(["a1", "a2"]));
    assert_eq!(datas(&mut browser, "bob").await, json!(["b1", "b2"]));
    assert_eq!(browser.eval("window.bob.readyState").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_an_origin_not_allowed_gets_nothing() {
    let allowed = PageServer::start(PAGE).await;
    let other = PageServer::start(PAGE).await;
    let mut config = edge_config("edge");
    config.origins = herald_edge::cors::AllowedOrigins::parse(&allowed.origin()).unwrap();
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut browser = open_app(&other, &edge.url()).await;

    let token = Claims::new("alice").hs256(SECRET);
    by_query_and_by_cookie(&mut browser, &token).await;
    // Refused (403 without CORS headers): the browser gives up for good.
    for name in ["byQuery", "byCookie"] {
        let closed = format!("window.{name}.readyState");
        browser.wait_for(&closed, 2.into(), WAIT).await;
    }
    let mut client = publisher(publish).await;
    publish_to_users(&mut client, &["alice"], "secret").await;
    let rejected = "herald_edge_rejects_total{reason=\"origin_not_allowed\"}";
    assert_eq!(edge.metric(rejected).await, 2.0);
    assert_eq!(
        edge.metric("herald_edge_connects_total").await,
        0.0,
        "no stream was opened for the page"
    );
    for name in ["byQuery", "byCookie"] {
        assert_eq!(datas(&mut browser, name).await, json!([]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_serves_tokens_in_the_query_never_cookies() {
    let page = PageServer::start(PAGE).await;
    let mut config = edge_config("edge");
    config.origins = herald_edge::cors::AllowedOrigins::Any;
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let mut browser = open_app(&page, &edge.url()).await;

    let token = Claims::new("alice").hs256(SECRET);
    by_query_and_by_cookie(&mut browser, &token).await;
    browser
        .wait_for("window.byQuery.readyState", 1.into(), WAIT)
        .await;
    browser
        .wait_for("window.byCookie.readyState", 2.into(), WAIT)
        .await;
    let mut client = publisher(publish).await;
    publish_to_users(&mut client, &["alice"], "hello").await;
    browser
        .wait_for("window.byQueryGot.length", 1.into(), WAIT)
        .await;
    assert_eq!(datas(&mut browser, "byQuery").await, json!(["hello"]));
    assert_eq!(datas(&mut browser, "byCookie").await, json!([]));
}
