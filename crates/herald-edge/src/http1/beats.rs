//! Heartbeats of plain HTTP/1.1 streams, written by one task for the
//! whole node. An idle stream's only work is its heartbeat; a task woken
//! for each one (its timer, its `select!`, its body, its write) was most
//! of an idle edge's CPU outside the kernel. Here one task wakes once a
//! step, walks the streams due and writes each heartbeat with one
//! non-blocking write: an idle stream's task never wakes.
//!
//! The same walk is every stream's write timeout: a plain stream whose
//! socket has taken nothing for `--write-timeout` is closed (see
//! [`crate::http1::line`]), and so is a connection served by hyper (HTTP/2,
//! TLS), whose streams write their own heartbeats (see [`crate::watch`]).
//! And it ends plain streams when their tokens expire: a stream whose
//! token expires before its next visit is watched every step from then
//! on, and closed at the first step at or past its `exp`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::http1::line::Line;
use crate::metrics::CloseReason;
use crate::watch::Watch;

/// The heartbeat task wakes at most this often.
const STEP: Duration = Duration::from_secs(1);

/// Who writes a stream's heartbeats.
#[derive(Debug, Clone)]
pub(crate) enum Heartbeats {
    /// The stream itself, into its body: a stream served by hyper, on
    /// the connection `watch` times.
    InBody { watch: Arc<Watch> },
    /// The node's heartbeat task, straight to the socket.
    ByNode,
}

/// The streams this node watches, spread over one slot per step of the
/// heartbeat interval: each step, one slot is walked.
pub(crate) struct Beats {
    step: Duration,
    /// How long a stream's socket may take nothing (`--write-timeout`).
    write_timeout: Duration,
    /// Plain streams: heartbeats and write timeout.
    lines: Slots<Line>,
    /// Connections served by hyper: write timeout only.
    watches: Slots<Watch>,
    /// Plain streams whose tokens expire before their next visit.
    expiring: Mutex<Vec<Weak<Line>>>,
    /// Set at shutdown once the streams' grace is over: every plain
    /// stream is cut, those open now and those still to come.
    cutting: AtomicBool,
}

impl Beats {
    /// Heartbeats at least every `interval` (exactly, for whole seconds);
    /// streams whose sockets take nothing for `write_timeout` are closed.
    pub(crate) fn new(interval: Duration, write_timeout: Duration) -> Self {
        let step = interval.min(STEP).max(Duration::from_millis(1));
        let slots = (interval.as_nanos() / step.as_nanos()).max(1) as usize;
        Self {
            step,
            write_timeout,
            lines: Slots::new(slots),
            watches: Slots::new(slots),
            expiring: Mutex::default(),
            cutting: AtomicBool::new(false),
        }
    }

    /// Writes `line`'s heartbeats, times its socket and ends it at its
    /// token's expiry until it is dropped; the first heartbeat within one
    /// interval.
    pub(crate) fn add(&self, line: &Arc<Line>) {
        if self.cutting.load(Ordering::Acquire) {
            line.signal().cut();
        }
        self.lines.add(line);
        self.note_expiry(line, crate::orders::revocations::unix_now());
    }

    /// Drops every plain stream's connection now, and each one added
    /// later at once: what a shutdown does once their grace is over. A
    /// slot being walked meanwhile is cut by the walk.
    pub(crate) fn cut_all(&self) {
        self.cutting.store(true, Ordering::Release);
        self.lines.each(|line| line.signal().cut());
    }

    /// Watches `line` every step if its token may expire before its next
    /// visit: one interval from now, and a few seconds for a late walk.
    fn note_expiry(&self, line: &Arc<Line>, now: u64) {
        const LATE_WALK_SECS: u64 = 5;
        let interval = self.step.as_secs_f64() * self.lines.len() as f64;
        let before_next_visit = now + interval.ceil() as u64 + LATE_WALK_SECS;
        if line.exp() <= before_next_visit && line.watch_expiry() {
            self.expiring.lock().unwrap().push(Arc::downgrade(line));
        }
    }

    /// Closes the watched streams whose tokens have expired.
    fn expire(&self, now: u64) {
        self.expiring.lock().unwrap().retain(|line| {
            let Some(line) = line.upgrade() else {
                return false;
            };
            let expired = line.exp() <= now;
            if expired {
                line.signal().close(CloseReason::TokenExpired);
            }
            !expired
        });
    }

    /// Times the writes of a connection served by hyper until it is dropped.
    pub(crate) fn watch(&self, watch: &Arc<Watch>) {
        self.watches.add(watch);
    }

