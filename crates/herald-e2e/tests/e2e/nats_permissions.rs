//! NATS locked down as Herald deploys it: a real nats-server loads
//! deploy/nats/auth.conf itself (generated from `auth_conf`, checked here),
//! and every service runs in-process with its own user and nothing more:
//! edges stream and resume, publish stores and answers with receipts,
//! presence answers over gRPC and NATS, the push worker consumes the
//! offline queue and keeps devices, and the Control API's orders
//! (Disconnect, Revoke, Follow, Unfollow, Topics) go from publish through
//! its buckets to the edges and back. The edge's user can neither forge
//! history, nor read the device bucket, nor write the control buckets or
//! send orders; anonymous clients are refused.

mod auth_conf;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use auth_conf::{CLIENT, EDGE, PRESENCE, PUBLISH, PUSH, Regions};
use futures::StreamExt;
use herald_domain::presence::wire::{QUERY_SUBJECT, STATS_SUBJECT};
use herald_domain::region::Region;
use herald_domain::subject::UserId;
use herald_e2e::*;
use herald_nats::connection::{LossCounter, NatsSecurity, Password, inbox_prefix};
use herald_nats::history::{shard_of, stored_subject, stream_name};
use herald_proto::v1::control_client::ControlClient;
use herald_proto::v1::{
    DisconnectRequest, DisconnectResponse, FollowRequest, GetPresenceRequest, GetPresenceResponse,
    HistoryRequest, OfflinePolicy, Outcome, PublishRequest, RevokeRequest, StatsResponse,
    TopicInfo, TopicsRequest, history_request, publish_request::Target,
};
use herald_testing::eventually;
use herald_testing::fcm::FakeFcm;
use herald_testing::nats::Files;
use herald_testing::sse::{QUIET, SseStream};
use herald_testing::supercluster::NatsSupercluster;
use herald_testing::token::{Claims, Sign, now};
use prometheus_client::registry::Registry;
use prost::Message;

const WAIT: Duration = Duration::from_secs(20);
const AUTH_CONF: &str = "deploy/nats/auth.conf";
const CONFIG_MAP: &str = "deploy/k8s/base/nats-auth.yaml";
/// The same for a supercluster of the regions `eu` and `us`, in the
/// overlays that deploy them.
const REGIONS_CONFIG_MAP: &str = "deploy/k8s/overlays/regions/gateway/nats-auth.yaml";
const REGIONS: [&str; 2] = ["eu", "us"];

fn regions() -> auth_conf::Regions {
    auth_conf::Regions(REGIONS.map(|r| Region::parse(r).unwrap()).to_vec())
}
const CAROL_DEVICE: &str = "fcm-device-token:carol_phone-1";

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn deploy_files_are_generated_from_the_permissions() {
    // nats-server reads an empty allow list as "everything".
    for user in auth_conf::users(&Regions::one()) {
        assert!(
            !user.publish.is_empty() && !user.subscribe.is_empty(),
            "{}",
            user.name
        );
    }
    let conf = auth_conf::render(&Regions::one());
    let config_map = auth_conf::config_map(&conf);
    let regional = auth_conf::config_map(&auth_conf::render(&regions()));
    for (path, want) in [
        (AUTH_CONF, conf),
        (CONFIG_MAP, config_map),
        (REGIONS_CONFIG_MAP, regional),
    ] {
        let file = repo_file(path);
        if std::env::var_os("HERALD_REGENERATE").is_some() {
            std::fs::write(&file, want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            have == want,
            "{path} differs from tests/nats_permissions/auth_conf.rs; regenerate with \
             HERALD_REGENERATE=1 cargo test -p herald-e2e --test e2e nats_permissions::"
        );
    }
}

/// A password for each user: letters and digits, starting with a letter,
/// as the file asks.
fn passwords(users: &[auth_conf::User]) -> HashMap<&'static str, String> {
    let password = || format!("h{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    users.iter().map(|u| (u.name, password())).collect()
}

/// The variables nats-server reads the passwords from.
fn password_env<'a>(
    users: &[auth_conf::User],
    passwords: &'a HashMap<&'static str, String>,
) -> Vec<(&'static str, &'a str)> {
    let variable = |u: &auth_conf::User| (u.password, passwords[u.name].as_str());
    users.iter().map(variable).collect()
}

