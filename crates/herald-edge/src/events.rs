//! `GET /v1/events`: authenticate, check the request against the token and
//! the limits, join the subjects, and answer with the SSE stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use herald_domain::access;
use herald_domain::claims::Claims;
use herald_domain::cursor::{self, Cursor};
use herald_domain::region;
use herald_domain::request::{self, Target};
use herald_domain::subject::{Topic, UserId};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::cors::{self, Verdict};
use crate::fanout::delivery::Member;
use crate::fanout::signal::Signal;
use crate::http1::beats::Heartbeats;
use crate::metrics::{CloseReason, ResumeSource};
use crate::refusal::Refusal;
use crate::resume::budget::Budget;
use crate::resume::replay::{self, Replay, Wanted};
use crate::resume::sharing::{self, Lookup};
use crate::resume::starts;
use crate::session::{Guard, Session};
use crate::sse;
use crate::state::State;

/// A stream outlives no token by more than this, even one with a far `exp`.
const MAX_STREAM_SECS: u64 = 366 * 24 * 3600;

/// Routes a request; `transport` closes its HTTP/1.1 connection, and
/// `heartbeats` says who writes a stream's heartbeats. Every answer
/// carries the CORS headers its `Origin` earns.
pub(crate) async fn route<B>(
    req: Request<B>,
    state: Arc<State>,
    transport: Option<CancellationToken>,
    heartbeats: Heartbeats,
) -> Response<Body> {
    let origins = &state.config.origins;
    let verdict = origins.verdict(&req);
    let result = match (req.method(), req.uri().path()) {
        // Refused before its token is read, and without CORS headers, so
        // the page learns nothing.
        (_, "/v1/events") if verdict == Verdict::Refused => Err(Refusal::OriginNotAllowed),
        (&Method::GET, "/v1/events") => open(&req, &state, transport, heartbeats, &verdict).await,
        (&Method::OPTIONS, "/v1/events") => Ok(preflight(&verdict)),
        (&Method::GET, "/" | "/demo") => Ok(demo_page()),
        (&Method::GET, "/herald.js") => Ok(script()),
        (_, "/v1/events") => Err(Refusal::MethodNotAllowed),
        _ => Err(Refusal::NotFound),
    };
    let mut response = result.unwrap_or_else(|refusal| {
        state.metrics.rejected(refusal.terms().reason);
        refusal.into_response(wants_stream(&req))
    });
    origins.decorate(&verdict, response.headers_mut());
    response
}

/// `OPTIONS /v1/events`: a browser's preflight learns what a page may
/// send: `Authorization` (fetch-based clients), and `Last-Event-ID` (an
/// EventSource's reconnect; not CORS-safelisted, though Chromium sends it
/// without asking). A plain `OPTIONS` learns the methods.
fn preflight(verdict: &Verdict) -> Response<Body> {
    let mut response = Response::new(crate::body::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    match verdict {
        Verdict::Allowed(_) | Verdict::Public => cors::preflight_headers(headers),
        Verdict::Local | Verdict::Refused => {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, OPTIONS"));
        }
    }
    response
}

/// Whether a refusal may be answered as an event stream: an EventSource's
/// connect, which would give up for good on an error status, unless a
/// proxy in front asks for [`REFUSALS_AS_STATUS`].
fn wants_stream<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    req.method() == Method::GET
        && req.uri().path() == "/v1/events"
        && sse::accepted(headers)
        && headers
            .get(REFUSALS_HEADER)
            .is_none_or(|v| v != REFUSALS_AS_STATUS)
}

/// `Herald-Refusals: status`, sent by a proxy that retries a refused
/// connect on another edge and, when none can take it, answers the
/// EventSource with a `retry:` stream itself (deploy/nginx/nginx.conf): it
/// needs the 503 or 429 to know that it should. A client that sends it
/// itself only gets the statuses a non-EventSource client gets.
const REFUSALS_HEADER: &str = "herald-refusals";
const REFUSALS_AS_STATUS: &str = "status";

