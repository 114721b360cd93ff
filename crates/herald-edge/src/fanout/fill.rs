//! Reads the events a subject missed on the live path (see `gaps`) from
//! history: one task per gap, one read per missed event (a gap is most
//! often one or two events), through the same single reads a resume
//! makes. A fill is bounded in events, bytes and time; past any bound it
//! fails, and the subject's streams end so that their clients resume
//! from their cursors.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures::future::BoxFuture;
use herald_nats::envelope::Envelope;

use crate::fanout::gaps::Fill;
use crate::metrics::Metrics;
use crate::resume::reads::{ReadError, Reads, Source};
use crate::sse;

/// How long one fill may take, while the subject's later events wait.
pub const FILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most events one fill reads: a larger gap is left to the clients'
/// resumes, which have their own bounds and shared reads.
pub const MAX_EVENTS: usize = 128;
/// Most frame bytes one fill reads.
pub const MAX_BYTES: usize = 1 << 20;

/// Why a gap was not filled.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error("reading history failed: {0}")]
    Read(ReadError),
    #[error("history did not answer within {FILL_TIMEOUT:?}")]
    TimedOut,
    #[error("more than {MAX_EVENTS} events or {MAX_BYTES} bytes were missed")]
    TooLarge,
}

/// Where missed events are read.
pub trait Reader: Send + Sync + 'static {
    /// `subject`'s first stored event at or after sequence `from`, framed.
    fn next<'a>(
        &'a self,
        subject: &'a str,
        from: u64,
    ) -> BoxFuture<'a, Result<Option<(u64, Bytes)>, ReadError>>;
}

/// What a fill's answer goes to: the subject.
pub trait Filled: Send + Sync + 'static {
    /// The live subject, as history knows it.
    fn name(&self) -> &str;

    /// The answer to fill `id`: the events read, ascending, or why not.
    /// Returns the next fill if events held meanwhile show another gap.
    fn filled(
        &self,
        id: u64,
        read: Result<Vec<(u64, Bytes)>, FillError>,
        metrics: &Metrics,
    ) -> Option<Fill>;
}

/// Starts fills; cheap to clone (one pointer).
#[derive(Clone)]
pub struct Filler(Arc<dyn Reader>);

impl Filler {
    pub fn new(reader: impl Reader) -> Self {
        Self(Arc::new(reader))
    }

    /// Reads `fill` for `subject` in a task, and any fill its answer starts.
    pub fn start(&self, subject: Arc<dyn Filled>, fill: Fill, metrics: Metrics) {
        let reader = self.0.clone();
        tokio::spawn(async move {
            let mut next = Some(fill);
            while let Some(fill) = next {
                let (after, upto) = (fill.after, fill.upto);
                tracing::debug!(subject = subject.name(), after, upto, "filling a gap");
                let read = tokio::time::timeout(FILL_TIMEOUT, read(&*reader, subject.name(), fill));
                let read = read.await.unwrap_or(Err(FillError::TimedOut));
                if let Ok(events) = &read {
                    metrics.gap_events_read.inc_by(events.len() as u64);
                }
                next = subject.filled(fill.id, read, &metrics);
            }
        });
    }
}

impl std::fmt::Debug for Filler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Filler")
    }
}

/// `subject`'s stored events in `(fill.after, fill.upto]`, ascending.
async fn read(
    reader: &dyn Reader,
    subject: &str,
    fill: Fill,
) -> Result<Vec<(u64, Bytes)>, FillError> {
    let mut events = Vec::new();
    let (mut from, mut bytes) = (fill.after + 1, 0);
    while from <= fill.upto {
        let next = reader.next(subject, from).await.map_err(FillError::Read)?;
        let Some((seq, frame)) = next.filter(|&(seq, _)| seq <= fill.upto) else {
            break;
        };
        bytes += frame.len();
        if events.len() == MAX_EVENTS || bytes > MAX_BYTES {
            return Err(FillError::TooLarge);
        }
        events.push((seq, frame));
        from = seq + 1;
    }
    Ok(events)
}

/// History's streams, read as a resume reads them (see `reads`).
pub struct HistoryReader {
    pub js: jetstream::Context,
    pub shards: u16,
    pub reads: Reads,
}

