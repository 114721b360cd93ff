//! A server that stops answering (SIGSTOP: the socket stays open) is
//! found dead by unanswered PINGs, and left.

mod common;

use std::time::{Duration, Instant};

use common::*;
use herald_nats::connection::NatsSecurity;
use herald_subscriptions::{Options, RoundTripError};
use herald_testing::{NatsServer, eventually};

#[tokio::test]
async fn a_silent_server_is_detected_within_the_ping_budget() {
    let server = NatsServer::start();
    let ping = Duration::from_millis(200);
    let options = Options {
        ping_interval: ping,
        connect_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let c = connect_with(&server.client_url(), &NatsSecurity::default(), options)
        .await
        .unwrap();
    let sid = c.subs.subscribe("herald.u.alive");
    c.subs.round_trip().await.unwrap();

    server.pause();
    let paused = Instant::now();
    let subs = c.subs.clone();
    let waiting = tokio::spawn(async move { subs.round_trip().await });
    eventually(
        Duration::from_secs(5),
        "the silent server detected",
        || async { (*c.losses.borrow() >= 1).then_some(()) },
    )
    .await;
    let detected = paused.elapsed();
    println!("a silent server was detected after {detected:?} (PING every {ping:?})");
    // Two PINGs unanswered, checked at the third tick (plus polling).
    assert!(
        detected < ping * 3 + Duration::from_millis(500),
        "{detected:?}"
    );
    assert!(!c.subs.stats().connected);
    let timed_out = waiting.await.unwrap();
    assert!(
        matches!(timed_out, Err(RoundTripError::TimedOut(_))),
        "{timed_out:?}"
    );

    server.resume();
    eventually(Duration::from_secs(10), "a reconnect", || async {
        (*c.losses.borrow() >= 2 && c.subs.stats().connected).then_some(())
    })
    .await;
    let nats = publisher(&server.client_url()).await;
    publish(&nats, "herald.u.alive", b"back").await;
    c.recorder.wait(sid, 1).await;
}