async fn open<B>(
    req: &Request<B>,
    state: &Arc<State>,
    transport: Option<CancellationToken>,
    heartbeats: Heartbeats,
    verdict: &Verdict,
) -> Result<Response<Body>, Refusal> {
    if state.drain.is_draining() {
        return Err(Refusal::Draining);
    }
    let query = req.uri().query();
    let auth = &state.config.auth;
    // Under `*` the browser drops any answer to a request with cookies:
    // one carried along is not read, so it cannot hold a slot either.
    let claims = match verdict {
        Verdict::Public => auth.authenticate(&cors::without_cookies(req.headers()), query),
        _ => auth.authenticate(req.headers(), query),
    };
    let claims = claims?;
    let user = UserId::parse(&claims.sub)
        .map_err(|e| Refusal::InvalidToken(format!("token `sub`: {e}")))?;
    check_revoked(state, &user, &claims)?;
    let Target { topics, cursor } =
        request::parse_target(req.headers(), query, state.config.max_topics)?;
    let regions = &state.config.regions;
    access::check(&user, &topics, &claims, regions)?;
    let followed = server_side_follows(state, &user, &topics);
    state
        .connects
        .check(user.as_str())
        .map_err(Refusal::too_many_connects)?;
    let permit = state.admission.admit(user.as_str())?;

    // From here on, a NATS reconnect may mean missed live events: the
    // session then ends and the client resumes from its cursor.
    let epoch = *state.losses.borrow();
    let signal = Signal::new(transport, claims.iat.unwrap_or(0));
    let (queue, inbox) = crate::fanout::queue::bounded(state.config.queue_capacity);
    // Each followed subject on every region's origin subject, this
    // region's first (so `subjects[0]` is the user's own here).
    let subjects: Vec<String> = std::iter::once(user.subject())
        .chain(topics.iter().map(Topic::subject))
        .chain(followed.iter().map(Topic::subject))
        .flat_map(|live| region::origins(&live, regions).collect::<Vec<_>>())
        .collect();
    let asked = subjects.len() - followed.len() * regions.len();
    let mut guard = Guard {
        id: state.next_id.fetch_add(1, Ordering::Relaxed),
        joined: Vec::with_capacity(subjects.len()),
        fanout: state.fanout.clone(),
        signal: signal.clone(),
        metrics: state.metrics.clone(),
        opened: false,
        life: None,
        _permit: permit,
    };
    for (index, subject) in subjects.iter().enumerate() {
        let member = Member {
            queue: queue.clone(),
            signal: signal.clone(),
        };
        // Server-side follows are joined as such: an Unfollow leaves them.
        let sid = match index < asked {
            true => Some(state.fanout.join(subject, guard.id, member)),
            false => state
                .fanout
                .join_extra(&subjects[0], subject, guard.id, member),
        };
        let Some(sid) = sid else { continue };
        if index < asked {
            guard.joined.push(sid);
        }
        // A subscription NATS did not make: 503, or a stream that ends at
        // once with a `retry:` for an EventSource, which comes back.
        state.fanout.confirm(sid).await?;
    }
    // A revocation that came while this stream joined missed it.
    if check_revoked(state, &user, &claims).is_err() {
        signal.close(CloseReason::Revoked);
    }
    // Members hold the senders, and the stream ends if all drop; this one
    // waits for starts the resume could not read, if any.
    let late = Member {
        queue,
        signal: signal.clone(),
    };
    // Live first, then the replay: what is published meanwhile is in the
    // live queue, and the session drops what the replay already sent.
    let Resumed {
        replay,
        cursor,
        behind,
        unstarted,
    } = resume(state, cursor, &subjects).await?;
    if !unstarted.is_empty() {
        let owner = subjects[0].clone();
        tokio::spawn(crate::orders::late_starts(
            state.clone(),
            late,
            owner,
            guard.id,
            unstarted,
        ));
    }
    // A NATS loss or a drain closes the streams the fan-out holds; this
    // one may have joined just after.
    if *state.losses.borrow() != epoch {
        signal.close(CloseReason::ServerError);
    }
    if state.drain.is_draining() {
        signal.close(CloseReason::Drain);
    }

    if let Some(lifecycle) = &state.lifecycle {
        let topics = topics
            .iter()
            .chain(&followed)
            .map(|t| t.as_str().to_owned());
        let life = lifecycle.connected(user.as_str(), guard.id, topics.collect());
        guard.life = Some(Box::new(life));
    }
    // The id a client that goes away before any event resumes from.
    let id = (!cursor.is_empty()).then(|| cursor.encode());
    let session = Session {
        queue: inbox,
        replay: replay.map(Box::new),
        cursor,
        behind,
        // Capped so that a token claiming to live forever cannot overflow the clock.
        exp: claims
            .exp
            .min(crate::orders::revocations::unix_now() + MAX_STREAM_SECS),
        retry: state.config.retry,
        guard,
    };
    let retry = state.config.retry.as_millis() as u64;
    let opening = sse::opening(retry, &state.config.node_id, id.as_deref());
    let heartbeat = match &heartbeats {
        Heartbeats::InBody { watch } => {
            // A stream served by hyper is counted in its connection's
            // watch; a plain stream's writer takes its frames out of the
            // body (see `plain`).
            watch.add(&signal);
            Some(state.config.heartbeat)
        }
        Heartbeats::ByNode => None,
    };
    let frames = session.into_frames(opening, heartbeat);
    tracing::debug!(user = user.as_str(), topics = topics.len(), "stream opened");
    Ok(sse::response(Body::Stream(frames)))
}

