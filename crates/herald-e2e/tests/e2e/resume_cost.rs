//! What a resume costs JetStream when the client picks the cursor: a token
//! with a `room*` claim following 32 rooms and its user stream, with a
//! hand-made cursor of 33 entries at varied positions. Each scenario counts
//! the JetStream API requests (`$JS.API.>`, direct gets included) that one
//! such connect causes, and prints the figure quoted in docs/resume-cost.md:
//!
//! `cargo nextest run -p herald-e2e resume_cost:: --no-capture`

use std::time::Duration;

use futures::StreamExt;
use herald_domain::cursor::{Cursor, key};
use herald_e2e::*;
use herald_testing::sse::SseStream;
use herald_testing::token::{Claims, Sign};

/// Rooms followed by the hostile stream, besides its user stream.
const ROOMS: usize = 32;
/// Events stored per followed subject in the "long histories" scenario:
/// more than one connect replays by default, from the positions picked
/// below; more with `RESUME_COST_PER_SUBJECT` (history keeps up to 1,000).
fn per_subject() -> usize {
    std::env::var("RESUME_COST_PER_SUBJECT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
}
/// History streams (`--history-shards` default).
const SHARDS: usize = 4;
/// Followed subjects: the rooms and the user stream.
const SUBJECTS: usize = 1 + ROOMS;
/// A replay is over once no event came for this long.
const REPLAY_OVER: Duration = Duration::from_millis(1500);

/// Counts JetStream API requests on the server, from any client.
struct ApiCounter {
    nats: async_nats::Client,
    requests: async_nats::Subscriber,
}

impl ApiCounter {
    async fn start(url: &str) -> Self {
        let nats = async_nats::connect(url).await.unwrap();
        let requests = nats.subscribe("$JS.API.>").await.unwrap();
        nats.flush().await.unwrap();
        herald_nats::connection::round_trip(&nats).await.unwrap();
        Self { nats, requests }
    }

    /// Requests seen so far (waits for what is still in flight to arrive).
    async fn take(&mut self) -> Vec<String> {
        herald_nats::connection::round_trip(&self.nats)
            .await
            .unwrap();
        let mut seen = Vec::new();
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(200), self.requests.next()).await
        {
            seen.push(message.subject.to_string());
        }
        seen
    }
}

fn rooms(prefix: &str) -> Vec<String> {
    (0..ROOMS).map(|i| format!("{prefix}{i:02}")).collect()
}

fn subjects(user: &str, rooms: &[String]) -> Vec<String> {
    let user = herald_domain::subject::UserId::parse(user)
        .unwrap()
        .subject();
    let topics = rooms
        .iter()
        .map(|r| herald_domain::subject::Topic::parse(r).unwrap().subject());
    std::iter::once(user).chain(topics).collect()
}

/// What one hostile connect cost and got.
#[derive(Debug)]
struct Cost {
    requests: usize,
    events: usize,
    resets: usize,
}

/// Opens `user`'s stream on `rooms` from `cursor`, reads until quiet, and
/// counts the JetStream API requests it caused.
async fn hostile_connect(stack: &Stack, user: &str, rooms: &[String], cursor: &Cursor) -> Cost {
    let mut counter = ApiCounter::start(&stack.nats().client_url()).await;
    let token = Claims::new(user).topics(&["room*"]).hs256(SECRET);
    let refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let response = reqwest::Client::new()
        .get(events_url(stack.edge(), &refs))
        .bearer_auth(token)
        .header("last-event-id", cursor.encode())
        .send()
        .await
        .unwrap();
    let mut stream = SseStream::from_response(response).await;
    let (mut events, mut resets) = (0, 0);
    while let Some(event) = stream.next_within(REPLAY_OVER).await {
        if event.event == "herald.reset" {
            resets += 1;
        } else {
            events += 1;
        }
    }
    let requests = counter.take().await.len();
    Cost {
        requests,
        events,
        resets,
    }
}

/// Publishes `count` events to each of `user` and `rooms`, and returns
/// every subject's stream sequences, read from the ids a stream following
/// them all was sent.
async fn fill_history(stack: &Stack, user: &str, rooms: &[String], count: usize) -> Vec<Vec<u64>> {
    let token = Claims::new(user).topics(&["room*"]).hs256(SECRET);
    let refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let http = reqwest::Client::new();
    let mut recorder = SseStream::open(&http, &events_url(stack.edge(), &refs), &token).await;
    // Read while publishing, or the recorder falls behind and is closed.
    let keys: Vec<u32> = subjects(user, rooms).iter().map(|s| key(s)).collect();
    let reading = tokio::spawn(async move {
        let mut sequences = vec![Vec::new(); keys.len()];
        // Where the opening's id put the stream: nothing stored yet.
        let mut last = Cursor::default();
        for &k in &keys {
            last.set(k, 0);
        }
        for _ in 0..SUBJECTS * count {
            let id = Cursor::decode(&recorder.next().await.id).unwrap();
            for (i, &k) in keys.iter().enumerate() {
                if id.get(k) != last.get(k) {
                    sequences[i].push(id.get(k).unwrap());
                }
            }
            last = id;
        }
        sequences
    });
    // One after the other, round robin: the same sequences every run.
    let mut client = stack.publisher().await;
    for i in 0..count {
        publish_to_users(&mut client, &[user], &i.to_string()).await;
        for room in rooms {
            publish_to_topic(&mut client, room, &i.to_string()).await;
        }
    }
    reading.await.unwrap()
}

