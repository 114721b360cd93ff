//! Receipts and offline policies end to end: publish to an online and an
//! offline user, and the offline one's event reaches a (fake) FCM server
//! through the real push worker, with retries and token clean-up.

use std::time::Duration;

use herald_domain::cursor::{self, Cursor};
use herald_e2e::*;
use herald_nats::history;
use herald_proto::v1::{OfflinePolicy, Outcome, PublishRequest, Receipt, publish_request::Target};
use herald_testing::eventually;
use herald_testing::fcm::{FakeFcm, Reply};
use herald_testing::sse::{QUIET, SseStream};
use herald_testing::token::{Claims, Sign};

const WAIT: Duration = Duration::from_secs(10);
const CAROL_DEVICE: &str = "fcm-device-token:carol_phone-1";

/// NATS, publish, an edge, the push worker and a fake FCM.
struct System {
    stack: Stack,
    fcm: FakeFcm,
    _dir: tempfile::TempDir,
}

impl System {
    async fn start() -> Self {
        let mut edge = edge_config("edge-1");
        edge.presence_heartbeat = Duration::from_millis(200);
        let fcm = FakeFcm::start().await;
        let dir = tempfile::tempdir().unwrap();
        let stack = Stack::builder()
            .publish(publish_config())
            .edge(edge)
            .push(push_config(&fcm, dir.path()))
            .start()
            .await;
        stack.publish().wait_ready().await;
        stack.push().wait_ready().await;
        Self {
            stack,
            fcm,
            _dir: dir,
        }
    }

    fn devices_url(&self, user: &str) -> String {
        let user: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
        format!("{}/v1/devices/{user}", self.stack.push().url())
    }