/// The demo page: one EventSource, its state, its events, resets.
fn demo_page() -> Response<Body> {
    let mut response = Response::new(crate::body::full(bytes::Bytes::from_static(
        DEMO_PAGE.as_bytes(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const DEMO_PAGE: &str = include_str!("demo.html");

/// The browser client (`herald.js`): EventSource that survives refusals and
/// token expiry. Cached briefly so a deploy's new script reaches tabs soon.
fn script() -> Response<Body> {
    let mut response = Response::new(crate::body::full(bytes::Bytes::from_static(
        HERALD_JS.as_bytes(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

const HERALD_JS: &str = include_str!("herald.js");

/// Starts the replay: what this node holds after the cursor, then history
/// for the rest (checked against it first), within the connect's replay
/// caps. Only the followed subjects' entries are looked at (others cost
/// nothing) and kept in the session's cursor; followed subjects the cursor
/// has no position for get their start (see `starts`).
/// What a connect's resume gives its session.
struct Resumed {
    replay: Option<Replay>,
    cursor: Cursor,
    /// See `replay::Plan::behind`.
    behind: Box<[u32]>,
    /// Subjects whose start could not be read (their history away): the
    /// stream learns it later (see `orders::late_starts`).
    unstarted: Vec<String>,
}

async fn resume(state: &State, cursor: Cursor, subjects: &[String]) -> Result<Resumed, Refusal> {
    let mut budget = Budget::new(state.config.replay);
    let mut kept = Cursor::default();
    let mut held = Vec::new();
    let mut wanted = Vec::new();
    let mut unplaced = Vec::new();
    for subject in subjects {
        let key = herald_domain::cursor::key(subject);
        let Some(after) = cursor.get(key) else {
            unplaced.push(subject.as_str());
            continue;
        };
        kept.set(key, after);
        // Holding a read for others, this stream must not wait for theirs.
        let may_wait = sharing::may_wait(wanted.iter().map(|w: &Wanted| &w.seeder));
        match state.fanout.lookup(subject, after, may_wait).await {
            Lookup::Hit(deliveries) => {
                state.metrics.resumed(ResumeSource::Memory);
                let (deliveries, reset) = replay::within_budget(key, deliveries, &mut budget);
                if reset {
                    state.metrics.resets.inc();
                }
                held.extend(deliveries);
            }
            Lookup::Miss(seeder) => {
                state.metrics.resumed(ResumeSource::History);
                wanted.push(Wanted {
                    subject: subject.clone(),
                    after,
                    seeder,
                });
            }
        }
    }
    let epoch = state.fanout.epoch();
    let history = state.history();
    let (plan, starts) = tokio::join!(
        replay::plan(&history, wanted, &state.tails),
        starts::positions(&history, &state.fanout, &unplaced)
    );
    let plan = plan?;
    for (key, start) in &starts {
        kept.set(*key, *start);
    }
    let started = |subject: &&str| starts.iter().any(|(key, _)| *key == cursor::key(subject));
    let unstarted = unplaced.into_iter().filter(|s| !started(s));
    // The replay goes up to these; an event stored after one of them and
    // missed live is then seen as a gap, and filled (see `gaps`).
    for (subject, newest) in plan.newest() {
        if let Some(followed) = state.fanout.find(subject) {
            followed.learn_newest(*newest, epoch);
        }
    }
    let resets = state.metrics.resets.clone();
    Ok(Resumed {
        behind: plan.behind().into(),
        unstarted: unstarted.map(str::to_owned).collect(),
        replay: Replay::start(held, plan, budget, resets),
        cursor: kept,
    })
}

/// 401 `token_revoked` for a token the app revoked (`Control.Revoke`).
/// An edge that could not read the revocations at start (JetStream not up
/// yet, a cold cluster) admits the stream: it ends the revoked ones as
/// soon as it reads them (see `orders`), where refusing every connect
/// would turn a JetStream outage into an outage of live events too.
fn check_revoked(state: &State, user: &UserId, claims: &Claims) -> Result<(), Refusal> {
    let revocations = &state.revocations;
    let now = crate::orders::revocations::unix_now();
    match revocations.refusing(user, claims.iat, now) {
        None => Ok(()),
        Some(revocation) => Err(Refusal::TokenRevoked(format!(
            "this token was revoked ({}); tokens of this user issued before {} are refused: get a new one",
            revocation.reason, revocation.issued_before
        ))),
    }
}

/// The topics `user` follows server-side that the request did not ask
/// for, and whose cursor keys collide with none of its subjects (such a
/// topic is left out, and said so in the log).
fn server_side_follows(state: &State, user: &UserId, asked: &[Topic]) -> Vec<Topic> {
    let mut followed: Vec<Topic> = state.follows.of(user);
    followed.retain(|t| !asked.contains(t));
    let mut kept: Vec<Topic> = asked.to_vec();
    followed.retain(|topic| {
        kept.push(topic.clone());
        let clear = access::distinct_keys(user, &kept, &state.config.regions).is_ok();
        if !clear {
            kept.pop();
            tracing::warn!(
                topic = topic.as_str(),
                "a followed topic's event ids would collide with another's; not followed"
            );
        }
        clear
    });
    followed
}
