//! Reconnect storm: every client drops at once, events are published while
//! they are away, and all reconnect at the same moment with their last
//! event id. Clients follow one topic (an audience whose edge died), or
//! with `--per-user` only their own user stream (each resume is then its
//! own history read). Measures the time until every stream is open again and until
//! every client has every missed event, and counts errors, lost and
//! duplicated events. After the drop, a client whose stream ends (or fails
//! to open) before it has caught up comes back as an EventSource would:
//! after the stream's `retry:` delay (else 1 s), with its last id; such
//! returns are counted (`retried`).
//!
//! A peer that keeps no history (Pushpin: replay is left to its origin)
//! gets the same storm, reported as it is: `replay: false`, every missed
//! event lost, and the time until every stream is answered again (its
//! response head), which all peers report too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::Target;
use crate::peer::{Kind, Publisher};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Clients, each one stream following the storm topic.
    #[arg(long, default_value_t = 15_000)]
    clients: usize,
    /// Loopback source addresses to spread streams over (127.0.0.1..=N).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Events published before the drop (so every client has an id).
    #[arg(long, default_value_t = 5)]
    before: u64,
    /// Events published while every client is away.
    #[arg(long, default_value_t = 20)]
    missed: u64,
    /// Each client follows its own user stream instead of a shared topic;
    /// every event is then published once per client.
    #[arg(long)]
    per_user: bool,
}

/// Concurrent publish calls with `--per-user`.
const PUBLISHERS: usize = 16;

#[derive(Debug, serde::Serialize)]
struct Figures {
    peer: Kind,
    scenario: &'static str,
    per_user: bool,
    clients: usize,
    reconnected: usize,
    errors: usize,
    retried: usize,
    /// Whether the peer sends a returning client what it missed.
    replay: bool,
    /// Until every returning stream had its response head (or failed).
    all_answered_secs: f64,
    all_open_secs: f64,
    all_caught_up_secs: f64,
    missed_per_client: u64,
    lost: u64,
    duplicated: u64,
}

/// What one client has seen: its last id, and which event numbers.
#[derive(Default)]
struct Client {
    last_id: Option<String>,
    seen: Vec<u32>,
    /// The current stream had its response head.
    answered: bool,
}

type Clients = Arc<Vec<Mutex<Client>>>;

