//! `/herald.js` in headless Chromium against a real edge, NATS and
//! herald-publish: typed events, a token renewed before it expires with no
//! event lost across the switch, a stream re-created after a refusal
//! that a bare EventSource would never retry, and a `herald.disconnect`
//! obeyed: back after one that allows it, closed for good after one that
//! does not.

use std::time::Duration;

use herald_e2e::*;
use herald_proto::v1::DisconnectRequest;
use herald_proto::v1::control_client::ControlClient;
use herald_proto::v1::publish_request::Target;
use herald_testing::NatsServer;
use herald_testing::browser::Browser;
use herald_testing::token::{Claims, Sign, now};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Starts a `Herald` in `browser`'s page (the demo page, which loads
/// /herald.js) recording states, events and `getToken` calls; `getToken`
/// answers `window.nextToken`, after failing `failures` times.
async fn start_client(browser: &mut Browser, token: &str, next_token: &str, failures: u32) {
    browser
        .wait_for("typeof Herald", "function".into(), WAIT)
        .await;
    let script = format!(
        r#"(() => {{
          window.got = []; window.states = []; window.calls = 0; window.failures = {failures};
          window.nextToken = "{next_token}";
          const record = (e) => window.got.push({{ type: e.type, data: e.data, id: e.lastEventId }});
          window.client = new Herald("/v1/events", {{
            token: "{token}",
            getToken: async () => {{
              window.calls += 1;
              if (window.failures > 0) {{ window.failures -= 1; throw new Error("auth service down"); }}
              return window.nextToken;
            }},
            minDelay: 200, maxDelay: 2000,
          }});
          window.client.onstate = (s) => window.states.push(s);
          window.client.on("message", record).on("greeting", record);
          return true;
        }})()"#
    );
    assert_eq!(browser.eval(&script).await, true);
}

async fn publish_typed(
    client: &mut herald_proto::v1::publisher_client::PublisherClient<tonic::transport::Channel>,
    event: &str,
    data: &str,
) {
    let users = Target::users(["alice"]);
    publish(client, users, event, data).await.expect("publish");
}

