//! The orders of herald-publish's Control API, as this edge carries them
//! out (see `herald_domain::control`): end a user's streams, revoke their
//! older tokens, change what their streams follow (each open stream joins
//! the new topics, with an `id:` holding its start on each so a resume
//! covers them, and leaves the dropped ones), list the topics followed
//! here. Each order is answered with what was done here. The
//! buckets behind revocations and follows are followed too (see
//! [`bucket`]), so an order this edge missed still takes effect:
//! [`revocations`] and [`follows`] keep their state in memory.

pub(crate) mod bucket;
pub(crate) mod follows;
pub(crate) mod revocations;

use std::sync::Arc;

use futures::StreamExt;
use herald_domain::control::{
    CONTROL_WILDCARD, DISCONNECT_SUBJECT, Disconnect, Done, EdgeTopics, FOLLOWS_BUCKET,
    FOLLOWS_SUBJECT, FollowsChanged, REVOCATIONS_BUCKET, REVOKE_SUBJECT, Revocation, Revoke,
    TOPICS_SUBJECT, TopicsQuery,
};
use herald_domain::region;
use herald_domain::subject::UserId;
use tokio_util::sync::CancellationToken;

use crate::fanout::delivery::{Delivery, Member};
use crate::fanout::queue::TrySendError;
use crate::metrics::CloseReason;
use crate::orders::revocations::unix_now;
use crate::resume::starts;
use crate::state::State;

/// Most topics one answer lists.
const MAX_TOPICS_LISTED: u32 = 1_000;

/// A change read from a bucket reaches open streams this long after it
/// was read: the order that made it normally comes at once, does the
/// same and counts what it did; this catches up with an order missed.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

/// How long an edge that starts waits to know the revoked tokens before
/// it serves anyway (then it ends revoked streams once it knows them).
pub(crate) const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Follows the revocations and follows buckets until `stop`; returns once
/// the revocations are known, or after [`LOAD_WAIT`].
pub(crate) async fn follow_buckets(state: &Arc<State>, stop: &CancellationToken) {
    let js = state.js.clone();
    tokio::spawn({
        let state = state.clone();
        let loaded = state.revocations.loaded();
        // A revocation this edge missed as an order ends the streams too.
        let apply = move |change: crate::orders::bucket::Change<'_>| {
            if let Some((user, revocation)) = state.revocations.apply(change, unix_now()) {
                let state = state.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CATCH_UP).await;
                    let farewell = farewell(&revocation.reason, false);
                    end_revoked(&state, &user, &revocation, &farewell);
                });
            }
        };
        crate::orders::bucket::follow(js, REVOCATIONS_BUCKET, apply, loaded, stop.clone())
    });
    tokio::spawn(follow_follows(state.clone(), stop.clone()));
    let mut loaded = state.revocations.loaded().subscribe();
    let known = tokio::time::timeout(LOAD_WAIT, loaded.wait_for(|l| *l)).await;
    if known.is_err() {
        tracing::warn!(
            "revoked tokens not read within {LOAD_WAIT:?} (JetStream away?); serving, and ending revoked streams once they are read"
        );
    }
}

/// Carries out orders until `stop`.
pub(crate) async fn start(
    state: Arc<State>,
    nats: async_nats::Client,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
    let orders = nats.subscribe(CONTROL_WILDCARD).await?;
    Ok(tokio::spawn(serve(state, nats, orders, stop)))
}

async fn serve(
    state: Arc<State>,
    nats: async_nats::Client,
    mut orders: async_nats::Subscriber,
    stop: CancellationToken,
) {
    loop {
        let order = tokio::select! {
            _ = stop.cancelled() => return,
            order = orders.next() => match order {
                Some(order) => order,
                None => return,
            },
        };
        // Each on its own: a Follow waits for NATS and history; an order
        // behind it must not.
        let (state, nats) = (state.clone(), nats.clone());
        tokio::spawn(async move {
            let Some(reply) = order.reply.clone() else {
                return;
            };
            let answer = match carry_out(&state, &order.subject, &order.payload).await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::warn!(subject = %order.subject, error = %e, "a control order does not parse; ignored");
                    return;
                }
            };
            if let Err(e) = nats.publish(reply, answer.into()).await {
                tracing::debug!(error = %e, "cannot answer a control order");
            }
        });
    }
}

