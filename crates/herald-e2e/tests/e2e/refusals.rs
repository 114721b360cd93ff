//! Refusals an EventSource survives: a transient refusal (draining, node
//! full, NATS down, per-user limits) to a client that accepts
//! `text/event-stream` is a 200 stream with a jittered `retry:` and
//! `: closing: <code>` that ends at once, since an EventSource gives up for
//! good on any error status. Other clients get the JSON errors; 401/403/400
//! stay JSON for everyone. Every refusal is counted by reason.

use std::ops::RangeInclusive;
use std::time::Duration;

use herald_e2e::*;
use herald_testing::eventually;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};
use reqwest::header::HeaderMap;

/// What browsers' and Node's EventSource send.
const EVENT_STREAM: &str = "text/event-stream";

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// GETs `url`, reading the whole body: a reply that does not end fails.
async fn get(url: &str, token: Option<&str>, accept: Option<&str>) -> Reply {
    let mut request = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(30));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(a) = accept {
        request = request.header("accept", a);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("the body ends");
    Reply {
        status,
        headers,
        body,
    }
}

/// Asserts a come-back stream closing for `code`; returns its `retry:`,
/// checked to be within `bounds` (ms).
fn comes_back(reply: &Reply, code: &str, bounds: RangeInclusive<u64>) -> u64 {
    let body = &reply.body;
    assert_eq!(reply.status, 200, "{body}");
    assert_eq!(reply.headers["content-type"], EVENT_STREAM);
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.headers["x-accel-buffering"], "no");
    let lines: Vec<&str> = body.lines().collect();
    assert!(
        lines.contains(&format!(": closing: {code}").as_str()),
        "{body}"
    );
    let only_hints = |l: &&str| l.is_empty() || l.starts_with(':') || l.starts_with("retry: ");
    assert!(lines.iter().all(only_hints), "no event, no id: {body:?}");
    let retry: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("retry: "))
        .expect("a retry: line")
        .parse()
        .unwrap();
    assert!(bounds.contains(&retry), "retry {retry} not in {bounds:?}");
    retry
}

/// Asserts a JSON error; returns its status and code.
fn json_error(reply: &Reply) -> (u16, String) {
    assert_eq!(
        reply.headers["content-type"], "application/json",
        "{}",
        reply.body
    );
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    (reply.status, body["error"].as_str().unwrap().to_owned())
}

fn rejects(reason: &str) -> String {
    format!("herald_edge_rejects_total{{reason=\"{reason}\"}}")
}

fn token(user: &str) -> String {
    Claims::new(user).hs256(SECRET)
}

#[tokio::test]
async fn full_node_and_per_user_limit_tell_event_sources_to_come_back() {
    let mut config = edge_config("edge");
    config.max_connections = 2;
    config.max_connections_per_user = 1;
    let s = Stack::start(config).await;
    let http = reqwest::Client::new();
    let url = events_url(s.edge(), &[]);
    let alice = SseStream::open(&http, &url, &token("alice")).await;

    let again = get(&url, Some(&token("alice")), Some(EVENT_STREAM)).await;
    comes_back(&again, "too_many_connections", 5000..=10_000);
    let json = get(&url, Some(&token("alice")), None).await;
    assert_eq!(json_error(&json), (429, "too_many_connections".into()));
    assert_eq!(json.headers["retry-after"], "5");
    assert_eq!(s.edge().metric(&rejects("user_limit")).await, 2.0);

    let _bob = SseStream::open(&http, &url, &token("bob")).await;
    let full = get(&url, Some(&token("carol")), Some(EVENT_STREAM)).await;
    comes_back(&full, "node_full", 5000..=10_000);
    // Accept lists are honoured as lists, whatever else they name.
    let listed = "application/json;q=0.9, text/event-stream";
    comes_back(
        &get(&url, Some(&token("carol")), Some(listed)).await,
        "node_full",
        5000..=10_000,
    );
    for accept in [
        None,
        Some("application/json"),
        Some("text/event-stream;q=0"),
    ] {
        let json = get(&url, Some(&token("carol")), accept).await;
        assert_eq!(json_error(&json), (503, "node_full".into()), "{accept:?}");
        assert_eq!(json.headers["retry-after"], "5");
    }
    assert_eq!(s.edge().metric(&rejects("node_full")).await, 5.0);

    // Once a slot frees, the same request opens a real stream.
    drop(alice);
    eventually(Duration::from_secs(10), "a freed slot", || async {
        let mut request = http.get(&url).bearer_auth(token("carol"));
        request = request.header("accept", EVENT_STREAM);
        let response = request.send().await.unwrap();
        let open = response.status() == 200 && response.content_length().is_none();
        open.then_some(())
    })
    .await;
}

