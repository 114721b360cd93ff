//! Every way Herald logs in to NATS works here as it does through
//! async-nats (herald_nats::connection::connect publishes with the same flags),
//! and a refusal fails fast, saying why.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use herald_nats::connection::{NatsSecurity, Password};
use herald_subscriptions::{ConnectError, Options, TlsError};
use herald_testing::nats_auth::Operator;
use herald_testing::pki::TestCa;
use herald_testing::{NatsServer, eventually};

/// Subscribes through `url` and `security`, publishes with async-nats
/// logged in the same way, and checks the message arrives.
async fn round_trip_through(url: &str, security: &NatsSecurity) {
    let c = connect_with(url, security, Options::default())
        .await
        .unwrap();
    let sid = c.subs.subscribe("herald.u.auth");
    c.subs.round_trip().await.unwrap();
    let urls = [url.to_owned()];
    let (nats, _) = herald_nats::connection::connect(&urls, security, "herald-test publisher")
        .await
        .unwrap();
    publish(&nats, "herald.u.auth", b"let in").await;
    assert_eq!(&c.recorder.wait(sid, 1).await[0].payload[..], b"let in");
}

fn file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn user_and_password_from_flags_or_url_and_a_wrong_one_refused_fast() {
    let server = NatsServer::start_with("authorization { user: edge, password: \"s3cret\" }\n");
    let flags = NatsSecurity {
        nats_user: Some("edge".into()),
        nats_password: Some(Password::new("s3cret")),
        ..Default::default()
    };
    round_trip_through(&server.client_url(), &flags).await;
    let in_url = server
        .client_url()
        .replace("nats://", "nats://edge:s3cret@");
    round_trip_through(&in_url, &NatsSecurity::default()).await;

    let wrong = NatsSecurity {
        nats_password: Some(Password::new("guess")),
        ..flags
    };
    let started = Instant::now();
    let refused = connect_with(&server.client_url(), &wrong, Options::default()).await;
    let Err(ConnectError::Refused { reason, url }) = refused.map(|_| ()) else {
        panic!("a wrong password was not refused");
    };
    assert!(reason.contains("Authorization Violation"), "{reason}");
    assert!(!url.contains("guess"));
    assert!(started.elapsed() < Duration::from_secs(2));
    let anonymous = connect_with(
        &server.client_url(),
        &NatsSecurity::default(),
        Options::default(),
    )
    .await;
    assert!(matches!(
        anonymous.map(|_| ()),
        Err(ConnectError::Refused { .. })
    ));
}

#[tokio::test]
async fn a_token_in_the_url() {
    let server = NatsServer::start_with("authorization { token: \"t0ken\" }\n");
    let url = server.client_url().replace("nats://", "nats://t0ken@");
    round_trip_through(&url, &NatsSecurity::default()).await;
}

#[tokio::test]
async fn an_nkey_seed_file() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with(&format!(
        "authorization {{ users: [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    ));
    let security = NatsSecurity {
        nats_nkey: Some(file(dir.path(), "edge.nk", &user.seed().unwrap())),
        ..Default::default()
    };
    round_trip_through(&server.client_url(), &security).await;

    let stranger = NatsSecurity {
        nats_nkey: Some(file(
            dir.path(),
            "other.nk",
            &nkeys::KeyPair::new_user().seed().unwrap(),
        )),
        ..Default::default()
    };
    let refused = connect_with(&server.client_url(), &stranger, Options::default()).await;
    assert!(matches!(
        refused.map(|_| ()),
        Err(ConnectError::Refused { .. })
    ));
}

#[tokio::test]
async fn a_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let operator = Operator::new();
    let server = NatsServer::start_with(operator.server_config());
    let security = NatsSecurity {
        nats_creds: Some(file(dir.path(), "edge.creds", operator.creds())),
        ..Default::default()
    };
    round_trip_through(&server.client_url(), &security).await;

    let other = NatsSecurity {
        nats_creds: Some(file(dir.path(), "other.creds", Operator::new().creds())),
        ..Default::default()
    };
    let refused = connect_with(&server.client_url(), &other, Options::default()).await;
    assert!(matches!(
        refused.map(|_| ()),
        Err(ConnectError::Refused { .. })
    ));
    let broken = NatsSecurity {
        nats_creds: Some(file(dir.path(), "broken.creds", "not a creds file")),
        ..Default::default()
    };
    let refused = connect_with(&server.client_url(), &broken, Options::default()).await;
    assert!(matches!(refused.map(|_| ()), Err(ConnectError::Config(_))));
}

