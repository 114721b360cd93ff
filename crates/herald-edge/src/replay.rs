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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use herald_core::cursor::key;
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
    stream: stream::Stream,
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

/// Checks each wanted subject's cursor against history.
pub async fn plan(
    js: &jetstream::Context,
    wanted: Vec<Wanted>,
    shards: u16,
) -> Result<Plan, ResumeError> {
    let mut streams: HashMap<u16, (stream::Stream, u64)> = HashMap::new();
    let mut steps = Vec::new();
    for Wanted {
        subject,
        after,
        seeder,
    } in wanted
    {
        let shard = shard_of(&subject, shards);
        let (stream, last) = match streams.entry(shard) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                let stream = js
                    .get_stream(stream_name(shard))
                    .await
                    .map_err(unavailable)?;
                let last = stream.cached_info().state.last_sequence;
                slot.insert((stream, last))
            }
        };
        if after > *last {
            return Err(ResumeError::Future {
                stream: stream_name(shard),
                seq: after,
            });
        }
        let stored = stored_subject(&subject, shard);
        // History drops a subject's oldest events first, so if the client's
        // last event is still there, everything after it is too.
        // Position 0 means "nothing seen yet": replay all history.
        let reset = after > 0
            && match stream.get_raw_message(after).await {
                Ok(message) => message.subject.as_str() != stored,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => true,
                Err(e) => return Err(unavailable(e)),
            };
        steps.push(Step {
            stored,
            key: key(&subject),
            after,
            stream: stream.clone(),
            reset,
            seeder,
        });
    }
    Ok(Plan { steps })
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

async fn run_step(
    step: Step,
    tx: &mpsc::Sender<Delivery>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if step.reset {
        return send_reset(&step, tx).await;
    }
    let config = consumer::pull::OrderedConfig {
        filter_subject: step.stored.clone(),
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: step.after + 1,
        },
        ..Default::default()
    };
    let mut consumer = step.stream.create_consumer(config).await?;
    // What was read goes back to the fan-out for the next resumers.
    let mut read = Vec::new();
    if consumer.info().await?.num_pending > 0 {
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info()?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let envelope = herald_core::envelope::Envelope::from_message(&message.message);
            let frame = sse::event(envelope.event.as_deref(), &envelope.data);
            if step.seeder.is_some() {
                read.push((seq, frame.clone()));
            }
            let delivery = Delivery {
                frame,
                position: Some((step.key, seq)),
            };
            tx.send(delivery).await?;
            if pending == 0 {
                break;
            }
        }
    }
    if let Some(seeder) = step.seeder {
        seeder.seed(read);
    }
    Ok(())
}

/// One `herald.reset`, positioned at the subject's newest event so that the
/// next resume starts from there.
async fn send_reset(
    step: &Step,
    tx: &mpsc::Sender<Delivery>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
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