/// The shipped nginx config retries a refused connect on another edge and
/// answers the EventSource itself; it asks for the status to see the
/// refusal. Any other value of the header changes nothing.
#[tokio::test]
async fn a_proxy_that_retries_elsewhere_gets_refusals_as_statuses() {
    let mut config = edge_config("edge");
    config.max_connections = 1;
    let s = Stack::start(config).await;
    let http = reqwest::Client::new();
    let url = events_url(s.edge(), &[]);
    let _alice = SseStream::open(&http, &url, &token("alice")).await;
    let refused = |value: &'static str| {
        let request = http
            .get(&url)
            .bearer_auth(token("bob"))
            .header("accept", EVENT_STREAM)
            .header("herald-refusals", value);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.text().await.unwrap();
            Reply {
                status,
                headers,
                body,
            }
        }
    };
    let reply = refused("status").await;
    assert_eq!(json_error(&reply), (503, "node_full".into()));
    assert_eq!(reply.headers["retry-after"], "5");
    for other in ["stream", "", "status, status"] {
        comes_back(&refused(other).await, "node_full", 5000..=10_000);
    }
    assert_eq!(s.edge().metric(&rejects("node_full")).await, 4.0);
}

#[tokio::test]
async fn the_connect_rate_limit_tells_event_sources_to_come_back() {
    let mut config = edge_config("edge");
    config.connect_rate = herald_edge::ratelimit::ConnectRate {
        per_second: 0.2,
        burst: 1,
    };
    let s = Stack::start(config).await;
    let url = events_url(s.edge(), &[]);
    drop(SseStream::open(&reqwest::Client::new(), &url, &token("alice")).await);
    let limited = get(&url, Some(&token("alice")), Some(EVENT_STREAM)).await;
    // Retry-After is 1..=5 s here: the stream's hint is 1× to 2× of it.
    comes_back(&limited, "too_many_connects", 1000..=10_000);
    let json = get(&url, Some(&token("alice")), None).await;
    assert_eq!(json_error(&json), (429, "too_many_connects".into()));
    assert!(json.headers.contains_key("retry-after"));
    assert_eq!(s.edge().metric(&rejects("too_many_connects")).await, 2.0);
}

#[tokio::test]
async fn a_draining_edge_spreads_event_sources_out() {
    let mut config = edge_config("edge");
    // Open streams keep the edge draining (and answering) meanwhile.
    config.drain_window = Duration::from_secs(60);
    config.drain_grace = Duration::from_secs(60);
    let s = Stack::start(config).await;
    let http = reqwest::Client::new();
    let url = events_url(s.edge(), &[]);
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(SseStream::open(&http, &url, &token(&format!("held-{i}"))).await);
    }
    s.edge().signal_shutdown();
    eventually(Duration::from_secs(10), "draining", || async {
        let reply = get(&url, Some(&token("late")), None).await;
        (reply.status == 503).then_some(())
    })
    .await;
    let mut retries = Vec::new();
    for _ in 0..20 {
        let reply = get(&url, Some(&token("late")), Some(EVENT_STREAM)).await;
        retries.push(comes_back(&reply, "draining", 1000..=2000));
    }
    retries.sort_unstable();
    retries.dedup();
    assert!(retries.len() > 1, "jittered, not all the same: {retries:?}");
    let json = get(&url, Some(&token("late")), None).await;
    assert_eq!(json_error(&json), (503, "draining".into()));
    assert_eq!(json.headers["retry-after"], "1");
    // Each refusal counted once: the ones while waiting, 20, and 1.
    assert!(s.edge().metric(&rejects("draining")).await >= 22.0);
    drop(held);
}

#[tokio::test]
async fn an_edge_without_nats_tells_event_sources_to_come_back() {
    let mut s = Stack::start(edge_config("edge")).await;
    let url = events_url(s.edge(), &[]);
    s.nats.nodes[0].kill();
    let reply = eventually(Duration::from_secs(60), "a refusal", || async {
        let reply = get(&url, Some(&token("alice")), Some(EVENT_STREAM)).await;
        reply.body.contains(": closing:").then_some(reply)
    })
    .await;
    comes_back(&reply, "nats_unavailable", 2000..=4000);
    let before = s.edge().metric(&rejects("unavailable")).await;
    assert!(before >= 1.0);
    let json = get(&url, Some(&token("alice")), None).await;
    assert_eq!(json_error(&json), (503, "nats_unavailable".into()));
    assert_eq!(json.headers["retry-after"], "2");
    assert_eq!(s.edge().metric(&rejects("unavailable")).await, before + 1.0);
}

