//! The one task that owns the socket: reads and hands messages to the
//! callback, writes what the handles ask, keeps the connection alive, and
//! reconnects when it is lost.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, Sleep};

use crate::connection::{Failure, Ready, Session, Setup};
use crate::deliver::{Deliver, Sid};
use crate::options::Options;
use crate::proto::{Info, ServerOp};
use crate::registry::Registry;
use crate::round_trips::{RoundTrips, Waiter};
use crate::servers::{Servers, backoff};

/// Keep-alive PINGs left unanswered before the connection counts as dead.
const MAX_UNANSWERED: u32 = 2;
/// Commands handled in one go before the socket is looked at again.
const COMMAND_BATCH: usize = 1024;
/// A server in lame duck mode is left within this time (jittered, so
/// that its clients do not all move at once).
const LAME_DUCK_LEAVE: Duration = Duration::from_secs(5);

/// What a handle asks of the task.
pub enum Command {
    /// The subscription is in the registry: send its SUB.
    Subscribe(Sid),
    Unsubscribe(Sid),
    RoundTrip(Waiter),
}

pub struct Task {
    pub setup: Arc<Setup>,
    pub registry: Arc<Registry>,
    pub commands: UnboundedReceiver<Command>,
    pub deliver: Arc<dyn Deliver>,
    pub losses: watch::Sender<u64>,
    pub servers: Servers,
    pub options: Options,
    pub round_trips: RoundTrips,
}

/// Why [`Task::serve`] returned.
enum End {
    /// Every handle was dropped.
    Closed,
    Lost(String),
}

impl Task {
    /// Serves `session` and its successors until every handle is dropped.
    pub async fn run(mut self, mut session: Session) {
        loop {
            let server = session.server.clone();
            match self.serve(&mut session).await {
                End::Closed => return,
                End::Lost(why) => {
                    tracing::warn!(server = server.as_url_str(), error = %why, "NATS connection lost; reconnecting");
                    self.registry
                        .counters
                        .connected
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    // Core NATS does not redeliver what passed meanwhile.
                    self.losses.send_modify(|n| *n += 1);
                    self.round_trips.disconnected();
                }
            }
            drop(session);
            match self.reconnect().await {
                Some(next) => session = next,
                None => return,
            }
        }
    }

    async fn serve(&mut self, session: &mut Session) -> End {
        let every = self.options.ping_interval;
        let mut keepalive = tokio::time::interval_at(Instant::now() + every, every);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leave: Option<Pin<Box<Sleep>>> = None;
        let mut commands_first = false;
        loop {
            if self.round_trips.wants_ping() {
                self.ping(session, false);
            }
            commands_first = !commands_first;
            match self
                .next_event(session, &mut keepalive, &mut leave, commands_first)
                .await
            {
                Event::Ready(Ready::Read) => {
                    if let Err(why) = self.take_ops(session, &mut leave) {
                        return End::Lost(why.to_string());
                    }
                }
                Event::Ready(Ready::Command(None)) => return End::Closed,
                Event::Ready(Ready::Command(Some(command))) => {
                    self.command(command, session);
                    for _ in 0..COMMAND_BATCH {
                        let Ok(command) = self.commands.try_recv() else {
                            break;
                        };
                        self.command(command, session);
                    }
                }
                Event::Ready(Ready::Failed(failure)) => return End::Lost(failure.to_string()),
                Event::Tick => {
                    if self.round_trips.unanswered_keepalives() >= MAX_UNANSWERED {
                        return End::Lost(format!("no answer to {MAX_UNANSWERED} PINGs"));
                    }
                    self.ping(session, true);
                }
                Event::Leave => {
                    return End::Lost("the server is shutting down (lame duck mode)".into());
                }
            }
        }
    }

