//! One load-generator process of the scale run (`herald-bench scale`
//! spawns several: one process holds at most ~17,000 sockets under the fd
//! limit). It opens its share of the streams on one edge, then answers the
//! coordinator on stdin/stdout, one JSON line each: `mark <capacity>`
//! starts a phase (heartbeats, deliveries and latencies counted afresh),
//! `report` answers a [`Report`]. It exits when stdin closes, so it never
//! outlives the coordinator.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::Target;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Index of this agent's first stream (stream `i` is user `scale-<i>`).
    #[arg(long)]
    first: usize,
    /// Streams this agent opens.
    #[arg(long)]
    count: usize,
    /// Source addresses to spread them over (one address has ~28,000
    /// ephemeral ports).
    #[arg(long, value_delimiter = ',', required = true)]
    sources: Vec<IpAddr>,
    /// Topics the odd streams follow (see [`topic_of`]).
    #[arg(long, default_value_t = 4)]
    topics: usize,
    /// One stream in this many records topic latencies (all count).
    #[arg(long, default_value_t = 16)]
    sample_every: usize,
    /// Streams this agent starts opening per second (0: as fast as
    /// [`CONNECTING`] at once allow).
    #[arg(long, default_value_t = 0.0)]
    open_rate: f64,
    /// Tries per stream (see `scale_args`).
    #[arg(long, default_value_t = 1)]
    open_attempts: u32,
}

/// The topic stream `i` follows besides its user: half the streams follow
/// only their user, the odd ones also one of `topics` topics.
pub(crate) fn topic_of(i: usize, topics: usize) -> Option<usize> {
    (i % 2 == 1 && topics > 0).then(|| (i / 2) % topics)
}

/// The first line an agent prints: its streams are open (or failed).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Opened {
    pub opened: u64,
    pub failed: u64,
    /// Opens refused for now (503/429 with `retry-after`) and tried again
    /// after the wait, as an EventSource would.
    #[serde(default)]
    pub retried: u64,
    pub first_error: Option<String>,
}

/// What an agent counted since the last `mark`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Report {
    /// Streams still open.
    pub alive: u64,
    /// Streams that got at least one heartbeat, and at least two.
    pub one_heartbeat: u64,
    pub two_heartbeats: u64,
    pub topic_deliveries: u64,
    pub topic_duplicates: u64,
    /// When the last topic event arrived, µs since the epoch.
    pub last_topic_us: u64,
    /// Distinct unicast events received.
    pub unicast_received: u64,
    pub unicast_duplicates: u64,
    /// Latency histograms in µs, as (value, count) pairs.
    pub topic_latency: Vec<(u64, u64)>,
    pub unicast_latency: Vec<(u64, u64)>,
}

/// Per-phase counts, shared by every stream of the agent.
struct Tally {
    heartbeats: Vec<AtomicU32>,
    /// Streams that opened; `closed` of them have ended since.
    opened: AtomicU64,
    closed: AtomicU64,
    /// Streams that did not open, and why the first did not.
    failed: AtomicU64,
    retried: AtomicU64,
    first_error: Mutex<Option<String>>,
    topic_deliveries: AtomicU64,
    topic_duplicates: AtomicU64,
    last_topic_us: AtomicU64,
    topic_latency: Mutex<Histogram<u64>>,
    unicast: Mutex<Unicast>,
}

/// Which unicast events arrived (indexed by their number) and when.
struct Unicast {
    seen: Vec<u8>,
    duplicates: u64,
    latency: Histogram<u64>,
}

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let tally = Arc::new(Tally {
        heartbeats: (0..args.count).map(|_| AtomicU32::new(0)).collect(),
        opened: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        retried: AtomicU64::new(0),
        first_error: Mutex::new(None),
        topic_deliveries: AtomicU64::new(0),
        topic_duplicates: AtomicU64::new(0),
        last_topic_us: AtomicU64::new(0),
        topic_latency: Mutex::new(histogram()?),
        unicast: Mutex::new(Unicast {
            seen: Vec::new(),
            duplicates: 0,
            latency: histogram()?,
        }),
    });
    let opened = open_all(target, args, &tally).await;
    println!("{}", serde_json::to_string(&opened)?);
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        let line = line?;
        match line.split_once(' ').unwrap_or((&line, "")) {
            ("mark", capacity) => tally.mark(capacity.parse()?),
            ("report", _) => println!("{}", serde_json::to_string(&tally.report())?),
            (other, _) => anyhow::bail!("unknown command {other:?}"),
        }
    }
    // The coordinator is gone: so are the streams, with this process.
    std::process::exit(0)
}

