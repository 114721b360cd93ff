//! Where a stream starts on a followed subject its event id holds no
//! position for: a fresh connect, a topic added on reconnect, a subject of
//! which no event reached the client yet. The start is the subject's newest
//! stored event, learned after the stream joined (so that every later one
//! reaches it live) and sent in the opening `id:`: a client that goes away
//! before any event and comes back with that id is replayed what was stored
//! meanwhile. Position 0 is "no event yet": everything stored later is
//! replayed.
//!
//! A subject followed here knows its newest event once one read told it
//! (live events keep it current), so a topic's audience reads once, not
//! once per stream. A failed read leaves the subject without a position:
//! it then starts live, as it would have before ids carried starts. So
//! does a read slower than [`START_READ_WAIT`]: one sent just before the
//! NATS connection died waits for nothing, and a connect must not wait
//! for the request's own timeout.

use std::time::Duration;

use async_nats::jetstream;
use futures::future::join_all;

use crate::fanout::Fanout;
use crate::resume::reads::{ReadError, Reads, Source};

/// The longest a connect waits for a start.
pub(crate) const START_READ_WAIT: Duration = Duration::from_secs(1);

/// Where history is and how it is read.
pub(crate) struct History<'a> {
    pub js: &'a jetstream::Context,
    pub shards: u16,
    pub reads: Reads,
    /// This edge's region: its history is near, the others' far (and
    /// may be lost for a while).
    pub region: &'a herald_domain::region::Region,
}

/// The start position, by cursor key, of each of `subjects` this node
/// could learn. Call after the stream joined them.
pub(crate) async fn positions(
    history: &History<'_>,
    fanout: &Fanout,
    subjects: &[&str],
) -> Vec<(u32, u64)> {
    let epoch = fanout.epoch();
    let starts = subjects.iter().map(|&subject| async move {
        let followed = fanout.find(subject);
        if let Some(newest) = followed.as_ref().and_then(|s| s.newest()) {
            return Some(newest);
        }
        let read = tokio::time::timeout(START_READ_WAIT, newest(history, subject));
        let timed_out = || format!("no answer within {START_READ_WAIT:?}").into();
        match read.await.unwrap_or_else(|_| Err(timed_out())) {
            Ok(newest) => {
                if let Some(followed) = followed {
                    followed.learn_newest(newest, epoch);
                }
                Some(newest)
            }
            Err(e) => {
                tracing::debug!(subject, error = %e, "cannot read where the stream starts");
                None
            }
        }
    });
    let starts = join_all(starts).await;
    subjects
        .iter()
        .zip(starts)
        .filter_map(|(subject, start)| Some((herald_domain::cursor::key(subject), start?)))
        .collect()
}

/// The sequence of `subject`'s newest stored event, 0 if none. Read by a
/// direct get, which any replica answers, even where replay reads from
/// the stream leader: every connect reads its starts, and through the
/// JetStream API a burst of them queues behind one leader (nats-server
/// drops API requests past 10,000 queued: 400,000 connects on a 3-node
/// cluster sent 845,753 and stalled history). A replica that lags
/// answers an older start, so a resume from it replays events stored
/// just before the stream opened, never fewer than it should.
async fn newest(history: &History<'_>, subject: &str) -> Result<u64, ReadError> {
    let source = Source::of(history.js, subject, history.shards, Reads::Direct).await?;
    Ok(source.newest().await?.unwrap_or(0))
}
