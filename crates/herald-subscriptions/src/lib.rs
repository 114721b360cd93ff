//! One NATS connection carrying many subscriptions, whose reader hands each
//! message straight to a callback.
//!
//! Why by hand: async-nats gives every `Subscriber` its own tokio mpsc
//! channel, whose first block (32 × ~185-byte `Message`, ~5.9 KiB) is
//! allocated when the subscription is made, and someone must poll each
//! one (a task per subject, ~4.3 KiB more). The edge holds one subscription
//! per connected user, so NATS routes a user's events only to the nodes
//! that hold one of their streams; at 15,000 idle streams that was ~10 KiB
//! of a 14.1 KiB stream. Here a subscription costs a map entry (sid →
//! subject: ~60 bytes of heap against ~6.6 KiB for a `Subscriber`,
//! measured by tests/footprint.rs). This is the one hot
//! path Herald speaks the NATS protocol for itself; everything else
//! (publishing, requests, JetStream) stays on async-nats.
//!
//! # Layout
//! - this file: the handle, [`Subscriptions`], and what it is made with.
//! - `task`: the one task that owns the socket: reads, writes, keep-alive,
//!   moves away from a server in lame duck mode (make before break),
//!   reconnects (re-sending every SUB) and counts losses.
//! - `connection`: one connection: the handshake, buffered I/O, and what
//!   the server has yet to answer on it.
//! - `proto`: parsing server operations (pure; property-tested);
//!   `headers`: the header block of an HMSG.
//! - `acks`: which SUB a `+OK` or `-ERR` answers (pure);
//!   `server_error`: what a `-ERR` says (pure).
//! - `login`: the CONNECT line, credentials files and NKey signatures.
//! - `transport`: plain TCP or TLS.
//! - `round_trips`: which PONG answers whom (pure).
//! - `servers`: where to reconnect, and how long to wait between tries.
//! - `registry`: the live subscriptions, the changes not yet sent, and
//!   counters, shared by handle and task.
//! - `deliver`: what messages and refusals are handed to ([`Deliver`], by
//!   [`Sid`]); `options`: tuning ([`Options`]).

mod acks;
mod connection;
mod deliver;
mod headers;
mod login;
mod options;
mod proto;
mod registry;
mod round_trips;
mod server_error;
mod servers;
mod task;
mod transport;

pub use transport::TlsError;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use herald_nats::connection::NatsSecurity;
use tokio::sync::{mpsc, oneshot};

use crate::connection::{Failure, Session, Setup};
use crate::registry::Registry;
use crate::task::Task;

pub use deliver::{Deliver, Refusal, RefusalReason, Sid, Source};
pub use options::Options;

/// How long a [`Subscriptions::round_trip`] waits for a server to answer
/// while there is no connection to one.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long it waits while connected: a server under load answers late,
/// but answers (one that stops answering is found by the keep-alive
/// PINGs, which fail every waiter), and a caller that gives up has its
/// work done again by whoever retries, on a server already behind.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the connection could not be made at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No server answered (or not within the connect timeout).
    #[error("cannot connect to NATS: {0}")]
    Unreachable(String),
    /// A server answered and refused this client, e.g. "Authorization
    /// Violation": trying others would not help.
    #[error("NATS at {url} refused the connection: {reason}")]
    Refused { url: String, reason: String },
    /// A bad URL, credentials given twice, an unreadable file.
    #[error(transparent)]
    Config(#[from] herald_nats::connection::ConnectError),
    /// The CA or client certificate could not be loaded.
    #[error("NATS TLS: {0}")]
    TlsSetup(#[from] TlsError),
    /// TLS with the server at `url` failed: not offered, or the handshake.
    #[error("NATS TLS: {url}: {error}")]
    Tls { url: String, error: TlsError },
}

/// Why a round trip failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoundTripError {
    #[error("no answer from NATS within {0:?}")]
    TimedOut(std::time::Duration),
    #[error("the NATS connection is closed")]
    Closed,
}

/// What the connection has done so far, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub connected: bool,
    /// The first connection, then one per reconnect.
    pub connects: u64,
    /// PINGs sent: keep-alives and round trips.
    pub pings: u64,
    /// Messages handed to [`Deliver`].
    pub delivered: u64,
    /// Messages for subscriptions already dropped, or unreadable.
    pub dropped: u64,
    /// Messages over the server's `max_payload` or [`Options::max_message`],
    /// skipped.
    pub oversized: u64,
    /// Subscriptions the server refused.
    pub refused: u64,
    /// Moves to another server, made before leaving one in lame duck mode.
    pub moves: u64,
}

