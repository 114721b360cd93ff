//! Shared reads of a history stream's tail, for resumes that come together.
//!
//! A history stream interleaves many subjects, and JetStream (2.10, memory
//! or file) finds "the subject's next event after N" by stepping through
//! every stream sequence in between: a user who missed 3 events in a
//! stream where 3,750 other users got 3 each costs the server ~11,000
//! steps, whatever the client asks for. When an edge's whole audience
//! resumes at once (its edge died), those scans are where the server's
//! time goes (`perf`: ~60 % of nats-server in `memStore.LoadNextMsg`).
//!
//! So a shard whose resumes have already paid [`SWEEP_FACTOR`] times what
//! reading its tail would cost gets its tail read once, in stream order
//! (one ordered consumer), and kept for a while; resumes whose position
//! lies inside it take their events from it and read single events only
//! past its end. What a sweep costs is thus bounded by what the resumes
//! before it paid anyway, and by [`MAX_SPAN`] and [`MAX_BYTES`].
//!
//! A tail holds every event the stream had in `(start, end]` when it was
//! read, except ones deleted before it got to them. History drops a
//! subject's oldest events first (per-subject limit, age, stream limits),
//! so a missing event means the client's own position was dropped before
//! it: the caller checks after using a tail that its position is still
//! held, and resets otherwise (see `replay`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::StreamExt;
use herald_core::envelope::Envelope;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::sse;

/// A tail read pays once the shard's resumes have stepped over this many
/// times as many stream sequences as it reads (a delivered message costs
/// the server roughly as much as 20-40 steps of a subject scan).
pub const SWEEP_FACTOR: u64 = 32;
/// Most stream sequences one tail read covers.
pub const MAX_SPAN: u64 = 65_536;
/// Most frame bytes one tail holds; a read stops there (its end is then
/// the last event it kept).
pub const MAX_BYTES: usize = 16 << 20;
/// How long a tail is kept for later resumes.
const KEEP: Duration = Duration::from_secs(10);
/// How long the scan cost of a shard's resumes adds up before it starts
/// again from zero.
const WINDOW: Duration = Duration::from_secs(2);
/// How long one tail read may take, and a resume waits for it.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A history stream's events in `(start, end]`, by stored subject.
#[derive(Debug, Default)]
pub struct Tail {
    pub start: u64,
    pub end: u64,
    events: HashMap<String, Vec<(u64, Bytes)>>,
}

impl Tail {
    /// The subject's events in `(after, upto]`, in order.
    pub fn events(&self, stored: &str, after: u64, upto: u64) -> &[(u64, Bytes)] {
        let Some(events) = self.events.get(stored) else {
            return &[];
        };
        let from = events.partition_point(|&(seq, _)| seq <= after);
        let to = events.partition_point(|&(seq, _)| seq <= upto);
        &events[from..to.max(from)]
    }

    fn covers(&self, after: u64) -> bool {
        self.start <= after && after <= self.end
    }
}

/// What one shard's resumes asked for lately.
#[derive(Debug)]
struct Demand {
    since: Instant,
    /// Stream sequences the resumes' single reads step over.
    steps: u64,
    lowest: u64,
    highest: u64,
}

impl Demand {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            steps: 0,
            lowest: u64::MAX,
            highest: 0,
        }
    }

    /// Adds a resume of `(after, newest]`; returns the span to read if
    /// reading it now pays.
    fn add(&mut self, after: u64, newest: u64) -> Option<(u64, u64)> {
        if self.since.elapsed() > WINDOW {
            *self = Self::new();
        }
        self.steps += newest - after;
        self.lowest = self.lowest.min(after);
        self.highest = self.highest.max(newest);
        // Resumes from long ago are not worth a read of everything since.
        let start = self.lowest.max(self.highest.saturating_sub(MAX_SPAN));
        let span = self.highest - start;
        (after >= start && self.steps >= SWEEP_FACTOR * span).then_some((start, self.highest))
    }
}

#[derive(Debug)]
struct Shard {
    /// The newest tail read, while kept.
    tail: Option<(Instant, Arc<Tail>)>,
    /// A read under way: where it starts, and its result when done.
    reading: Option<(u64, watch::Receiver<Option<Arc<Tail>>>)>,
    demand: Demand,
}

/// What a resume should do.
enum Next {
    Use(Arc<Tail>),
    Wait(watch::Receiver<Option<Arc<Tail>>>),
    Read(u64, watch::Sender<Option<Arc<Tail>>>),
    Alone,
}

/// Every shard's tails; cheap to clone.
#[derive(Debug, Clone)]
pub struct Tails {
    shards: Arc<[Mutex<Shard>]>,
    /// `herald_edge_history_tail_reads_total`.
    reads: Counter,
}

impl Tails {
    pub fn new(shards: u16, reads: Counter) -> Self {
        let shards = (0..shards)
            .map(|_| {
                Mutex::new(Shard {
                    tail: None,
                    reading: None,
                    demand: Demand::new(),
                })
            })
            .collect();
        Self { shards, reads }
    }

    /// A tail of `stream` (shard `shard`) in which position `after` lies,
    /// if one is held, being read, or worth reading now for a resume of
    /// `(after, newest]`; `None`: read the subject's events one by one.
    pub async fn covering(
        &self,
        shard: u16,
        stream: &stream::Stream<()>,
        after: u64,
        newest: u64,
    ) -> Option<Arc<Tail>> {
        let next = self.next(shard, after, newest)?;
        let mut result = match next {
            Next::Use(tail) => return Some(tail),
            Next::Alone => return None,
            Next::Wait(result) => result,
            Next::Read(start, done) => {
                let result = done.subscribe();
                self.reads.inc();
                tokio::spawn(self.clone().read(shard, stream.clone(), start, done));
                result
            }
        };
        let wait = result.wait_for(Option::is_some);
        match tokio::time::timeout(READ_TIMEOUT, wait).await {
            Ok(Ok(tail)) => tail.clone().filter(|t| t.covers(after)),
            _ => None,
        }
    }

