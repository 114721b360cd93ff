//! Resume: replaying what a reconnecting client missed, per followed
//! subject, from its cursor up to the present, within the connect's
//! [`Budget`].
//!
//! The stream's live subscriptions are made first. Then each subject's
//! fan-out task is asked for what it holds after the cursor (see
//! `recent`); for the rest, [`plan`] reads each subject's newest event in
//! history (most reconnects missed nothing and stop there), and
//! [`Replay::start`] reads the missed events up to it; later ones arrive
//! live, since the subscription predates that read. The session sends the
//! replay, then the live queue, dropping live events the replay already
//! covered (same subject, sequence not above its cursor): no gap, no
//! duplicate.
//!
//! A client picks its cursor, so what a connect may cost is bounded
//! whatever the positions: per followed subject one read of its newest
//! event (and per history stream one of its info, for positions above a
//! subject's newest event); per subject replayed from history one read
//! that the position is held (none when a shared tail read saw it), one
//! per event (or a share of a tail read), and one that the position was
//! not evicted meanwhile (else events could have been skipped). Events
//! and bytes are capped by the budget: a subject whose events do not all
//! fit, or whose position history no longer holds, gets one `herald.reset`
//! positioned at its newest event, so that the next resume starts there.

use std::collections::VecDeque;
use std::collections::hash_map::{self, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::future::join_all;
use herald_domain::cursor::key;
use herald_domain::region::of_origin;
use herald_nats::envelope::Envelope;
use herald_nats::history::{shard_of, stream_of};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::fanout::delivery::Delivery;
use crate::resume::budget::Budget;
use crate::resume::reads::{ReadError, Source};
use crate::resume::sharing::{Kept, Seeder};
use crate::resume::starts::History;
use crate::resume::tails::Tails;
use crate::sse;

/// Event type telling a client to refetch its state: its cursor is older
/// than history, or what it missed is more than one connect replays.
pub(crate) const RESET_EVENT: &str = "herald.reset";

/// Why a subject gets a `herald.reset` (its `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetReason {
    /// History no longer holds the client's last event.
    HistoryExpired,
    /// More was missed than `--max-replay-events` / `--max-replay-bytes`.
    ReplayLimit,
}

impl ResetReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::HistoryExpired => "history_expired",
            Self::ReplayLimit => "replay_limit",
        }
    }
}

/// A `herald.reset` for subject `key`, positioned at its newest event (if
/// any) so that the next resume starts from there.
pub(crate) fn reset(key: u32, newest: Option<u64>, reason: ResetReason) -> Delivery {
    let data = Bytes::from(format!(r#"{{"reason":"{}"}}"#, reason.as_str()));
    Delivery {
        frame: sse::event(Some(RESET_EVENT), &data),
        position: newest.map(|seq| (key, seq)),
    }
}

/// Why a cursor cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResumeError {
    #[error("event id is ahead of history (sequence {seq} of {stream} was never written)")]
    Future { stream: String, seq: u64 },
    #[error("history is unavailable: {0}")]
    Unavailable(String),
}

/// What to do for one followed subject.
#[derive(Debug)]
enum Action {
    /// Read the events after the position, up to `newest`.
    Replay { newest: u64 },
    /// The position is gone from history, or never was one of the subject's.
    Reset,
}

#[derive(Debug)]
struct Step {
    source: Source,
    /// The shard whose tails may serve it: this region's only (another
    /// region's tails are far, and its history may be away).
    tail: Option<u16>,
    key: u32,
    /// Last sequence the client has.
    after: u64,
    action: Action,
    seeder: Option<Seeder>,
}

/// A followed subject that must be read from history.
pub(crate) struct Wanted {
    /// The live subject.
    pub subject: String,
    /// Last sequence the client has.
    pub after: u64,
    pub seeder: Option<Seeder>,
}

/// A checked resume, ready to run.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    steps: Vec<Step>,
    /// Tails read once for many resumes (see `tails`).
    tails: Option<Tails>,
    /// Each wanted subject's newest stored sequence (0: none), as read.
    newest: Vec<(String, u64)>,
    /// The cursor keys of another region's subjects whose history could
    /// not be read (that region is away): replayed by a later resume.
    behind: Vec<u32>,
}