/// A cheap handle to the connection; its task ends, closing the socket,
/// when the last handle is dropped.
#[derive(Clone)]
pub struct Subscriptions {
    waiters: mpsc::UnboundedSender<round_trips::Waiter>,
    /// Tells the task that changes wait in the registry; one message
    /// stands for any number of them.
    wake: mpsc::Sender<()>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("len", &self.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Subscriptions {
    /// Connects like `herald_nats::connection::connect` (same URLs and
    /// credentials), failing fast at start-up; afterwards reconnects for as
    /// long as needed, bumping `losses` on every disconnect and once more
    /// after it has subscribed again to every live subject.
    pub async fn connect(
        urls: &[String],
        security: &NatsSecurity,
        name: &str,
        losses: tokio::sync::watch::Sender<u64>,
        deliver: Arc<dyn Deliver>,
    ) -> Result<Self, ConnectError> {
        Self::connect_with(urls, security, name, losses, deliver, Options::default()).await
    }

    /// [`Subscriptions::connect`] with other [`Options`].
    pub async fn connect_with(
        urls: &[String],
        security: &NatsSecurity,
        name: &str,
        losses: tokio::sync::watch::Sender<u64>,
        deliver: Arc<dyn Deliver>,
        options: Options,
    ) -> Result<Self, ConnectError> {
        let (addrs, login) = herald_nats::connection::servers(urls, security)?;
        // Read now to fail fast on a bad file; read again at every connect.
        login::Identity::load(security, login.clone())?;
        let setup = Arc::new(Setup {
            security: security.clone(),
            login,
            tls: transport::Tls::load(security)?,
            name: name.to_owned(),
            max_message: options.max_message,
        });
        let mut servers = servers::Servers::new(addrs, security.nats_ignore_discovered_servers);
        let (index, session, info) =
            first_connection(servers.configured(), &setup, &options).await?;
        servers.connected_to(index);
        servers.learn(&info.connect_urls);
        let registry = Arc::new(Registry::default());
        registry.link(|_, _| {}, |_, _| {});
        registry.counters.connected.store(true, Relaxed);
        Registry::count(&registry.counters.connects);
        let (waiters, waiters_rx) = mpsc::unbounded_channel();
        let (wake, wake_rx) = mpsc::channel(1);
        let task = Task {
            setup,
            registry: registry.clone(),
            waiters: waiters_rx,
            wake: wake_rx,
            deliver,
            losses,
            servers,
            options,
        };
        tokio::spawn(task.run(session));
        Ok(Self {
            waiters,
            wake,
            registry,
        })
    }

    /// Registers interest in `subject`; sent now, or on reconnect. A
    /// subject that is no NATS subject (empty, or with whitespace or
    /// control characters, which would change the SUB line) is logged
    /// and never subscribed: its sid receives nothing.
    pub fn subscribe(&self, subject: &str) -> Sid {
        let sid = self.registry.new_sid();
        if subject.is_empty() || subject.bytes().any(|b| b <= b' ' || b == 0x7f) {
            tracing::error!(?subject, "not a NATS subject; not subscribing");
            return sid;
        }
        if self.registry.insert(sid, subject) {
            let _ = self.wake.try_send(());
        }
        sid
    }

    /// Drops the subscription; messages for it that arrive later are dropped.
    pub fn unsubscribe(&self, sid: Sid) {
        if self.registry.remove(sid) {
            let _ = self.wake.try_send(());
        }
    }

    /// Resolves once the server has processed everything sent on this
    /// connection before the call; a subscription it refused by then has
    /// been handed to [`Deliver::refused`]. Callers waiting together
    /// share a ping.
    /// While reconnecting, waits for the new connection (within
    /// [`ROUND_TRIP_TIMEOUT`]), since what was sent before went with the
    /// old one; while connected, for the answer (within [`ANSWER_TIMEOUT`]).
    pub async fn round_trip(&self) -> Result<(), RoundTripError> {
        let (waiter, answer) = oneshot::channel();
        self.waiters
            .send(waiter)
            .map_err(|_| RoundTripError::Closed)?;
        tokio::pin!(answer);
        let answered = match tokio::time::timeout(ROUND_TRIP_TIMEOUT, &mut answer).await {
            Ok(answered) => answered,
            Err(_) if self.registry.counters.connected.load(Relaxed) => {
                let rest = ANSWER_TIMEOUT - ROUND_TRIP_TIMEOUT;
                let late = tokio::time::timeout(rest, answer).await;
                late.map_err(|_| RoundTripError::TimedOut(ANSWER_TIMEOUT))?
            }
            Err(_) => return Err(RoundTripError::TimedOut(ROUND_TRIP_TIMEOUT)),
        };
        answered.map_err(|_| RoundTripError::Closed)
    }

    /// Live subscriptions.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> Stats {
        self.stats_reader().read()
    }

    /// Reads [`Stats`] without keeping the connection open, for a
    /// metrics collector that may outlive it.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.registry.clone())
    }
}

/// Reads a connection's [`Stats`]; see [`Subscriptions::stats_reader`].
#[derive(Clone)]
pub struct StatsReader(Arc<Registry>);

impl std::fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StatsReader").field(&self.read()).finish()
    }
}

impl StatsReader {
    pub fn read(&self) -> Stats {
        let c = &self.0.counters;
        Stats {
            connected: c.connected.load(Relaxed),
            connects: c.connects.load(Relaxed),
            pings: c.pings.load(Relaxed),
            delivered: c.delivered.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            oversized: c.oversized.load(Relaxed),
            refused: c.refused.load(Relaxed),
            moves: c.moves.load(Relaxed),
        }
    }
}

/// The first server of `servers` that takes us, with its index and INFO; a server
/// that refuses us (bad credentials) ends the search at once.
async fn first_connection(
    servers: &[async_nats::ServerAddr],
    setup: &Setup,
    options: &Options,
) -> Result<(usize, Session, proto::Info), ConnectError> {
    let mut failures = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        let url = server.as_url_str().to_owned();
        match tokio::time::timeout(options.connect_timeout, Session::open(server, setup)).await {
            Ok(Ok((session, info))) => {
                tracing::info!(server = %url, "connected to NATS");
                return Ok((index, session, info));
            }
            Ok(Err(Failure::Refused(reason))) => return Err(ConnectError::Refused { url, reason }),
            Ok(Err(Failure::Tls(error))) => return Err(ConnectError::Tls { url, error }),
            Ok(Err(other)) => failures.push(format!("{url}: {other}")),
            Err(_) => failures.push(format!(
                "{url}: no answer within {:?}",
                options.connect_timeout
            )),
        }
    }
    if failures.is_empty() {
        failures.push("no NATS URL given".to_owned());
    }
    Err(ConnectError::Unreachable(failures.join("; ")))
}
