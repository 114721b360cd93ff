//! What the tests share: a callback that records what it is handed, and
//! connecting with it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_nats::connection::NatsSecurity;
use herald_subscriptions::{Deliver, Options, Refusal, Sid, Source, Subscriptions};
use tokio::sync::watch;

/// Keeps every message and refusal handed to it, by sid.
#[derive(Default)]
pub(crate) struct Recorder {
    seen: Mutex<HashMap<Sid, Vec<async_nats::Message>>>,
    sources: Mutex<Vec<Source>>,
    refusals: Mutex<HashMap<Sid, Refusal>>,
}

impl Deliver for Recorder {
    fn deliver(&self, sid: Sid, message: &async_nats::Message, source: Source) {
        let mut seen = self.seen.lock().unwrap();
        seen.entry(sid).or_default().push(message.clone());
        self.sources.lock().unwrap().push(source);
    }

    fn refused(&self, sid: Sid, refusal: &Refusal) {
        let previous = self.refusals.lock().unwrap().insert(sid, refusal.clone());
        assert!(previous.is_none(), "sid {sid} refused twice");
    }
}

impl Recorder {
    pub(crate) fn refusals(&self) -> HashMap<Sid, Refusal> {
        self.refusals.lock().unwrap().clone()
    }

    /// Which connection each message came from, in arrival order.
    pub(crate) fn sources(&self) -> Vec<Source> {
        self.sources.lock().unwrap().clone()
    }

    pub(crate) fn of(&self, sid: Sid) -> Vec<async_nats::Message> {
        self.seen
            .lock()
            .unwrap()
            .get(&sid)
            .cloned()
            .unwrap_or_default()
    }

    /// How many messages each sid got.
    pub(crate) fn counts(&self) -> HashMap<Sid, usize> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(sid, m)| (*sid, m.len())).collect()
    }

    /// Waits until `sid` has `n` messages; returns them.
    pub(crate) async fn wait(&self, sid: Sid, n: usize) -> Vec<async_nats::Message> {
        herald_testing::eventually(
            Duration::from_secs(10),
            &format!("{n} messages for sid {sid}"),
            || async {
                let got = self.of(sid);
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

/// A connection to `urls` recording into a new [`Recorder`].
pub(crate) struct Connected {
    pub subs: Subscriptions,
    pub recorder: Arc<Recorder>,
    pub losses: watch::Receiver<u64>,
}

pub(crate) async fn connect(url: &str) -> Connected {
    connect_with(url, &NatsSecurity::default(), Options::default())
        .await
        .unwrap()
}

pub(crate) async fn connect_with(
    url: &str,
    security: &NatsSecurity,
    options: Options,
) -> Result<Connected, herald_subscriptions::ConnectError> {
    let recorder = Arc::new(Recorder::default());
    let (tx, losses) = watch::channel(0);
    let urls: Vec<String> = url.split(',').map(str::to_owned).collect();
    let subs = Subscriptions::connect_with(
        &urls,
        security,
        "herald-test subs",
        tx,
        recorder.clone(),
        options,
    )
    .await?;
    Ok(Connected {
        subs,
        recorder,
        losses,
    })
}

pub(crate) async fn publisher(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.unwrap()
}

/// Publishes and waits until the server has it.
pub(crate) async fn publish(client: &async_nats::Client, subject: &str, payload: &'static [u8]) {
    client
        .publish(subject.to_owned(), bytes::Bytes::from_static(payload))
        .await
        .unwrap();
    client.flush().await.unwrap();
}

/// The server's view of our connection (by its name) in /connz.
pub(crate) async fn our_connection(
    server: &herald_testing::NatsServer,
) -> Option<serde_json::Value> {
    let connz = server.monitor("/connz?limit=1000").await;
    connz["connections"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "herald-test subs")
        .cloned()
}
