//! What every request on one edge shares.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use herald_nats::connection::LossCounter;

use crate::admission::Admission;
use crate::config::Config;
use crate::drain::Drain;
use crate::fanout::Fanout;
use crate::http1::beats::Beats;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::orders::follows::Follows;
use crate::orders::revocations::Revocations;
use crate::ratelimit::ConnectLimiter;
use crate::resume::reads::Reads;
use crate::resume::starts::History;
use crate::resume::tails::Tails;

/// State shared by every request on one edge.
pub(crate) struct State {
    pub config: Config,
    pub fanout: Arc<Fanout>,
    pub admission: Arc<Admission>,
    /// Per-user connect rate.
    pub connects: ConnectLimiter,
    pub drain: Arc<Drain>,
    /// Shared by every stream: one pointer each, not a copy of every handle.
    pub metrics: Arc<Metrics>,
    /// Changes when live events may have been missed: the subscription
    /// connection lost its server.
    pub losses: LossCounter,
    /// History, for resuming from a cursor.
    pub js: async_nats::jetstream::Context,
    /// History tails read once for many resumes.
    pub tails: Tails,
    /// Source of connection ids.
    pub next_id: AtomicU64,
    /// Heartbeats of the streams served without hyper.
    pub beats: Beats,
    /// Revoked tokens, by user (`Control.Revoke`).
    pub revocations: Revocations,
    /// Server-side follows, by user (`Control.Follow`).
    pub follows: Follows,
    /// Where streams' connects and disconnects are published, if they are.
    pub lifecycle: Option<Arc<Lifecycle>>,
}

impl State {
    /// Where history is and how this edge reads it.
    pub(crate) fn history(&self) -> History<'_> {
        let config = &self.config.history;
        History {
            js: &self.js,
            shards: config.history_shards,
            reads: Reads::for_replicas(config.history_replicas),
            region: &self.config.regions[0],
        }
    }

    /// The subject on which this region's events for `live` travel (see
    /// `herald_domain::region`); any stream following `live` here holds it.
    pub(crate) fn own_origin(&self, live: &str) -> String {
        self.config.regions[0].origin(live)
    }
}