impl Plan {
    /// Each wanted subject's newest stored sequence, read after the
    /// stream joined it: live events must follow on from there.
    pub(crate) fn newest(&self) -> &[(String, u64)] {
        &self.newest
    }

    /// Subjects of other regions that were not replayed: their history
    /// was out of reach. The stream keeps their positions, and must end
    /// (its client resumes) rather than pass their next live event over
    /// what it missed.
    pub(crate) fn behind(&self) -> &[u32] {
        &self.behind
    }
}

/// The longest a resume waits for another region's history.
pub(crate) const REMOTE_READ_WAIT: std::time::Duration = crate::resume::starts::START_READ_WAIT;

/// Reads each wanted subject's newest event and checks its position
/// against it: one read per subject, plus one of stream info per history
/// stream where a position is above the subject's newest event.
pub(crate) async fn plan(
    history: &History<'_>,
    wanted: Vec<Wanted>,
    tails: &Tails,
) -> Result<Plan, ResumeError> {
    let mut steps = Vec::new();
    let mut newests = Vec::with_capacity(wanted.len());
    let mut behind = Vec::new();
    // Each stream's last sequence, read at most once per connect.
    let mut tops: HashMap<String, u64> = HashMap::new();
    // All at once: a resume waits for its slowest read, not their sum.
    let reads = join_all(wanted.iter().map(|w| newest(history, &w.subject))).await;
    for (
        Wanted {
            subject,
            after,
            seeder,
        },
        read,
    ) in wanted.into_iter().zip(reads)
    {
        let shard = shard_of(&subject, history.shards);
        let local = of_origin(&subject) == *history.region;
        let (source, newest) = match read {
            Ok(read) => read,
            Err(e) if local => return Err(unavailable(e)),
            Err(e) => {
                tracing::debug!(subject, error = %e, "another region's history is out of reach");
                behind.push(key(&subject));
                continue;
            }
        };
        newests.push((subject.clone(), newest.unwrap_or(0)));
        let action = match newest {
            // Nothing missed (position 0: "nothing seen yet", and there is
            // nothing): from here on, what arrives live is complete.
            n if n == Some(after) || (after == 0 && n.is_none()) => {
                if let Some(seeder) = seeder {
                    seeder.seed(Vec::new());
                }
                continue;
            }
            Some(newest) if newest > after => Action::Replay { newest },
            // Nothing of the subject at or after the position: expired, a
            // position that never was the subject's, or one from the future.
            _ => {
                let stream = stream_of(&subject, history.shards);
                let top = match tops.entry(stream.clone()) {
                    hash_map::Entry::Occupied(top) => *top.get(),
                    hash_map::Entry::Vacant(slot) => match last_sequence(&source, local).await {
                        Ok(top) => *slot.insert(top),
                        Err(e) if local => return Err(e),
                        // Another region's, out of reach since its first read.
                        Err(_) => {
                            behind.push(key(&subject));
                            continue;
                        }
                    },
                };
                if after > top {
                    return Err(ResumeError::Future { stream, seq: after });
                }
                Action::Reset
            }
        };
        steps.push(Step {
            source,
            tail: local.then_some(shard),
            key: key(&subject),
            after,
            action,
            seeder,
        });
    }
    Ok(Plan {
        steps,
        tails: Some(tails.clone()),
        newest: newests,
        behind,
    })
}

/// `subject`'s history and the sequence of its newest event there.
/// Another region's history may be lost, or cut off and silent: a resume
/// waits for it no longer than [`REMOTE_READ_WAIT`].
async fn newest(history: &History<'_>, subject: &str) -> Result<(Source, Option<u64>), ReadError> {
    let read = async {
        let source = Source::of(history.js, subject, history.shards, history.reads).await?;
        let newest = source.newest().await?;
        Ok((source, newest))
    };
    if of_origin(subject) == *history.region {
        return read.await;
    }
    let timed_out = || format!("no answer within {REMOTE_READ_WAIT:?}").into();
    tokio::time::timeout(REMOTE_READ_WAIT, read)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// The last sequence of `source`'s stream; another region's is waited
/// for no longer than [`REMOTE_READ_WAIT`].
async fn last_sequence(source: &Source, local: bool) -> Result<u64, ResumeError> {
    let info = source.stream.get_info();
    let info = match local {
        true => info.await.map_err(unavailable)?,
        false => tokio::time::timeout(REMOTE_READ_WAIT, info)
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?,
    };
    Ok(info.state.last_sequence)
}

fn unavailable(e: impl std::fmt::Display) -> ResumeError {
    ResumeError::Unavailable(e.to_string())
}

/// A running replay: events the node held, then those read from history.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    held: VecDeque<Delivery>,
    reader: Option<Reader>,
}