/// Lines from stdin, read on a thread of their own (tokio's stdin needs a
/// feature the workspace does not build).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

/// Streams connecting at once, per agent.
const CONNECTING: usize = 256;

/// Longest an open may take once started: the response head's wait and
/// some room for the connect (see `scale_stream::open`).
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// Opens the agent's streams, at most [`CONNECTING`] at once (and at
/// `--open-rate`), each in a task of its own that then reads it until it
/// closes (see `scale_stream`); returns once every stream opened or
/// failed, or [`OPEN_WAIT`] after the last one started.
async fn open_all(target: &Target, args: &Args, tally: &Arc<Tally>) -> Opened {
    let connecting = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let started = tokio::time::Instant::now();
    for k in 0..args.count {
        if args.open_rate > 0.0 {
            let due = started + std::time::Duration::from_secs_f64(k as f64 / args.open_rate);
            tokio::time::sleep_until(due).await;
        }
        let i = args.first + k;
        let topic = topic_of(i, args.topics).map(|t| format!("scale-{t}"));
        let request = target.sse_request(&format!("scale-{i}"), topic.as_deref());
        let Ok(permit) = connecting.clone().acquire_owned().await else {
            break;
        };
        let (edge, source) = (target.edge, args.sources[k % args.sources.len()]);
        let attempts = args.open_attempts.max(1);
        let tally = tally.clone();
        // Only odd streams follow a topic: sample among them.
        let sampled = (i / 2).is_multiple_of(args.sample_every.max(1));
        tokio::spawn(async move {
            // Boxed: the opening's buffers go once it is done, and the
            // task that reads for the rest of the run stays small.
            let opened = match request {
                Ok(request) => {
                    let opening = open_retrying(edge, source, request, &tally, permit, attempts);
                    Box::pin(opening).await
                }
                Err(e) => Err(e),
            };
            let (socket, pending) = match opened {
                Ok(open) => open,
                Err(e) => return tally.failed(e),
            };
            tally.opened.fetch_add(1, Ordering::Relaxed);
            let mut stream = StreamTally::new(tally, k, sampled);
            crate::scale_stream::for_each_line(socket, pending, |line| stream.line(line)).await;
            stream.tally.closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    let count = args.count as u64;
    let deadline = tokio::time::Instant::now() + OPEN_WAIT;
    while tally.opened.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) < count
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let opened = tally.opened.load(Ordering::Relaxed);
    Opened {
        opened,
        failed: count - opened,
        retried: tally.retried.load(Ordering::Relaxed),
        first_error: tally.first_error.lock().unwrap().clone(),
    }
}

/// Opens a stream in at most `attempts` tries; one refused for now (see
/// `scale_stream::Refused`) is tried again after the wait it was given,
/// plus up to a second of jitter, as an EventSource would. `permit` (one
/// of the agent's connects in flight) is given back after the first try.
async fn open_retrying(
    edge: std::net::SocketAddr,
    source: std::net::IpAddr,
    request: String,
    tally: &Tally,
    permit: tokio::sync::OwnedSemaphorePermit,
    attempts: u32,
) -> anyhow::Result<(tokio::net::TcpStream, Vec<u8>)> {
    let mut permit = Some(permit);
    let mut attempt = 1;
    loop {
        let opened = crate::scale_stream::open(edge, source, request.clone()).await;
        drop(permit.take());
        match opened {
            Err(e) if attempt < attempts => {
                let Some(refused) = e.downcast_ref::<crate::scale_stream::Refused>() else {
                    return Err(e);
                };
                tally.retried.fetch_add(1, Ordering::Relaxed);
                let jitter = std::time::Duration::from_millis(fastrand::u64(0..1000));
                tokio::time::sleep(refused.retry_after + jitter).await;
                attempt += 1;
            }
            opened => return opened,
        }
    }
}

/// Most events to one topic a run may publish: a stream keeps which of
/// them it saw in one `u128` (concurrent publishes may reorder them).
pub(crate) const MAX_TOPIC_EVENTS: u64 = 128;

/// One stream's view: its heartbeat slot and which topic events it saw.
struct StreamTally {
    tally: Arc<Tally>,
    slot: usize,
    sampled: bool,
    topic_seen: u128,
}

impl StreamTally {
    fn new(tally: Arc<Tally>, slot: usize, sampled: bool) -> Self {
        Self {
            tally,
            slot,
            sampled,
            topic_seen: 0,
        }
    }

    fn line(&mut self, line: &[u8]) {
        if line == b": heartbeat" {
            self.tally.heartbeats[self.slot].fetch_add(1, Ordering::Relaxed);
        } else if let Some(data) = line.strip_prefix(b"data: ") {
            match parse(data) {
                Some((b't', seq, sent)) => self.topic(seq, sent),
                Some((b'u', seq, sent)) => self.tally.unicast(seq, sent),
                _ => {}
            }
        }
    }

    fn topic(&mut self, seq: u64, sent: u64) {
        let now = crate::now_micros();
        let t = &self.tally;
        let bit = 1u128.checked_shl(seq as u32).unwrap_or(0);
        if self.topic_seen & bit != 0 {
            t.topic_duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.topic_seen |= bit;
        t.topic_deliveries.fetch_add(1, Ordering::Relaxed);
        t.last_topic_us.fetch_max(now, Ordering::Relaxed);
        if self.sampled {
            let _ = t
                .topic_latency
                .lock()
                .unwrap()
                .record(now.saturating_sub(sent).max(1));
        }
    }
}

impl Tally {
    fn failed(&self, error: anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .unwrap()
            .get_or_insert_with(|| format!("{error:#}"));
    }

    fn unicast(&self, seq: u64, sent: u64) {
        let now = crate::now_micros();
        let mut unicast = self.unicast.lock().unwrap();
        let _ = unicast.latency.record(now.saturating_sub(sent).max(1));
        match unicast.seen.get_mut(seq as usize) {
            Some(seen) if *seen > 0 => unicast.duplicates += 1,
            Some(seen) => *seen = 1,
            None => {}
        }
    }

    /// Starts a phase: everything counted afresh, room for `capacity`
    /// numbered unicast events.
    fn mark(&self, capacity: usize) {
        for heartbeats in &self.heartbeats {
            heartbeats.store(0, Ordering::Relaxed);
        }
        self.topic_deliveries.store(0, Ordering::Relaxed);
        self.topic_duplicates.store(0, Ordering::Relaxed);
        self.last_topic_us.store(0, Ordering::Relaxed);
        self.topic_latency.lock().unwrap().reset();
        let mut unicast = self.unicast.lock().unwrap();
        unicast.seen = vec![0; capacity];
        unicast.duplicates = 0;
        unicast.latency.reset();
    }

    /// Streams with at least `beats` heartbeats since the mark.
    fn beaten(&self, beats: u32) -> u64 {
        self.heartbeats
            .iter()
            .filter(|h| h.load(Ordering::Relaxed) >= beats)
            .count() as u64
    }

    fn report(&self) -> Report {
        let unicast = self.unicast.lock().unwrap();
        Report {
            alive: self.opened.load(Ordering::Relaxed) - self.closed.load(Ordering::Relaxed),
            one_heartbeat: self.beaten(1),
            two_heartbeats: self.beaten(2),
            topic_deliveries: self.topic_deliveries.load(Ordering::Relaxed),
            topic_duplicates: self.topic_duplicates.load(Ordering::Relaxed),
            last_topic_us: self.last_topic_us.load(Ordering::Relaxed),
            unicast_received: unicast.seen.iter().filter(|s| **s > 0).count() as u64,
            unicast_duplicates: unicast.duplicates,
            topic_latency: pairs(&self.topic_latency.lock().unwrap()),
            unicast_latency: pairs(&unicast.latency),
        }
    }
}

/// A histogram as (value, count) pairs, to merge in another process.
fn pairs(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// An event's data: `<kind> <seq> <sent µs>`, kind `t` (topic) or `u`
/// (unicast).
fn parse(data: &[u8]) -> Option<(u8, u64, u64)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut fields = text.split(' ');
    let kind = fields.next()?.bytes().next()?;
    Some((
        kind,
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_streams_follow_a_topic_spread_evenly() {
        let topics: Vec<_> = (0..16).map(|i| topic_of(i, 4)).collect();
        assert_eq!(topics.iter().filter(|t| t.is_none()).count(), 8);
        for t in 0..4 {
            assert_eq!(topics.iter().filter(|x| **x == Some(t)).count(), 2);
        }
    }

    #[test]
    fn event_data_parses_kind_number_and_stamp() {
        assert_eq!(parse(b"t 7 123"), Some((b't', 7, 123)));
        assert_eq!(parse(b"u 0 9"), Some((b'u', 0, 9)));
        assert_eq!(parse(b"u x 9"), None);
    }
}