#[tokio::test]
async fn final_refusals_stay_json_for_event_sources() {
    let s = Stack::start(edge_config("edge")).await;
    let url = events_url(s.edge(), &[]);
    let news_only = Claims::new("alice").topics(&["news"]).hs256(SECRET);
    let cases = [
        (url.clone(), None, 401, "missing_token"),
        (
            url.clone(),
            Some("not.a.jwt".to_owned()),
            401,
            "invalid_token",
        ),
        (
            events_url(s.edge(), &["sports"]),
            Some(news_only.clone()),
            403,
            "topic_not_allowed",
        ),
        (
            events_url(s.edge(), &["a b"]),
            Some(news_only.clone()),
            400,
            "invalid_topic",
        ),
        (
            format!("{url}last_event_id=garbage%21"),
            Some(news_only),
            400,
            "invalid_cursor",
        ),
    ];
    for (url, token, status, code) in cases {
        let reply = get(&url, token.as_deref(), Some(EVENT_STREAM)).await;
        assert_eq!(json_error(&reply), (status, code.to_owned()), "{url}");
        assert!(!reply.headers.contains_key("retry-after"));
    }
    assert_eq!(s.edge().metric(&rejects("unauthorized")).await, 2.0);
    assert_eq!(s.edge().metric(&rejects("forbidden")).await, 1.0);
    assert_eq!(s.edge().metric(&rejects("bad_request")).await, 2.0);
}

/// Chromium's own EventSource, refused because the node is full, keeps
/// reconnecting (never `CLOSED`) and gets its event once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_survives_a_full_node() {
    let mut config = edge_config("edge");
    config.max_connections = 1;
    let s = Stack::start(config).await;
    let http = reqwest::Client::new();
    let bob = SseStream::open(&http, &events_url(s.edge(), &[]), &token("bob")).await;
    // Any page of the edge's origin will do: the script is evaluated in it.
    let page = format!("{}/nowhere", s.edge().url());
    let mut browser = herald_testing::browser::Browser::open(&page).await;
    let mut waited = 0;
    while browser.eval("location.origin").await != s.edge().url() {
        assert!(waited < 400, "the page did not load within 20 s");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let script = format!(
        "window.t = {{ errors: 0, closed: false, events: [] }};
         window.es = new EventSource('/v1/events?access_token={}');
         es.onerror = () => {{ t.errors++; t.closed ||= es.readyState === 2; }};
         es.onmessage = (e) => t.events.push(e.data);
         true",
        token("alice")
    );
    assert_eq!(browser.eval(&script).await, true);
    let mut waited = 0;
    while browser.eval("window.t.errors").await == 0 {
        assert!(waited < 400, "no refusal within 20 s");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = s.edge().metrics().await;
    let refused = sample_value(&metrics, &rejects("node_full"));
    assert!(refused >= 1.0, "{metrics}");
    assert_eq!(browser.eval("window.t.closed").await, false);
    assert_eq!(browser.eval("window.es.readyState").await, 0, "CONNECTING");

    drop(bob);
    let mut client = s.publisher().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    // It comes back within 2 × Retry-After; what is published before it
    // has a stream is not for it, so publish until one arrives.
    while browser.eval("window.t.events.length").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no event after the slot freed"
        );
        publish_to_users(&mut client, &["alice"], "welcome back").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(browser.eval("window.t.events[0]").await, "welcome back");
    assert_eq!(browser.eval("window.t.closed").await, false);
    assert_eq!(browser.eval("window.es.readyState").await, 1, "OPEN");
}

/// NATS refusing a subscription (a per-connection limit here) is a
/// transient refusal of the connects that need it: no stream answers 200
/// and then stays deaf.
#[tokio::test]
async fn a_subscription_limit_on_nats_refuses_connects_and_leaves_none_deaf() {
    if !lean_subscriber("refusal by subscription") {
        return;
    }
    let stack = Stack::builder()
        .nats_config("max_subscriptions: 25\n")
        .publish(publish_config())
        .edge(edge_config("edge"))
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let http = reqwest::Client::new();
    let url = events_url(edge, &[]);
    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..60 {
        let user = format!("user{i}");
        let response = http
            .get(&url)
            .bearer_auth(token(&user))
            .header("accept", EVENT_STREAM)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        if response.content_length().is_some() {
            // Ended at once: the come-back stream.
            let reply = Reply {
                status: 200,
                headers: response.headers().clone(),
                body: response.text().await.unwrap(),
            };
            comes_back(&reply, "subscription_refused", 5000..=10_000);
            refused += 1;
        } else {
            open.push((user, SseStream::from_response(response).await));
        }
    }
    // The lean connection holds 25: one per user stream.
    assert_eq!((open.len(), refused), (25, 35));
    let mut client = publisher(publish).await;
    for (user, stream) in &mut open {
        publish_to_users(&mut client, &[user.as_str()], user).await;
        assert_eq!(stream.next().await.data, *user, "every open stream hears");
    }
    let refusals = "herald_edge_nats_subscription_refusals_total{reason=\"max_subscriptions\"}";
    assert_eq!(edge.metric(refusals).await, 35.0);
    assert_eq!(edge.metric(&rejects("subscription_refused")).await, 35.0);
    // A refused subject is asked for again by its next connect: with room
    // made, it is taken.
    drop(open.pop());
    eventually(Duration::from_secs(10), "room for user59", || async {
        let response = http
            .get(&url)
            .bearer_auth(token("user59"))
            .header("accept", EVENT_STREAM)
            .send()
            .await
            .unwrap();
        response
            .content_length()
            .is_none()
            .then_some(SseStream::from_response(response))
    })
    .await
    .await;
}

