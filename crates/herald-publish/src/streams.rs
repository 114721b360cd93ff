//! The history streams and the offline queue, created in the background
//! so herald-publish serves from its first second: on a cluster that has
//! just started, JetStream may take many seconds to elect its leaders, and
//! a caller connected meanwhile must hear "not yet" at once, not wait.
//! Until they exist, `/readyz` says why not ready and whatever needs them
//! (persisted events, the `FALLBACK` queue) answers `UNAVAILABLE`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use herald_core::history::HistoryArgs;
use herald_core::offline;
use herald_core::readiness::Readiness;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Pause between rounds of attempts when JetStream keeps refusing.
const ROUND_PAUSE: Duration = Duration::from_secs(1);

/// Whether the streams exist yet; cheap to clone.
#[derive(Clone)]
pub struct Streams(Arc<watch::Sender<bool>>);

impl Streams {
    /// Streams not created yet.
    pub fn pending() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }

    pub fn ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once the streams exist.
    pub async fn wait(&self) {
        let _ = self.0.subscribe().wait_for(|ready| *ready).await;
    }

    /// Creates (or updates) every stream, retrying until it is done or
    /// `stop` is cancelled; then says ready. Meanwhile `ready` shows the
    /// last refusal.
    pub async fn prepare(
        self,
        js: jetstream::Context,
        history: HistoryArgs,
        ready: Readiness,
        stop: CancellationToken,
    ) {
        ready.waiting_for("the history streams and offline queue");
        loop {
            let attempt = async {
                history.ensure_streams(&js).await?;
                offline::ensure_stream(&js, &history).await
            };
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                result = attempt => result,
            };
            match result {
                Ok(()) => {
                    tracing::info!("history streams and offline queue ready");
                    self.0.send_replace(true);
                    return;
                }
                Err(e) => {
                    ready.waiting_for(format!("the history streams and offline queue ({e})"));
                    tracing::error!(
                        error = %e,
                        "cannot create the history streams or offline queue (is JetStream enabled?); \
                         persisted publishes are refused until they exist; retrying"
                    )
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                () = tokio::time::sleep(ROUND_PAUSE) => {}
            }
        }
    }
}