pub(crate) async fn run(target: &Target, args: &Args) -> anyhow::Result<()> {
    let clients: Clients = Arc::new((0..args.clients).map(|_| Mutex::default()).collect());
    // Connect everyone, let them receive `before` events, then drop them all.
    let retried = Arc::new(AtomicUsize::new(0));
    let readers = connect(target, args, &clients, Some(target.peer.connecting()), None).await;
    let failed = readers.iter().filter(|r| r.is_finished()).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} streams failed to open before the storm"
    );
    let publisher = target.publisher().await?;
    for i in 0..args.before {
        publish(&publisher, args, i).await?;
    }
    wait_until(target.timeout, || {
        every(&clients, |c| c.seen.len() as u64 >= args.before)
    })
    .await;
    let with_id = clients
        .iter()
        .filter(|c| c.lock().unwrap().last_id.is_some())
        .count();
    eprintln!(
        "before the drop: {with_id} of {} clients have an event id",
        args.clients
    );
    for reader in &readers {
        reader.abort();
    }
    for client in clients.iter() {
        let mut client = client.lock().unwrap();
        client.seen.clear();
        client.answered = false;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in args.before..args.before + args.missed {
        publish(&publisher, args, i).await?;
    }
    publisher.flush().await?;

    // Everyone back at once, each with its last id.
    eprintln!("reconnecting {} clients", args.clients);
    let started = Instant::now();
    let readers = connect(target, args, &clients, None, Some(retried.clone())).await;
    let replay = target.peer.replays();
    // Without replay nothing more comes: answered is as far as it goes.
    let caught_up = |c: &Client| c.seen.len() as u64 >= args.missed || (!replay && c.answered);
    let (mut all_open, mut all_answered, mut errors) = (None, None, 0);
    let deadline = started + target.timeout;
    while Instant::now() < deadline {
        let (mut open, mut answered, mut done) = (0, 0, 0);
        errors = 0;
        for (client, reader) in clients.iter().zip(&readers) {
            let client = client.lock().unwrap();
            let failed = reader.is_finished() && !caught_up(&client);
            answered += usize::from(client.answered || failed);
            open += usize::from(!client.seen.is_empty() || failed || (!replay && client.answered));
            done += usize::from(caught_up(&client) || failed);
            errors += usize::from(failed);
        }
        if all_answered.is_none() && answered == args.clients {
            all_answered = Some(started.elapsed());
        }
        if all_open.is_none() && open == args.clients {
            all_open = Some(started.elapsed());
        }
        if done == args.clients {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_caught_up = started.elapsed();
    let (mut lost, mut duplicated) = (0u64, 0u64);
    for client in clients.iter() {
        let client = client.lock().unwrap();
        let mut seen = client.seen.clone();
        seen.sort_unstable();
        let before = seen.len();
        seen.dedup();
        duplicated += (before - seen.len()) as u64;
        lost += args.missed.saturating_sub(seen.len() as u64);
    }
    for reader in readers {
        reader.abort();
    }
    let figures = Figures {
        peer: target.peer,
        scenario: "storm",
        per_user: args.per_user,
        clients: args.clients,
        reconnected: args.clients - errors,
        errors,
        retried: retried.load(Ordering::Relaxed),
        replay,
        all_answered_secs: all_answered.unwrap_or(all_caught_up).as_secs_f64(),
        all_open_secs: all_open.unwrap_or(all_caught_up).as_secs_f64(),
        all_caught_up_secs: all_caught_up.as_secs_f64(),
        missed_per_client: args.missed,
        lost,
        duplicated,
    };
    eprintln!(
        "{} of {} back; all answered after {:.2}s, all streaming after {:.2}s, all caught up after {:.2}s{}; {} errors, {} came back again, {} lost, {} duplicated",
        figures.reconnected,
        args.clients,
        figures.all_answered_secs,
        figures.all_open_secs,
        figures.all_caught_up_secs,
        if replay {
            ""
        } else {
            " (no replay: nothing to catch up)"
        },
        errors,
        figures.retried,
        lost,
        duplicated
    );
    println!("RESULT {}", serde_json::to_string(&figures)?);
    Ok(())
}

/// Event number `n`: to the topic, or to every client's user stream.
async fn publish(publisher: &Publisher, args: &Args, n: u64) -> anyhow::Result<()> {
    if !args.per_user {
        return publisher
            .clone()
            .publish_topic("storm", n.to_string())
            .await;
    }
    let tasks = (0..PUBLISHERS).map(|task| {
        let mut publisher = publisher.clone();
        let clients = args.clients;
        async move {
            for i in (task..clients).step_by(PUBLISHERS) {
                publisher
                    .publish_user(&user(i), n.to_string(), false)
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(tasks).await?;
    Ok(())
}

fn user(client: usize) -> String {
    format!("storm-{client}")
}

fn every(clients: &Clients, check: impl Fn(&Client) -> bool) -> bool {
    clients.iter().all(|c| check(&c.lock().unwrap()))
}

async fn wait_until(timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens one stream per client, resuming from the client's last id;
/// each records ids and event numbers. With `at_once`, at most that many
/// connect together and this returns once all have connected; without,
/// all connect at the same moment and this returns at once. With
/// `retried`, a client not caught up whose stream ends comes back (and is
/// counted there).
async fn connect(
    target: &Target,
    args: &Args,
    clients: &Clients,
    at_once: Option<usize>,
    retried: Option<Arc<AtomicUsize>>,
) -> crate::stream::Readers {
    let limit = at_once.unwrap_or(args.clients).max(1);
    let open = Arc::new(Semaphore::new(limit));
    let target = Arc::new(target.clone());
    let mut readers = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let source = crate::stream::source(i, args.sources);
        let (target, clients, retried) = (target.clone(), clients.clone(), retried.clone());
        let (per_user, missed) = (args.per_user, args.missed);
        // Taken here, not in the task: waiting for all permits below must
        // mean every stream has connected, not that few tasks have started.
        let mut permit = Some(open.clone().acquire_owned().await);
        readers.push(tokio::spawn(async move {
            loop {
                let last = clients[i].lock().unwrap().last_id.clone();
                let topic = (!per_user).then_some("storm");
                let request = target.resume_request(&user(i), topic, last.as_deref())?;
                let stream = crate::stream::open(target.edge, source, &request).await;
                drop(permit.take());
                if stream.is_ok() {
                    clients[i].lock().unwrap().answered = true;
                }
                let mut retry_ms = 1000;
                match (stream, &retried) {
                    (Ok(mut stream), _) => {
                        crate::stream::for_each_line(&mut stream, |line| {
                            let mut client = clients[i].lock().unwrap();
                            if let Some(id) = line.strip_prefix(b"id: ") {
                                client.last_id = Some(String::from_utf8_lossy(id).into_owned());
                            } else if let Some(data) = line.strip_prefix(b"data: ")
                                && let Some(n) =
                                    std::str::from_utf8(data).ok().and_then(|d| d.parse().ok())
                            {
                                client.seen.push(n);
                            } else if let Some(ms) = line.strip_prefix(b"retry: ")
                                && let Some(ms) =
                                    std::str::from_utf8(ms).ok().and_then(|d| d.parse().ok())
                            {
                                retry_ms = ms;
                            }
                        })
                        .await;
                    }
                    (Err(e), None) => return Err(e),
                    (Err(e), Some(_)) => note_refused(i, &e),
                }
                let Some(retried) = &retried else {
                    return anyhow::Ok(());
                };
                if clients[i].lock().unwrap().seen.len() as u64 >= missed {
                    return anyhow::Ok(());
                }
                retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(retry_ms)).await;
            }
        }));
    }
    if at_once.is_some() {
        let _all = open.acquire_many(limit as u32).await;
    }
    readers
}

/// The first few refused opens, for the log.
fn note_refused(client: usize, e: &anyhow::Error) {
    static NOTED: AtomicUsize = AtomicUsize::new(0);
    if NOTED.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("client {client}: {e:#}; coming back");
    }
}
