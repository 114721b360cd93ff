//! The history streams, the offline queue and the control plane's
//! buckets (revocations, follows), created in the background
//! so herald-publish serves from its first second: on a cluster that has
//! just started, JetStream may take seconds to elect its leaders, and a
//! caller connected meanwhile must hear "not yet" at once, not wait.
//! Until they exist, `/readyz` says why not ready and whatever needs them
//! (persisted events, the `FALLBACK` queue) answers `UNAVAILABLE`.
//!
//! Every stream is created at once, each asked again on its own as
//! [`crate::retry`] says: a replicated stream takes JetStream a few
//! hundred milliseconds to place, and one after another they added up.

use std::sync::Arc;

use async_nats::jetstream::{self, stream};
use herald_core::readiness::Readiness;
use herald_domain::region::Region;
use herald_nats::agreement::disagreement;
use herald_nats::buckets::{self, BucketArgs};
use herald_nats::history::HistoryArgs;
use herald_nats::offline;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::retry::{ATTEMPT_TIMEOUT, Refusal, Retry};

/// What readiness waits for until the streams exist.
const WAITING_FOR: &str = "the history streams, offline queue and control buckets";

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

    /// Creates (or updates) every stream, each retried until it exists or
    /// `stop` is cancelled; then says ready. Meanwhile `ready` shows the
    /// last refusal.
    pub async fn prepare(
        self,
        mut js: jetstream::Context,
        history: HistoryArgs,
        region: Region,
        buckets: BucketArgs,
        ready: Readiness,
        stop: CancellationToken,
    ) {
        js.set_timeout(ATTEMPT_TIMEOUT);
        ready.waiting_for(WAITING_FOR);
        let started = Instant::now();
        let configs = history.stream_configs(&region).chain([
            offline::stream_config(&history, &region),
            buckets::revocations_config(&history, buckets.revocation_ttl),
            buckets::follows_config(&history),
        ]);
        let creating = configs.map(|config| create(&js, config, &ready));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = futures::future::join_all(creating) => {}
        }
        tracing::info!(took = ?started.elapsed(), "history streams and offline queue ready");
        self.0.send_replace(true);
    }
}

/// Creates `config`'s stream, or updates it to `config`, asking until
/// JetStream takes it; a stream that exists with settings every service
/// must share (see `agreement`) ends the process, naming the flag.
async fn create(js: &jetstream::Context, config: stream::Config, ready: &Readiness) {
    let name = config.name.clone();
    let mut retry = Retry::default();
    loop {
        if let Ok(found) = js.get_stream(&name).await
            && let Some(d) = disagreement(&found.cached_info().config, &config)
        {
            herald_core::cli::misconfigured(d.flag, d.problem);
        }
        let error = match js.create_or_update_stream(config.clone()).await {
            Ok(_) if retry.failures > 0 => {
                tracing::info!(stream = %name, refusals = retry.failures, "stream created");
                return;
            }
            Ok(_) => return,
            Err(error) => error,
        };
        let refusal = Refusal::of(&error);
        let pause = retry.failed(refusal);
        ready.waiting_for(format!("{WAITING_FOR} ({name}: {error})"));
        match refusal {
            Refusal::Lasting => tracing::error!(
                stream = %name, %error, retry_in = ?pause,
                "JetStream refuses the stream; persisted publishes are refused until it exists \
                 (check --history-replicas against the cluster, and that JetStream is enabled)"
            ),
            _ if retry.loud() => tracing::warn!(
                stream = %name, %error, refusals = retry.failures,
                "JetStream cannot create the stream yet (a cluster still forming); retrying"
            ),
            _ => tracing::debug!(stream = %name, %error, "stream not created yet; retrying"),
        }
        tokio::time::sleep(pause).await;
    }
}
