//! The one task that owns the connection: reads and hands messages to the
//! callback, writes what the handles ask, keeps the connection alive, moves
//! to another server when its own announces lame duck mode (the new
//! connection subscribed and confirmed before the old one is left), and
//! reconnects when the connection is lost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Interval, Sleep};

use crate::connection::{Failure, Session, Setup};
use crate::deliver::{Deliver, Refusal, Source};
use crate::options::Options;
use crate::proto::{Info, ServerOp};
use crate::registry::Registry;
use crate::round_trips::{RoundTrips, Waiter};
use crate::server_error;
use crate::servers::{Servers, backoff, pause};

/// Keep-alive PINGs left unanswered before the connection counts as dead.
const MAX_UNANSWERED: u32 = 2;
/// Round-trip requests taken in one go before the socket is looked at again.
const WAITER_BATCH: usize = 1024;
/// After a move, the server left is read until it answers a PING (so
/// what it sent before has all arrived), or for this long.
const LEAVE_WAIT: Duration = Duration::from_secs(2);
/// A connection moved to must confirm its SUBs within this, or the move
/// is tried again elsewhere.
const RESTORE_WAIT: Duration = Duration::from_secs(30);

pub(crate) struct Task {
    pub setup: Arc<Setup>,
    pub registry: Arc<Registry>,
    /// Callers of `round_trip`.
    pub waiters: mpsc::UnboundedReceiver<Waiter>,
    /// Subscription changes wait in the registry; this says there are some.
    pub wake: mpsc::Receiver<()>,
    pub deliver: Arc<dyn Deliver>,
    pub losses: watch::Sender<u64>,
    pub servers: Servers,
    pub options: Options,
}

/// The connection that serves, and the ones open beside it for a moment.
struct Links {
    primary: Session,
    /// Answered once the SUBs sent again after a reconnect are confirmed.
    restored: Option<oneshot::Receiver<()>>,
    moving: Moving,
    /// The connection left by a move, read until it is drained.
    leaving: Option<Leaving>,
}

type Opening = Pin<Box<dyn Future<Output = Result<(Session, Info), Failure>> + Send>>;

/// A move away from a server in lame duck mode.
enum Moving {
    Idle,
    /// Its server announced lame duck mode: connect elsewhere at `at`.
    Due {
        at: Pin<Box<Sleep>>,
        attempt: u32,
    },
    Connecting {
        opening: Opening,
        attempt: u32,
    },
    /// Every subscription was sent on the new connection; the PONG after
    /// them confirms them all, and the move is made.
    Confirming {
        session: Box<Session>,
        confirmed: oneshot::Receiver<()>,
        deadline: Pin<Box<Sleep>>,
        attempt: u32,
    },
}

struct Leaving {
    session: Session,
    drained: oneshot::Receiver<()>,
    deadline: Pin<Box<Sleep>>,
}

/// Which connection operations came from, and what its messages are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The serving connection: its messages go on as `Source`.
    Primary(Source),
    /// Being confirmed: the primary still hands on everything, so its
    /// messages are dropped.
    Confirming,
    Leaving,
}

/// Why [`Task::serve`] returned.
enum End {
    /// Every handle was dropped.
    Closed,
    Lost(String),
}

enum Event {
    /// Every handle was dropped.
    Closed,
    Waiter(Waiter),
    Wake,
    Tick,
    Primary(Result<(), Failure>),
    MoveDue,
    Opened(Box<Result<(Session, Info), Failure>>),
    Successor(Result<(), Failure>),
    SuccessorTimedOut,
    Leaving(Result<(), Failure>),
    Left,
}

impl Task {
    /// Serves `session` and its successors until every handle is dropped.
    pub(crate) async fn run(mut self, session: Session) {
        let mut links = Links::new(session, None);
        loop {
            match self.serve(&mut links).await {
                End::Closed => return,
                End::Lost(why) => {
                    let server = links.primary.server.as_url_str().to_owned();
                    tracing::warn!(%server, error = %why, "NATS connection lost; reconnecting");
                    self.registry.counters.connected.store(false, Relaxed);
                    self.registry.unlink();
                    // Core NATS does not redeliver what passed meanwhile.
                    self.losses.send_modify(|n| *n += 1);
                }
            }
            let mut waiting = RoundTrips::default();
            for waiter in links.primary.round_trips.take_waiters() {
                waiting.ask(waiter);
            }
            match self.reconnect(waiting).await {
                Some(next) => links = next,
                None => return,
            }
        }
    }