/// A user subject the edge's NATS user may not subscribe to: its connects
/// are refused, transiently, and the others flow. When a reload withdraws
/// a subject already held, its streams end with a come-back hint.
#[tokio::test]
async fn a_subject_nats_denies_ends_its_streams_and_refuses_its_connects() {
    if !lean_subscriber("refusal by subscription") {
        return;
    }
    let users = |deny: &str| {
        format!(
            "authorization {{ users: [ {{ user: herald, password: \"s3cret\", permissions: {{ subscribe: {{ deny: [{deny}] }} }} }} ] }}\n"
        )
    };
    // Started by hand: the services log in with credentials in the URL
    // (a stack's log in through `NatsSecurity`).
    let nats = herald_testing::NatsServer::start_with(&users("\"herald.u.mallory\""));
    let url = nats
        .client_url()
        .replace("nats://", "nats://herald:s3cret@");
    let publish = start_publish(&url, herald_publish::Config::defaults("p")).await;
    let edge = start_edge(&url, edge_config("edge")).await;
    let http = reqwest::Client::new();
    let events = events_url(&edge, &[]);
    let mallory = get(&events, Some(&token("mallory")), Some(EVENT_STREAM)).await;
    comes_back(&mallory, "subscription_refused", 5000..=10_000);
    let json = get(&events, Some(&token("mallory")), None).await;
    assert_eq!(json_error(&json), (503, "subscription_refused".into()));

    let mut alice = Raw::open(&http, &events, &token("alice")).await;
    let mut bob = SseStream::open(&http, &events, &token("bob")).await;
    let mut client = publisher(&publish).await;
    publish_to_users(&mut client, &["alice"], "hi alice").await;
    alice.until("data: hi alice\n").await;

    nats.rewrite(&users("\"herald.u.mallory\", \"herald.u.alice\""), &[]);
    nats.reload();
    // Alice's stream ends with a come-back hint; bob's goes on.
    let rest = alice.rest().await;
    assert!(
        rest.contains(": closing: subscription_refused\n"),
        "{rest:?}"
    );
    assert!(rest.contains("retry: "), "{rest:?}");
    publish_to_users(&mut client, &["bob"], "hi bob").await;
    assert_eq!(bob.next().await.data, "hi bob");
    let closes = "herald_edge_closes_total{reason=\"subscription_refused\"}";
    eventually(Duration::from_secs(10), "alice's close counted", || async {
        (edge.metric(closes).await == 1.0).then_some(())
    })
    .await;
    let refusals = "herald_edge_nats_subscription_refusals_total{reason=\"permissions\"}";
    assert_eq!(
        edge.metric(refusals).await,
        3.0,
        "mallory twice, alice once"
    );
}

/// A stream read as raw text, comments and all.
struct Raw {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    seen: String,
}

impl Raw {
    async fn open(http: &reqwest::Client, url: &str, token: &str) -> Self {
        let response = http.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        Self {
            body: Box::pin(response.bytes_stream()),
            seen: String::new(),
        }
    }

    /// Reads until `needle` was seen (within 10 s).
    async fn until(&mut self, needle: &str) {
        use futures::StreamExt;
        let reading = async {
            while !self.seen.contains(needle) {
                let chunk = self.body.next().await.expect("open").unwrap();
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", self.seen));
    }

    /// What comes until the stream ends (within 10 s).
    async fn rest(&mut self) -> String {
        use futures::StreamExt;
        let mut rest = String::new();
        let reading = async {
            while let Some(Ok(chunk)) = self.body.next().await {
                rest.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .unwrap_or_else(|_| panic!("the stream did not end"));
        rest
    }
}
