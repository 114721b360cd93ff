//! HTTP publish on herald-publish's gRPC port: `POST /v1/publish` and
//! `POST /v1/publish:batch` in proto3 JSON, behind the API token, with
//! JSON errors for hostile bodies, and 503 while NATS is down.

use std::time::{Duration, Instant};

use herald_e2e::*;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};
use serde_json::{Value, json};

const TOKEN: &str = "http-publish-token-0123";

/// herald-publish with [`TOKEN`], then `configure`d.
fn publish_with_token(
    configure: impl FnOnce(&mut herald_publish::Config),
) -> herald_publish::Config {
    let mut config = publish_config();
    config.api_token = Some(TOKEN.into());
    configure(&mut config);
    config
}

/// POSTs `body` to `path` with `authorization` (if any); (status, JSON answer).
async fn post(publish: &Running, path: &str, auth: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", publish.url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.expect("an HTTP answer");
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{status}"
    );
    (status, response.json().await.expect("a JSON body"))
}

async fn post_json(publish: &Running, path: &str, body: Value) -> (u16, Value) {
    let bearer = format!("Bearer {TOKEN}");
    post(publish, path, Some(&bearer), body.to_string().into_bytes()).await
}

#[tokio::test]
async fn single_and_batch_publish_over_http_reach_streams() {
    let stack = Stack::builder()
        .publish(publish_with_token(|_| {}))
        .edge(edge_config("edge"))
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let token = Claims::new("alice").topics(&["news"]).hs256(SECRET);
    let url = events_url(edge, &["news"]);
    let mut alice = SseStream::open(&reqwest::Client::new(), &url, &token).await;

    let one = json!({"users": {"userIds": ["alice"]}, "event": "order", "data": "filled",
                     "offline": "OFFLINE_POLICY_STORE", "idempotencyKey": "order-1"});
    let (status, answer) = post_json(publish, "/v1/publish", one).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["eventId"], "order-1");
    assert_eq!(answer["receipts"][0]["userId"], "alice");
    assert!(
        answer["receipts"][0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("OUTCOME_")
    );
    let event = alice.next().await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("order", "filled")
    );

    let batch = json!({"requests": [
        {"topic": "news", "data": "headline"},
        {"users": {"user_ids": [""]}, "data": "no one"},
        {"users": {"userIds": ["alice"]}, "data": "eph", "ephemeral": true},
    ]});
    let (status, answer) = post_json(publish, "/v1/publish:batch", batch).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0]["response"]["eventId"].as_str().unwrap().len(),
        22
    );
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("INVALID_ARGUMENT: user_ids[0]")
    );
    assert!(results[1].get("response").is_none());
    assert_eq!(results[2]["response"]["eventId"], "");
    let mut got = vec![alice.next().await.data, alice.next().await.data];
    got.sort();
    assert_eq!(got, ["eph", "headline"]);
}

#[tokio::test]
async fn hostile_bodies_and_tokens_get_json_errors() {
    let stack = Stack::builder()
        .publish(publish_with_token(|c| c.max_batch_bytes = 100_000))
        .start()
        .await;
    let publish = stack.publish();
    let bearer = format!("Bearer {TOKEN}");
    let ok = br#"{"topic":"news","data":"x"}"#.to_vec();

    let (status, answer) = post(publish, "/v1/publish", None, ok.clone()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("unauthenticated"))
    );
    assert!(
        answer["message"].as_str().unwrap().contains("missing"),
        "{answer}"
    );
    let wrong = Some("Bearer wrong-token-wrong-token");
    let (status, answer) = post(publish, "/v1/publish:batch", wrong, ok.clone()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("unauthenticated"))
    );

    for (body, says) in [
        (&b"{not json"[..], "invalid JSON"),
        (b"", "invalid JSON"),
        (br#"{"topic": 5}"#, "expected a string"),
        (br#"{"topic":"a","users":{"userIds":["b"]}}"#, "not both"),
        (br#"{"topic":"a","dta":"x"}"#, "unknown field"),
        (br#"{"data":"x"}"#, "no target"),
        (br#"{"topic":"a b"}"#, "topic"),
        (b"\xff\xfe\x00", "invalid JSON"),
    ] {
        let (status, answer) = post(publish, "/v1/publish", Some(&bearer), body.to_vec()).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"], "invalid_argument");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(says),
            "{:?}: {message}",
            String::from_utf8_lossy(body)
        );
    }
    let (status, answer) = post(
        publish,
        "/v1/publish:batch",
        Some(&bearer),
        br#"{"requests":{}}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_argument"))
    );

    // Over the body limit: refused, whether declared or streamed.
    let huge = format!(r#"{{"topic":"a","data":"{}"}}"#, "x".repeat(200_000)).into_bytes();
    let (status, answer) = post(publish, "/v1/publish", Some(&bearer), huge.clone()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let chunks: Vec<_> = huge
        .chunks(8192)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect();
    let chunks = futures::stream::iter(chunks);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/publish:batch", publish.url()))
        .header("authorization", &bearer)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    let response = reqwest::get(format!("{}/v1/publish", publish.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let (status, _) = post(publish, "/v1/other", Some(&bearer), ok.clone()).await;
    assert_eq!(status, 404);
    // gRPC still works beside it on the same port.
    let mut client = publisher(publish).await;
    assert_eq!(
        client
            .publish(herald_proto::v1::PublishRequest::default())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    // Each refused call is counted once, as a gRPC call would be: nine
    // bodies that are not a valid request, two over the limit.
    let counted = |outcome: &str| {
        let sample = format!("herald_publish_requests_total{{outcome=\"{outcome}\"}}");
        let publish = &publish;
        async move { publish.metric(&sample).await }
    };
    assert_eq!(counted("invalid_argument").await, 11.0);
    assert_eq!(counted("unauthenticated").await, 3.0);
    assert_eq!(counted("ok").await, 0.0);
}

#[tokio::test]
async fn while_nats_is_down_http_publish_answers_503_at_once() {
    let mut stack = Stack::builder()
        .publish(publish_with_token(|_| {}))
        .start()
        .await;
    let publish = stack.publish.as_ref().unwrap();
    let one = json!({"users": {"userIds": ["alice"]}, "data": "x", "ephemeral": true});
    assert_eq!(post_json(publish, "/v1/publish", one.clone()).await.0, 200);

    stack.nats.nodes[0].kill();
    let batch = json!({"requests": [one.clone()]});
    herald_testing::eventually(Duration::from_secs(5), "a 503", || async {
        (post_json(publish, "/v1/publish", one.clone()).await.0 == 503).then_some(())
    })
    .await;
    let started = Instant::now();
    let (status, answer) = post_json(publish, "/v1/publish:batch", batch).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable"))
    );
    assert!(
        answer["message"].as_str().unwrap().contains("NATS"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    stack.nats.nodes[0].restart();
    herald_testing::eventually(Duration::from_secs(10), "publishing again", || async {
        (post_json(publish, "/v1/publish", one.clone()).await.0 == 200).then_some(())
    })
    .await;
}
