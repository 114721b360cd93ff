//! The Control API on real NATS, over HTTP and gRPC: Disconnect ends a
//! user's streams on every edge with `herald.disconnect`; Revoke refuses
//! older tokens on every edge (one started later too) and ends their
//! streams; Follow and Unfollow change what open streams follow, and
//! every later connect; Topics lists the followed topics; hostile calls
//! are refused with the reason.

use std::time::Duration;

use herald_e2e::*;
use herald_proto::v1;
use herald_proto::v1::control_client::ControlClient;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign, now};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// The Control API's token. control_history.rs calls the API through the
/// helpers below too.
const TOKEN: &str = "control-api-token-0123456789";

/// herald-publish with the Control API's token.
pub(crate) fn publish_with_token() -> herald_publish::Config {
    let mut config = publish_config();
    config.api_token = Some(TOKEN.into());
    config
}

/// NATS, herald-publish with the Control API's token, and an edge named
/// each of `edges`.
pub(crate) async fn stack(edges: &[&str]) -> Stack {
    let builder = Stack::builder().publish(publish_with_token());
    let builder = edges
        .iter()
        .fold(builder, |b, node| b.edge(edge_config(node)));
    builder.start().await
}

/// POSTs `body` as JSON to `path`: (status, answer).
pub(crate) async fn call(publish: &Running, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", publish.url()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("an HTTP answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// A Control client that sends the token.
pub(crate) async fn control(
    publish: &Running,
) -> ControlClient<
    tonic::service::interceptor::InterceptedService<Channel, impl tonic::service::Interceptor>,
> {
    let channel = Channel::from_shared(publish.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    ControlClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    })
}

/// Publishes `data` to `users` (or to `topic`) over HTTP.
async fn send(publish: &Running, target: Value, data: &str) {
    let mut body = json!({"data": data});
    body.as_object_mut()
        .unwrap()
        .extend(target.as_object().unwrap().clone());
    let (status, answer) = call(publish, "/v1/publish", body).await;
    assert_eq!(status, 200, "{answer}");
}

async fn open(edge: &Running, token: &str, topics: &[&str]) -> SseStream {
    SseStream::open(&reqwest::Client::new(), &events_url(edge, topics), token).await
}

/// The stream's next event is `herald.disconnect` with `data`, then its end.
async fn ends_with_disconnect(stream: &mut SseStream, data: Value) {
    let event = stream.next().await;
    assert_eq!(event.event, "herald.disconnect");
    assert_eq!(serde_json::from_str::<Value>(&event.data).unwrap(), data);
    assert!(
        stream.next_within(Duration::from_secs(5)).await.is_none(),
        "the stream ends"
    );
}

#[tokio::test]
async fn disconnect_ends_the_users_streams_on_every_edge_and_no_one_elses() {
    let stack = stack(&["e1", "e2"]).await;
    let (publish, one, two) = (stack.publish(), &stack.edges[0], &stack.edges[1]);
    let alice = Claims::new("alice").hs256(SECRET);
    let mut streams = [open(one, &alice, &[]).await, open(two, &alice, &[]).await];
    let mut bob = open(one, &Claims::new("bob").hs256(SECRET), &[]).await;

    let (status, answer) = call(
        publish,
        "/v1/disconnect",
        json!({"userIds": ["alice"], "reason": "logout", "reconnect": false}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"streams": "2", "edges": 2}));
    for stream in &mut streams {
        ends_with_disconnect(stream, json!({"reason": "logout", "reconnect": false})).await;
    }
    send(
        publish,
        json!({"users": {"userIds": ["bob", "alice"]}}),
        "still here",
    )
    .await;
    assert_eq!(bob.next().await.data, "still here");
    assert_eq!(
        one.metric(r#"herald_edge_closes_total{reason="disconnected"}"#)
            .await,
        1.0
    );

    // A user with no stream: nothing to end, every edge answered.
    let answer = control(publish)
        .await
        .disconnect(v1::DisconnectRequest {
            user_ids: vec!["nobody".into()],
            reason: String::new(),
            reconnect: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.streams, answer.edges), (0, 2));
}

