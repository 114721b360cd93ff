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
//! A read that fails or stalls is tried again from where it stopped (what
//! it read is kept), a few times, while its resumes wait; if it still
//! fails they fail too, and their streams end with a come-back: falling
//! back to single reads would put all their scans on a server that is
//! already too slow to answer one read (a loaded run lost ~3,000 events
//! that way).
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
use herald_nats::envelope::Envelope;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::sse;

/// A tail read pays once the shard's resumes have stepped over this many
/// times as many stream sequences as it reads (a delivered message costs
/// the server roughly as much as 20-40 steps of a subject scan).
pub(crate) const SWEEP_FACTOR: u64 = 32;
/// Most stream sequences one tail read covers.
pub(crate) const MAX_SPAN: u64 = 65_536;
/// Most frame bytes one tail holds; a read stops there (its end is then
/// the last event it kept).
pub(crate) const MAX_BYTES: usize = 16 << 20;
/// How long a tail is kept for later resumes.
const KEEP: Duration = Duration::from_secs(10);
/// How long the scan cost of a shard's resumes adds up before it starts
/// again from zero.
const WINDOW: Duration = Duration::from_secs(2);
/// How long a tail read may make no progress (creating its consumer, or
/// between two events) before the attempt is given up.
const STALL: Duration = Duration::from_secs(5);
/// Attempts at one tail read, each going on from where the last stopped.
const ATTEMPTS: u32 = 3;

/// Where a tail read is: its waiters watch this.
#[derive(Debug, Clone)]
enum Outcome {
    Pending,
    Done(Arc<Tail>),
    Failed,
}

/// Why a resume cannot use the tail read it waited for.
#[derive(Debug, thiserror::Error)]
#[error("history tail read failed {ATTEMPTS} times; come back later")]
pub(crate) struct TailReadFailed;

/// A history stream's events in `(start, end]`, by stored subject.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    pub start: u64,
    pub end: u64,
    events: HashMap<String, Vec<(u64, Bytes)>>,
}

impl Tail {
    /// The subject's events in `(after, upto]`, in order.
    pub(crate) fn events(&self, stored: &str, after: u64, upto: u64) -> &[(u64, Bytes)] {
        let Some(events) = self.events.get(stored) else {
            return &[];
        };
        let from = events.partition_point(|&(seq, _)| seq <= after);
        let to = events.partition_point(|&(seq, _)| seq <= upto);
        &events[from..to.max(from)]
    }

    /// Whether the read found the subject's event `seq` (it was held then).
    pub(crate) fn holds(&self, stored: &str, seq: u64) -> bool {
        self.events
            .get(stored)
            .is_some_and(|events| events.binary_search_by_key(&seq, |&(s, _)| s).is_ok())
    }

    /// A tail as a read would have found it, for tests elsewhere.
    #[cfg(test)]
    pub(crate) fn of(start: u64, end: u64, events: HashMap<String, Vec<(u64, Bytes)>>) -> Self {
        Self { start, end, events }
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
    /// A read under way: where it starts, and its outcome.
    reading: Option<(u64, watch::Receiver<Outcome>)>,
    demand: Demand,
}

/// What a resume should do.
enum Next {
    Use(Arc<Tail>),
    Wait(watch::Receiver<Outcome>),
    Read(u64, watch::Sender<Outcome>),
    Alone,
}

/// Every shard's tails; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Tails {
    shards: Arc<[Mutex<Shard>]>,
    /// `herald_edge_history_tail_reads_total`: attempts, not reads.
    reads: Counter,
    /// [`STALL`], shorter in tests.
    stall: Duration,
}

impl Tails {
    pub(crate) fn new(shards: u16, reads: Counter) -> Self {
        let shards = (0..shards)
            .map(|_| {
                Mutex::new(Shard {
                    tail: None,
                    reading: None,
                    demand: Demand::new(),
                })
            })
            .collect();
        Self {
            shards,
            reads,
            stall: STALL,
        }
    }

