//! The streams' subjects held as a user of the mature client would hold
//! them: an async-nats `Subscriber` and a task per subject, on a client of
//! their own logged in like the edge's main one. This is what the lean
//! subscriber (herald-subscriptions) is checked against
//! (`--nats-subscriber async-nats`; scripts/test.sh runs the fan-out,
//! resume, failover and cluster suites both ways), not what the edge
//! serves with: a subject costs ~10 KiB more here (see
//! herald-subscriptions' crate docs), and what async-nats does not say or
//! do, this does not either:
//!
//! - **Refusals.** nats-server answers a SUB it refuses (a permissions
//!   violation, a subscription limit) with `-ERR`, which async-nats hands
//!   on only as a connection event, `Event::ServerError`, naming no
//!   subscription (and a limit's text names no subject). So this path logs
//!   it and cannot tell which subscription was refused: [`Deliver::refused`]
//!   is never called, the joins are confirmed by the next round trip, and
//!   the streams stay open and receive nothing.
//! - **Lame duck mode.** async-nats reports it and stays until the server
//!   closes the connection; that disconnect is a loss, and every stream
//!   ends (its clients resume).
//! - **Size.** Every message up to the server's `max_payload` is handed on.
//!
//! Losses count as on the lean connection: at every disconnect and slow
//! consumer (async-nats dropped a message for a subscription whose channel
//! was full), and once more when the subscriptions are back on the server
//! after a reconnect, since streams opened meanwhile may have missed events.
//! Every message comes from one connection: [`Source::Only`].

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use herald_nats::connection::{LossCounter, NatsSecurity, SharedRoundTrips};
use herald_subscriptions::{
    ConnectError, Deliver, ROUND_TRIP_TIMEOUT, RoundTripError, Sid, Source, Stats,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// A cheap handle to the subscriptions; the task that owns them ends,
/// unsubscribing each, when the handle is dropped.
pub(super) struct Subscribers {
    commands: mpsc::UnboundedSender<Command>,
    /// Sids are ours, not async-nats's: given before the SUB is made.
    next_sid: AtomicU64,
    counters: Arc<Counters>,
    statistics: Arc<async_nats::Statistics>,
}

/// What the handle asks of the owning task, in order: a round trip asked
/// after a subscribe goes to the client after its SUB.
enum Command {
    Subscribe(Sid, String),
    Unsubscribe(Sid),
    RoundTrip(oneshot::Sender<Result<(), RoundTripError>>),
}

/// What async-nats does not count itself, for [`Stats`].
#[derive(Debug)]
struct Counters {
    connected: AtomicBool,
    /// Disconnected since the last connection: the next one is a reconnect.
    lost: AtomicBool,
    delivered: AtomicU64,
    /// Messages async-nats dropped for a subscriber that fell behind.
    dropped: AtomicU64,
}

impl Subscribers {
    /// Connects like the edge's main client (same URLs, credentials and
    /// name), failing fast at start-up; afterwards async-nats reconnects
    /// for as long as needed and subscribes again.
    pub(super) async fn connect(
        urls: &[String],
        security: &NatsSecurity,
        name: &str,
        losses: LossCounter,
        deliver: Arc<dyn Deliver>,
    ) -> Result<Self, ConnectError> {
        let (options, addrs) = herald_nats::connection::options(urls, security, name).await?;
        let counters = Arc::new(Counters {
            connected: AtomicBool::new(true),
            lost: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let events = Events {
            counters: counters.clone(),
            losses,
            round_trips: Arc::default(),
        };
        let round_trips = events.round_trips.clone();
        let client = options
            .request_timeout(Some(ROUND_TRIP_TIMEOUT))
            .event_callback(move |event| {
                let events = events.clone();
                async move { events.on(event) }
            })
            .connect(addrs.as_slice())
            .await
            .map_err(|e| refused_or_unreachable(urls, e))?;
        let shared = SharedRoundTrips::new(client.clone());
        let _ = round_trips.set(shared.clone());
        let statistics = client.statistics();
        let (commands, received) = mpsc::unbounded_channel();
        tokio::spawn(own(client, shared, received, deliver, counters.clone()));
        Ok(Self {
            commands,
            next_sid: AtomicU64::new(1),
            counters,
            statistics,
        })
    }

    /// Subscribes in the background; messages for the sid go to `Deliver`.
    pub(super) fn subscribe(&self, subject: &str) -> Sid {
        let sid = self.next_sid.fetch_add(1, Relaxed);
        let _ = self.commands.send(Command::Subscribe(sid, subject.into()));
        sid
    }

    pub(super) fn unsubscribe(&self, sid: Sid) {
        let _ = self.commands.send(Command::Unsubscribe(sid));
    }

    /// Resolves once the server has processed every SUB asked for before
    /// the call (refused ones too: see the module docs).
    pub(super) async fn round_trip(&self) -> Result<(), RoundTripError> {
        let (answer, answered) = oneshot::channel();
        let asked = self.commands.send(Command::RoundTrip(answer));
        asked.map_err(|_| RoundTripError::Closed)?;
        match tokio::time::timeout(ROUND_TRIP_TIMEOUT, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RoundTripError::Closed),
            Err(_) => Err(RoundTripError::TimedOut(ROUND_TRIP_TIMEOUT)),
        }
    }

    pub(super) fn stats_reader(&self) -> StatsReader {
        StatsReader {
            counters: self.counters.clone(),
            statistics: self.statistics.clone(),
        }
    }
}

/// Owns the subscriptions: one forwarding task each, aborted (dropping
/// its `Subscriber`, which unsubscribes) when the subject is left.
async fn own(
    client: async_nats::Client,
    round_trips: SharedRoundTrips,
    mut commands: mpsc::UnboundedReceiver<Command>,
    deliver: Arc<dyn Deliver>,
    counters: Arc<Counters>,
) {
    let mut forwarding: HashMap<Sid, AbortHandle> = HashMap::new();
    while let Some(command) = commands.recv().await {
        match command {
            Command::Subscribe(sid, subject) => match client.subscribe(subject.clone()).await {
                Ok(subscriber) => {
                    let task = forward(sid, subscriber, deliver.clone(), counters.clone());
                    forwarding.insert(sid, tokio::spawn(task).abort_handle());
                }
                Err(e) => tracing::error!(%subject, error = %e, "cannot subscribe"),
            },
            Command::Unsubscribe(sid) => {
                if let Some(task) = forwarding.remove(&sid) {
                    task.abort();
                }
            }
            Command::RoundTrip(answer) => {
                // The request goes to the client after the SUBs before it.
                let round_trips = round_trips.clone();
                tokio::spawn(async move {
                    let result = round_trips.wait().await.map_err(|e| match e.kind() {
                        async_nats::RequestErrorKind::TimedOut => {
                            RoundTripError::TimedOut(ROUND_TRIP_TIMEOUT)
                        }
                        _ => RoundTripError::Closed,
                    });
                    let _ = answer.send(result);
                });
            }
        }
    }
    for task in forwarding.into_values() {
        task.abort();
    }
}

/// Hands each message of one subscription to `deliver`, as they come.
async fn forward(
    sid: Sid,
    mut subscriber: async_nats::Subscriber,
    deliver: Arc<dyn Deliver>,
    counters: Arc<Counters>,
) {
    while let Some(message) = subscriber.next().await {
        counters.delivered.fetch_add(1, Relaxed);
        deliver.deliver(sid, &message, Source::Only);
    }
}

/// The client's connection events, counted and logged.
#[derive(Clone)]
struct Events {
    counters: Arc<Counters>,
    losses: LossCounter,
    /// Set once connected: confirms the subscriptions after a reconnect.
    round_trips: Arc<OnceLock<SharedRoundTrips>>,
}

impl Events {
    fn on(&self, event: async_nats::Event) {
        use async_nats::Event;
        let counters = &self.counters;
        match event {
            Event::Connected => {
                counters.connected.store(true, Relaxed);
                if counters.lost.swap(false, Relaxed) {
                    tracing::info!("async-nats subscriber reconnected");
                    self.count_loss_once_subscribed();
                }
            }
            Event::Disconnected => {
                tracing::warn!("async-nats subscriber disconnected; reconnecting");
                counters.connected.store(false, Relaxed);
                counters.lost.store(true, Relaxed);
                self.losses.send_modify(|n| *n += 1);
            }
            Event::SlowConsumer(sid) => {
                tracing::warn!(sid, "async-nats dropped a message for a slow subscriber");
                counters.dropped.fetch_add(1, Relaxed);
                self.losses.send_modify(|n| *n += 1);
            }
            Event::ServerError(error) => tracing::warn!(
                %error,
                "NATS error on the async-nats subscriber; if it refused a subscription, async-nats cannot say which: its streams stay open and receive nothing"
            ),
            other => tracing::info!(event = %other, "async-nats subscriber event"),
        }
    }

    /// async-nats sends its SUBs again after connecting; once the server
    /// has them, streams opened meanwhile are ended (they may have missed
    /// events), as the lean connection does.
    fn count_loss_once_subscribed(&self) {
        let (round_trips, losses) = (self.round_trips.get().cloned(), self.losses.clone());
        tokio::spawn(async move {
            if let Some(round_trips) = round_trips {
                let _ = round_trips.wait().await;
            }
            losses.send_modify(|n| *n += 1);
        });
    }
}

/// A connect error in the lean connection's terms.
fn refused_or_unreachable(urls: &[String], error: async_nats::ConnectError) -> ConnectError {
    let urls: Vec<String> = urls
        .iter()
        .map(|u| herald_nats::connection::redact(u))
        .collect();
    match error.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation => ConnectError::Refused {
            url: urls.join(","),
            reason: error.to_string(),
        },
        _ => ConnectError::Unreachable(format!("{}: {error}", urls.join(","))),
    }
}

/// Reads the figures of [`Subscribers`] without keeping its connection.
/// What async-nats neither counts nor does stays 0: PINGs, oversized
/// messages, refusals, moves.
#[derive(Debug, Clone)]
pub struct StatsReader {
    counters: Arc<Counters>,
    statistics: Arc<async_nats::Statistics>,
}

impl StatsReader {
    pub fn read(&self) -> Stats {
        Stats {
            connected: self.counters.connected.load(Relaxed),
            connects: self.statistics.connects.load(Relaxed),
            delivered: self.counters.delivered.load(Relaxed),
            dropped: self.counters.dropped.load(Relaxed),
            ..Stats::default()
        }
    }
}