#[tokio::test]
async fn revoke_refuses_older_tokens_on_every_edge_and_ends_their_streams() {
    let stack = stack(&["e1"]).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let issued = now() - 10;
    let old = Claims {
        iat: Some(issued),
        ..Claims::new("alice")
    }
    .hs256(SECRET);
    let no_iat = Claims {
        iat: None,
        ..Claims::new("alice")
    }
    .hs256(SECRET);
    let mut stream = open(edge, &old, &[]).await;

    let (status, answer) = call(
        publish,
        "/v1/revoke",
        json!({"userIds": ["alice"], "reason": "password changed"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"streams": "1"}));
    ends_with_disconnect(
        &mut stream,
        json!({"reason": "password changed", "reconnect": false}),
    )
    .await;

    let later = start_edge(&stack.nats_url(), edge_config("e2")).await;
    for edge in [edge, &later] {
        for token in [&old, &no_iat] {
            let response = reqwest::Client::new()
                .get(events_url(edge, &[]))
                .bearer_auth(token)
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "a revoked token on {}", edge.url());
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "token_revoked", "{body}");
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = Claims::new("alice").hs256(SECRET);
    let mut stream = open(&later, &fresh, &[]).await;
    send(
        publish,
        json!({"users": {"userIds": ["alice"]}}),
        "welcome back",
    )
    .await;
    assert_eq!(stream.next().await.data, "welcome back");

    // Hostile: a future instant, a negative one, a bad id.
    for body in [
        json!({"userIds": ["alice"], "issuedBeforeUnix": now() + 3600}),
        json!({"userIds": ["alice"], "issuedBeforeUnix": -1}),
        json!({"userIds": [""]}),
        json!({"userIds": []}),
        json!({"userIds": ["a"], "reason": "x".repeat(300)}),
    ] {
        let (status, answer) = call(publish, "/v1/revoke", body.clone()).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_argument")),
            "{body}: {answer}"
        );
    }
}

