//! Heartbeats of plain HTTP/1.1 streams, written by one task for the
//! whole node. An idle stream's only work is its heartbeat; a task woken
//! for each one (its timer, its `select!`, its body, its write) was most
//! of an idle edge's CPU outside the kernel. Here one task wakes once a
//! step, walks the streams due and writes each heartbeat with one
//! non-blocking write: an idle stream's task never wakes. Streams served
//! by hyper (HTTP/2, TLS) write their own, as hyper owns their sockets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::line::Line;

/// The heartbeat task wakes at most this often.
const STEP: Duration = Duration::from_secs(1);

/// Who writes a stream's heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeats {
    /// The stream itself, into its body.
    InBody,
    /// The node's heartbeat task, straight to the socket.
    ByNode,
}

/// The streams whose heartbeats this node writes, spread over one slot
/// per step of the heartbeat interval: each step, one slot is walked.
pub struct Beats {
    step: Duration,
    slots: Box<[Mutex<Vec<Weak<Line>>>]>,
    /// Streams are dealt to the slots in turn, so that a burst of connects
    /// does not make one step write all of their heartbeats at once.
    dealt: AtomicUsize,
}

impl Beats {
    /// Heartbeats at least every `interval` (exactly, for whole seconds).
    pub fn new(interval: Duration) -> Self {
        let step = interval.min(STEP).max(Duration::from_millis(1));
        let slots = (interval.as_nanos() / step.as_nanos()).max(1) as usize;
        Self {
            step,
            slots: (0..slots).map(|_| Mutex::default()).collect(),
            dealt: AtomicUsize::new(0),
        }
    }

    /// Writes `line`'s heartbeats until it is dropped; the first within
    /// one interval.
    pub fn add(&self, line: &Arc<Line>) {
        let slot = self.dealt.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[slot].lock().unwrap().push(Arc::downgrade(line));
    }

    /// Walks one slot each step until `stop`.
    pub async fn run(&self, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.step);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for slot in (0..self.slots.len()).cycle() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            self.walk(slot).await;
        }
    }

    /// Writes the heartbeats of one slot's streams and forgets the gone,
    /// letting other tasks run between batches: a slot of many thousand
    /// streams takes milliseconds, which events should not wait for.
    async fn walk(&self, slot: usize) {
        const BATCH: usize = 256;
        let lines = std::mem::take(&mut *self.slots[slot].lock().unwrap());
        let mut kept = Vec::with_capacity(lines.len());
        for (n, weak) in lines.into_iter().enumerate() {
            if let Some(line) = weak.upgrade() {
                line.beat();
                kept.push(weak);
            }
            if n % BATCH == BATCH - 1 {
                tokio::task::yield_now().await;
            }
        }
        // Streams added meanwhile are in the slot already.
        let mut lines = self.slots[slot].lock().unwrap();
        if lines.is_empty() {
            *lines = kept;
        } else {
            lines.append(&mut kept);
        }
    }

    /// Streams whose heartbeats this node writes.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    const BEAT: &[u8] = b"d\r\n: heartbeat\n\n\r\n";

    /// A line on one end of a loopback connection, and the other end.
    async fn pair() -> (Arc<Line>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (Arc::new(Line::new(accepted.unwrap().0)), client.unwrap())
    }

    /// All `client` receives until its line closes.
    async fn read_all(client: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let reading = client.read_to_end(&mut got);
        tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("the line closed")
            .unwrap();
        got
    }

    fn beats_in(bytes: &[u8]) -> usize {
        bytes.windows(BEAT.len()).filter(|w| *w == BEAT).count()
    }

    #[tokio::test]
    async fn every_line_gets_a_heartbeat_each_interval_once_its_head_is_out() {
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";
        const HELLO: &[u8] = b"5\r\nhello\r\n";
        let beats = Arc::new(Beats::new(Duration::from_millis(100)));
        let (idle, mut idle_client) = pair().await;
        let (busy, mut busy_client) = pair().await;
        let (headless, mut headless_client) = pair().await;
        for line in [&idle, &busy, &headless] {
            beats.add(line);
        }
        idle.write_all(HEAD).await.unwrap();
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let running = tokio::spawn({
            let (beats, stop) = (beats.clone(), stop.clone());
            async move { beats.run(stop).await }
        });
        busy.write_all(HEAD).await.unwrap();
        for _ in 0..20 {
            busy.write_all(HELLO).await.unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        running.await.unwrap();
        let ran_ms = started.elapsed().as_millis() as usize;
        // Closing the lines ends what each client reads.
        drop((idle, busy, headless, beats));
        let idle_got = read_all(&mut idle_client).await;
        let busy_got = read_all(&mut busy_client).await;
        let headless_got = read_all(&mut headless_client).await;
        // One beat per 100 ms step, give or take the first and a late one.
        let expected = 3..=ran_ms / 100 + 1;
        let idle_beats = beats_in(&idle_got);
        assert!(
            expected.contains(&idle_beats),
            "{idle_beats} beats in {ran_ms} ms"
        );
        assert_eq!(idle_got, [HEAD, &BEAT.repeat(idle_beats)].concat());
        let busy_beats = beats_in(&busy_got);
        assert!(
            expected.contains(&busy_beats),
            "{busy_beats} beats in {ran_ms} ms"
        );
        let hellos = busy_got
            .windows(HELLO.len())
            .filter(|w| *w == HELLO)
            .count();
        assert_eq!(hellos, 20, "events and heartbeats, whole");
        let whole = HEAD.len() + 20 * HELLO.len() + busy_beats * BEAT.len();
        assert_eq!(busy_got.len(), whole);
        assert!(busy_got.starts_with(HEAD));
        assert!(headless_got.is_empty(), "nothing goes before the head");
    }

    #[tokio::test]
    async fn lines_are_dealt_evenly_and_a_dropped_one_is_forgotten_at_its_turn() {
        let beats = Beats::new(Duration::from_secs(3));
        let mut clients = Vec::new();
        let mut lines = Vec::new();
        for _ in 0..9 {
            let (line, client) = pair().await;
            beats.add(&line);
            lines.push(line);
            clients.push(client);
        }
        let per_slot: Vec<usize> = beats
            .slots
            .iter()
            .map(|s| s.lock().unwrap().len())
            .collect();
        assert_eq!(per_slot, [3, 3, 3], "a burst of connects is spread");
        lines.truncate(1);
        for slot in 0..3 {
            beats.walk(slot).await;
        }
        assert_eq!(beats.held(), 1);
    }
}