#[tokio::test]
async fn tls_with_a_ca_and_mutual_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("NATS CA");
    let server_pair = ca.server();
    let client_pair = ca.client("herald-edge");
    let ca_file = file(dir.path(), "ca.crt", &ca.cert_pem);
    let (cert, key) = (
        file(dir.path(), "nats.crt", &server_pair.cert_pem),
        file(dir.path(), "nats.key", &server_pair.key_pem),
    );
    let trusting = NatsSecurity {
        nats_tls_ca: Some(ca_file.clone()),
        ..Default::default()
    };
    let tls = NatsServer::start_with(&format!(
        "tls {{ cert_file: {cert:?}, key_file: {key:?} }}\n"
    ));
    round_trip_through(&tls.client_url(), &trusting).await;
    round_trip_through(&tls.client_url().replace("nats://", "tls://"), &trusting).await;

    let mutual = NatsServer::start_with(&format!(
        "tls {{ cert_file: {cert:?}, key_file: {key:?}, ca_file: {ca_file:?}, verify: true }}\n"
    ));
    let with_cert = NatsSecurity {
        nats_tls_cert: Some(file(dir.path(), "client.crt", &client_pair.cert_pem)),
        nats_tls_key: Some(file(dir.path(), "client.key", &client_pair.key_pem)),
        ..trusting.clone()
    };
    round_trip_through(&mutual.client_url(), &with_cert).await;
    let without = connect_with(&mutual.client_url(), &trusting, Options::default()).await;
    assert!(without.is_err(), "no client certificate, no connection");

    let other_ca = NatsSecurity {
        nats_tls_ca: Some(file(
            dir.path(),
            "other.crt",
            &TestCa::new("other").cert_pem,
        )),
        ..Default::default()
    };
    let untrusted = connect_with(&tls.client_url(), &other_ca, Options::default()).await;
    assert!(matches!(
        untrusted.map(|_| ()),
        Err(ConnectError::Tls { .. })
    ));
    let plain = NatsServer::start();
    let no_tls = connect_with(&plain.client_url(), &trusting, Options::default()).await;
    let Err(ConnectError::Tls { error, .. }) = no_tls.map(|_| ()) else {
        panic!("TLS was required but not offered, and that passed");
    };
    assert!(matches!(error, TlsError::NotOffered), "{error}");
}

/// A key rotated as an operator does it (the seed file replaced, then the
/// server's config reloaded with the new key, which closes connections
/// logged in with the old one) is picked up at the next reconnect, by
/// this connection and by async-nats (herald_nats::connection::connect) alike:
/// nothing restarts.
#[tokio::test]
async fn a_rotated_nkey_is_read_again_at_the_next_reconnect_by_both_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user());
    let users = |key: &nkeys::KeyPair| {
        format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}\n",
            key.public_key()
        )
    };
    let server = NatsServer::start_with(&users(&old));
    let seed = file(dir.path(), "edge.nk", &old.seed().unwrap());
    let security = NatsSecurity {
        nats_nkey: Some(seed.clone()),
        ..Default::default()
    };
    let c = connect_with(&server.client_url(), &security, Options::default())
        .await
        .unwrap();
    let sid = c.subs.subscribe("herald.u.rotated");
    c.subs.round_trip().await.unwrap();
    let urls = [server.client_url()];
    let (nats, _) = herald_nats::connection::connect(&urls, &security, "herald-test publisher")
        .await
        .unwrap();

    std::fs::write(&seed, new.seed().unwrap()).unwrap();
    server.rewrite(&users(&new), &[]);
    server.reload();
    eventually(
        Duration::from_secs(20),
        "both connections back with the new key",
        || async {
            let back = c.subs.stats().connects >= 2 && c.subs.stats().connected;
            let published = back
                && nats
                    .publish("herald.u.rotated", "rotated".into())
                    .await
                    .is_ok()
                && nats.flush().await.is_ok();
            (published && !c.recorder.of(sid).is_empty()).then_some(())
        },
    )
    .await;
}
