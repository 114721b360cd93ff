//! What the server will not carry is said, not swallowed: a subscription
//! it refuses (a permissions rule, a subscription limit, a permissions
//! change it reloads) reaches `Deliver::refused` with its subject and
//! why, and the others keep working; a message over the size limit is
//! skipped and counted, and the connection stays.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use herald_nats::connection::{NatsSecurity, Password};
use herald_subscriptions::{Options, RefusalReason};
use herald_testing::{NatsServer, eventually};

fn login() -> NatsSecurity {
    NatsSecurity {
        nats_user: Some("edge".into()),
        nats_password: Some(Password::new("s3cret")),
        ..Default::default()
    }
}

/// A user `edge` who may not subscribe to `deny`.
fn denying(deny: &[&str]) -> String {
    let deny: Vec<String> = deny.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "authorization {{ users: [ {{ user: edge, password: \"s3cret\", permissions: {{ subscribe: {{ deny: [{}] }} }} }} ] }}\n",
        deny.join(", ")
    )
}

#[tokio::test]
async fn a_subscription_over_the_servers_limit_is_refused_by_name() {
    let server = NatsServer::start_with("max_subscriptions: 25\n");
    let c = connect(&server.client_url()).await;
    let sids: Vec<_> = (0..60)
        .map(|i| c.subs.subscribe(&format!("herald.u.user{i}")))
        .collect();
    c.subs.round_trip().await.unwrap();

    // Answered in order: the first 25 taken, the other 35 refused, each
    // by the time the round trip returns.
    let refusals = c.recorder.refusals();
    assert_eq!(refusals.len(), 35, "{refusals:?}");
    for (i, sid) in sids.iter().enumerate() {
        match refusals.get(sid) {
            Some(refusal) => {
                assert!(i >= 25, "user{i} refused");
                assert_eq!(refusal.subject, format!("herald.u.user{i}"));
                assert_eq!(refusal.reason, RefusalReason::MaxSubscriptions);
                assert!(
                    refusal.text.contains("maximum subscriptions"),
                    "{refusal:?}"
                );
            }
            None => assert!(i < 25, "user{i} not refused"),
        }
    }
    assert_eq!(c.subs.len(), 25, "refused ones are dropped");
    let stats = c.subs.stats();
    assert_eq!((stats.refused, stats.connects), (35, 1), "{stats:?}");

    // Room again: a new subscription is taken, and the connection works.
    c.subs.unsubscribe(sids[0]);
    let again = c.subs.subscribe("herald.u.user59");
    c.subs.round_trip().await.unwrap();
    assert_eq!(c.recorder.refusals().len(), 35);
    let nats = publisher(&server.client_url()).await;
    publish(&nats, "herald.u.user59", b"room").await;
    publish(&nats, "herald.u.user1", b"kept").await;
    c.recorder.wait(again, 1).await;
    c.recorder.wait(sids[1], 1).await;
    assert_eq!(*c.losses.borrow(), 0);
}

#[tokio::test]
async fn a_subject_the_user_may_not_follow_is_refused_and_the_rest_flow() {
    let server = NatsServer::start_with(&denying(&["herald.u.mallory"]));
    let c = connect_with(&server.client_url(), &login(), Options::default())
        .await
        .unwrap();
    let alice = c.subs.subscribe("herald.u.alice");
    let mallory = c.subs.subscribe("herald.u.mallory");
    let bob = c.subs.subscribe("herald.u.bob");
    c.subs.round_trip().await.unwrap();
    let refusals = c.recorder.refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let refusal = &refusals[&mallory];
    assert_eq!(refusal.subject, "herald.u.mallory");
    assert_eq!(refusal.reason, RefusalReason::Permissions);

    let urls = [server.client_url()];
    let (nats, _) = herald_nats::connection::connect(&urls, &login(), "herald-test publisher")
        .await
        .unwrap();
    for subject in ["herald.u.alice", "herald.u.bob"] {
        publish(&nats, subject, b"ok").await;
    }
    c.recorder.wait(alice, 1).await;
    c.recorder.wait(bob, 1).await;
}

#[tokio::test]
async fn a_permission_withdrawn_by_a_reload_ends_that_subscription_only() {
    let server = NatsServer::start_with(&denying(&["herald.u.nobody"]));
    let c = connect_with(&server.client_url(), &login(), Options::default())
        .await
        .unwrap();
    let alice = c.subs.subscribe("herald.u.alice");
    let bob = c.subs.subscribe("herald.u.bob");
    c.subs.round_trip().await.unwrap();
    assert!(c.recorder.refusals().is_empty());

    server.rewrite(&denying(&["herald.u.nobody", "herald.u.bob"]), &[]);
    server.reload();
    let refusals = eventually(Duration::from_secs(10), "bob's refusal", || async {
        let refusals = c.recorder.refusals();
        (!refusals.is_empty()).then_some(refusals)
    })
    .await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[&bob].subject, "herald.u.bob");
    assert_eq!(c.subs.len(), 1);
    let urls = [server.client_url()];
    let (nats, _) = herald_nats::connection::connect(&urls, &login(), "herald-test publisher")
        .await
        .unwrap();
    publish(&nats, "herald.u.alice", b"still").await;
    c.recorder.wait(alice, 1).await;
}

#[tokio::test]
async fn an_oversized_message_is_skipped_and_counted_and_the_connection_stays() {
    let server = NatsServer::start_with("max_payload: 8MB\n");
    let options = Options {
        max_message: 64 * 1024,
        ..Options::default()
    };
    let c = connect_with(&server.client_url(), &NatsSecurity::default(), options)
        .await
        .unwrap();
    let sid = c.subs.subscribe("herald.t.big");
    c.subs.round_trip().await.unwrap();
    let nats = publisher(&server.client_url()).await;
    for size in [100, 4 << 20, 64 * 1024 + 1, 200] {
        let payload = Bytes::from(vec![b'x'; size]);
        nats.publish("herald.t.big", payload).await.unwrap();
    }
    nats.flush().await.unwrap();
    let got = c.recorder.wait(sid, 2).await;
    let sizes: Vec<usize> = got.iter().map(|m| m.payload.len()).collect();
    assert_eq!(sizes, [100, 200]);
    let stats = c.subs.stats();
    assert_eq!((stats.oversized, stats.connects), (2, 1), "{stats:?}");
    assert_eq!(*c.losses.borrow(), 0);
}