/// The NATS user of `service`.
fn user_of(service: Service) -> &'static str {
    match service {
        Service::Publish => PUBLISH,
        Service::Edge => EDGE,
        Service::Presence => PRESENCE,
        Service::Push => PUSH,
    }
}

/// How service `user` logs in.
fn security(passwords: &HashMap<&'static str, String>, user: &str) -> NatsSecurity {
    NatsSecurity {
        nats_user: Some(user.to_owned()),
        nats_password: Some(Password::new(&passwords[user])),
        ..Default::default()
    }
}

/// A stack whose nats-server loads deploy/nats/auth.conf itself, each
/// service logging in with its own user; and each user's password.
struct LockedNats {
    stack: Stack,
    passwords: HashMap<&'static str, String>,
}

impl LockedNats {
    /// Starts NATS and the services `services` adds to the builder.
    async fn start(services: impl FnOnce(StackBuilder) -> StackBuilder) -> Self {
        let auth = std::fs::read_to_string(repo_file(AUTH_CONF)).unwrap();
        let users = auth_conf::users(&Regions::one());
        let passwords = passwords(&users);
        let env = password_env(&users, &passwords);
        let login = {
            let passwords = passwords.clone();
            move |service| security(&passwords, user_of(service))
        };
        let builder = Stack::builder()
            .nats_config("include ./auth.conf\n")
            .nats_files(&[("auth.conf", &auth)], &env)
            .login(login);
        let stack = services(builder).start().await;
        Self { stack, passwords }
    }

    fn security(&self, user: &str) -> NatsSecurity {
        security(&self.passwords, user)
    }

    /// Connects as the service `user` does: its flags, its connection name.
    async fn connect(&self, user: &str) -> (async_nats::Client, LossCounter) {
        let urls = [self.stack.nats_url()];
        herald_nats::connection::connect(&urls, &self.security(user), &format!("{user} e2e"))
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"))
    }

    /// A plain client logged in as `user` (on its inbox prefix) that
    /// records what the server refuses it.
    async fn observed(&self, user: &str) -> Observed {
        let (errors_tx, errors) = tokio::sync::mpsc::unbounded_channel();
        let prefix = match user {
            CLIENT => "_INBOX".to_owned(),
            service => inbox_prefix(service),
        };
        let client = async_nats::ConnectOptions::new()
            .user_and_password(user.to_owned(), self.passwords[user].clone())
            .custom_inbox_prefix(prefix)
            .event_callback(move |event| {
                let errors = errors_tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = errors.send(e.to_string());
                    }
                }
            })
            .connect(self.stack.nats_url())
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
        Observed { client, errors }
    }

    /// Permission violations in the server's log.
    fn violations(&self) -> Vec<String> {
        let log = self.stack.nats().log();
        log.lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_owned)
            .collect()
    }
}

struct Observed {
    client: async_nats::Client,
    errors: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Observed {
    /// Waits for the server to refuse `subject`.
    async fn refused(&mut self, subject: &str) {
        let quoted = format!("\"{subject}\"");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let error = tokio::time::timeout_at(deadline, self.errors.recv())
                .await
                .unwrap_or_else(|_| panic!("the server did not refuse {subject}"))
                .expect("the connection's events");
            if error.to_lowercase().contains("permissions violation") && error.contains(&quoted) {
                return;
            }
        }
    }

    /// Publishes to `subject` and waits for the server to refuse it.
    async fn publish_refused(&mut self, subject: &str) {
        self.client
            .publish(subject.to_owned(), "forged".into())
            .await
            .unwrap();
        self.refused(subject).await;
    }
}

