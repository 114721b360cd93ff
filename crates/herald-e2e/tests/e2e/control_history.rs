//! `Control.History` on real NATS, over HTTP and gRPC: the newest events
//! of a user or topic, oldest first; the events after an id a live stream
//! sent, page by page; ids that resume a stream; the 1 MiB cap; and
//! hostile calls refused with the reason; UNAVAILABLE before the
//! history streams exist and without NATS.

use std::time::Duration;

use herald_domain::cursor::{Cursor, key};
use herald_e2e::*;

use crate::control::{call, control, publish_with_token, stack};
use herald_proto::v1;
use herald_proto::v1::history_request::Target;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};
use herald_testing::{NatsServer, eventually};
use serde_json::{Value, json};

/// Publishes `data` (of type `event`, if not empty) to `target` over HTTP.
async fn send(publish: &Running, target: Value, event: &str, data: &str) {
    let mut body = json!({"data": data});
    if !event.is_empty() {
        body["event"] = json!(event);
    }
    body.as_object_mut()
        .unwrap()
        .extend(target.as_object().unwrap().clone());
    let (status, answer) = call(publish, "/v1/publish", body).await;
    assert_eq!(status, 200, "{answer}");
}

fn user(id: &str) -> Value {
    json!({"users": {"userIds": [id]}})
}

fn topic(name: &str) -> Value {
    json!({"topic": name})
}

/// Calls History over HTTP and asserts it answered 200.
async fn history(publish: &Running, body: Value) -> Value {
    let (status, answer) = call(publish, "/v1/history", body.clone()).await;
    assert_eq!(status, 200, "{body}: {answer}");
    answer
}

/// The `data` of each event in a JSON answer.
fn data(answer: &Value) -> Vec<&str> {
    answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap())
        .collect()
}

/// The `id` of the answer's event `index`.
fn id(answer: &Value, index: usize) -> String {
    answer["events"][index]["id"].as_str().unwrap().to_owned()
}

fn grpc_request(target: Target, since: &str, limit: u32) -> v1::HistoryRequest {
    v1::HistoryRequest {
        target: Some(target),
        since: since.to_owned(),
        limit,
    }
}

#[tokio::test]
async fn the_newest_events_of_a_user_or_topic_come_oldest_first() {
    let stack = stack(&[]).await;
    let publish = stack.publish();
    for i in 1..=5 {
        let event = if i == 3 { "price" } else { "" };
        send(publish, user("alice"), event, &format!("a{i}")).await;
    }
    for i in 1..=3 {
        send(publish, topic("news"), "", &format!("n{i}")).await;
    }
    send(publish, user("bob"), "", "b1").await;

    let answer = history(publish, json!({"userId": "alice", "limit": 3})).await;
    assert_eq!(data(&answer), ["a3", "a4", "a5"]);
    assert_eq!(answer["truncated"], true, "a1 and a2 are left out");
    // The proto3 JSON shape: every field written, int64 as a string.
    let first = &answer["events"][0];
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["data", "event", "id", "timeUnixMs"]);
    assert_eq!(
        (
            first["event"].as_str(),
            answer["events"][1]["event"].as_str()
        ),
        (Some("price"), Some(""))
    );
    let at: i64 = first["timeUnixMs"].as_str().unwrap().parse().unwrap();
    let now = herald_testing::token::now() as i64 * 1000;
    assert!((now - 60_000..now + 1_000).contains(&at), "{at} vs {now}");

    // Limit 0 is 100: all five, nothing left out, over gRPC alike.
    let all = control(publish)
        .await
        .history(grpc_request(Target::UserId("alice".into()), "", 0))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = all.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(
        (got, all.truncated),
        (vec!["a1", "a2", "a3", "a4", "a5"], false)
    );
    assert_eq!(all.events[2].id, id(&answer, 0), "one event, one id");
    assert!(
        all.events
            .windows(2)
            .all(|w| w[0].time_unix_ms <= w[1].time_unix_ms)
    );

    let news = history(publish, json!({"topic": "news"})).await;
    assert_eq!(
        (data(&news), &news["truncated"]),
        (vec!["n1", "n2", "n3"], &json!(false))
    );
    let nobody = history(publish, json!({"user_id": "nobody"})).await;
    assert_eq!(nobody, json!({"events": [], "truncated": false}));
}