    fn next(&self, shard: u16, after: u64, newest: u64) -> Option<Next> {
        let mut guard = self.shards.get(usize::from(shard))?.lock().unwrap();
        let s = &mut *guard;
        if let Some((read_at, tail)) = &s.tail {
            if read_at.elapsed() > KEEP {
                s.tail = None;
            } else if tail.covers(after) {
                // Past its end, what is left to step over is counted.
                if newest > tail.end {
                    let _ = s.demand.add(tail.end, newest);
                }
                return Some(Next::Use(tail.clone()));
            }
        }
        if let Some((start, result)) = &s.reading {
            if *start <= after {
                return Some(Next::Wait(result.clone()));
            }
            let _ = s.demand.add(after, newest);
            return Some(Next::Alone);
        }
        let Some((start, _)) = s.demand.add(after, newest) else {
            return Some(Next::Alone);
        };
        s.demand = Demand::new();
        let (done, result) = watch::channel(None);
        s.reading = Some((start, result));
        Some(Next::Read(start, done))
    }

    /// Reads the tail from `start` and keeps it; waiters hear the result
    /// (or, on failure, that there is none).
    async fn read(
        self,
        shard: u16,
        stream: stream::Stream<()>,
        start: u64,
        done: watch::Sender<Option<Arc<Tail>>>,
    ) {
        let read = tokio::time::timeout(READ_TIMEOUT, read_tail(&stream, start)).await;
        let tail = match read {
            Ok(Ok(tail)) => Some(Arc::new(tail)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, shard, "history tail read failed");
                None
            }
            Err(_) => {
                tracing::warn!(shard, "history tail read timed out");
                None
            }
        };
        let mut s = self.shards[usize::from(shard)].lock().unwrap();
        s.reading = None;
        if let Some(tail) = &tail {
            s.tail = Some((Instant::now(), tail.clone()));
        }
        let _ = done.send(tail);
    }
}

/// Reads every event after `start` up to the stream's last one when the
/// read began (or as many as fit), in stream order.
async fn read_tail(
    stream: &stream::Stream<()>,
    start: u64,
) -> Result<Tail, crate::reads::ReadError> {
    let config = pull::OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: start + 1,
        },
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await?;
    let name = consumer.cached_info().name.clone();
    let pending = consumer.cached_info().num_pending;
    let mut tail = Tail {
        start,
        end: start,
        events: HashMap::new(),
    };
    let mut bytes = 0;
    if pending > 0 {
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info()?;
            let (seq, caught_up) = (info.stream_sequence, info.pending == 0);
            let envelope = Envelope::from_parts(message.headers.as_ref(), &message.payload);
            let frame = sse::event(envelope.event.as_deref(), &envelope.data);
            bytes += frame.len();
            if bytes > MAX_BYTES || seq > start + MAX_SPAN {
                break;
            }
            let subject = message.subject.to_string();
            tail.events.entry(subject).or_default().push((seq, frame));
            tail.end = seq;
            // Later events arrive live to the resumes that use the tail.
            if caught_up {
                break;
            }
        }
    }
    let _ = stream.delete_consumer(&name).await;
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_resume_never_pays_for_a_read() {
        let mut demand = Demand::new();
        // However far back: its own steps are less than the factor times them.
        assert_eq!(demand.add(100, 50_000), None);
        assert_eq!(demand.add(0, 1_000), None);
    }

    #[test]
    fn resumes_that_together_step_over_enough_pay_for_a_read_of_their_span() {
        let mut demand = Demand::new();
        let mut read = None;
        for i in 0..SWEEP_FACTOR * 2 {
            // Positions spread over 1,000 sequences, 3,000 steps each.
            read = read.or(demand.add(1_000 + i * 10, 4_000 + i * 10));
        }
        let (start, end) = read.expect("a read pays");
        assert!(start >= 1_000 && end <= 4_000 + SWEEP_FACTOR * 20);
    }

    #[test]
    fn a_read_spans_at_most_max_span() {
        let mut demand = Demand::new();
        let mut read = None;
        for _ in 0..SWEEP_FACTOR * 4 {
            read = read.or(demand.add(10, 10 + 3 * MAX_SPAN));
        }
        assert_eq!(read, None, "too far back: single reads");
        for _ in 0..SWEEP_FACTOR * 4 {
            read = read.or(demand.add(2 * MAX_SPAN + 10, 10 + 3 * MAX_SPAN));
        }
        let (start, end) = read.expect("recent positions pay");
        assert_eq!(end - start, MAX_SPAN);
    }

    #[test]
    fn events_come_from_the_subjects_own_list_within_bounds() {
        let mut tail = Tail {
            start: 10,
            end: 40,
            events: HashMap::new(),
        };
        let list = [12, 20, 33, 40].map(|s| (s, Bytes::from(format!("data: {s}\n\n"))));
        tail.events.insert("a".into(), list.to_vec());
        let seqs = |after, upto| -> Vec<u64> {
            tail.events("a", after, upto).iter().map(|e| e.0).collect()
        };
        assert_eq!(seqs(12, 40), vec![20, 33, 40]);
        assert_eq!(seqs(12, 33), vec![20, 33]);
        assert_eq!(seqs(40, 50), Vec::<u64>::new());
        assert!(tail.events("b", 10, 40).is_empty());
        assert!(tail.covers(10) && tail.covers(40) && !tail.covers(9) && !tail.covers(41));
    }
}