/// Positions a hostile client would pick: from nothing seen, just before
/// the subject's first event, one in the middle, and between two events.
fn varied_cursor(subjects: &[String], sequences: &[Vec<u64>]) -> Cursor {
    let mut cursor = Cursor::default();
    for (i, (subject, seqs)) in subjects.iter().zip(sequences).enumerate() {
        let position = match i % 4 {
            0 => 0,
            1 => seqs[0] - 1,
            2 => seqs[seqs.len() / 2],
            _ => seqs[i % seqs.len()] + 1,
        };
        cursor.set(key(subject), position);
    }
    cursor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_cursor_over_long_histories() {
    let stack = Stack::start(edge_config("edge")).await;
    let rooms = rooms("room");
    let sequences = fill_history(&stack, "mallory", &rooms, per_subject()).await;
    let subjects = subjects("mallory", &rooms);
    let cursor = varied_cursor(&subjects, &sequences);
    assert_eq!(cursor.entries().len(), SUBJECTS);
    let cost = hostile_connect(&stack, "mallory", &rooms, &cursor).await;
    println!(
        "hostile resume over {} events per subject: {} JetStream API requests, {} events replayed, {} resets",
        per_subject(),
        cost.requests,
        cost.events,
        cost.resets
    );
    // Per subject: its newest event, that the position is held, and that
    // it still is at the end; one read per event; stream info per shard.
    let max_events = edge_config("edge").replay.events;
    assert!(cost.events <= max_events, "{cost:?}");
    let bound = max_events + 3 * SUBJECTS + SHARDS;
    assert!(cost.requests <= bound, "{cost:?}, bound {bound}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_cursor_on_subjects_without_history() {
    let stack = Stack::start(edge_config("edge")).await;
    // Another user's history, so that positions are below each stream's
    // last sequence (ahead of it they would be refused at once).
    let filler = rooms("roomfill");
    let sequences = fill_history(&stack, "filler", &filler, 3).await;
    let top = sequences.iter().flatten().copied().max().unwrap();
    let rooms = rooms("roomempty");
    let mut cursor = Cursor::default();
    let mut rng = fastrand::Rng::with_seed(11);
    for subject in subjects("mallory", &rooms) {
        cursor.set(key(&subject), rng.u64(1..=top / 2));
    }
    let cost = hostile_connect(&stack, "mallory", &rooms, &cursor).await;
    println!(
        "hostile resume on empty subjects: {} JetStream API requests, {} events replayed, {} resets",
        cost.requests, cost.events, cost.resets
    );
    assert_eq!(cost.resets, SUBJECTS);
    // One read per subject finds it empty; stream info, once per shard,
    // tells an expired position from one of the future.
    assert!(cost.requests <= SUBJECTS + SHARDS, "{cost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_that_missed_nothing_costs_one_read_per_subject() {
    let stack = Stack::start(edge_config("edge")).await;
    let rooms = rooms("room");
    let sequences = fill_history(&stack, "alice", &rooms, 2).await;
    let mut cursor = Cursor::default();
    for (subject, seqs) in subjects("alice", &rooms).iter().zip(&sequences) {
        cursor.set(key(subject), *seqs.last().unwrap());
    }
    let cost = hostile_connect(&stack, "alice", &rooms, &cursor).await;
    println!(
        "reconnect that missed nothing: {} JetStream API requests",
        cost.requests
    );
    assert_eq!((cost.events, cost.resets), (0, 0));
    assert_eq!(cost.requests, SUBJECTS);
}

#[tokio::test]
async fn cursor_entries_for_subjects_not_followed_cost_nothing() {
    let stack = Stack::start(edge_config("edge")).await;
    let mut client = stack.publisher().await;
    publish_to_users(&mut client, &["mallory"], "stored").await;
    let mut cursor = Cursor::default();
    for i in 0..herald_domain::cursor::MAX_ENTRIES as u64 {
        cursor.set(key(&format!("herald.t.elsewhere{i}")), i + 1);
    }
    let cost = hostile_connect(&stack, "mallory", &[], &cursor).await;
    println!(
        "cursor of {} entries, none followed: {} JetStream API requests",
        cursor.entries().len(),
        cost.requests
    );
    // One read, of where mallory's own stream starts (as for any connect
    // without a position for it): the other entries cost nothing.
    assert_eq!(cost.requests, 1);
}

#[tokio::test]
async fn connects_beyond_the_per_user_rate_get_429_with_retry_after() {
    let mut config = edge_config("edge");
    // One connect per 5 s after a burst of 3: the burst surely takes less.
    config.connect_rate = herald_edge::ratelimit::ConnectRate {
        per_second: 0.2,
        burst: 3,
    };
    let stack = Stack::start(config).await;
    let http = reqwest::Client::new();
    let url = events_url(stack.edge(), &[]);
    let alice = Claims::new("alice").hs256(SECRET);
    for _ in 0..3 {
        drop(SseStream::open(&http, &url, &alice).await);
    }
    let refused = http.get(&url).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_connects");
    let rejects = "herald_edge_rejects_total{reason=\"too_many_connects\"}";
    assert_eq!(stack.edge().metric(rejects).await, 1.0);
    // Another user is not affected.
    let bob = Claims::new("bob").hs256(SECRET);
    drop(SseStream::open(&http, &url, &bob).await);
    // Alice is admitted again once her bucket refilled.
    herald_testing::eventually(Duration::from_secs(15), "alice admitted again", || async {
        let response = http.get(&url).bearer_auth(&alice).send().await.unwrap();
        (response.status() == 200).then_some(())
    })
    .await;
}