    async fn serve(&mut self, links: &mut Links) -> End {
        let mut keepalive = self.keepalive();
        let mut channels_first = false;
        loop {
            channels_first = !channels_first;
            let event = self.next_event(links, &mut keepalive, channels_first).await;
            match event {
                Event::Closed => return End::Closed,
                Event::Waiter(waiter) => {
                    let mut waiters = vec![waiter];
                    while waiters.len() < WAITER_BATCH
                        && let Ok(waiter) = self.waiters.try_recv()
                    {
                        waiters.push(waiter);
                    }
                    // Their callers' subscription changes are in the
                    // registry by now: they go out before the PING.
                    self.flush(links);
                    for waiter in waiters {
                        links.primary.round_trips.ask(waiter);
                    }
                }
                Event::Wake => self.flush(links),
                Event::Tick => {
                    if links.primary.round_trips.unanswered_keepalives() >= MAX_UNANSWERED {
                        return End::Lost(format!("no answer to {MAX_UNANSWERED} PINGs"));
                    }
                    links.primary.ping(true);
                    Registry::count(&self.registry.counters.pings);
                }
                Event::Primary(Err(failure)) => return End::Lost(failure.to_string()),
                Event::Primary(Ok(())) => {
                    let source = match links.leaving {
                        Some(_) => Source::Successor,
                        None => Source::Only,
                    };
                    let ldm = match self.take_ops(&mut links.primary, Role::Primary(source)) {
                        Ok(ldm) => ldm,
                        Err(failure) => return End::Lost(failure.to_string()),
                    };
                    if ldm && matches!(links.moving, Moving::Idle) {
                        links.moving = self.move_due(0);
                    }
                    self.check_restored(links);
                }
                Event::MoveDue => {
                    let Moving::Due { attempt, .. } = links.moving else {
                        unreachable!("only a due move is due")
                    };
                    links.moving = self.open_elsewhere(&links.primary, attempt);
                }
                Event::Opened(opened) => match *opened {
                    Ok((session, info)) => {
                        self.servers.learn(&info.connect_urls);
                        let Moving::Connecting { attempt, .. } = links.moving else {
                            unreachable!("only a move under way opens")
                        };
                        links.moving = self.subscribe_moving(&mut links.primary, session, attempt);
                    }
                    Err(failure) => self.move_failed(links, &failure.to_string()),
                },
                Event::Successor(Err(failure)) => self.move_failed(links, &failure.to_string()),
                Event::SuccessorTimedOut => {
                    self.move_failed(links, "its SUBs were not confirmed in time")
                }
                Event::Successor(Ok(())) => {
                    let Moving::Confirming { session, .. } = &mut links.moving else {
                        unreachable!("only a confirming successor reads")
                    };
                    match self.take_ops(session, Role::Confirming) {
                        Ok(_) => self.check_moved(links, &mut keepalive),
                        Err(failure) => self.move_failed(links, &failure.to_string()),
                    }
                }
                Event::Leaving(result) => {
                    let leaving = links.leaving.as_mut().expect("a leaving connection read");
                    let drained = match result {
                        Ok(()) => self.take_ops(&mut leaving.session, Role::Leaving).is_err(),
                        Err(_) => true,
                    };
                    if drained || leaving.drained.try_recv().is_ok() {
                        links.leaving = None;
                    }
                }
                Event::Left => links.leaving = None,
            }
            if links.primary.round_trips.wants_ping() {
                links.primary.ping(false);
                Registry::count(&self.registry.counters.pings);
            }
        }
    }

    fn keepalive(&self) -> Interval {
        let every = self.options.ping_interval;
        let mut keepalive = tokio::time::interval_at(Instant::now() + every, every);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive
    }