/// Carries out one order; the answer, as JSON.
async fn carry_out(
    state: &State,
    subject: &str,
    payload: &[u8],
) -> Result<Vec<u8>, serde_json::Error> {
    let node = state.config.node_id.clone();
    match subject {
        DISCONNECT_SUBJECT => {
            let order: Disconnect = serde_json::from_slice(payload)?;
            let streams = disconnect(state, &order);
            serde_json::to_vec(&Done { node, streams })
        }
        REVOKE_SUBJECT => {
            let order: Revoke = serde_json::from_slice(payload)?;
            let streams = revoke(state, order);
            serde_json::to_vec(&Done { node, streams })
        }
        FOLLOWS_SUBJECT => {
            let order: FollowsChanged = serde_json::from_slice(payload)?;
            let mut streams = 0;
            for user in order.users {
                state.follows.set(&user.user, &user.follows);
                if let Ok(id) = UserId::parse(&user.user) {
                    streams += apply_to_streams(state, &id).await;
                }
            }
            serde_json::to_vec(&Done { node, streams })
        }
        TOPICS_SUBJECT => {
            let query: TopicsQuery = serde_json::from_slice(payload)?;
            let limit = query.limit.min(MAX_TOPICS_LISTED) as usize;
            let topics = state.fanout.topics(&query.prefix, limit);
            serde_json::to_vec(&EdgeTopics { node, topics })
        }
        _ => serde_json::to_vec(&Done { node, streams: 0 }),
    }
}

/// Ends the users' streams here, each with the `herald.disconnect` event.
fn disconnect(state: &State, order: &Disconnect) -> u64 {
    let farewell = farewell(&order.reason, order.reconnect);
    let mut ended = 0;
    for user in users(&order.users) {
        for (_, member) in state.fanout.members_of(&state.own_origin(&user.subject())) {
            let farewell = Some(farewell.clone());
            ended += u64::from(
                member
                    .signal
                    .close_with(CloseReason::Disconnected, farewell),
            );
        }
    }
    ended
}

/// Keeps the revocation, and ends the users' streams whose tokens it refuses.
fn revoke(state: &State, order: Revoke) -> u64 {
    let Revoke {
        users: ids,
        revocation,
    } = order;
    let farewell = farewell(&revocation.reason, false);
    let mut ended = 0;
    for user in users(&ids) {
        state.revocations.add(user.as_str(), revocation.clone());
        ended += end_revoked(state, &user, &revocation, &farewell);
    }
    ended
}

/// Ends `user`'s streams here whose tokens `revocation` refuses.
pub(crate) fn end_revoked(
    state: &State,
    user: &UserId,
    revocation: &Revocation,
    farewell: &[u8],
) -> u64 {
    let mut ended = 0;
    for (_, member) in state.fanout.members_of(&state.own_origin(&user.subject())) {
        let iat = Some(member.signal.issued_at()).filter(|iat| *iat != 0);
        if revocation.refuses(iat) {
            let farewell = Some(farewell.into());
            ended += u64::from(member.signal.close_with(CloseReason::Revoked, farewell));
        }
    }
    ended
}

/// The `herald.disconnect` event a stream ends with.
pub(crate) fn farewell(reason: &str, reconnect: bool) -> Box<[u8]> {
    let data = serde_json::json!({ "reason": reason, "reconnect": reconnect });
    format!("event: herald.disconnect\ndata: {data}\n\n")
        .into_bytes()
        .into_boxed_slice()
}

fn users(ids: &[String]) -> impl Iterator<Item = UserId> + '_ {
    ids.iter().filter_map(|id| UserId::parse(id).ok())
}

/// Follows the follows bucket: a change reaches the user's open streams.
async fn follow_follows(state: Arc<State>, stop: CancellationToken) {
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let apply = {
        let state = state.clone();
        move |change: crate::orders::bucket::Change<'_>| {
            if let Some(user) = state.follows.apply(change) {
                let _ = changed.send((tokio::time::Instant::now() + CATCH_UP, user));
            }
        }
    };
    let loaded = state.follows.loaded();
    let js = state.js.clone();
    let following = crate::orders::bucket::follow(js, FOLLOWS_BUCKET, apply, loaded, stop.clone());
    let applying = async {
        while let Some((at, user)) = changes.recv().await {
            tokio::time::sleep_until(at).await;
            apply_to_streams(&state, &user).await;
        }
    };
    tokio::join!(following, applying);
}