#[tokio::test]
async fn pages_after_an_id_a_stream_sent_and_history_ids_resume_a_stream() {
    let stack = stack(&["e1"]).await;
    let (publish, edge) = (stack.publish(), stack.edge());
    let token = Claims::new("alice").topics(&["news"]).hs256(SECRET);
    let client = reqwest::Client::new();
    let mut stream = SseStream::open(&client, &events_url(edge, &["news"]), &token).await;
    send(publish, user("alice"), "", "a1").await;
    let seen = stream.next().await;
    assert_eq!(seen.data, "a1");
    drop(stream);
    for i in 2..=6 {
        send(publish, user("alice"), "", &format!("a{i}")).await;
    }
    send(publish, topic("news"), "", "n1").await;

    // The stream's id holds alice's position and news': each subject's
    // history reads on from its own.
    let page = |since: String| json!({"userId": "alice", "since": since, "limit": 2});
    let first = history(publish, page(seen.id.clone())).await;
    assert_eq!(
        (data(&first), &first["truncated"]),
        (vec!["a2", "a3"], &json!(true))
    );
    let second = history(publish, page(id(&first, 1))).await;
    assert_eq!(
        (data(&second), &second["truncated"]),
        (vec!["a4", "a5"], &json!(true))
    );
    let third = history(publish, page(id(&second, 1))).await;
    assert_eq!(
        (data(&third), &third["truncated"]),
        (vec!["a6"], &json!(false))
    );
    let none = history(publish, page(id(&third, 0))).await;
    assert_eq!(none, json!({"events": [], "truncated": false}));
    let news = history(publish, json!({"topic": "news", "since": seen.id})).await;
    assert_eq!(data(&news), ["n1"]);

    // An id from History resumes a stream: a4 to a6 replayed, then live.
    let response = client
        .get(events_url(edge, &[]))
        .bearer_auth(&token)
        .header("last-event-id", id(&first, 1))
        .send()
        .await
        .unwrap();
    let mut resumed = SseStream::from_response(response).await;
    for want in ["a4", "a5", "a6"] {
        let event = resumed.next().await;
        assert_eq!(event.data, want);
        if want == "a6" {
            assert_eq!(event.id, id(&third, 0), "the stream sends History's id");
        }
    }
    send(publish, user("alice"), "", "a7").await;
    assert_eq!(resumed.next().await.data, "a7");
}

#[tokio::test]
async fn a_page_holds_at_most_one_mebibyte_of_data() {
    let stack = stack(&[]).await;
    let publish = stack.publish();
    // 60 KiB each: 17 fit in 1 MiB, 18 do not.
    let big = |i: usize| format!("{i:02}{}", "x".repeat(60 * 1024 - 2));
    for i in 1..=20 {
        send(publish, topic("big"), "", &big(i)).await;
    }
    let numbers = |answer: &Value| -> Vec<usize> {
        data(answer)
            .iter()
            .map(|d| d[..2].parse().unwrap())
            .collect()
    };

    let newest = history(publish, json!({"topic": "big"})).await;
    assert_eq!(
        numbers(&newest),
        (4..=20).collect::<Vec<_>>(),
        "the newest that fit"
    );
    assert_eq!(newest["truncated"], true);
    assert!(data(&newest).iter().all(|d| d.len() == 60 * 1024));

    // Position 0 ("nothing seen yet") reads from the oldest on.
    let mut start = Cursor::default();
    start.set(key("herald.t.big"), 0);
    let from_start = history(publish, json!({"topic": "big", "since": start.encode()})).await;
    assert_eq!(
        numbers(&from_start),
        (1..=17).collect::<Vec<_>>(),
        "the oldest that fit"
    );
    assert_eq!(from_start["truncated"], true);
    let rest = history(
        publish,
        json!({"topic": "big", "since": id(&from_start, 16)}),
    )
    .await;
    assert_eq!(
        (numbers(&rest), &rest["truncated"]),
        (vec![18, 19, 20], &json!(false))
    );
}

