//! `round_trip` returns once the server has every SUB sent before it, and
//! callers who ask together share PINGs.

mod common;

use std::sync::Arc;

use common::*;
use herald_testing::NatsServer;

#[tokio::test]
async fn concurrent_callers_lose_nothing_and_share_pings() {
    const CALLERS: usize = 300;
    let server = NatsServer::start();
    let c = connect(&server.client_url()).await;
    let nats = publisher(&server.client_url()).await;
    let pings_before = c.subs.stats().pings;
    let subs = Arc::new(c.subs.clone());
    let callers = (0..CALLERS).map(|i| {
        let (subs, nats) = (subs.clone(), nats.clone());
        tokio::spawn(async move {
            let subject = format!("herald.u.rt{i}");
            let sid = subs.subscribe(&subject);
            subs.round_trip().await.unwrap();
            // Published right after: the server must route it to us.
            nats.publish(subject, bytes::Bytes::from_static(b"now"))
                .await
                .unwrap();
            sid
        })
    });
    let sids: Vec<_> = futures::future::try_join_all(callers).await.unwrap();
    nats.flush().await.unwrap();
    for sid in sids {
        let got = c.recorder.wait(sid, 1).await;
        assert_eq!(&got[0].payload[..], b"now");
    }
    let pings = c.subs.stats().pings - pings_before;
    println!("{CALLERS} concurrent round trips took {pings} PINGs");
    assert!((1..=CALLERS as u64 / 10).contains(&pings), "{pings} PINGs");
}

#[tokio::test]
async fn a_round_trip_alone_sends_one_ping() {
    let server = NatsServer::start();
    let c = connect(&server.client_url()).await;
    let before = c.subs.stats().pings;
    c.subs.round_trip().await.unwrap();
    c.subs.round_trip().await.unwrap();
    assert_eq!(c.subs.stats().pings - before, 2);
}

/// A server that answers late (here frozen past the 5 s a lost
/// connection is given) is waited for while the connection stands: a
/// loaded node's late answer is not a refusal. A server gone is not
/// waited for past those 5 s.
#[tokio::test]
async fn a_slow_server_is_waited_for_and_a_gone_one_is_not() {
    use herald_subscriptions::{ROUND_TRIP_TIMEOUT, RoundTripError};
    use std::time::{Duration, Instant};

    let mut server = NatsServer::start();
    let c = connect(&server.client_url()).await;
    c.subs.round_trip().await.unwrap();
    server.pause();
    let started = Instant::now();
    let waiting = tokio::spawn({
        let subs = c.subs.clone();
        async move { subs.round_trip().await }
    });
    tokio::time::sleep(ROUND_TRIP_TIMEOUT + Duration::from_secs(2)).await;
    server.resume();
    let answered = tokio::time::timeout(Duration::from_secs(10), waiting).await;
    answered
        .unwrap()
        .unwrap()
        .expect("answered late, not refused");
    assert!(started.elapsed() > ROUND_TRIP_TIMEOUT);

    server.kill();
    let started = Instant::now();
    let gone = c.subs.round_trip().await;
    assert!(
        matches!(gone, Err(RoundTripError::TimedOut(t)) if t == ROUND_TRIP_TIMEOUT),
        "{gone:?}"
    );
    assert!(started.elapsed() < ROUND_TRIP_TIMEOUT + Duration::from_secs(3));
}