/// Makes `user`'s open streams here follow exactly their server-side
/// follows (besides what each asked for): returns how many changed.
pub(crate) async fn apply_to_streams(state: &State, user: &UserId) -> u64 {
    let regions = &state.config.regions;
    let wanted: Vec<String> = (state.follows.of(user).iter())
        .flat_map(|topic| region::origins(&topic.subject(), regions).collect::<Vec<_>>())
        .collect();
    let owner = state.own_origin(&user.subject());
    let mut changed = 0;
    for (id, member) in state.fanout.members_of(&owner) {
        let extras = state.fanout.extras(id);
        let mut touched = false;
        for (sid, subject) in &extras {
            if !wanted.contains(subject) {
                state.fanout.leave_extra(id, *sid);
                touched = true;
            }
        }
        let joining = wanted
            .iter()
            .filter(|s| !extras.iter().any(|(_, e)| e == *s));
        let mut joined = Vec::new();
        for subject in joining {
            let Some(sid) = state.fanout.join_extra(&owner, subject, id, member.clone()) else {
                continue;
            };
            match state.fanout.confirm(sid).await {
                Ok(()) => joined.push(subject.as_str()),
                Err(e) => {
                    tracing::warn!(error = %e, "a followed topic cannot be joined");
                    state.fanout.leave_extra(id, sid);
                }
            }
        }
        if !joined.is_empty() {
            mark_starts(state, &member, &joined).await;
            touched = true;
        }
        changed += u64::from(touched);
    }
    changed
}

/// Gives the stream an `id:` holding its start on each newly followed
/// subject: a client that reconnects before any of their events resumes
/// them from there (an `id:` with no data changes the client's last id
/// and dispatches nothing).
async fn mark_starts(state: &State, member: &Member, subjects: &[&str]) -> Vec<u32> {
    let history = state.history();
    let starts = starts::positions(&history, &state.fanout, subjects).await;
    for (key, start) in &starts {
        let mark = Delivery::mark(*key, *start);
        if let Err(TrySendError::Full) = member.queue.try_send(mark) {
            member.signal.close(CloseReason::SlowConsumer);
        }
    }
    starts.into_iter().map(|(key, _)| key).collect()
}

/// How soon a stream asks again for the starts it could not read; the
/// pause doubles up to [`LATE_START_MAX_PAUSE`], and it stops asking
/// after [`LATE_START_ATTEMPTS`] (a region with no history yet, or gone
/// for good: its subjects then start live).
const LATE_START_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
const LATE_START_MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);
const LATE_START_ATTEMPTS: u32 = 60;

/// Reads, while stream `id` follows `owner` (its user's subject here),
/// the starts of `subjects` that its connect could not read (another
/// region's history was away), and marks each as it comes: without it, a
/// client that left before its first event of such a subject would
/// resume it from the subject's newest event then, skipping what was
/// stored meanwhile. A subject whose live events reached the stream first
/// keeps their position (the session drops the mark).
pub(crate) async fn late_starts(
    state: Arc<State>,
    member: Member,
    owner: String,
    id: crate::fanout::delivery::ConnId,
    mut subjects: Vec<String>,
) {
    let follows = |state: &State| state.fanout.find(&owner).is_some_and(|s| s.has_member(id));
    let mut pause = LATE_START_EVERY;
    for _ in 0..LATE_START_ATTEMPTS {
        if subjects.is_empty() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LATE_START_MAX_PAUSE);
        if !follows(&state) {
            return;
        }
        let names: Vec<&str> = subjects.iter().map(String::as_str).collect();
        let marked = mark_starts(&state, &member, &names).await;
        subjects.retain(|s| !marked.contains(&herald_domain::cursor::key(s)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_farewell_is_one_event_whatever_the_reason_holds() {
        let farewell = farewell("line\nbreak \"quoted\"", false);
        let text = std::str::from_utf8(&farewell).unwrap();
        assert_eq!(
            text,
            "event: herald.disconnect\ndata: {\"reason\":\"line\\nbreak \\\"quoted\\\"\",\"reconnect\":false}\n\n"
        );
    }
}