fn datas(got: &Value) -> Vec<String> {
    got.as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_js_is_served_as_javascript() {
    // NATS alone, not a `Stack`: the edge runs as a process here.
    let nats = NatsServer::start();
    let edge = EdgeProcess::start(&nats.client_url(), None).await;
    let response = reqwest::get(format!("http://{}/herald.js", edge.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(
        headers["content-type"], "text/javascript; charset=utf-8",
        "browsers refuse a script of another type"
    );
    assert_eq!(headers["cache-control"], "public, max-age=300");
    let body = response.text().await.unwrap();
    assert!(body.contains("class Herald"), "{body}");
    assert!(body.contains("last_event_id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_js_delivers_typed_and_message_events() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    let edge = EdgeProcess::start(&stack.nats_url(), None).await;
    let token = Claims::new("alice").hs256(SECRET);
    // The demo page follows `greeting` too, and shows each event's type.
    let mut browser = Browser::open(&format!(
        "http://{}/demo?token={token}&type=greeting",
        edge.addr
    ))
    .await;
    browser
        .wait_for("window.herald.state", "open".into(), WAIT)
        .await;
    start_client(&mut browser, &token, &token, 0).await;
    browser
        .wait_for("window.client.state", "open".into(), WAIT)
        .await;

    let mut client = publisher(publish).await;
    publish_typed(&mut client, "greeting", "hi").await;
    publish_typed(&mut client, "", "plain").await;
    browser.wait_for("window.got.length", 2.into(), WAIT).await;
    let got = browser.eval("window.got").await;
    assert_eq!(got[0]["type"], "greeting");
    assert_eq!(got[0]["data"], "hi");
    assert_eq!(got[1]["type"], "message");
    assert_eq!(got[1]["data"], "plain");
    for event in got.as_array().unwrap() {
        assert!(event["id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    assert_eq!(
        browser.eval("window.client.lastEventId").await,
        got[1]["id"]
    );

    browser
        .wait_for("window.herald.events.length", 2.into(), WAIT)
        .await;
    assert_eq!(
        browser
            .eval("window.herald.events.map((e) => e.type)")
            .await,
        json!(["greeting", "message"])
    );
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('td.type')].map((td) => td.textContent)")
            .await,
        json!(["message", "greeting"]),
        "the page shows each type, newest first"
    );

    assert_eq!(
        browser
            .eval("window.client.close(), window.client.state")
            .await,
        "closed"
    );
    assert_eq!(
        browser.eval("window.calls").await,
        0,
        "a fresh token needs no renewal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_js_renews_the_token_before_it_expires_and_loses_nothing() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    let edge = EdgeProcess::start(&stack.nats_url(), None).await;
    // The edge ends this stream at `exp`; a bare EventSource would then
    // reconnect with it, get 401 and give up.
    let short_exp = now() + 6;
    let short = Claims::new("alice").expires_at(short_exp).hs256(SECRET);
    let long = Claims::new("alice").hs256(SECRET);
    let mut browser = Browser::open(&format!("http://{}/demo", edge.addr)).await;
    // The first renewal fails: the open stream keeps running meanwhile.
    start_client(&mut browser, &short, &long, 1).await;
    browser
        .wait_for("window.client.state", "open".into(), WAIT)
        .await;

    // Publish across the renewal and until the old token is refused even
    // with the edge's 5 s of `exp` leeway.
    let mut client = publisher(publish).await;
    let mut expected = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    while now() <= short_exp + 6 {
        tick.tick().await;
        let data = format!("e{}", expected.len());
        publish_typed(&mut client, "", &data).await;
        expected.push(data);
    }
    browser
        .wait_for("window.got.length", expected.len().into(), WAIT)
        .await;
    let got = browser.eval("window.got").await;
    assert_eq!(datas(&got), expected, "every event once, in order");
    let calls = browser.eval("window.calls").await.as_u64().unwrap();
    assert!(calls >= 2, "getToken was called again after it failed");
    assert_eq!(browser.eval("window.client.token").await, long.as_str());
    assert_eq!(browser.eval("window.client.state").await, "open");
    // Published after the old token died, still delivered.
    publish_typed(&mut client, "greeting", "after").await;
    browser
        .wait_for("window.got.length", (expected.len() + 1).into(), WAIT)
        .await;
    assert_eq!(
        browser.eval("window.got[window.got.length - 1].type").await,
        "greeting"
    );
    let states = browser.eval("window.states").await;
    assert!(
        !states.as_array().unwrap().iter().any(|s| s == "retrying"),
        "renewal happens before the edge refuses: {states}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_js_recreates_the_stream_after_a_refusal() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    let edge = EdgeProcess::start(&stack.nats_url(), None).await;
    let good = Claims::new("alice").hs256(SECRET);
    // Signed with another key: 401, which a bare EventSource never retries;
    // and the first getToken() throws.
    let bad = Claims::new("alice").hs256("some-other-secret-0123456789-0123456789");
    let mut client = publisher(publish).await;
    publish_typed(&mut client, "", "before").await;

    let mut browser = Browser::open(&format!("http://{}/demo", edge.addr)).await;
    start_client(&mut browser, &bad, &good, 1).await;
    browser
        .wait_for("window.client.state", "open".into(), WAIT)
        .await;
    let states = browser.eval("window.states").await;
    assert_eq!(
        states,
        json!(["retrying", "connecting", "retrying", "connecting", "open"]),
        "refused; renewal failed, retried; renewed and re-created"
    );
    assert_eq!(browser.eval("window.calls").await, 2);

    for i in 0..3 {
        publish_typed(&mut client, "", &format!("e{i}")).await;
    }
    browser.wait_for("window.got.length", 3.into(), WAIT).await;
    let got = browser.eval("window.got").await;
    assert_eq!(datas(&got), ["e0", "e1", "e2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_js_comes_back_after_a_disconnect_unless_told_not_to() {
    let stack = Stack::builder().publish(publish_config()).start().await;
    let publish = stack.publish();
    let edge = EdgeProcess::start(&stack.nats_url(), None).await;
    let token = Claims::new("alice").hs256(SECRET);
    let mut browser = Browser::open(&format!("http://{}/demo", edge.addr)).await;
    start_client(&mut browser, &token, &token, 0).await;
    browser
        .eval("window.client.on('herald.disconnect', (e) => window.got.push({ type: e.type, data: e.data, id: e.lastEventId })), true")
        .await;
    browser
        .wait_for("window.client.state", "open".into(), WAIT)
        .await;
    let mut control = ControlClient::connect(publish.url()).await.unwrap();
    let disconnect = |reconnect: bool| DisconnectRequest {
        user_ids: vec!["alice".into()],
        reason: format!("reconnect {reconnect}"),
        reconnect,
    };
    // Publish reaches the edges it knows of: this one, once alice's
    // streams (the client's and the demo page's own) are seen.
    herald_testing::eventually(WAIT, "publish to see alice", || async {
        let online = publish.metric("herald_publish_presence_users_online").await;
        (online == 1.0).then_some(())
    })
    .await;

    let mut client = publisher(publish).await;
    publish_typed(&mut client, "", "one").await;
    browser.wait_for("window.got.length", 1.into(), WAIT).await;
    let ended = control.disconnect(disconnect(true)).await.unwrap();
    assert!(ended.into_inner().streams >= 1);
    browser.wait_for("window.got.length", 2.into(), WAIT).await;
    // The browser reconnects by itself, from the last id.
    publish_typed(&mut client, "", "two").await;
    browser.wait_for("window.got.length", 3.into(), WAIT).await;
    assert_eq!(browser.eval("window.client.state").await, "open");

    let ended = control.disconnect(disconnect(false)).await.unwrap();
    assert!(ended.into_inner().streams >= 1);
    browser
        .wait_for("window.client.state", "closed".into(), WAIT)
        .await;
    assert_eq!(browser.eval("window.client.source").await, Value::Null);
    let got = browser.eval("window.got").await;
    let seen: Vec<(&str, &str)> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["data"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("message", "one"),
            (
                "herald.disconnect",
                r#"{"reason":"reconnect true","reconnect":true}"#
            ),
            ("message", "two"),
            (
                "herald.disconnect",
                r#"{"reason":"reconnect false","reconnect":false}"#
            ),
        ]
    );
    let states = browser.eval("window.states").await;
    assert_eq!(
        states.as_array().unwrap().last().unwrap(),
        "closed",
        "{states}"
    );
}