/// Every service, each on its own user, and a fake FCM.
struct System {
    nats: LockedNats,
    fcm: FakeFcm,
    _dir: tempfile::TempDir,
}

impl System {
    async fn start() -> Self {
        let fcm = FakeFcm::start().await;
        let dir = tempfile::tempdir().unwrap();
        let push = push_config(&fcm, dir.path());
        let nats = LockedNats::start(|stack| {
            // edge-2 reads history from the stream leader (as with
            // replicas), edge-1 with direct gets: both ways of resuming
            // are exercised.
            stack
                .publish(herald_publish::Config::defaults("publish-1"))
                .edge(locked_edge("edge-1", 1))
                .edge(locked_edge("edge-2", 3))
                .presence(herald_presence::Config::defaults("presence-1"))
                .push(push)
        })
        .await;
        let stack = &nats.stack;
        for service in [stack.publish(), stack.presence(), stack.push()] {
            service.wait_ready().await;
        }
        Self {
            nats,
            fcm,
            _dir: dir,
        }
    }

    fn devices_url(&self, user: &str) -> String {
        format!("{}/v1/devices/{user}", self.nats.stack.push().url())
    }

    /// Waits until herald-publish's presence counts `users` users online.
    async fn until_publish_sees(&self, users: f64) {
        eventually(WAIT, "publish to see the connections", || async {
            let online = self
                .nats
                .stack
                .publish()
                .metric("herald_publish_presence_users_online")
                .await;
            (online == users).then_some(())
        })
        .await;
    }

    /// Publishes `data` to `users`; the receipts as (user, online, outcome).
    async fn publish(
        &self,
        users: &[&str],
        policy: OfflinePolicy,
        data: &str,
    ) -> Vec<(String, bool, Outcome)> {
        let request = PublishRequest {
            target: Some(Target::users(users)),
            data: data.to_owned(),
            offline: policy as i32,
            ..Default::default()
        };
        let response = self
            .nats
            .stack
            .publisher()
            .await
            .publish(request)
            .await
            .expect("Publish")
            .into_inner();
        response
            .receipts
            .iter()
            .map(|r| (r.user_id.clone(), r.online, r.outcome()))
            .collect()
    }
}

/// herald-publish with `config` on a connection made as its user.
async fn start_publish_on(
    client: async_nats::Client,
    losses: LossCounter,
    config: herald_publish::Config,
) -> Running {
    let mut registry = Registry::default();
    let server =
        herald_publish::PublishServer::start(config, client, losses.subscribe(), &mut registry)
            .await
            .expect("herald-publish starts as herald-publish");
    until_history_streams(&server).await;
    let ready = server.readiness();
    Running::start(registry, ready, |listener, shutdown| async move {
        server.serve(listener, shutdown).await.expect("gRPC server");
    })
    .await
}

/// An edge's config in these tests: `replicas` of history, fast
/// presence heartbeats, lifecycle events.
fn locked_edge(node: &str, replicas: u8) -> herald_edge::Config {
    let mut config = edge_config(node);
    config.presence_heartbeat = Duration::from_millis(200);
    config.history.history_replicas = replicas;
    config.lifecycle_events = true;
    config
}

/// An edge with `config` on a connection made as its user (`security`).
async fn start_edge_on(
    client: async_nats::Client,
    urls: &[String],
    security: &NatsSecurity,
    config: herald_edge::Config,
) -> Running {
    let mut registry = Registry::default();
    let name = format!("{EDGE} e2e");
    let link = herald_edge::Nats {
        client,
        urls,
        security,
        name: &name,
        subscriber: nats_subscriber(),
    };
    let edge = herald_edge::Edge::connect(config, link, &mut registry)
        .await
        .expect("herald-edge starts as herald-edge");
    let ready = edge.readiness();
    Running::start(registry, ready, |listener, shutdown| {
        edge.serve(listener, shutdown)
    })
    .await
}