impl Reader for HistoryReader {
    fn next<'a>(
        &'a self,
        subject: &'a str,
        from: u64,
    ) -> BoxFuture<'a, Result<Option<(u64, Bytes)>, ReadError>> {
        Box::pin(async move {
            let source = Source::of(&self.js, subject, self.shards, self.reads).await?;
            let Some(message) = source.next(from).await? else {
                return Ok(None);
            };
            let envelope = Envelope::from_parts(Some(&message.headers), &message.payload);
            let frame = sse::event(envelope.event.as_deref(), &envelope.data);
            Ok(Some((message.sequence, frame)))
        })
    }
}

/// A reader over events held in memory, or one that never answers.
#[cfg(test)]
pub mod fake {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct Stored {
        /// By subject, then sequence; `None`: never answers.
        pub events: Option<Mutex<BTreeMap<(String, u64), Bytes>>>,
        /// Reads made.
        pub reads: Mutex<Vec<(String, u64)>>,
    }

    impl Stored {
        /// `subject`'s events `seqs`, each framed by [`frame`].
        pub fn holding(subject: &str, seqs: impl IntoIterator<Item = u64>) -> Arc<Self> {
            Self::of(subject, seqs.into_iter().map(|seq| (seq, frame(seq))))
        }

        pub fn of(subject: &str, events: impl IntoIterator<Item = (u64, Bytes)>) -> Arc<Self> {
            let events = events
                .into_iter()
                .map(|(seq, frame)| ((subject.to_owned(), seq), frame))
                .collect();
            Arc::new(Self {
                events: Some(Mutex::new(events)),
                reads: Mutex::default(),
            })
        }

        pub fn stalled() -> Arc<Self> {
            Arc::default()
        }
    }

    /// The frame of a stored event `seq`.
    pub fn frame(seq: u64) -> Bytes {
        Bytes::from(format!("data: {seq}\n\n"))
    }

    impl Reader for Arc<Stored> {
        fn next<'a>(
            &'a self,
            subject: &'a str,
            from: u64,
        ) -> BoxFuture<'a, Result<Option<(u64, Bytes)>, ReadError>> {
            self.reads.lock().unwrap().push((subject.to_owned(), from));
            let Some(events) = &self.events else {
                return Box::pin(std::future::pending());
            };
            let events = events.lock().unwrap();
            let start = (subject.to_owned(), from);
            let next = events.range(start..).next();
            let next = next
                .filter(|((s, _), _)| s == subject)
                .map(|((_, seq), frame)| (*seq, frame.clone()));
            Box::pin(std::future::ready(Ok(next)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Stored;
    use super::*;

    const SUBJECT: &str = "herald.t.news";

    fn fill(after: u64, upto: u64) -> Fill {
        Fill { id: 1, after, upto }
    }

    fn seqs(read: Result<Vec<(u64, Bytes)>, FillError>) -> Vec<u64> {
        read.unwrap().into_iter().map(|(seq, _)| seq).collect()
    }

    #[tokio::test]
    async fn a_fill_reads_the_subjects_events_in_its_range_one_by_one() {
        let stored = Stored::holding(SUBJECT, [2, 4, 7, 9]);
        let got = read(&stored, SUBJECT, fill(2, 7)).await;
        assert_eq!(seqs(got), [4, 7]);
        assert_eq!(
            *stored.reads.lock().unwrap(),
            [(SUBJECT.to_owned(), 3), (SUBJECT.to_owned(), 5)],
            "one read per event, none past the range"
        );
        // The last one gone (expired): the read stops at the next one.
        let got = read(&stored, SUBJECT, fill(4, 8)).await;
        assert_eq!(seqs(got), [7]);
        assert!(seqs(read(&stored, SUBJECT, fill(9, 12)).await).is_empty());
    }

    #[tokio::test]
    async fn a_gap_too_large_fails_rather_than_holding_it_all() {
        let most = MAX_EVENTS as u64;
        let stored = Stored::holding(SUBJECT, 1..=most + 1);
        assert_eq!(
            seqs(read(&stored, SUBJECT, fill(0, most)).await).len(),
            MAX_EVENTS
        );
        let over = read(&stored, SUBJECT, fill(0, most + 1)).await;
        assert!(matches!(over, Err(FillError::TooLarge)));
        let large = Bytes::from(vec![b'x'; MAX_BYTES / 2 + 1]);
        let stored = Stored::of(SUBJECT, [(1, large.clone()), (2, large)]);
        let over = read(&stored, SUBJECT, fill(0, 2)).await;
        assert!(matches!(over, Err(FillError::TooLarge)));
    }
}