    async fn register(&self, user: &str, token: &str) -> reqwest::StatusCode {
        reqwest::Client::new()
            .put(self.devices_url(user))
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn devices(&self, user: &str) -> Vec<String> {
        let answer: serde_json::Value = reqwest::get(self.devices_url(user))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        serde_json::from_value(answer["tokens"].clone()).unwrap()
    }

    /// Waits until publish's presence shows `users` users online.
    async fn until_publish_sees(&self, users: f64) {
        eventually(WAIT, "publish to see the connections", || async {
            let online = self
                .stack
                .publish()
                .metric("herald_publish_presence_users_online")
                .await;
            (online == users).then_some(())
        })
        .await;
    }

    /// Messages still on the offline queue.
    async fn queued(&self) -> u64 {
        let client = async_nats::connect(self.stack.nats_url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("HERALD_OFFLINE").await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    async fn until_queue_empty(&self) {
        eventually(WAIT, "the offline queue to empty", || async {
            (self.queued().await == 0).then_some(())
        })
        .await;
    }
}

async fn publish_with(
    system: &System,
    users: &[&str],
    policy: OfflinePolicy,
    ephemeral: bool,
    data: &str,
) -> (String, Vec<(String, bool, Outcome)>) {
    let request = PublishRequest {
        target: Some(Target::users(users)),
        data: data.to_owned(),
        offline: policy as i32,
        ephemeral,
        ..Default::default()
    };
    let response = system
        .stack
        .publisher()
        .await
        .publish(request)
        .await
        .unwrap()
        .into_inner();
    let receipts = response
        .receipts
        .iter()
        .map(|r: &Receipt| (r.user_id.clone(), r.online, r.outcome()))
        .collect();
    (response.event_id, receipts)
}

fn receipt(user: &str, online: bool, outcome: Outcome) -> (String, bool, Outcome) {
    (user.to_owned(), online, outcome)
}

#[tokio::test]
async fn fallback_delivers_live_to_the_online_and_pushes_to_the_offline() {
    let system = System::start().await;
    assert_eq!(system.register("carol", CAROL_DEVICE).await, 204);
    let http = reqwest::Client::new();
    let alice = Claims::new("alice").hs256(SECRET);
    let mut tab = SseStream::open(&http, &events_url(system.stack.edge(), &[]), &alice).await;
    system.until_publish_sees(1.0).await;

    let (event_id, receipts) = publish_with(
        &system,
        &["alice", "carol"],
        OfflinePolicy::Fallback,
        false,
        "your order shipped",
    )
    .await;
    assert_eq!(
        receipts,
        [
            receipt("alice", true, Outcome::Delivered),
            receipt("carol", false, Outcome::Fallback)
        ]
    );
    let event = tab.next().await;
    assert_eq!(event.data, "your order shipped");

    eventually(WAIT, "one push for carol", || async {
        (!system.fcm.sends().is_empty()).then_some(())
    })
    .await;
    system.until_queue_empty().await;
    tokio::time::sleep(QUIET).await;
    let sends = system.fcm.sends();
    assert_eq!(sends.len(), 1, "{sends:?}");
    let message = &sends[0].body["message"];
    assert_eq!(message["token"], CAROL_DEVICE);
    assert_eq!(message["data"]["herald_data"], "your order shipped");
    assert_eq!(message["data"]["herald_event"], "message");
    assert_eq!(message["data"]["herald_event_id"], event_id.as_str());
    assert_eq!(system.fcm.grants(), 1, "one sign-in, then the cached token");
    assert!(
        system.fcm.refused().is_empty(),
        "{:?}",
        system.fcm.refused()
    );
    assert_eq!(
        system
            .stack
            .push()
            .metric("herald_push_sends_total{outcome=\"sent\"}")
            .await,
        1.0
    );
    tab.assert_silent(QUIET).await;
}

#[tokio::test]
async fn transient_fcm_errors_are_retried_until_one_delivery() {
    let system = System::start().await;
    assert_eq!(system.register("carol", CAROL_DEVICE).await, 204);
    system.fcm.script([Reply::Status(503), Reply::Status(503)]);
    let (_, receipts) = publish_with(
        &system,
        &["carol"],
        OfflinePolicy::Fallback,
        false,
        "retry me",
    )
    .await;
    assert_eq!(receipts, [receipt("carol", false, Outcome::Fallback)]);

    system.until_queue_empty().await;
    tokio::time::sleep(QUIET).await;
    let answered: Vec<u16> = system.fcm.sends().iter().map(|s| s.answered).collect();
    assert_eq!(answered, [503, 503, 200]);
    assert_eq!(
        system
            .stack
            .push()
            .metric("herald_push_retries_total")
            .await,
        2.0
    );
    assert_eq!(
        system
            .stack
            .push()
            .metric("herald_push_events_total{outcome=\"delivered\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_unregistered_token_is_removed_and_not_retried() {
    let system = System::start().await;
    assert_eq!(system.register("carol", CAROL_DEVICE).await, 204);
    assert_eq!(system.devices("carol").await, [CAROL_DEVICE]);
    system.fcm.script([Reply::Unregistered]);
    publish_with(&system, &["carol"], OfflinePolicy::Fallback, false, "gone").await;

    system.until_queue_empty().await;
    eventually(WAIT, "the token to be removed", || async {
        system.devices("carol").await.is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(system.fcm.sends().len(), 1, "no retry storm");
    assert_eq!(
        system
            .stack
            .push()
            .metric("herald_push_sends_total{outcome=\"unregistered\"}")
            .await,
        1.0
    );

    // With no device left, the next event is acknowledged without a send.
    publish_with(
        &system,
        &["carol"],
        OfflinePolicy::Fallback,
        false,
        "nobody home",
    )
    .await;
    system.until_queue_empty().await;
    assert_eq!(system.fcm.sends().len(), 1);
    eventually(WAIT, "no_device counted", || async {
        let n = system
            .stack
            .push()
            .metric("herald_push_events_total{outcome=\"no_device\"}")
            .await;
        (n == 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn store_and_drop_policies_keep_or_discard_offline_copies() {
    let system = System::start().await;
    let http = reqwest::Client::new();
    let alice = Claims::new("alice").hs256(SECRET);
    let mut tab = SseStream::open(&http, &events_url(system.stack.edge(), &[]), &alice).await;
    system.until_publish_sees(1.0).await;

    let (_, stored) = publish_with(
        &system,
        &["alice", "carol"],
        OfflinePolicy::Unspecified,
        false,
        "kept",
    )
    .await;
    assert_eq!(
        stored,
        [
            receipt("alice", true, Outcome::Delivered),
            receipt("carol", false, Outcome::Stored)
        ]
    );
    let (_, dropped) = publish_with(
        &system,
        &["alice", "dave"],
        OfflinePolicy::Drop,
        false,
        "not kept",
    )
    .await;
    assert_eq!(
        dropped,
        [
            receipt("alice", true, Outcome::Delivered),
            receipt("dave", false, Outcome::Dropped)
        ]
    );
    let (_, ephemeral) = publish_with(
        &system,
        &["erin"],
        OfflinePolicy::Store,
        true,
        "now or never",
    )
    .await;
    assert_eq!(ephemeral, [receipt("erin", false, Outcome::Dropped)]);
    assert_eq!(tab.next().await.data, "kept");
    assert_eq!(tab.next().await.data, "not kept");

    // Carol's history holds her stored event; dave's holds nothing.
    for (user, expected) in [("carol", vec!["kept"]), ("dave", vec![])] {
        let token = Claims::new(user).hs256(SECRET);
        // Position 0 of the user's stream: replay all of its history.
        let mut cursor = Cursor::default();
        cursor.set(cursor::key(&format!("herald.u.{user}")), 0);
        let url = format!(
            "{}/v1/events?last_event_id={}",
            system.stack.edge().url(),
            cursor.encode()
        );
        let request = http.get(url).bearer_auth(&token);
        let mut stream = SseStream::from_response(request.send().await.unwrap()).await;
        let mut got = Vec::new();
        while let Some(event) = stream.next_within(QUIET).await {
            if event.event == "message" {
                got.push(event.data);
            }
        }
        assert_eq!(got, expected, "{user}");
    }
    // Nor is anything stored for dave, or for erin's ephemeral event
    // (the same lookup finds carol's).
    let nats = async_nats::connect(system.stack.nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    for (user, kept) in [("carol", true), ("dave", false), ("erin", false)] {
        let live = format!("herald.u.{user}");
        let shard = history::shard_of(&live, 4);
        let stream = js
            .get_stream(history::stream_name(&Default::default(), shard))
            .await
            .unwrap();
        let stored = history::stored_subject(&live, shard);
        let last = stream.get_last_raw_message_by_subject(&stored).await;
        assert_eq!(last.is_ok(), kept, "{user}: {last:?}");
    }
    assert_eq!(system.fcm.sends().len(), 0);
    assert_eq!(
        system
            .stack
            .publish()
            .metric("herald_publish_receipts_total{outcome=\"dropped\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn the_registration_api_refuses_bad_input_and_keeps_what_it_has() {
    let system = System::start().await;
    assert_eq!(system.register("a.>", CAROL_DEVICE).await, 204);
    let http = reqwest::Client::new();
    let huge = "x".repeat(10_000);
    let cases = [
        (
            system.devices_url("a.>"),
            serde_json::json!({"token": "has space"}),
            400,
        ),
        (
            system.devices_url("a.>"),
            serde_json::json!({"token": ""}),
            400,
        ),
        (
            system.devices_url("a.>"),
            serde_json::json!({"nope": 1}),
            400,
        ),
        (
            system.devices_url("a.>"),
            serde_json::json!({"token": huge}),
            413,
        ),
        (
            format!("{}/v1/devices/", system.stack.push().url()),
            serde_json::json!({"token": "t"}),
            400,
        ),
        (
            format!("{}/v1/devices/%FF", system.stack.push().url()),
            serde_json::json!({"token": "t"}),
            400,
        ),
        (
            format!("{}/v1/other/x", system.stack.push().url()),
            serde_json::json!({"token": "t"}),
            404,
        ),
    ];
    for (url, body, status) in cases {
        let answer = http.put(&url).json(&body).send().await.unwrap();
        assert_eq!(answer.status(), status, "{url} {body}");
        let error: serde_json::Value = answer.json().await.unwrap();
        assert!(
            error["error"].is_string() && error["message"].is_string(),
            "{error}"
        );
    }
    // Nothing above touched the registered token, and "a.>" is no wildcard.
    assert_eq!(system.devices("a.>").await, [CAROL_DEVICE]);
    assert!(system.devices("a.b").await.is_empty());
}

#[tokio::test]
async fn the_registration_api_wants_its_token() {
    let fcm = FakeFcm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = push_config(&fcm, dir.path());
    config.api_token = Some("push-api-token-0123456789".into());
    let stack = Stack::builder().push(config).start().await;
    let push = stack.push();
    let url = format!("{}/v1/devices/carol", push.url());
    let http = reqwest::Client::new();
    let body = serde_json::json!({ "token": CAROL_DEVICE });
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("push-api-token-0123456789"),
    ] {
        let mut request = http.put(&url).json(&body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{auth:?}");
    }
    let authorized = http
        .put(&url)
        .json(&body)
        .bearer_auth("push-api-token-0123456789");
    assert_eq!(authorized.send().await.unwrap().status(), 204);
    let listed = http
        .get(&url)
        .bearer_auth("push-api-token-0123456789")
        .send()
        .await
        .unwrap();
    let listed: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(listed["tokens"], serde_json::json!([CAROL_DEVICE]));
    assert_eq!(push.metric("herald_push_api_refused_total").await, 3.0);
}