    fn next_event<'a>(
        &'a mut self,
        links: &'a mut Links,
        keepalive: &'a mut Interval,
        channels_first: bool,
    ) -> impl Future<Output = Event> + 'a {
        std::future::poll_fn(move |cx| {
            if let Poll::Ready(event) = links.poll_side(cx) {
                return Poll::Ready(event);
            }
            if keepalive.poll_tick(cx).is_ready() {
                return Poll::Ready(Event::Tick);
            }
            if channels_first && let Poll::Ready(event) = self.poll_channels(cx) {
                return Poll::Ready(event);
            }
            if let Poll::Ready(result) = links.primary.poll_io(cx) {
                return Poll::Ready(Event::Primary(result));
            }
            self.poll_channels(cx)
        })
    }

    fn poll_channels(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        match self.waiters.poll_recv(cx) {
            Poll::Ready(Some(waiter)) => return Poll::Ready(Event::Waiter(waiter)),
            Poll::Ready(None) => return Poll::Ready(Event::Closed),
            Poll::Pending => {}
        }
        match self.wake.poll_recv(cx) {
            Poll::Ready(Some(())) => Poll::Ready(Event::Wake),
            Poll::Ready(None) => Poll::Ready(Event::Closed),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes the subscription changes waiting, to every connection that
    /// takes them.
    fn flush(&self, links: &mut Links) {
        let Links {
            primary, moving, ..
        } = links;
        let mut successor = match moving {
            Moving::Confirming { session, .. } => Some(&mut **session),
            _ => None,
        };
        self.registry.flush(|sid, subject| {
            for session in std::iter::once(&mut *primary).chain(successor.as_deref_mut()) {
                match subject {
                    Some(subject) => session.subscribe(sid, subject),
                    None => session.unsubscribe(sid),
                }
            }
        });
    }

    /// Handles every complete operation read so far on `session`; returns
    /// whether its server announced lame duck mode.
    fn take_ops(&mut self, session: &mut Session, role: Role) -> Result<bool, Failure> {
        let registry = self.registry.clone();
        let counters = &registry.counters;
        let mut ldm = false;
        while let Some(op) = session.next_op()? {
            match op {
                ServerOp::Msg { sid, message } => match role {
                    Role::Primary(source) if registry.is_live(sid) => {
                        self.deliver.deliver(sid, &message, source);
                        Registry::count(&counters.delivered);
                    }
                    Role::Leaving if registry.is_live(sid) => {
                        self.deliver.deliver(sid, &message, Source::Predecessor);
                        Registry::count(&counters.delivered);
                    }
                    Role::Confirming => {}
                    _ => Registry::count(&counters.dropped),
                },
                ServerOp::Oversized { sid, size } => {
                    tracing::warn!(
                        sid,
                        size,
                        limit = self.options.max_message,
                        "NATS message over the size limit skipped"
                    );
                    Registry::count(&counters.oversized);
                }
                ServerOp::Unreadable { sid, why } => {
                    tracing::warn!(sid, why, "NATS message dropped");
                    Registry::count(&counters.dropped);
                }
                ServerOp::Ping => session.pong(),
                ServerOp::Pong => session.round_trips.pong(),
                ServerOp::Ok => session.acks.ok(),
                ServerOp::Err(text) => self.server_error(session, role, &text),
                ServerOp::Info(info) => {
                    if role != Role::Leaving {
                        self.servers.learn(&info.connect_urls);
                    }
                    if info.ldm && matches!(role, Role::Primary(_)) {
                        tracing::info!(server = %info.server_name, "NATS server entering lame duck mode; moving");
                        ldm = true;
                    }
                }
            }
        }
        Ok(ldm)
    }

    /// A `-ERR`: a refused subscription ends it; other errors are followed
    /// by the server closing the connection.
    fn server_error(&self, session: &mut Session, role: Role, text: &str) {
        let server = session.server.as_url_str().to_owned();
        let Some(refused) = server_error::refused(text) else {
            tracing::error!(%server, error = %text, "NATS error");
            return;
        };
        let sid = match refused.sid {
            // Dropped by the server on its own: not an answer in line.
            Some(sid) => sid,
            None => {
                let oldest = session
                    .acks
                    .oldest()
                    .and_then(|sid| self.registry.subject(sid));
                let answers_oldest = match (&refused.subject, oldest) {
                    (Some(named), Some(oldest)) => *named == *oldest,
                    _ => true,
                };
                if !answers_oldest {
                    tracing::error!(%server, error = %text, "NATS refused a subscription it did not name");
                    return;
                }
                match session.acks.refused() {
                    Some(sid) => sid,
                    None => return,
                }
            }
        };
        if role == Role::Leaving {
            // Its subscriptions have moved; the new server decides.
            return;
        }
        let Some(subject) = self.registry.refuse(sid) else {
            return;
        };
        Registry::count(&self.registry.counters.refused);
        let refusal = Refusal {
            subject: subject.into(),
            reason: refused.reason,
            text: text.to_owned(),
        };
        tracing::warn!(%server, subject = %refusal.subject, reason = refusal.reason.as_str(), error = %text, "NATS refused a subscription");
        self.deliver.refused(sid, &refusal);
    }

    /// The SUBs sent again after a reconnect are confirmed: streams opened
    /// meanwhile may have missed events.
    fn check_restored(&self, links: &mut Links) {
        let Some(restored) = links.restored.as_mut() else {
            return;
        };
        if restored.try_recv().is_err() {
            return;
        }
        links.restored = None;
        self.confirmed_again(&links.primary);
    }

    fn confirmed_again(&self, session: &Session) {
        let counters = &self.registry.counters;
        counters.connected.store(true, Relaxed);
        Registry::count(&counters.connects);
        tracing::info!(
            server = session.server.as_url_str(),
            subscriptions = self.registry.len(),
            "NATS reconnected"
        );
        self.losses.send_modify(|n| *n += 1);
    }

    /// A move in `after` (jittered, so that a server's clients do not all
    /// move at once) or, once one failed, after a back-off.
    fn move_due(&self, attempt: u32) -> Moving {
        let after = match attempt {
            0 => self.options.lame_duck_spread.mul_f64(fastrand::f64()),
            n => backoff(n),
        };
        Moving::Due {
            at: Box::pin(tokio::time::sleep(after)),
            attempt,
        }
    }

    fn open_elsewhere(&mut self, primary: &Session, attempt: u32) -> Moving {
        let server = self.servers.pick(Some(&primary.server));
        let setup = self.setup.clone();
        let timeout = self.options.connect_timeout;
        let opening = Box::pin(async move {
            match tokio::time::timeout(timeout, Session::open(&server, &setup)).await {
                Ok(result) => result,
                Err(_) => Err(Failure::TimedOut(timeout)),
            }
        });
        Moving::Connecting { opening, attempt }
    }

    /// Sends every subscription on `successor`, and the changes waiting to
    /// `primary` first, so that both see every change from here on.
    fn subscribe_moving(
        &self,
        primary: &mut Session,
        mut successor: Session,
        attempt: u32,
    ) -> Moving {
        self.registry.link(
            |sid, subject| match subject {
                Some(subject) => primary.subscribe(sid, subject),
                None => primary.unsubscribe(sid),
            },
            |sid, subject| successor.subscribe(sid, subject),
        );
        let (marker, confirmed) = oneshot::channel();
        successor.round_trips.ask(marker);
        successor.ping(false);
        Moving::Confirming {
            session: Box::new(successor),
            confirmed,
            deadline: Box::pin(tokio::time::sleep(RESTORE_WAIT)),
            attempt,
        }
    }

    fn move_failed(&self, links: &mut Links, why: &str) {
        let attempt = match &links.moving {
            Moving::Connecting { attempt, .. } | Moving::Confirming { attempt, .. } => *attempt,
            _ => 0,
        };
        tracing::warn!(error = %why, attempt, "moving NATS subscriptions failed; trying again");
        links.moving = self.move_due(attempt + 1);
    }

    /// Once the successor confirmed every subscription, it serves; the old
    /// connection is read until drained, then closed.
    fn check_moved(&self, links: &mut Links, keepalive: &mut Interval) {
        let Moving::Confirming { confirmed, .. } = &mut links.moving else {
            return;
        };
        if confirmed.try_recv().is_err() {
            return;
        }
        let Moving::Confirming { session, .. } = std::mem::replace(&mut links.moving, Moving::Idle)
        else {
            unreachable!()
        };
        let mut old = std::mem::replace(&mut links.primary, *session);
        // Callers waiting on the old server ask the new one.
        for waiter in old.round_trips.take_waiters() {
            links.primary.round_trips.ask(waiter);
        }
        let (marker, drained) = oneshot::channel();
        old.round_trips.ask(marker);
        old.ping(false);
        tracing::info!(
            from = old.server.as_url_str(),
            to = links.primary.server.as_url_str(),
            subscriptions = self.registry.len(),
            "NATS subscriptions moved"
        );
        Registry::count(&self.registry.counters.moves);
        links.leaving = Some(Leaving {
            session: old,
            drained,
            deadline: Box::pin(tokio::time::sleep(LEAVE_WAIT)),
        });
        if links.restored.take().is_some() {
            // Confirmed on the new server, which is what was awaited.
            self.confirmed_again(&links.primary);
        }
        *keepalive = self.keepalive();
    }

    /// Connects again, to the servers in turn, until it works or every
    /// handle is gone; then sends every live subscription, to be confirmed
    /// by the PONG after them (`Links::restored`).
    async fn reconnect(&mut self, mut waiting: RoundTrips) -> Option<Links> {
        for attempt in 0u32.. {
            let wait = pause(attempt, self.servers.len());
            let server = self.servers.pick(None);
            let timeout = self.options.connect_timeout;
            let setup = self.setup.clone();
            let attempt_once = async {
                tokio::time::sleep(wait).await;
                match tokio::time::timeout(timeout, Session::open(&server, &setup)).await {
                    Ok(result) => result,
                    Err(_) => Err(Failure::TimedOut(timeout)),
                }
            };
            tokio::pin!(attempt_once);
            let result = loop {
                tokio::select! {
                    result = &mut attempt_once => break result,
                    waiter = self.waiters.recv() => waiting.ask(waiter?),
                    // Changes wait in the registry: while no connection
                    // is linked, only its live subscriptions count.
                    wake = self.wake.recv() => wake?,
                }
            };
            match result {
                Ok((mut session, info)) => {
                    self.servers.learn(&info.connect_urls);
                    self.registry
                        .link(|_, _| {}, |sid, subject| session.subscribe(sid, subject));
                    let (marker, restored) = oneshot::channel();
                    session.round_trips.ask(marker);
                    session.ping(false);
                    for waiter in waiting.take_waiters() {
                        session.round_trips.ask(waiter);
                    }
                    return Some(Links::new(session, Some(restored)));
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
}

impl Links {
    fn new(primary: Session, restored: Option<oneshot::Receiver<()>>) -> Self {
        Self {
            primary,
            restored,
            moving: Moving::Idle,
            leaving: None,
        }
    }

    /// What happened on the side of the primary: a move, a connection
    /// being left.
    fn poll_side(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Some(leaving) = &mut self.leaving {
            if leaving.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Left);
            }
            if let Poll::Ready(result) = leaving.session.poll_io(cx) {
                return Poll::Ready(Event::Leaving(result));
            }
        }
        match &mut self.moving {
            Moving::Idle => Poll::Pending,
            Moving::Due { at, .. } => at.as_mut().poll(cx).map(|()| Event::MoveDue),
            Moving::Connecting { opening, .. } => opening
                .as_mut()
                .poll(cx)
                .map(|opened| Event::Opened(Box::new(opened))),
            Moving::Confirming {
                session, deadline, ..
            } => {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::SuccessorTimedOut);
                }
                session.poll_io(cx).map(Event::Successor)
            }
        }
    }
}