    fn next_event<'a>(
        &'a mut self,
        session: &'a mut Session,
        keepalive: &'a mut Interval,
        leave: &'a mut Option<Pin<Box<Sleep>>>,
        commands_first: bool,
    ) -> impl Future<Output = Event> + 'a {
        std::future::poll_fn(move |cx| {
            if let Some(sleep) = leave.as_mut()
                && sleep.as_mut().poll(cx).is_ready()
            {
                return std::task::Poll::Ready(Event::Leave);
            }
            if keepalive.poll_tick(cx).is_ready() {
                return std::task::Poll::Ready(Event::Tick);
            }
            let commands = &mut self.commands;
            session
                .poll_ready(cx, |cx| commands.poll_recv(cx), commands_first)
                .map(Event::Ready)
        })
    }

    fn ping(&mut self, session: &mut Session, keepalive: bool) {
        session.queue().extend_from_slice(b"PING\r\n");
        if keepalive {
            self.round_trips.keepalive_sent();
        } else {
            self.round_trips.ping_sent();
        }
        Registry::count(&self.registry.counters.pings);
    }

    fn command(&mut self, command: Command, session: &mut Session) {
        match command {
            Command::Subscribe(sid) => self.registry.with_subject(sid, |subject| {
                let _ = write!(session.queue(), "SUB {subject} {sid}\r\n");
            }),
            Command::Unsubscribe(sid) => {
                let _ = write!(session.queue(), "UNSUB {sid}\r\n");
            }
            Command::RoundTrip(waiter) => self.round_trips.ask(waiter),
        }
    }

    /// Handles every complete operation read so far.
    fn take_ops(
        &mut self,
        session: &mut Session,
        leave: &mut Option<Pin<Box<Sleep>>>,
    ) -> Result<(), Failure> {
        let registry = self.registry.clone();
        let counters = &registry.counters;
        while let Some(op) = session.next_op()? {
            match op {
                ServerOp::Msg { sid, message } => {
                    if registry.is_live(sid) {
                        self.deliver.deliver(sid, &message);
                        Registry::count(&counters.delivered);
                    } else {
                        Registry::count(&counters.dropped);
                    }
                }
                ServerOp::Unreadable { sid, why } => {
                    tracing::warn!(sid, why, "NATS message dropped");
                    Registry::count(&counters.dropped);
                }
                ServerOp::Ping => session.queue().extend_from_slice(b"PONG\r\n"),
                ServerOp::Pong => self.round_trips.pong(),
                ServerOp::Ok => {}
                // Permission violations leave the connection open; other
                // errors are followed by the server closing it.
                ServerOp::Err(text) => {
                    tracing::error!(server = session.server.as_url_str(), error = %text, "NATS error")
                }
                ServerOp::Info(info) => self.info(&info, leave),
            }
        }
        Ok(())
    }

    fn info(&mut self, info: &Info, leave: &mut Option<Pin<Box<Sleep>>>) {
        self.servers.learn(&info.connect_urls);
        if info.ldm && leave.is_none() {
            tracing::info!(server = %info.server_name, "NATS server entering lame duck mode; moving");
            let after = LAME_DUCK_LEAVE.mul_f64(fastrand::f64());
            *leave = Some(Box::pin(tokio::time::sleep(after)));
        }
    }

    /// Connects again, to the servers in turn, until it works or every
    /// handle is gone; then subscribes again to every live subject.
    async fn reconnect(&mut self) -> Option<Session> {
        // Subscribes asked while reconnecting may miss the re-sent list.
        let mut deferred = Vec::new();
        for attempt in 0u32.. {
            let server = self.servers.pick();
            let attempt_once = open_and_restore(
                server.clone(),
                self.setup.clone(),
                self.registry.clone(),
                backoff(attempt),
                self.options.connect_timeout,
            );
            tokio::pin!(attempt_once);
            let result = loop {
                tokio::select! {
                    result = &mut attempt_once => break result,
                    command = self.commands.recv() => match command? {
                        Command::RoundTrip(waiter) => self.round_trips.ask(waiter),
                        other => deferred.push(other),
                    },
                }
            };
            match result {
                Ok((mut session, info)) => {
                    self.servers.learn(&info.connect_urls);
                    for command in deferred {
                        self.command(command, &mut session);
                    }
                    self.connected(&session);
                    return Some(session);
                }
                // Loud now and then, not on every try of a long outage.
                Err(why) if attempt % 10 == 0 => {
                    tracing::warn!(server = server.as_url_str(), error = %why, attempt, "NATS reconnect failed")
                }
                Err(why) => {
                    tracing::debug!(server = server.as_url_str(), error = %why, attempt, "NATS reconnect failed")
                }
            }
        }
        None
    }

    fn connected(&mut self, session: &Session) {
        let counters = &self.registry.counters;
        counters
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Registry::count(&counters.connects);
        tracing::info!(
            server = session.server.as_url_str(),
            subscriptions = self.registry.len(),
            "NATS reconnected"
        );
        // Streams opened while disconnected may have missed events too.
        self.losses.send_modify(|n| *n += 1);
    }
}

enum Event {
    Ready(Ready<Option<Command>>),
    Tick,
    Leave,
}

/// After `pause`, connects to `server` and sends a SUB for every live
/// subscription, all within `timeout`.
async fn open_and_restore(
    server: async_nats::ServerAddr,
    setup: Arc<Setup>,
    registry: Arc<Registry>,
    pause: Duration,
    timeout: Duration,
) -> Result<(Session, Info), Failure> {
    tokio::time::sleep(pause).await;
    let attempt = async {
        let (mut session, info) = Session::open(&server, &setup).await?;
        registry.for_each(|sid, subject| {
            let _ = write!(session.queue(), "SUB {subject} {sid}\r\n");
        });
        session.flush().await?;
        Ok::<_, Failure>((session, info))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Failure::TimedOut(timeout)),
    }
}