/// Opens alice's stream (and topic `news`) on `edge`, resuming after `last_id`.
async fn open_alice(edge: &Running, last_id: Option<&str>) -> SseStream {
    let token = Claims::new("alice").topics(&["news"]).hs256(SECRET);
    let mut request = reqwest::Client::new()
        .get(events_url(edge, &["news"]))
        .bearer_auth(token);
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    SseStream::from_response(request.send().await.unwrap()).await
}

fn receipt(user: &str, online: bool, outcome: Outcome) -> (String, bool, Outcome) {
    (user.to_owned(), online, outcome)
}

#[tokio::test]
async fn every_service_works_with_its_own_user() {
    let system = System::start().await;
    let http = reqwest::Client::new();

    // The push worker keeps carol's device in its bucket.
    let registered = http
        .put(system.devices_url("carol"))
        .json(&serde_json::json!({ "token": CAROL_DEVICE }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 204);
    let devices: serde_json::Value = http
        .get(system.devices_url("carol"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(devices["tokens"], serde_json::json!([CAROL_DEVICE]));

    // Live: stored, ephemeral and topic events reach alice; receipts know
    // she is online and bob is not.
    let mut alice = open_alice(&system.nats.stack.edges[0], None).await;
    system.until_publish_sees(1.0).await;
    let receipts = system
        .publish(&["alice", "bob"], OfflinePolicy::Store, "one")
        .await;
    assert_eq!(
        receipts,
        [
            receipt("alice", true, Outcome::Delivered),
            receipt("bob", false, Outcome::Stored)
        ]
    );
    let first = alice.next().await;
    assert_eq!(first.data, "one");
    assert!(!first.id.is_empty(), "a stored event has an id");
    publish_ephemeral(
        &mut system.nats.stack.publisher().await,
        &["alice"],
        "blink",
    )
    .await;
    assert_eq!(alice.next().await.data, "blink");
    publish_to_topic(&mut system.nats.stack.publisher().await, "news", "headline").await;
    assert_eq!(alice.next().await.data, "headline");
    let flash = PublishRequest {
        target: Some(Target::Topic("news".into())),
        data: "flash".into(),
        ephemeral: true,
        ..Default::default()
    };
    system
        .nats
        .stack
        .publisher()
        .await
        .publish(flash)
        .await
        .unwrap();
    assert_eq!(alice.next().await.data, "flash");

    // Presence answers over gRPC, and over NATS to herald-client.
    assert_eq!(
        presence_of(system.nats.stack.presence(), &["alice"]).await,
        [(1, vec!["edge-1".to_owned()])]
    );
    let client = system.nats.observed(CLIENT).await.client;
    let query = GetPresenceRequest {
        user_ids: vec!["alice".into()],
    };
    let answer = client
        .request(QUERY_SUBJECT, query.encode_to_vec().into())
        .await
        .expect("a presence answer over NATS");
    let answer = GetPresenceResponse::decode(answer.payload).unwrap();
    assert_eq!(answer.users[0].connections, 1, "{answer:?}");
    let stats = client
        .request(STATS_SUBJECT, Default::default())
        .await
        .expect("presence stats over NATS");
    assert_eq!(
        StatsResponse::decode(stats.payload).unwrap().users_online,
        1
    );

    // Resume: what alice missed comes from history, on either edge.
    drop(alice);
    system.until_publish_sees(0.0).await;
    for data in ["two", "three"] {
        let receipts = system.publish(&["alice"], OfflinePolicy::Store, data).await;
        assert_eq!(receipts, [receipt("alice", false, Outcome::Stored)]);
    }
    for edge in &system.nats.stack.edges {
        let mut resumed = open_alice(edge, Some(&first.id)).await;
        assert_eq!(resumed.next().await.data, "two");
        assert_eq!(resumed.next().await.data, "three");
    }

    // Fallback: carol's event goes to the queue, the worker pushes it and
    // acknowledges.
    let receipts = system
        .publish(&["carol"], OfflinePolicy::Fallback, "parcel")
        .await;
    assert_eq!(receipts, [receipt("carol", false, Outcome::Fallback)]);
    eventually(WAIT, "a push to carol's device", || async {
        let sends = system.fcm.sends();
        (sends.len() == 1).then_some(sends)
    })
    .await;
    assert_eq!(system.fcm.sends()[0].body["message"]["token"], CAROL_DEVICE);
    let queue = system.nats.observed(PUSH).await.client;
    let js = async_nats::jetstream::new(queue);
    eventually(WAIT, "the offline queue to empty", || async {
        let mut stream = js.get_stream("HERALD_OFFLINE").await.ok()?;
        (stream.info().await.ok()?.state.messages == 0).then_some(())
    })
    .await;

    assert_eq!(system.nats.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn the_edge_user_cannot_forge_history_nor_read_devices() {
    let nats = LockedNats::start(|stack| stack).await;
    let (client, losses) = nats.connect(PUBLISH).await;
    let config = herald_publish::Config::defaults("publish-1");
    let shards = config.history.history_shards;
    herald_publish::PublishServer::start(
        config,
        client,
        losses.subscribe(),
        &mut Registry::default(),
    )
    .await
    .expect("the history streams");
    let (client, _) = nats.connect(PUSH).await;
    let devices = herald_push::devices::Registry::open(&async_nats::jetstream::new(client), 1, 5)
        .await
        .expect("the device bucket");
    let carol = UserId::parse("carol").unwrap();
    devices.add(&carol, CAROL_DEVICE).await.unwrap();

    let mut edge = nats.observed(EDGE).await;
    // Forged history: neither a store nor a live event gets through.
    let live = "herald.u.alice";
    let shard = shard_of(live, shards);
    let stored = stored_subject(live, shard);
    edge.publish_refused(&stored).await;
    edge.publish_refused(live).await;
    let js = async_nats::jetstream::new(edge.client.clone());
    let mut history = js
        .get_stream(stream_name(&Default::default(), shard))
        .await
        .unwrap();
    assert_eq!(history.info().await.unwrap().state.messages, 0);

    // The device bucket: no direct or leader get, no info, no consumer,
    // no subscription to its subjects.
    for api in [
        "$JS.API.DIRECT.GET.KV_herald_devices.$KV.herald_devices.carol",
        "$JS.API.DIRECT.GET.KV_herald_devices",
        "$JS.API.STREAM.MSG.GET.KV_herald_devices",
        "$JS.API.STREAM.INFO.KV_herald_devices",
        "$JS.API.CONSUMER.CREATE.KV_herald_devices",
        "$KV.herald_devices.carol",
    ] {
        edge.publish_refused(api).await;
    }
    let mut bucket = edge.client.subscribe("$KV.herald_devices.>").await.unwrap();
    edge.refused("$KV.herald_devices.>").await;
    devices
        .add(&carol, "fcm-device-token:carol_tablet")
        .await
        .unwrap();
    let leaked = tokio::time::timeout(QUIET, bucket.next()).await;
    assert!(leaked.is_err(), "the edge read the bucket: {leaked:?}");
    assert_eq!(devices.list(&carol).await.unwrap().len(), 2);

    // Nor another service's replies (publish acknowledgements, API answers).
    for inbox in ["_INBOX_herald-publish.>", "_INBOX.>", ">"] {
        let _sub = edge.client.subscribe(inbox).await.unwrap();
        edge.refused(inbox).await;
    }

    // Only herald-publish sends events.
    for user in [PRESENCE, PUSH, CLIENT] {
        let mut other = nats.observed(user).await;
        other.publish_refused(live).await;
        other.publish_refused(&stored).await;
    }
    // What the other test finds none of.
    let logged = nats.violations();
    assert!(logged.iter().any(|l| l.contains(&stored)), "{logged:?}");
}

#[tokio::test]
async fn anonymous_and_wrong_credentials_are_refused() {
    let nats = LockedNats::start(|stack| stack).await;
    let url = nats.stack.nats_url();
    let anonymous = async_nats::ConnectOptions::new().connect(&url).await;
    assert_eq!(
        anonymous.err().map(|e| e.kind()),
        Some(async_nats::ConnectErrorKind::AuthorizationViolation)
    );
    let urls = [url.clone()];
    let services =
        herald_nats::connection::connect(&urls, &Default::default(), "herald-edge x").await;
    assert!(services.is_err(), "no credentials, no connection");
    let mut wrong = nats.security(EDGE);
    wrong.nats_password = Some(Password::new(&nats.passwords[PUBLISH]));
    let refused = herald_nats::connection::connect(&urls, &wrong, "herald-edge x").await;
    assert!(refused.is_err(), "another user's password");

    // Credentials in the URL work (async-nats alone would drop them).
    let with_login = url.replace(
        "nats://",
        &format!("nats://{EDGE}:{}@", nats.passwords[EDGE]),
    );
    herald_nats::connection::connect(&[with_login], &Default::default(), "herald-edge x")
        .await
        .expect("the edge's login, given in the URL");
}

/// Opens `user`'s stream on `edge` with a token issued at `iat`.
async fn open_as(edge: &Running, user: &str, iat: u64) -> SseStream {
    let token = Claims {
        iat: Some(iat),
        ..Claims::new(user)
    }
    .hs256(SECRET);
    SseStream::open(&reqwest::Client::new(), &events_url(edge, &[]), &token).await
}

/// The stream's next event is `herald.disconnect` saying `reason`, no
/// reconnect.
async fn ends_with_disconnect(stream: &mut SseStream, reason: &str) {
    let event = stream.next().await;
    assert_eq!(event.event, "herald.disconnect");
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        data,
        serde_json::json!({"reason": reason, "reconnect": false})
    );
    assert!(stream.next_within(WAIT).await.is_none(), "the stream ends");
}

/// Waits until herald-publish's presence counts `users` users online.
async fn until_publish_sees(publish: &Running, users: f64) {
    eventually(WAIT, "publish to see the connections", || async {
        let online = publish.metric("herald_publish_presence_users_online").await;
        (online == users).then_some(())
    })
    .await;
}

fn follow(user: &str, topic: &str) -> FollowRequest {
    FollowRequest {
        user_ids: vec![user.into()],
        topics: vec![topic.into()],
    }
}

#[tokio::test]
async fn control_works_with_the_services_own_users() {
    let nats = LockedNats::start(|stack| {
        stack
            .publish(herald_publish::Config::defaults("publish-1"))
            .edge(locked_edge("edge-1", 1))
            .edge(locked_edge("edge-2", 1))
    })
    .await;
    let (publish, edges) = (nats.stack.publish(), &nats.stack.edges);
    let mut control = ControlClient::connect(publish.url()).await.unwrap();
    let old = now() - 10;
    // The app's services follow streams' lifecycle as the client user.
    let (app, _) = nats.connect(CLIENT).await;
    let mut lifecycle = app.subscribe("herald.lifecycle.*").await.unwrap();
    app.flush().await.unwrap();

    // Disconnect: publish sends the order, both edges end alice's streams
    // and answer on publish's inbox.
    let mut alice = [
        open_as(&edges[0], "alice", old).await,
        open_as(&edges[1], "alice", old).await,
    ];
    let mut bob = open_as(&edges[0], "bob", old).await;
    until_publish_sees(publish, 2.0).await;
    let answer = control
        .disconnect(DisconnectRequest {
            user_ids: vec!["alice".into()],
            reason: "logout".into(),
            reconnect: false,
        })
        .await
        .expect("Disconnect")
        .into_inner();
    assert_eq!(
        answer,
        DisconnectResponse {
            streams: 2,
            edges: 2
        }
    );
    for stream in &mut alice {
        ends_with_disconnect(stream, "logout").await;
    }
    let connect = tokio::time::timeout(Duration::from_secs(10), lifecycle.next())
        .await
        .expect("a lifecycle event")
        .unwrap();
    assert_eq!(connect.subject.as_str(), "herald.lifecycle.alice");

    // Follow: publish writes alice's and carol's follows to their bucket;
    // alice's open stream joins the topic at once.
    let mut alice = open_as(&edges[0], "alice", old).await;
    until_publish_sees(publish, 2.0).await;
    let answer = control
        .follow(follow("alice", "news"))
        .await
        .expect("Follow");
    assert_eq!(answer.into_inner().streams, 1);
    control
        .follow(follow("carol", "news"))
        .await
        .expect("Follow");
    publish_to_topic(&mut publisher(publish).await, "news", "headline").await;
    assert_eq!(alice.next().await.data, "headline");
    let topics = control
        .topics(TopicsRequest::default())
        .await
        .expect("Topics")
        .into_inner();
    let news = TopicInfo {
        topic: "news".into(),
        streams: 1,
        edges: 1,
    };
    assert_eq!(topics.topics, [news]);

    // History: publish reads the topic's events with its own user.
    let history = control
        .history(HistoryRequest {
            target: Some(history_request::Target::Topic("news".into())),
            since: String::new(),
            limit: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("History: {e}; {:?}", nats.violations()))
        .into_inner();
    let data: Vec<_> = history.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["headline"]);

    // Revoke: the bucket keeps it, the edge ends alice's stream.
    let answer = control
        .revoke(RevokeRequest {
            user_ids: vec!["alice".into()],
            issued_before_unix: 0,
            reason: "stolen".into(),
        })
        .await
        .expect("Revoke");
    assert_eq!(answer.into_inner().streams, 1);
    ends_with_disconnect(&mut alice, "stolen").await;

    // An edge started now reads both buckets with its own user: alice's
    // old token is refused, carol follows the topic without asking.
    let (client, _) = nats.connect(EDGE).await;
    let urls = [nats.stack.nats_url()];
    let config = locked_edge("edge-3", 1);
    let later = start_edge_on(client, &urls, &nats.security(EDGE), config).await;
    let response = reqwest::Client::new()
        .get(events_url(&later, &[]))
        .bearer_auth(
            Claims {
                iat: Some(old),
                ..Claims::new("alice")
            }
            .hs256(SECRET),
        )
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "token_revoked", "{body}");
    let mut carol = open_as(&later, "carol", now()).await;
    // (The bucket may be read just after the connect: then the stream
    // joins the topic a moment later.)
    eventually(WAIT, "carol's stream to follow the topic", || {
        let mut control = control.clone();
        async move {
            let request = TopicsRequest {
                prefix: "news".into(),
                limit: 0,
            };
            let topics = control.topics(request).await.ok()?.into_inner().topics;
            (topics.first().map(|t| t.streams) == Some(1)).then_some(())
        }
    })
    .await;
    publish_to_topic(&mut publisher(publish).await, "news", "for carol").await;
    assert_eq!(carol.next().await.data, "for carol");

    // Unfollow: the topic leaves carol's stream.
    until_publish_sees(publish, 2.0).await;
    let answer = control
        .unfollow(follow("carol", "news"))
        .await
        .expect("Unfollow");
    assert_eq!(answer.into_inner().streams, 1);
    publish_to_topic(&mut publisher(publish).await, "news", "not for carol").await;
    publish_ephemeral(&mut publisher(publish).await, &["carol"], "own").await;
    assert_eq!(carol.next().await.data, "own");
    assert_eq!(nats.violations(), Vec::<String>::new());

    // The edge's user reads the buckets and answers orders, no more: it
    // writes no entry, changes no bucket, sends no order, and answers only
    // the orders it receives.
    let mut edge = nats.observed(EDGE).await;
    let alice_key = herald_domain::control::bucket_key(&UserId::parse("alice").unwrap());
    for forged in [
        format!("$KV.herald_revocations.{alice_key}"),
        format!("$KV.herald_follows.{alice_key}"),
        "$JS.API.STREAM.CREATE.KV_herald_revocations".into(),
        "$JS.API.STREAM.UPDATE.KV_herald_follows".into(),
        "$JS.API.STREAM.PURGE.KV_herald_revocations".into(),
        "$JS.API.STREAM.DELETE.KV_herald_revocations".into(),
        "$JS.API.STREAM.MSG.DELETE.KV_herald_revocations".into(),
        "herald.control.disconnect".into(),
        "herald.control.revoke".into(),
        "herald.control.follows".into(),
        "_INBOX_herald-publish.forged".into(),
    ] {
        edge.publish_refused(&forged).await;
    }
    for user in [PRESENCE, PUSH, CLIENT] {
        nats.observed(user)
            .await
            .publish_refused("herald.control.disconnect")
            .await;
    }
    // Nothing forged took effect: bob's stream is open, alice still revoked.
    publish_ephemeral(&mut publisher(publish).await, &["bob"], "still here").await;
    assert_eq!(bob.next().await.data, "still here");
    let response = reqwest::Client::new()
        .get(events_url(&edges[1], &[]))
        .bearer_auth(
            Claims {
                iat: Some(old),
                ..Claims::new("alice")
            }
            .hs256(SECRET),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// The supercluster form of the permissions (the region overlays'
/// nats-auth, deploy/k8s/overlays/regions): herald-publish in each
/// region and an edge in us, each on its own user; an event stored in
/// one region reaches a stream in the other, stored events of both
/// regions are resumed there, an ephemeral one crosses too; NATS refuses
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regional_services_work_with_their_own_users() {
    // By hand, not a `Stack`: a supercluster, each service on its region.
    let regions = regions();
    let users = auth_conf::users(&regions);
    let passwords = passwords(&users);
    let env = password_env(&users, &passwords);
    let auth = auth_conf::render(&regions);
    let files = Files {
        files: &[("auth.conf", &auth)],
        env: &env,
    };
    let supercluster =
        NatsSupercluster::start_with(&REGIONS, 1, "include ./auth.conf\n", &files).await;
    let connect = |region: &str, user: &'static str| {
        let urls = vec![supercluster.region(region).client_urls()];
        let security = security(&passwords, user);
        async move {
            let name = format!("{user} e2e");
            let (client, losses) = herald_nats::connection::connect(&urls, &security, &name)
                .await
                .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
            (client, losses, urls, security)
        }
    };
    let mut publishers = Vec::new();
    for region in REGIONS {
        let (client, losses, ..) = connect(region, PUBLISH).await;
        let config = regional_publish(&format!("publish-{region}"), region, 1);
        publishers.push(start_publish_on(client, losses, config).await);
    }
    let (client, _, urls, security) = connect("us", EDGE).await;
    let config = regional_edge("edge-us", "us", &REGIONS, 1);
    let edge = start_edge_on(client, &urls, &security, config).await;

    let http = reqwest::Client::new();
    let token = Claims::new("alice").hs256(SECRET);
    let mut alice = SseStream::open(&http, &events_url(&edge, &[]), &token).await;
    let (mut eu, mut us) = (
        publisher(&publishers[0]).await,
        publisher(&publishers[1]).await,
    );
    // An ephemeral event from eu reaches her in us.
    until_heard(&mut eu, &mut alice, "alice").await;
    publish_to_users(&mut eu, &["alice"], "stored in eu").await;
    let first = alice.next().await;
    assert_eq!(first.data, "stored in eu");
    drop(alice);
    publish_to_users(&mut eu, &["alice"], "eu, missed").await;
    publish_to_users(&mut us, &["alice"], "us, missed").await;
    let mut alice = resume(&http, &edge, &token, &first.id).await;
    let mut resumed = vec![alice.next().await.data, alice.next().await.data];
    resumed.sort();
    assert_eq!(resumed, ["eu, missed", "us, missed"]);

    let violations: Vec<String> = (supercluster.regions.iter())
        .flat_map(|(_, cluster)| cluster.nodes.iter().map(|node| node.log()))
        .flat_map(|log| {
            log.lines()
                .filter(|l| l.contains("Violation"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(violations, Vec::<String>::new());
}