    /// Walks one slot each step until `stop`.
    pub(crate) async fn run(&self, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.step);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for slot in (0..self.lines.len()).cycle() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            self.walk(slot).await;
        }
    }

    /// Writes the heartbeats of one slot's plain streams and checks the
    /// write timeout of its streams and connections, and the expiry of
    /// the streams watched closely.
    async fn walk(&self, slot: usize) {
        let timeout = self.write_timeout;
        let now = crate::orders::revocations::unix_now();
        self.expire(now);
        let cutting = self.cutting.load(Ordering::Acquire);
        let visit = |line: &Arc<Line>| {
            if cutting {
                line.signal().cut();
            }
            line.beat(timeout);
            self.note_expiry(line, now);
        };
        self.lines.walk(slot, visit).await;
        self.watches.walk(slot, |watch| watch.check(timeout)).await;
    }

    /// Streams and connections this node watches.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lines.held() + self.watches.held()
    }
}

/// Weak handles dealt over slots.
struct Slots<T> {
    slots: Box<[Mutex<Vec<Weak<T>>>]>,
    /// Streams are dealt to the slots in turn, so that a burst of connects
    /// does not make one step visit all of them at once.
    dealt: AtomicUsize,
}

impl<T> Slots<T> {
    fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| Mutex::default()).collect(),
            dealt: AtomicUsize::new(0),
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn add(&self, item: &Arc<T>) {
        let slot = self.dealt.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[slot].lock().unwrap().push(Arc::downgrade(item));
    }

    /// Visits one slot's items and forgets the gone, letting other tasks
    /// run between batches: a slot of many thousand streams takes
    /// milliseconds, which events should not wait for.
    async fn walk(&self, slot: usize, visit: impl Fn(&Arc<T>)) {
        const BATCH: usize = 256;
        let items = std::mem::take(&mut *self.slots[slot].lock().unwrap());
        let mut kept = Vec::with_capacity(items.len());
        for (n, weak) in items.into_iter().enumerate() {
            if let Some(item) = weak.upgrade() {
                visit(&item);
                kept.push(weak);
            }
            if n % BATCH == BATCH - 1 {
                tokio::task::yield_now().await;
            }
        }
        // Items added meanwhile are in the slot already.
        let mut items = self.slots[slot].lock().unwrap();
        if items.is_empty() {
            *items = kept;
        } else {
            items.append(&mut kept);
        }
    }

    /// Visits every item, now, each slot under its lock (`visit` must
    /// not come back to these slots).
    fn each(&self, visit: impl Fn(&T)) {
        for slot in &self.slots {
            for item in slot.lock().unwrap().iter().filter_map(Weak::upgrade) {
                visit(&item);
            }
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    #[cfg(test)]
    fn per_slot(&self) -> Vec<usize> {
        self.slots.iter().map(|s| s.lock().unwrap().len()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    use super::*;
    use crate::http1::line::tests::{
        closed_for, fill, is_cut, owe_beat, pair as line_pair, pair_until,
    };

    const BEAT: &[u8] = b"d\r\n: heartbeat\n\n\r\n";
    const TIMEOUT: Duration = Duration::from_secs(30);

    /// A line on one end of a loopback connection, and the other end.
    async fn pair() -> (Arc<Line>, TcpStream) {
        let (line, client) = line_pair().await;
        (Arc::new(line), client)
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
        let beats = Arc::new(Beats::new(Duration::from_millis(100), TIMEOUT));
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

    /// A heartbeat the socket took only part of is not left hanging until
    /// the stream's next event: the next step writes the rest of it.
    #[tokio::test]
    async fn a_heartbeat_the_socket_took_part_of_is_finished_at_the_next_step() {
        let beats = Beats::new(Duration::from_secs(1), TIMEOUT);
        let (line, mut client) = pair().await;
        beats.add(&line);
        line.write_all(&b"HEAD"[..]).await.unwrap();
        // As `beat` leaves it when the socket takes 5 bytes of the 18.
        line.socket().try_write(&BEAT[..5]).unwrap();
        owe_beat(&line, BEAT.len() - 5);
        beats.walk(0).await;
        drop((line, beats));
        assert_eq!(read_all(&mut client).await, [&b"HEAD"[..], BEAT].concat());
    }

    /// An idle stream whose client stopped reading is closed at the first
    /// step after its socket has taken nothing for the write timeout.
    #[tokio::test(start_paused = true)]
    async fn a_line_stalled_for_the_write_timeout_is_closed_at_its_step() {
        let beats = Beats::new(Duration::from_secs(10), TIMEOUT);
        let (line, _client) = line_pair().await;
        let line = Arc::new(line);
        beats.add(&line);
        fill(&line);
        beats.walk(0).await; // the heartbeat finds no room
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(10)).await;
            beats.walk(0).await;
            assert!(!is_cut(&line), "within the timeout");
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        beats.walk(0).await;
        assert!(is_cut(&line), "closed after the write timeout");
        assert_eq!(closed_for(&line), Some(CloseReason::WriteTimeout));
    }

    #[tokio::test]
    async fn lines_are_dealt_evenly_and_a_dropped_one_is_forgotten_at_its_turn() {
        let beats = Beats::new(Duration::from_secs(3), TIMEOUT);
        let mut clients = Vec::new();
        let mut lines = Vec::new();
        for _ in 0..9 {
            let (line, client) = pair().await;
            beats.add(&line);
            lines.push(line);
            clients.push(client);
        }
        assert_eq!(
            beats.lines.per_slot(),
            [3, 3, 3],
            "a burst of connects is spread"
        );
        lines.truncate(1);
        for slot in 0..3 {
            beats.walk(slot).await;
        }
        assert_eq!(beats.held(), 1);
    }

    /// A stream ends at the first step at or past its token's `exp`,
    /// whether that comes before its first visit or long after it, and
    /// not before.
    #[tokio::test]
    async fn a_line_ends_at_the_first_step_past_its_tokens_expiry() {
        let beats = Beats::new(Duration::from_secs(15), TIMEOUT);
        let now = crate::orders::revocations::unix_now();
        let mut lines = Vec::new();
        for exp in [now - 1, now + 1, now + 60, u64::MAX] {
            let (line, client) = pair_until(exp).await;
            let line = Arc::new(line);
            beats.add(&line);
            lines.push((line, client));
        }
        assert_eq!(
            beats.expiring.lock().unwrap().len(),
            2,
            "two watched closely"
        );
        beats.expire(now);
        assert_eq!(closed_for(&lines[0].0), Some(CloseReason::TokenExpired));
        assert_eq!(closed_for(&lines[1].0), None, "not before its exp");
        beats.expire(now + 1);
        assert_eq!(closed_for(&lines[1].0), Some(CloseReason::TokenExpired));
        assert!(
            beats.expiring.lock().unwrap().is_empty(),
            "closed ones are forgotten"
        );
        for (line, _) in &lines[2..] {
            assert_eq!(closed_for(line), None);
        }
        // A visit within an interval of its expiry watches it closely.
        let visited = &lines[2].0;
        beats.note_expiry(visited, visited.exp() - 10);
        beats.expire(visited.exp());
        assert_eq!(closed_for(visited), Some(CloseReason::TokenExpired));
        assert!(!is_cut(visited), "an expired stream sends its last frame");
    }

    /// An expired stream is closed by the walk itself.
    #[tokio::test]
    async fn the_walk_ends_a_stream_whose_token_expired() {
        let beats = Beats::new(Duration::from_secs(15), TIMEOUT);
        let (line, _client) = pair_until(crate::orders::revocations::unix_now() - 1).await;
        let line = Arc::new(line);
        beats.add(&line);
        beats.walk(3).await;
        assert_eq!(closed_for(&line), Some(CloseReason::TokenExpired));
    }

    /// A shutdown cuts every line: those held, one in a slot being
    /// walked at that moment (taken out of the slot), and one added later.
    #[tokio::test]
    async fn a_shutdown_cuts_every_line_now_and_to_come() {
        let beats = Beats::new(Duration::from_secs(3), TIMEOUT);
        let (held, _c1) = pair().await;
        let (walked, _c2) = pair().await;
        let (held, walked) = (Arc::new(held), Arc::new(walked));
        beats.add(&held);
        beats.add(&walked);
        let out_for_the_walk = std::mem::take(&mut *beats.lines.slots[1].lock().unwrap());
        beats.cut_all();
        assert!(is_cut(&held));
        assert!(!is_cut(&walked), "not in its slot while walked");
        beats.lines.slots[1]
            .lock()
            .unwrap()
            .extend(out_for_the_walk);
        beats.walk(1).await;
        assert!(is_cut(&walked), "cut by the walk");
        let (later, _c3) = pair().await;
        let later = Arc::new(later);
        beats.add(&later);
        assert!(is_cut(&later), "cut as it is added");
    }
}
