//! Hostile input on a single node: bad tokens, forbidden and malformed
//! topics, hostile ids, payloads with line breaks, oversized payloads.

use std::time::Duration;

use herald_e2e::*;
use herald_proto::v1::publish_request::Target;
use herald_testing::eventually;
use herald_testing::sse::{QUIET, SseStream};
use herald_testing::token::{Claims, Sign, now};
use jsonwebtoken::Algorithm;

async fn stack() -> Stack {
    Stack::start(edge_config("edge")).await
}

/// GETs the events URL with `token` as bearer, expecting a JSON error.
async fn refused(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(content_type, "application/json");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (status, body["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn bad_tokens_get_401_json() {
    let s = stack().await;
    let url = events_url(s.edge(), &[]);
    let expired = Claims::new("alice").expires_at(now() - 120).hs256(SECRET);
    let wrong_key = Claims::new("alice").hs256("not-the-secret-at-all");
    let empty_sub = Claims::new("").hs256(SECRET);
    let control_sub = Claims::new("a\u{0}b").hs256(SECRET);
    let alg_none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
    // Within the 16 KiB head limit (larger heads get 431: listeners.rs).
    let huge = "x".repeat(12_000);
    assert_eq!(refused(&url, None).await, (401, "missing_token".into()));
    assert_eq!(
        refused(&url, Some(&expired)).await,
        (401, "token_expired".into())
    );
    for bad in [
        wrong_key.as_str(),
        &empty_sub,
        &control_sub,
        alg_none,
        "garbage",
        &huge,
    ] {
        assert_eq!(
            refused(&url, Some(bad)).await,
            (401, "invalid_token".into()),
            "{bad:.40}"
        );
    }
    // Query and cookie tokens are checked the same way.
    assert_eq!(
        refused(&format!("{url}access_token={expired}"), None)
            .await
            .0,
        401
    );
    let ok = Claims::new("alice").hs256(SECRET);
    let response = reqwest::Client::new()
        .get(&url)
        .header("cookie", format!("herald_token={ok}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = reqwest::get(format!("{url}access_token={ok}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn topics_outside_the_claim_or_malformed_are_refused() {
    let s = stack().await;
    let token = Claims::new("alice")
        .topics(&["news", "room.*"])
        .hs256(SECRET);
    let forbidden = ["sports", "news2", "roomx"];
    for topic in forbidden {
        assert_eq!(
            refused(&events_url(s.edge(), &[topic]), Some(&token)).await,
            (403, "topic_not_allowed".into())
        );
    }
    for topic in ["", "room.*", "room. x", &"room.".repeat(100)] {
        assert_eq!(
            refused(&events_url(s.edge(), &[topic]), Some(&token)).await,
            (400, "invalid_topic".into()),
            "{topic:?}"
        );
    }
    let all = Claims::new("alice").topics(&["*"]).hs256(SECRET);
    let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        refused(&events_url(s.edge(), &many), Some(&all)).await,
        (400, "too_many_topics".into())
    );
    let ok = SseStream::open(
        &reqwest::Client::new(),
        &events_url(s.edge(), &["news", "room.1"]),
        &token,
    )
    .await;
    assert_eq!(ok.headers["content-type"], "text/event-stream");
    assert_eq!(ok.headers["cache-control"], "no-store");
    assert_eq!(ok.headers["x-accel-buffering"], "no");
}

/// A topic named after a hostile id (topics may not hold spaces or `*`).
fn topic_for(id: &str) -> String {
    format!("t.{}", id.replace(' ', "_").replace('*', "star"))
}

#[tokio::test]
async fn hostile_ids_and_topics_never_cross() {
    let s = stack().await;
    let http = reqwest::Client::new();
    let ids = [
        "a.>",
        "a.b",
        ">",
        "*",
        "a",
        "a b",
        "a~2Eb",
        "用户",
        "🦀",
        "a\u{200b}",
    ];
    let mut streams = Vec::new();
    for id in ids {
        let token = Claims::new(id).topics(&["*"]).hs256(SECRET);
        let topic = topic_for(id);
        streams.push((
            id,
            SseStream::open(&http, &events_url(s.edge(), &[&topic]), &token).await,
        ));
    }
    let mut client = s.publisher().await;
    for id in ids {
        publish_to_users(&mut client, &[id], &format!("user:{id}")).await;
        publish_to_topic(&mut client, &topic_for(id), &format!("topic:{id}")).await;
    }
    for (id, stream) in &mut streams {
        assert_eq!(stream.next().await.data, format!("user:{id}"), "{id:?}");
        assert_eq!(stream.next().await.data, format!("topic:{id}"), "{id:?}");
        stream.assert_silent(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn payloads_arrive_as_published_through_a_spec_parser() {
    let s = stack().await;
    let token = Claims::new("alice").hs256(SECRET);
    let mut stream =
        SseStream::open(&reqwest::Client::new(), &events_url(s.edge(), &[]), &token).await;
    let mut client = s.publisher().await;
    // LF line breaks arrive byte for byte; the SSE format carries CR and
    // CRLF as LF, so that is what a spec-following parser yields for them.
    let payloads = [
        "plain",
        "two\nlines",
        "\nleading and trailing\n",
        "blank\n\nline",
        "crlf\r\nline",
        "bare\rcr",
        "id: 7\nevent: admin\ndata: injected\n\nretry: 1",
        "  spaces kept",
        "",
        ": not a comment",
        "{\"json\": [1, 2]}",
    ];
    for (i, payload) in payloads.iter().enumerate() {
        let event = if i % 2 == 0 { "" } else { "typed" };
        let users = Target::users(["alice"]);
        publish(&mut client, users, event, payload).await.unwrap();
    }
    for (i, payload) in payloads.iter().enumerate() {
        let event = stream.next().await;
        assert_eq!(
            event.data,
            payload.replace("\r\n", "\n").replace('\r', "\n"),
            "{payload:?}"
        );
        assert_eq!(event.event, if i % 2 == 0 { "message" } else { "typed" });
        assert_ne!(event.id, "7", "no payload can set an id");
        assert!(
            herald_domain::cursor::Cursor::decode(&event.id).is_ok(),
            "{:?}",
            event.id
        );
    }
    stream.assert_silent(QUIET).await;
}

#[tokio::test]
async fn bad_publish_requests_are_invalid_argument_and_publish_nothing() {
    let s = stack().await;
    let token = Claims::new("alice").hs256(SECRET);
    let mut stream =
        SseStream::open(&reqwest::Client::new(), &events_url(s.edge(), &[]), &token).await;
    let mut client = s.publisher().await;
    let users = |ids: &[&str]| Target::users(ids);
    let too_big = "x".repeat(64 * 1024 + 1);
    let cases: Vec<(Target, &str, &str, &str)> = vec![
        (users(&["alice"]), "", &too_big, "limit"),
        (users(&[]), "", "x", "no target"),
        (users(&["alice", ""]), "", "x", "user_ids[1]"),
        (users(&["alice"]), "herald.reset", "x", "reserved"),
        (users(&["alice"]), "a\nid: 1", "x", "event"),
        (Target::Topic("bad topic".into()), "", "x", "topic"),
        (Target::Topic(String::new()), "", "x", "topic"),
    ];
    for (target, event, data, needle) in cases {
        let status = publish(&mut client, target, event, data).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{}",
            status.message()
        );
        assert!(
            status.message().contains(needle),
            "{:?} lacks {needle:?}",
            status.message()
        );
    }
    // A payload far beyond any limit is refused too, and the server lives on.
    let huge = "x".repeat(8 * 1024 * 1024);
    let status = publish(&mut client, users(&["alice"]), "", &huge)
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{status:?}"
    );
    stream.assert_silent(QUIET).await;
    publish_to_users(&mut client, &["alice"], "still fine").await;
    assert_eq!(stream.next().await.data, "still fine");
    let invalid = s
        .publish()
        .metric("herald_publish_requests_total{outcome=\"invalid_argument\"}")
        .await;
    assert!(invalid >= 7.0, "{invalid}");
}

#[tokio::test]
async fn public_key_tokens_verify_by_their_algorithm() {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../herald-testing/keys");
    for (alg, private, public) in [
        (Algorithm::RS256, "rsa.pem", "rsa.pub.pem"),
        (Algorithm::ES256, "ec.pem", "ec.pub.pem"),
        (Algorithm::EdDSA, "ed.pem", "ed.pub.pem"),
    ] {
        let public_path = keys.join(public);
        let args = <herald_edge::Args as clap::Parser>::parse_from([
            "herald-edge",
            "--jwt-public-key",
            public_path.to_str().unwrap(),
        ]);
        let s = Stack::start(args.validate().unwrap()).await;
        let pem = std::fs::read(keys.join(private)).unwrap();
        let token = Claims::new("alice").sign_pem(alg, &pem);
        let mut stream =
            SseStream::open(&reqwest::Client::new(), &events_url(s.edge(), &[]), &token).await;
        let mut client = s.publisher().await;
        publish_to_users(&mut client, &["alice"], &format!("{alg:?}")).await;
        assert_eq!(stream.next().await.data, format!("{alg:?}"));
        // An HS256 token is refused by a public-key-only edge.
        let hs = Claims::new("alice").hs256(SECRET);
        assert_eq!(
            refused(&events_url(s.edge(), &[]), Some(&hs)).await.0,
            401,
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn connection_limits_answer_clearly() {
    let mut config = edge_config("edge");
    config.max_connections = 3;
    config.max_connections_per_user = 2;
    let s = Stack::start(config).await;
    let http = reqwest::Client::new();
    let url = events_url(s.edge(), &[]);
    let alice = Claims::new("alice").hs256(SECRET);
    let _a1 = SseStream::open(&http, &url, &alice).await;
    let _a2 = SseStream::open(&http, &url, &alice).await;
    assert_eq!(
        refused(&url, Some(&alice)).await,
        (429, "too_many_connections".into())
    );
    let _b = SseStream::open(&http, &url, &Claims::new("bob").hs256(SECRET)).await;
    let response = http
        .get(&url)
        .bearer_auth(Claims::new("carol").hs256(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    drop(_a1);
    eventually(Duration::from_secs(5), "a freed slot", || async {
        let r = http
            .get(&url)
            .bearer_auth(Claims::new("carol").hs256(SECRET))
            .send()
            .await
            .unwrap();
        (r.status() == 200).then_some(())
    })
    .await;
}