#[tokio::test]
async fn follow_reaches_open_streams_and_later_connects_and_unfollow_stops_it() {
    let stack = stack(&["e1"]).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let token = Claims::new("alice").hs256(SECRET);
    let mut stream = open(edge, &token, &[]).await;

    let (status, answer) = call(
        publish,
        "/v1/follow",
        json!({"userIds": ["alice"], "topics": ["news"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"streams": "1"}));
    send(publish, json!({"topic": "news"}), "headline").await;
    let event = stream.next().await;
    assert_eq!(event.data, "headline");
    let id = event.id.clone();
    assert!(!id.is_empty());

    // The topic is in the id: a resume from it replays what was missed.
    drop(stream);
    send(publish, json!({"topic": "news"}), "missed").await;
    let response = reqwest::Client::new()
        .get(events_url(edge, &[]))
        .bearer_auth(&token)
        .header("last-event-id", &id)
        .send()
        .await
        .unwrap();
    let mut stream = SseStream::from_response(response).await;
    assert_eq!(stream.next().await.data, "missed");
    send(publish, json!({"topic": "news"}), "live").await;
    assert_eq!(stream.next().await.data, "live");

    let (status, answer) = call(publish, "/v1/topics", json!({"prefix": "ne"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"topics": [{"topic": "news", "streams": "1", "edges": 1}]})
    );

    let (status, answer) = call(
        publish,
        "/v1/unfollow",
        json!({"userIds": ["alice"], "topics": ["news"]}),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"streams": "1"})));
    send(publish, json!({"topic": "news"}), "no longer").await;
    send(publish, json!({"users": {"userIds": ["alice"]}}), "own").await;
    assert_eq!(
        stream.next().await.data,
        "own",
        "the topic is no longer followed"
    );

    // Hostile topics and users.
    for body in [
        json!({"userIds": ["alice"], "topics": ["a b"]}),
        json!({"userIds": ["alice"], "topics": ["x*"]}),
        json!({"userIds": ["alice"], "topics": []}),
        json!({"userIds": ["alice"], "topics": (0..40).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
        json!({"userIds": ["bad\u{0}id"], "topics": ["news"]}),
    ] {
        let (status, answer) = call(publish, "/v1/follow", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
}

#[tokio::test]
async fn control_calls_need_the_token_and_refuse_what_is_too_large() {
    let stack = stack(&[]).await;
    let publish = stack.publish();
    let url = format!("{}/v1/disconnect", publish.url());
    let answer = reqwest::Client::new()
        .post(&url)
        .json(&json!({"userIds": ["a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let huge = vec![b'x'; 2 * 1024 * 1024];
    let answer = reqwest::Client::new()
        .post(&url)
        .bearer_auth(TOKEN)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    let (status, answer) = call(publish, "/v1/disconnect", json!({"userIdz": ["a"]})).await;
    assert_eq!(status, 400, "{answer}");
    let status = control(publish)
        .await
        .disconnect(v1::DisconnectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn lifecycle_events_tell_each_streams_connect_and_disconnect() {
    use futures::StreamExt;
    let mut config = edge_config("e1");
    config.lifecycle_events = true;
    let stack = Stack::builder()
        .publish(publish_with_token())
        .edge(config)
        .start()
        .await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let client = async_nats::connect(stack.nats_url()).await.unwrap();
    let mut events = client.subscribe("herald.lifecycle.*").await.unwrap();
    client.flush().await.unwrap();
    let mut next = async || -> (String, Value) {
        let message = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a lifecycle event within 10 s")
            .unwrap();
        let event = serde_json::from_slice(&message.payload).unwrap();
        (message.subject.to_string(), event)
    };

    let token = Claims::new("a.b").topics(&["news"]).hs256(SECRET);
    let stream = open(edge, &token, &["news"]).await;
    let (subject, connect) = next().await;
    assert_eq!(
        subject, "herald.lifecycle.a~2Eb",
        "the user's token, escaped"
    );
    assert_eq!(
        (
            &connect["type"],
            &connect["user"],
            &connect["node"],
            &connect["topics"]
        ),
        (
            &json!("connect"),
            &json!("a.b"),
            &json!("e1"),
            &json!(["news"])
        )
    );
    assert!(connect["at"].as_str().unwrap().ends_with('Z'), "{connect}");
    let id = connect["stream"].clone();

    call(
        publish,
        "/v1/disconnect",
        json!({"userIds": ["a.b"], "reason": "bye"}),
    )
    .await;
    let (_, disconnect) = next().await;
    assert_eq!(
        (
            &disconnect["type"],
            &disconnect["stream"],
            &disconnect["reason"]
        ),
        (&json!("disconnect"), &id, &json!("disconnected"))
    );
    assert!(disconnect["duration_ms"].as_u64().is_some(), "{disconnect}");
    drop(stream);

    let stream = open(edge, &token, &[]).await;
    let (_, connect) = next().await;
    assert_eq!(connect["topics"], json!([]));
    drop(stream);
    let (_, disconnect) = next().await;
    assert_eq!(disconnect["reason"], "client_gone", "{disconnect}");
}

#[tokio::test]
async fn an_edge_that_missed_the_orders_catches_up_from_the_buckets_even_after_a_nats_restart() {
    let mut stack = stack(&["e1"]).await;
    let (publish, edge) = (stack.publish.as_ref().unwrap(), &stack.edges[0]);
    let old = Claims {
        iat: Some(now() - 10),
        ..Claims::new("alice")
    }
    .hs256(SECRET);
    let mut alice = open(edge, &old, &[]).await;
    let mut bob = open(edge, &Claims::new("bob").hs256(SECRET), &[]).await;

    // Only the buckets change, as if every order had been lost.
    let client = async_nats::connect(stack.nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let revocations = js.get_key_value("herald_revocations").await.unwrap();
    let revocation = json!({"issued_before": now(), "reason": "leaked", "expires": now() + 3600});
    revocations
        .put("alice", revocation.to_string().into())
        .await
        .unwrap();
    let follows = js.get_key_value("herald_follows").await.unwrap();
    follows
        .put("bob", json!({"topics": ["news"]}).to_string().into())
        .await
        .unwrap();
    ends_with_disconnect(&mut alice, json!({"reason": "leaked", "reconnect": false})).await;
    // Bob's stream follows the topic once the edge caught up (about 1 s).
    let mut caught_up = None;
    for attempt in 0..20 {
        send(
            publish,
            json!({"topic": "news"}),
            &format!("caught up {attempt}"),
        )
        .await;
        caught_up = bob.next_within(Duration::from_millis(500)).await;
        if caught_up.is_some() {
            break;
        }
    }
    let caught_up = caught_up.expect("the follow reached bob's stream within 10 s");
    assert!(caught_up.data.starts_with("caught up"), "{caught_up:?}");

    stack.nats.nodes[0].restart();
    let later = start_edge(&stack.nats_url(), edge_config("e2")).await;
    let refused = reqwest::Client::new()
        .get(events_url(&later, &[]))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the revocation outlived the restart");
    let mut bob = open(&later, &Claims::new("bob").hs256(SECRET), &[]).await;
    send(publish, json!({"topic": "news"}), "after the restart").await;
    assert_eq!(bob.next().await.data, "after the restart");
}