    /// A tail of `stream` (shard `shard`) in which position `after` lies,
    /// if one is held, being read, or worth reading now for a resume of
    /// `(after, newest]`; `None`: read the subject's events one by one.
    /// An error if the read it waited for failed: the resume must not
    /// read alone then (see the module's doc), but come back later.
    pub(crate) async fn covering(
        &self,
        shard: u16,
        stream: &stream::Stream<()>,
        after: u64,
        newest: u64,
    ) -> Result<Option<Arc<Tail>>, TailReadFailed> {
        let Some(next) = self.next(shard, after, newest) else {
            return Ok(None);
        };
        let mut outcome = match next {
            Next::Use(tail) => return Ok(Some(tail)),
            Next::Alone => return Ok(None),
            Next::Wait(outcome) => outcome,
            Next::Read(start, done) => {
                let outcome = done.subscribe();
                tokio::spawn(self.clone().read(shard, stream.clone(), start, done));
                outcome
            }
        };
        // The read always ends in an outcome (a dropped sender is a failure).
        let done = outcome.wait_for(|o| !matches!(o, Outcome::Pending)).await;
        match done.as_deref() {
            Ok(Outcome::Done(tail)) => Ok(Some(tail.clone()).filter(|t| t.covers(after))),
            _ => Err(TailReadFailed),
        }
    }

    /// Keeps `tail` as if this edge had just read it.
    #[cfg(test)]
    pub(crate) fn hold(&self, shard: u16, tail: Tail) {
        self.shards[usize::from(shard)].lock().unwrap().tail =
            Some((Instant::now(), Arc::new(tail)));
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
        let (done, result) = watch::channel(Outcome::Pending);
        s.reading = Some((start, result));
        Some(Next::Read(start, done))
    }

    /// Reads the tail from `start` and keeps it; waiters hear the outcome.
    async fn read(
        self,
        shard: u16,
        stream: stream::Stream<()>,
        start: u64,
        done: watch::Sender<Outcome>,
    ) {
        let mut tail = Tail {
            start,
            end: start,
            events: HashMap::new(),
        };
        let mut complete = false;
        for attempt in 1..=ATTEMPTS {
            self.reads.inc();
            match read_on(&stream, &mut tail, self.stall).await {
                Ok(()) => {
                    complete = true;
                    break;
                }
                Err(e) => {
                    let end = tail.end;
                    tracing::warn!(error = %e, shard, start, end, attempt, "history tail read failed");
                }
            }
        }
        let mut s = self.shards[usize::from(shard)].lock().unwrap();
        s.reading = None;
        let outcome = if complete {
            let tail = Arc::new(tail);
            s.tail = Some((Instant::now(), tail.clone()));
            Outcome::Done(tail)
        } else {
            Outcome::Failed
        };
        let _ = done.send(outcome);
    }
}

/// Reads on from `tail.end`, in stream order, up to the stream's last
/// event when the read began (or as many as fit): what it gets stays in
/// `tail` even if it then fails. Fails if no step makes progress within
/// `stall`.
async fn read_on(
    stream: &stream::Stream<()>,
    tail: &mut Tail,
    stall: Duration,
) -> Result<(), crate::resume::reads::ReadError> {
    let config = pull::OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: tail.end + 1,
        },
        ..Default::default()
    };
    let consumer = timeout(stall, stream.create_consumer(config)).await??;
    let name = consumer.cached_info().name.clone();
    let pending = consumer.cached_info().num_pending;
    let read = async {
        if pending == 0 {
            return Ok(());
        }
        let mut messages = timeout(stall, consumer.messages()).await??;
        let mut bytes: usize = tail.events.values().flatten().map(|e| e.1.len()).sum();
        loop {
            let message = timeout(stall, messages.next())
                .await?
                .ok_or("the tail's consumer ended")??;
            let info = message.info()?;
            let (seq, caught_up) = (info.stream_sequence, info.pending == 0);
            let envelope = Envelope::from_parts(message.headers.as_ref(), &message.payload);
            let frame = sse::event(envelope.event.as_deref(), &envelope.data);
            bytes += frame.len();
            if bytes > MAX_BYTES || seq > tail.start + MAX_SPAN {
                return Ok(());
            }
            let subject = message.subject.to_string();
            tail.events.entry(subject).or_default().push((seq, frame));
            tail.end = seq;
            // Later events arrive live to the resumes that use the tail.
            if caught_up {
                return Ok(());
            }
        }
    };
    let read: Result<(), crate::resume::reads::ReadError> = read.await;
    // Not waited for: the tail's waiters need not wait on the JetStream
    // API too (the consumer expires by itself if this is lost).
    let stream = stream.clone();
    tokio::spawn(async move { stream.delete_consumer(&name).await });
    read
}

