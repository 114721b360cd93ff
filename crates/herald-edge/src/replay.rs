//! Resume: replaying what a reconnecting client missed, per followed
//! subject, from its cursor up to the present.
//!
//! The stream's live subscriptions are made first. Then each subject's
//! fan-out task is asked for what it holds after the cursor (see
//! `recent`); for the rest, [`plan`] checks the cursor against history and
//! [`Replay::start`] reads the missed events from the history streams. The
//! session sends the replay, then the live queue, dropping live events the
//! replay already covered (same subject, sequence not above its cursor):
//! no gap, no duplicate.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use herald_core::cursor::key;
use herald_core::envelope::Envelope;
use herald_core::history::{shard_of, stored_subject, stream_name};
use tokio::sync::mpsc;

use crate::fanout::{Delivery, Seeder};
use crate::sse;

/// Event type telling a client its cursor is older than history.
pub const RESET_EVENT: &str = "herald.reset";

/// Why a cursor cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("event id is ahead of history (sequence {seq} of {stream} was never written)")]
    Future { stream: String, seq: u64 },
    #[error("history is unavailable: {0}")]
    Unavailable(String),
}

/// What to do for one followed subject.
#[derive(Debug)]
struct Step {
    /// Stored (history) subject.
    stored: String,
    key: u32,
    /// Last sequence the client has.
    after: u64,
    stream: stream::Stream<()>,
    reads: Reads,
    /// The client's last event is gone from history: send a reset.
    reset: bool,
    seeder: Option<Seeder>,
}

/// A followed subject that must be read from history.
pub struct Wanted {
    /// The live subject.
    pub subject: String,
    /// Last sequence the client has.
    pub after: u64,
    pub seeder: Option<Seeder>,
}

/// A checked resume, ready to run.
#[derive(Debug, Default)]
pub struct Plan {
    steps: Vec<Step>,
}

impl Plan {
    /// Subjects whose cursor is older than history: each gets a reset.
    pub fn resets(&self) -> usize {
        self.steps.iter().filter(|s| s.reset).count()
    }
}

/// Who answers single reads of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Any server holding the stream (direct get): cheap, and exact while
    /// history has one replica.
    Direct,
    /// The stream leader, through the JetStream API: a replica may lag
    /// the leader, and a lagging answer would skip or reset events.
    Leader,
}

impl Reads {
    pub fn for_replicas(replicas: u8) -> Self {
        if replicas == 1 {
            Self::Direct
        } else {
            Self::Leader
        }
    }
}

/// Checks each wanted subject's cursor against history.
pub async fn plan(
    js: &jetstream::Context,
    wanted: Vec<Wanted>,
    shards: u16,
    reads: Reads,
) -> Result<Plan, ResumeError> {
    let mut steps = Vec::new();
    for Wanted {
        subject,
        after,
        seeder,
    } in wanted
    {
        let shard = shard_of(&subject, shards);
        let stream = js
            .get_stream_no_info(stream_name(shard))
            .await
            .map_err(unavailable)?;
        let stored = stored_subject(&subject, shard);
        // Position 0 means "nothing seen yet": replay all history.
        let reset = after > 0 && !still_held(&stream, reads, &stored, after).await?;
        steps.push(Step {
            stored,
            key: key(&subject),
            after,
            stream,
            reads,
            reset,
            seeder,
        });
    }
    Ok(Plan { steps })
}

