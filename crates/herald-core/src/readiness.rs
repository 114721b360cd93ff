//! Whether a service should be sent work: one value per service, read by
//! `/readyz` and followed by the gRPC health of everything it serves
//! ([`crate::grpc`]), so the two never disagree. A service is ready once
//! it is warm (what it needs exists: history streams, a complete presence
//! view), while its NATS connections are up, and until it drains.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the NATS connections are looked at. async-nats shows its
/// connection only as a state to read (its one event callback belongs to
/// [`herald_nats::connection::connect`] and drops events when busy), and the edge's
/// subscription connection as a flag: reading both this often costs
/// nothing and turns a lost connection into "unready" well within a second.
pub const CONNECTION_CHECK: Duration = Duration::from_millis(100);

/// What keeps a service from being ready; all clear = ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// What the service still waits for before it can serve, `None` once
    /// warm (e.g. "the history streams: no suitable peers for placement").
    waiting_for: Option<String>,
    /// A NATS connection the service needs is down.
    disconnected: bool,
    /// Shutting down: for good.
    draining: bool,
}

impl State {
    pub fn is_ready(&self) -> bool {
        self.waiting_for.is_none() && !self.disconnected && !self.draining
    }
}

impl Default for State {
    fn default() -> Self {
        Self {
            waiting_for: Some("starting".to_owned()),
            disconnected: false,
            draining: false,
        }
    }
}

/// "ready", or every reason it is not, for `/readyz` and logs.
impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ready() {
            return f.write_str("ready");
        }
        f.write_str("not ready")?;
        let mut reasons = Vec::new();
        if self.draining {
            reasons.push("draining".to_owned());
        }
        if self.disconnected {
            reasons.push("not connected to NATS".to_owned());
        }
        if let Some(what) = &self.waiting_for {
            reasons.push(format!("waiting for {what}"));
        }
        write!(f, ": {}", reasons.join("; "))
    }
}

/// A service's readiness; cheap to clone, every clone the same value.
/// Starts unready ("starting") until [`Readiness::warm`].
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<watch::Sender<State>>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.borrow().is_ready()
    }

    pub fn state(&self) -> State {
        self.0.borrow().clone()
    }

    /// Sees every change from now on (health follows readiness this way).
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.0.subscribe()
    }

    /// What the service is waiting for, shown by `/readyz` until it is warm.
    pub fn waiting_for(&self, what: impl Into<String>) {
        let what = what.into();
        self.0
            .send_if_modified(|state| match &mut state.waiting_for {
                Some(current) if *current != what => {
                    *current = what;
                    true
                }
                _ => false,
            });
    }

    /// The service has what it needs to serve.
    pub fn warm(&self) {
        self.0
            .send_if_modified(|state| state.waiting_for.take().is_some());
    }

    /// Shutting down: unready for good.
    pub fn drain(&self) {
        self.0
            .send_if_modified(|state| !std::mem::replace(&mut state.draining, true));
    }

    /// Whether the service's NATS connections are up; true if that changed.
    fn set_connected(&self, connected: bool) -> bool {
        self.0.send_if_modified(|state| {
            std::mem::replace(&mut state.disconnected, !connected) == connected
        })
    }

    /// Follows the service's NATS connections until `stop`: unready while
    /// `connected` says any is down, looked at every [`CONNECTION_CHECK`].
    pub fn follow_connections(
        &self,
        connected: impl Fn() -> bool + Send + 'static,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let readiness = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CONNECTION_CHECK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                let now = connected();
                match readiness.set_connected(now) {
                    false => {}
                    true if now => {
                        tracing::info!(state = %readiness.state(), "NATS connected again")
                    }
                    true => tracing::warn!("NATS connection lost: not ready until it is back"),
                }
            }
        })
    }

    /// Follows `client`'s connection (see [`Readiness::follow_connections`]).
    pub fn follow_nats(
        &self,
        client: &async_nats::Client,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let client = client.clone();
        self.follow_connections(move || herald_nats::connection::is_connected(&client), stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn ready_only_when_warm_connected_and_not_draining() {
        let ready = Readiness::default();
        assert_eq!(ready.state().to_string(), "not ready: waiting for starting");
        ready.waiting_for("the history streams: no suitable peers");
        assert_eq!(
            ready.state().to_string(),
            "not ready: waiting for the history streams: no suitable peers"
        );
        ready.warm();
        assert!(ready.is_ready());
        assert_eq!(ready.state().to_string(), "ready");
        // Once warm, what it waited for is history.
        ready.waiting_for("something else");
        assert!(ready.is_ready());
        ready.set_connected(false);
        assert_eq!(
            ready.state().to_string(),
            "not ready: not connected to NATS"
        );
        ready.set_connected(true);
        assert!(ready.is_ready());
        ready.drain();
        ready.set_connected(false);
        assert_eq!(
            ready.state().to_string(),
            "not ready: draining; not connected to NATS"
        );
        ready.set_connected(true);
        assert!(!ready.is_ready(), "draining is for good");
    }

    #[tokio::test]
    async fn watchers_see_only_changes() {
        let ready = Readiness::default();
        let mut seen = ready.subscribe();
        ready.set_connected(true);
        ready.drain();
        assert!(seen.has_changed().unwrap());
        seen.borrow_and_update();
        ready.drain();
        ready.set_connected(true);
        ready.warm();
        ready.warm();
        assert!(seen.has_changed().unwrap(), "warm is a change");
        seen.borrow_and_update();
        ready.warm();
        assert!(!seen.has_changed().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_shows_within_a_check() {
        let ready = Readiness::default();
        ready.warm();
        let up = Arc::new(AtomicBool::new(true));
        let stop = CancellationToken::new();
        let following = ready.follow_connections(
            {
                let up = up.clone();
                move || up.load(Ordering::Relaxed)
            },
            stop.clone(),
        );
        let mut seen = ready.subscribe();
        tokio::time::sleep(CONNECTION_CHECK * 3).await;
        assert!(ready.is_ready());
        up.store(false, Ordering::Relaxed);
        let lost = tokio::time::Instant::now();
        seen.wait_for(|state| !state.is_ready()).await.unwrap();
        assert!(lost.elapsed() <= CONNECTION_CHECK, "{:?}", lost.elapsed());
        up.store(true, Ordering::Relaxed);
        seen.wait_for(State::is_ready).await.unwrap();
        stop.cancel();
        following.await.unwrap();
    }
}