#[tokio::test]
async fn hostile_history_calls_are_refused_with_the_reason() {
    let mut stack = stack(&[]).await;
    let publish = stack.publish.as_ref().unwrap();
    send(publish, user("alice"), "", "a1").await;
    let answer = history(publish, json!({"userId": "alice"})).await;
    let alices = id(&answer, 0);
    let mut bobs = Cursor::default();
    bobs.set(key("herald.u.bob"), 1);
    let mut future = Cursor::default();
    future.set(key("herald.u.alice"), 1_000_000);

    for (body, says) in [
        (
            json!({"userId": "alice", "since": "not an id!"}),
            "since: event id is not URL-safe base64",
        ),
        (
            json!({"userId": "alice", "since": "AQ"}),
            "since: event id is truncated or malformed",
        ),
        (
            json!({"userId": "alice", "since": "x".repeat(5000)}),
            "since: event id is longer than",
        ),
        (
            json!({"userId": "alice", "since": bobs.encode()}),
            "holds no position for user \"alice\"",
        ),
        (
            json!({"topic": "alice", "since": alices}),
            "holds no position for topic \"alice\"",
        ),
        (
            json!({"userId": "alice", "since": future.encode()}),
            "ahead of history (sequence 1000000",
        ),
        (
            json!({"userId": "alice", "limit": 5000}),
            "`limit` 5000 is over 1000",
        ),
        (json!({}), "`user_id` or `topic`"),
        (json!({"userId": "alice", "topic": "news"}), "not both"),
        (
            json!({"userId": "a\u{0}b"}),
            "user_id: user id must not contain control characters",
        ),
        (json!({"userId": ""}), "user_id: user id must not be empty"),
        (
            json!({"topic": "a b"}),
            "topic: topic must not contain whitespace",
        ),
        (json!({"userId": "alice", "limit": -1}), "expected u32"),
    ] {
        let (status, answer) = call(publish, "/v1/history", body.clone()).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_argument")),
            "{body}: {answer}"
        );
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message:?} lacks {says:?}");
    }

    let mut client = control(publish).await;
    for request in [
        v1::HistoryRequest::default(),
        grpc_request(Target::UserId("alice".into()), "%%%", 0),
        grpc_request(Target::Topic("news".into()), &alices, 0),
        grpc_request(Target::UserId("alice".into()), "", 1001),
    ] {
        let status = client.history(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
    }
    // None of that hurt: the history is still read.
    let again = history(publish, json!({"userId": "alice"})).await;
    assert_eq!(data(&again), ["a1"]);

    // Without NATS: UNAVAILABLE, saying why.
    stack.nats.nodes[0].kill();
    let answer = eventually(Duration::from_secs(10), "History refused", || async {
        let (status, answer) = call(publish, "/v1/history", json!({"userId": "alice"})).await;
        (status == 503).then_some(answer)
    })
    .await;
    assert_eq!(answer["error"], "unavailable", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("NATS"),
        "{answer}"
    );
}

#[tokio::test]
async fn history_is_unavailable_until_the_streams_exist() {
    // herald-publish started by hand: a stack's waits for the history
    // streams, and with three replicas on one server JetStream never
    // takes them.
    let nats = NatsServer::start();
    let mut config = publish_with_token();
    config.history.history_replicas = 3;
    let url = nats.client_url();
    let (client, losses) =
        herald_nats::connection::connect(&[url], &Default::default(), "e2e-publish")
            .await
            .unwrap();
    let mut registry = Default::default();
    let server =
        herald_publish::PublishServer::start(config, client, losses.subscribe(), &mut registry)
            .await
            .unwrap();
    let ready = server.readiness();
    let publish = Running::start(registry, ready, |listener, shutdown| async move {
        server.serve(listener, shutdown).await.unwrap();
    })
    .await;

    let (status, answer) = call(&publish, "/v1/history", json!({"userId": "alice"})).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("not ready yet"),
        "{answer}"
    );
    // A bad request is still told so first: nothing about it depends on NATS.
    let (status, _) = call(&publish, "/v1/history", json!({"userId": ""})).await;
    assert_eq!(status, 400);
}