/// Reads history in a task; dropping it stops the task.
#[derive(Debug)]
struct Reader {
    deliveries: mpsc::Receiver<Delivery>,
    /// Set when reading history failed part way: the stream must then end
    /// (the client resumes again) rather than go live over a gap.
    failed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replay {
    /// Sends `held` first, then reads the plan's events within `budget`,
    /// counting the resets it sends; `None` if there is nothing to replay.
    pub(crate) fn start(
        held: Vec<Delivery>,
        plan: Plan,
        budget: Budget,
        resets: Counter,
    ) -> Option<Self> {
        if held.is_empty() && plan.steps.is_empty() {
            return None;
        }
        let reader = (!plan.steps.is_empty()).then(|| Reader::start(plan, budget, resets));
        Some(Self {
            held: held.into(),
            reader,
        })
    }

    /// The next event; `None` once all are sent (or reading failed).
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Delivery>> {
        if let Some(delivery) = self.held.pop_front() {
            return std::task::Poll::Ready(Some(delivery));
        }
        match self.reader.as_mut() {
            Some(reader) => reader.deliveries.poll_recv(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    /// The next event if one is ready now.
    pub(crate) fn try_next(&mut self) -> Option<Delivery> {
        if let Some(delivery) = self.held.pop_front() {
            return Some(delivery);
        }
        self.reader.as_mut()?.deliveries.try_recv().ok()
    }

    /// Whether the replay stopped short (meaningful once `next` gave `None`).
    pub(crate) fn failed(&self) -> bool {
        self.reader
            .as_ref()
            .is_some_and(|r| r.failed.load(Ordering::Acquire))
    }
}

/// Events the node held for one subject, as many as `budget` allows; if
/// not all fit, a reset positioned at the newest of them takes the place
/// of the rest. The flag says whether there was a reset.
pub(crate) fn within_budget(
    key: u32,
    held: Vec<Delivery>,
    budget: &mut Budget,
) -> (Vec<Delivery>, bool) {
    let newest = held.last().and_then(|d| d.position).map(|(_, seq)| seq);
    let mut kept = Vec::with_capacity(held.len());
    for delivery in held {
        if !budget.take(delivery.frame.len()) {
            kept.push(reset(key, newest, ResetReason::ReplayLimit));
            return (kept, true);
        }
        kept.push(delivery);
    }
    (kept, false)
}

impl Reader {
    fn start(plan: Plan, mut budget: Budget, resets: Counter) -> Self {
        let (tx, deliveries) = mpsc::channel(64);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let task = tokio::spawn(async move {
            let out = Out { tx, resets };
            for step in plan.steps {
                if let Err(e) = run_step(step, &mut budget, &out, plan.tails.as_ref()).await {
                    tracing::warn!(error = %e, "replay failed");
                    flag.store(true, Ordering::Release);
                    return;
                }
            }
        });
        Self {
            deliveries,
            failed,
            task,
        }
    }
}

/// Where a replay's events go.
struct Out {
    tx: mpsc::Sender<Delivery>,
    /// `herald_edge_resets_total`.
    resets: Counter,
}

impl Out {
    async fn send(&self, delivery: Delivery) -> Result<(), ReadError> {
        Ok(self.tx.send(delivery).await?)
    }

    async fn reset(
        &self,
        key: u32,
        newest: Option<u64>,
        reason: ResetReason,
    ) -> Result<(), ReadError> {
        self.resets.inc();
        self.send(reset(key, newest, reason)).await
    }
}

/// Replays one subject from history, or resets it.
async fn run_step(
    mut step: Step,
    budget: &mut Budget,
    out: &Out,
    tails: Option<&Tails>,
) -> Result<(), ReadError> {
    let (key, after, source) = (step.key, step.after, &step.source);
    let newest = match step.action {
        Action::Reset => return out.reset(key, None, ResetReason::HistoryExpired).await,
        Action::Replay { newest } => newest,
    };
    let expired = || out.reset(key, Some(newest), ResetReason::HistoryExpired);
    let limited = || out.reset(key, Some(newest), ResetReason::ReplayLimit);
    if !budget.has_room() {
        return limited().await;
    }
    // A tail read for many resumes holds the subject's events up to its
    // end; those after it are read one by one. (Position 0 asks for all
    // of history: no tail starts there.) If the tail read failed, this
    // stream ends and its client comes back later.
    let tail = match (tails, step.tail) {
        (Some(tails), Some(shard)) if after > 0 => {
            tails.covering(shard, &source.stream, after, newest).await?
        }
        _ => None,
    };
    // The position must be held before reading on from it; a tail that
    // read the client's own event shows that without asking.
    let seen = tail
        .as_ref()
        .is_some_and(|t| t.holds(&source.stored, after));
    if after > 0 && !seen && !source.holds(after).await? {
        return expired().await;
    }
    let mut kept = Kept::new(step.seeder.take());
    let mut sent = after;
    if let Some(tail) = &tail {
        for (seq, frame) in tail.events(&source.stored, after, newest) {
            if !budget.has_room() || !budget.take(frame.len()) {
                return limited().await;
            }
            kept.push(*seq, frame);
            let position = Some((key, *seq));
            out.send(Delivery {
                frame: frame.clone(),
                position,
            })
            .await?;
            sent = *seq;
        }
        if newest <= tail.end && sent != newest {
            // The newest event was gone when the tail was read: so was
            // the position (history drops oldest first).
            return expired().await;
        }
    }
    let mut next = tail.map_or(sent, |t| t.end.max(sent)) + 1;
    // One request per event. A consumer would stream them, but costs
    // several API calls to set up (on the meta leader, in a cluster), and
    // most resumes miss only a few events.
    while sent < newest {
        if !budget.has_room() {
            return limited().await;
        }
        let message = match source.next(next).await? {
            Some(message) if message.sequence <= newest => message,
            // The newest event was evicted meanwhile, and so was all before it.
            _ => return expired().await,
        };
        let envelope = Envelope::from_parts(Some(&message.headers), &message.payload);
        let frame = sse::event(envelope.event.as_deref(), &envelope.data);
        if !budget.take(frame.len()) {
            return limited().await;
        }
        kept.push(message.sequence, &frame);
        let position = Some((key, message.sequence));
        out.send(Delivery { frame, position }).await?;
        sent = message.sequence;
        next = message.sequence + 1;
    }
    // Had the position been evicted while reading, so could events after
    // it, between two reads (or before the tail read them): the client
    // must then refetch.
    if after > 0 && !source.holds(after).await? {
        return expired().await;
    }
    kept.seed();
    Ok(())
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::{self, stream};
    use futures::StreamExt;

    use super::*;
    use crate::resume::reads::Reads;

    fn frame(seq: u64) -> Bytes {
        Bytes::from(format!("data: {seq}\n\n"))
    }

    /// A stream `T` keeping 5 events per subject, holding events 1 to 5 of
    /// `t.a`, and a subscription seeing every direct get made of it.
    async fn five_events_on_t_a() -> (
        herald_testing::NatsServer,
        jetstream::Context,
        async_nats::Subscriber,
    ) {
        let nats = herald_testing::NatsServer::start();
        let client = async_nats::connect(nats.client_url()).await.unwrap();
        let js = jetstream::new(client.clone());
        let config = stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            max_messages_per_subject: 5,
            allow_direct: true,
            ..Default::default()
        };
        js.create_stream(config).await.unwrap();
        for i in 1..=5 {
            publish_t_a(&js, i).await;
        }
        let gets = client.subscribe("$JS.API.DIRECT.GET.>").await.unwrap();
        herald_nats::connection::round_trip(&client).await.unwrap();
        (nats, js, gets)
    }

    /// Publishes event `i` to `t.a`, asserting it is the stream's `i`th.
    async fn publish_t_a(js: &jetstream::Context, i: u64) {
        let ack = js.publish("t.a", i.to_string().into()).await.unwrap();
        assert_eq!(ack.await.unwrap().sequence, i);
    }

    /// An output whose only slot is taken, so a reader waits before
    /// sending its first delivery.
    async fn one_slot_taken() -> (Out, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(1);
        tx.send(reset(0, None, ResetReason::ReplayLimit))
            .await
            .unwrap();
        let out = Out {
            tx,
            resets: Counter::default(),
        };
        (out, rx)
    }

    /// Runs one step with room for everything; returns the resets it sent.
    async fn replay_step(step: Step, out: Out, tails: Option<Tails>) -> u64 {
        let limits = crate::resume::budget::ReplayLimits {
            events: 100,
            bytes: 1 << 20,
        };
        run_step(step, &mut Budget::new(limits), &out, tails.as_ref())
            .await
            .unwrap();
        out.resets.get()
    }

    /// Takes all a step sent after the slot taken by [`one_slot_taken`],
    /// checks that it ended in exactly one `history_expired` reset at the
    /// newest event (5), and returns the sequences sent before it.
    async fn sequences_before_one_expiry_reset(
        mut rx: mpsc::Receiver<Delivery>,
        reading: tokio::task::JoinHandle<u64>,
    ) -> Vec<u64> {
        rx.recv().await.unwrap();
        let mut got = Vec::new();
        while let Some(delivery) = rx.recv().await {
            got.push(delivery);
        }
        assert_eq!(reading.await.unwrap(), 1, "one reset");
        let last = got.pop().unwrap();
        assert_eq!(
            last.position,
            Some((7, 5)),
            "positioned at the newest event"
        );
        assert!(String::from_utf8_lossy(&last.frame).contains("history_expired"));
        got.iter().filter_map(|d| d.position).map(|p| p.1).collect()
    }

    #[tokio::test]
    async fn events_evicted_while_replaying_end_in_a_reset_not_a_gap() {
        let (_nats, js, mut gets) = five_events_on_t_a().await;
        let publish = |i| publish_t_a(&js, i);
        let source = Source {
            stream: js.get_stream_no_info("T").await.unwrap(),
            reads: Reads::Direct,
            stored: "t.a".into(),
        };
        // The client has event 1; 2 to 5 are to be replayed.
        let step = Step {
            source,
            tail: Some(0),
            key: 7,
            after: 1,
            action: Action::Replay { newest: 5 },
            seeder: None,
        };
        // The only slot is taken: the reader waits before sending event 2.
        let (out, rx) = one_slot_taken().await;
        let reading = tokio::spawn(replay_step(step, out, None));
        // Once it checked the position and asked for event 2, three newer
        // events evict 1 to 3: the next read jumps from 2 to 4.
        gets.next().await.unwrap();
        gets.next().await.unwrap();
        for i in 6..=8 {
            publish(i).await;
        }
        let seqs = sequences_before_one_expiry_reset(rx, reading).await;
        assert!(seqs.ends_with(&[4, 5]) && !seqs.contains(&3), "{seqs:?}");
    }

    #[tokio::test]
    async fn a_position_evicted_while_a_shared_tail_serves_it_ends_in_a_reset() {
        let (_nats, js, mut gets) = five_events_on_t_a().await;
        let publish = |i| publish_t_a(&js, i);
        // The client has event 1 and the subject's newest is 5. The shared
        // tail was read once 1 to 3 were gone (6 to 8 came): it holds 4 to 8.
        let tails = Tails::new(1, Counter::default());
        let held = (4..=8).map(|i| (i, frame(i))).collect();
        let events = HashMap::from([("t.a".to_owned(), held)]);
        tails.hold(0, crate::resume::tails::Tail::of(1, 8, events));
        let step = Step {
            source: Source {
                stream: js.get_stream_no_info("T").await.unwrap(),
                reads: Reads::Direct,
                stored: "t.a".into(),
            },
            tail: Some(0),
            key: 7,
            after: 1,
            action: Action::Replay { newest: 5 },
            seeder: None,
        };
        // The only slot is taken: the reader checks the position (still
        // held), then waits before sending the tail's first event.
        let (out, rx) = one_slot_taken().await;
        let reading = tokio::spawn(replay_step(step, out, Some(tails)));
        gets.next().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        // Now the eviction the tail saw happens: 1 to 3 go.
        for i in 6..=8 {
            publish(i).await;
        }
        let seqs = sequences_before_one_expiry_reset(rx, reading).await;
        // 2 and 3 were skipped: only the reset after them tells the client so.
        assert_eq!(seqs, vec![4, 5], "served from the tail, up to the newest");
    }
}