/// Whether the client's last event is still in history. History drops a
/// subject's oldest events first, so if it is, everything after it is too.
async fn still_held(
    stream: &stream::Stream<()>,
    reads: Reads,
    stored: &str,
    after: u64,
) -> Result<bool, ResumeError> {
    match next_of(stream, reads, stored, after).await {
        Ok(Some(message)) => Ok(message.sequence == after),
        // Nothing of this subject from there on: expired, or never written.
        Ok(None) => {
            let info = stream.get_info().await.map_err(unavailable)?;
            if after > info.state.last_sequence {
                return Err(ResumeError::Future {
                    stream: info.config.name,
                    seq: after,
                });
            }
            Ok(false)
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// The subject's first stored event at or after sequence `from`.
async fn next_of(
    stream: &stream::Stream<()>,
    reads: Reads,
    stored: &str,
    from: u64,
) -> Result<Option<StreamMessage>, stream::RawMessageError> {
    if reads == Reads::Direct {
        let request = stream.direct_get_builder().sequence(from);
        match request.next_by_subject(stored).send().await {
            Ok(message) => return Ok(Some(message)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(None),
            // E.g. a stream made before direct gets were allowed: ask the leader.
            Err(e) => tracing::debug!(error = %e, "direct get failed"),
        }
    }
    let request = stream.raw_message_builder().sequence(from);
    match request.next_by_subject(stored).send().await {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn unavailable(e: impl std::fmt::Display) -> ResumeError {
    ResumeError::Unavailable(e.to_string())
}

/// A running replay: events the node held, then those read from history.
#[derive(Debug, Default)]
pub struct Replay {
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
    /// Sends `held` first, then reads the plan's events; `None` if there
    /// is nothing to replay.
    pub fn start(held: Vec<Delivery>, plan: Plan) -> Option<Self> {
        if held.is_empty() && plan.steps.is_empty() {
            return None;
        }
        let reader = (!plan.steps.is_empty()).then(|| Reader::start(plan));
        Some(Self {
            held: held.into(),
            reader,
        })
    }

    /// The next event; `None` once all are sent (or reading failed).
    pub async fn next(&mut self) -> Option<Delivery> {
        if let Some(delivery) = self.held.pop_front() {
            return Some(delivery);
        }
        self.reader.as_mut()?.deliveries.recv().await
    }

    /// The next event if one is ready now.
    pub fn try_next(&mut self) -> Option<Delivery> {
        if let Some(delivery) = self.held.pop_front() {
            return Some(delivery);
        }
        self.reader.as_mut()?.deliveries.try_recv().ok()
    }

    /// Whether the replay stopped short (meaningful once `next` gave `None`).
    pub fn failed(&self) -> bool {
        self.reader
            .as_ref()
            .is_some_and(|r| r.failed.load(Ordering::Acquire))
    }
}

impl Reader {
    fn start(plan: Plan) -> Self {
        let (tx, deliveries) = mpsc::channel(64);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let task = tokio::spawn(async move {
            for step in plan.steps {
                if let Err(e) = run_step(step, &tx).await {
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

type ReadError = Box<dyn std::error::Error + Send + Sync>;

async fn run_step(mut step: Step, tx: &mpsc::Sender<Delivery>) -> Result<(), ReadError> {
    if step.reset {
        return send_reset(&step, tx).await;
    }
    let mut sink = Sink {
        tx,
        key: step.key,
        // What was read goes back to the fan-out for the next resumers.
        read: step.seeder.as_ref().map(|_| Vec::new()),
    };
    // One request per event, up to the present. A consumer would stream
    // them, but costs several API calls to set up, and most resumes miss
    // only a few events; history keeps at most max-per-subject anyway.
    let mut next = step.after + 1;
    while let Some(message) = next_of(&step.stream, step.reads, &step.stored, next).await? {
        next = message.sequence + 1;
        sink.send(message.sequence, &message.headers, &message.payload)
            .await?;
    }
    if let (Some(seeder), Some(read)) = (step.seeder.take(), sink.read) {
        seeder.seed(read);
    }
    Ok(())
}

/// Where a step's events go: framed, to the session, and kept for the seeder.
struct Sink<'a> {
    tx: &'a mpsc::Sender<Delivery>,
    key: u32,
    read: Option<Vec<(u64, Bytes)>>,
}

impl Sink<'_> {
    async fn send(
        &mut self,
        seq: u64,
        headers: &HeaderMap,
        payload: &Bytes,
    ) -> Result<(), ReadError> {
        let envelope = Envelope::from_parts(Some(headers), payload);
        let frame = sse::event(envelope.event.as_deref(), &envelope.data);
        if let Some(read) = &mut self.read {
            read.push((seq, frame.clone()));
        }
        let delivery = Delivery {
            frame,
            position: Some((self.key, seq)),
        };
        self.tx.send(delivery).await?;
        Ok(())
    }
}

/// One `herald.reset`, positioned at the subject's newest event so that the
/// next resume starts from there.
async fn send_reset(step: &Step, tx: &mpsc::Sender<Delivery>) -> Result<(), ReadError> {
    let newest = match step
        .stream
        .get_last_raw_message_by_subject(&step.stored)
        .await
    {
        Ok(message) => Some(message.sequence),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => None,
        Err(e) => return Err(e.into()),
    };
    let data = Bytes::from_static(br#"{"reason":"history_expired"}"#);
    let delivery = Delivery {
        frame: sse::event(Some(RESET_EVENT), &data),
        position: newest.map(|seq| (step.key, seq)),
    };
    tx.send(delivery).await?;
    Ok(())
}
