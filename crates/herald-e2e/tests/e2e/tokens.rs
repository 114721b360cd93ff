//! Tokens checked fully on a real edge (`aud`, `iss`, `nbf`), a stream
//! ended at its token's `exp` even when its client is not reading, and
//! followed subjects whose cursor keys collide refused rather than mixed up.

use std::collections::HashMap;
use std::time::Duration;

use herald_domain::cursor::key;
use herald_domain::subject::{Topic, UserId};
use herald_e2e::*;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign, now};

const AUDIENCE: &str = "herald-test";
const ISSUER: &str = "https://id.example.com/";

/// An edge config from flags, as an operator would give them.
fn config(flags: &[&str]) -> herald_edge::Config {
    let args = ["herald-edge", "--jwt-secret", SECRET, "--node-id", "edge"]
        .iter()
        .chain(flags);
    <herald_edge::Args as clap::Parser>::parse_from(args)
        .validate()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Status, error code and message of a GET with `token`.
async fn answer(url: &str, token: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        return (200, String::new(), String::new());
    }
    let body: serde_json::Value = response.json().await.unwrap();
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
    (status, field("error"), field("message"))
}

#[tokio::test]
async fn audience_and_issuer_are_required_when_configured() {
    let flags = ["--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER];
    let stack = Stack::builder().edge(config(&flags)).start().await;
    let edge = stack.edge();
    let url = events_url(edge, &[]);
    let alice = || Claims::new("alice");
    let accepted = [
        alice().audience(AUDIENCE).issuer(ISSUER),
        alice().audiences(&["other-app", AUDIENCE]).issuer(ISSUER),
    ];
    for claims in accepted {
        let (status, code, message) = answer(&url, &claims.hs256(SECRET)).await;
        assert_eq!(status, 200, "{claims:?}: {code} {message}");
    }
    // An ID token for another application, or from another issuer, signed
    // by the same key: refused, saying which claim is wrong.
    let refused = [
        (alice().issuer(ISSUER), "`aud`"),
        (alice().audience("other-app").issuer(ISSUER), "`aud`"),
        (alice().audiences(&["other-app"]).issuer(ISSUER), "`aud`"),
        (alice().audiences(&[]).issuer(ISSUER), "`aud`"),
        (alice().audience(AUDIENCE), "`iss`"),
        (
            alice().audience(AUDIENCE).issuer("https://evil.example/"),
            "`iss`",
        ),
    ];
    for (claims, names) in refused {
        let (status, code, message) = answer(&url, &claims.hs256(SECRET)).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_token"),
            "{claims:?}"
        );
        assert!(message.contains(names), "{claims:?}: {message}");
    }
}

#[tokio::test]
async fn nbf_in_the_future_is_refused_beyond_the_leeway() {
    let stack = Stack::builder()
        .edge(config(&["--jwt-leeway", "30s"]))
        .start()
        .await;
    let edge = stack.edge();
    let url = events_url(edge, &[]);
    // Minted by a clock 10 s ahead: within the leeway.
    let skewed = Claims::new("alice").not_before(now() + 10);
    assert_eq!(answer(&url, &skewed.hs256(SECRET)).await.0, 200);
    let early = Claims::new("alice").not_before(now() + 120);
    let (status, code, message) = answer(&url, &early.hs256(SECRET)).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    assert!(message.contains("`nbf`"), "{message}");
    let past = Claims::new("alice").not_before(now() - 60);
    assert_eq!(answer(&url, &past.hs256(SECRET)).await.0, 200);
}