/// `tokio::time::timeout`, its error a read error.
async fn timeout<T>(
    limit: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, crate::resume::reads::ReadError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| format!("no progress in {limit:?}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history stream behind a JetStream API that takes requests and
    /// never answers (as one too loaded to answer in time), and a count
    /// of the requests it got.
    async fn unanswered(
        nats: &herald_testing::NatsServer,
    ) -> (stream::Stream<()>, async_nats::Subscriber) {
        let client = async_nats::connect(nats.client_url()).await.unwrap();
        let requests = client.subscribe("stalled.API.>").await.unwrap();
        herald_nats::connection::round_trip(&client).await.unwrap();
        let js = async_nats::jetstream::with_prefix(client, "stalled.API");
        (js.get_stream_no_info("T").await.unwrap(), requests)
    }

    #[tokio::test]
    async fn resumes_waiting_for_a_read_that_stalls_fail_together_after_a_few_attempts() {
        let nats = herald_testing::NatsServer::start();
        let (stream, mut requests) = unanswered(&nats).await;
        let mut tails = Tails::new(1, Counter::default());
        tails.stall = Duration::from_millis(200);
        // Until their steps add up, resumes read alone.
        for _ in 1..SWEEP_FACTOR {
            let alone = tails.covering(0, &stream, 100, 200).await;
            assert!(matches!(alone, Ok(None)));
        }
        let resumes = (0..50).map(|_| tails.covering(0, &stream, 100, 200));
        let started = Instant::now();
        let outcomes = futures::future::join_all(resumes).await;
        assert!(outcomes.iter().all(|o| o.is_err()), "none reads alone");
        let waited = started.elapsed();
        assert!(waited >= tails.stall * ATTEMPTS, "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // One read for all of them, tried ATTEMPTS times.
        assert_eq!(tails.reads.get(), u64::from(ATTEMPTS));
        let mut creates = 0;
        while let Ok(Some(request)) =
            tokio::time::timeout(Duration::from_millis(100), requests.next()).await
        {
            creates += usize::from(request.subject.contains("CONSUMER.CREATE"));
        }
        assert_eq!(creates, ATTEMPTS as usize);
        // The shard is free again: later resumes start a new read.
        let s = tails.shards[0].lock().unwrap();
        assert!(s.reading.is_none() && s.tail.is_none());
    }

    #[tokio::test]
    async fn a_tail_read_goes_on_from_where_a_failed_attempt_stopped() {
        let nats = herald_testing::NatsServer::start();
        let client = async_nats::connect(nats.client_url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let config = stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            ..Default::default()
        };
        let stream = js.create_stream(config).await.unwrap();
        for i in 1..=10u64 {
            let subject = format!("t.{}", i % 3);
            js.publish(subject, i.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let stream = js
            .get_stream_no_info(stream.cached_info().config.name.clone())
            .await
            .unwrap();
        // An earlier attempt got events 3 to 6 of the tail after 2.
        let mut tail = Tail {
            start: 2,
            end: 6,
            events: HashMap::new(),
        };
        let frame = |i: u64| sse::event(None, i.to_string().as_bytes());
        for i in 3..=6u64 {
            let subject = format!("t.{}", i % 3);
            tail.events.entry(subject).or_default().push((i, frame(i)));
        }
        read_on(&stream, &mut tail, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(tail.end, 10);
        for subject in 0..3u64 {
            let seqs: Vec<u64> = tail
                .events(&format!("t.{subject}"), 2, 10)
                .iter()
                .map(|e| e.0)
                .collect();
            let expected: Vec<u64> = (3..=10).filter(|i| i % 3 == subject).collect();
            assert_eq!(seqs, expected, "t.{subject}: each event once, in order");
        }
        assert_eq!(tail.events("t.1", 2, 10)[1].1, frame(7));
    }

    #[test]
    fn a_tail_knows_which_positions_it_saw() {
        let frame = Bytes::from_static(b"data: x\n\n");
        let events = HashMap::from([(
            "herald.h.0.u.a".to_owned(),
            vec![(11, frame.clone()), (14, frame.clone()), (20, frame)],
        )]);
        let tail = Tail::of(10, 20, events);
        assert!(tail.holds("herald.h.0.u.a", 14));
        // Another subject's sequence, a sequence at the start (not read),
        // and a subject the tail never saw.
        assert!(!tail.holds("herald.h.0.u.a", 12));
        assert!(!tail.holds("herald.h.0.u.a", 10));
        assert!(!tail.holds("herald.h.0.u.b", 14));
        let after_14: Vec<u64> = tail
            .events("herald.h.0.u.a", 14, 20)
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(after_14, [20]);
    }

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