/// A client that stopped reading, its socket full and a write waiting:
/// the stream still ends at the token's `exp` (slot, subscription and
/// count released then), and only its socket waits for the write timeout.
#[tokio::test]
async fn the_close_at_exp_does_not_wait_for_a_client_that_is_not_reading() {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(6);
    let mut config = edge_config("edge");
    config.write_timeout = WRITE_TIMEOUT;
    config.heartbeat = Duration::from_secs(1);
    config.max_connections_per_user = 1;
    let stack = Stack::start(config).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let subject = UserId::parse("deaf").unwrap().subject();

    let started = tokio::time::Instant::now();
    let exp = now() + 4;
    let token = Claims::new("deaf").expires_at(exp).hs256(SECRET);
    let deaf = stalled_client(edge.addr, &token, "/v1/events").await;
    let mut client = publisher(publish).await;
    let payload = "x".repeat(60 * 1024);
    for _ in 0..120 {
        publish_ephemeral(&mut client, &["deaf"], &payload).await;
    }
    assert!(stack.nats().client_subjects().await.contains(&subject));

    let closes = |reason: &str| format!("herald_edge_closes_total{{reason=\"{reason}\"}}");
    let (expired, write_timeout) = (closes("token_expired"), closes("write_timeout"));
    herald_testing::eventually(Duration::from_secs(10), "the close at exp", || async {
        (edge.metric(&expired).await == 1.0).then_some(())
    })
    .await;
    let closed = started.elapsed();
    assert!(
        closed < Duration::from_secs(5),
        "closed {closed:?} after the connect"
    );
    // The stream is gone while its socket still waits for the client.
    assert_eq!(edge.metric("herald_edge_connections").await, 0.0);
    assert_eq!(edge.metric("herald_edge_sockets_open").await, 1.0);
    herald_testing::eventually(Duration::from_secs(5), "the subscription gone", || async {
        (!stack.nats().client_subjects().await.contains(&subject)).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    let again = Claims::new("deaf").hs256(SECRET);
    let back = SseStream::open(&http, &events_url(edge, &[]), &again).await;
    drop(back);

    // The socket goes within the write timeout (and a heartbeat step),
    // counted once, as the close at exp.
    let timed_out = WRITE_TIMEOUT + Duration::from_secs(4);
    herald_testing::eventually(timed_out, "the socket closed", || async {
        (edge.metric("herald_edge_sockets_open").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(edge.metric(&expired).await, 1.0);
    assert_eq!(edge.metric(&write_timeout).await, 0.0);
    drop(deaf);
}

/// Two topic names whose live subjects share a cursor key: a birthday
/// search over generated names (`room-8699` and `room-526476`; anyone can
/// find such a pair in seconds).
fn colliding_topics() -> (String, String) {
    let mut seen: HashMap<u32, String> = HashMap::new();
    for i in 0u32.. {
        let name = format!("room-{i}");
        let subject = Topic::parse(&name).unwrap().subject();
        if let Some(other) = seen.insert(key(&subject), name.clone()) {
            return (other, name);
        }
    }
    unreachable!("a 32-bit key collides within 2^32 + 1 names")
}

#[tokio::test]
async fn topics_whose_cursor_keys_collide_cannot_be_followed_together() {
    let (a, b) = colliding_topics();
    let subject = |t: &str| Topic::parse(t).unwrap().subject();
    assert_eq!(key(&subject(&a)), key(&subject(&b)), "{a} {b}");

    let stack = Stack::builder().edge(edge_config("edge")).start().await;
    let edge = stack.edge();
    let token = Claims::new("alice")
        .topics(&["room-*", "news"])
        .hs256(SECRET);
    let (status, code, message) = answer(&events_url(edge, &[&a, "news", &b]), &token).await;
    assert_eq!((status, code.as_str()), (400, "subject_collision"));
    assert!(
        message.contains(&format!("{a:?}")) && message.contains(&format!("{b:?}")),
        "{message}"
    );
    assert!(message.contains("rename"), "{message}");
    // Each alone is fine.
    let http = reqwest::Client::new();
    let _a = SseStream::open(&http, &events_url(edge, &[&a]), &token).await;
    let _b = SseStream::open(&http, &events_url(edge, &[&b]), &token).await;
}
