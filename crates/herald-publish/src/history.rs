//! `Control.History`: the newest events of a user or topic, or those
//! after an id, read from JetStream without opening a stream.
//!
//! A page is at most `limit` events and [`MAX_BYTES`] of data, oldest
//! first, each with an id holding only its subject's position: the id a
//! stream following the subject would have sent with it, so it resumes
//! one. When more events exist than the page holds, `truncated` is set:
//! without `since` the older ones are left out (the page ends at the
//! newest event); with `since` the newer ones are, and the last id is the
//! `since` of the next page. A `since` older than history gets what
//! history still holds after it (a stream would send `herald.reset`
//! there; the answer has no field to say so).
//!
//! In a supercluster it reads the history of the region it runs in: what
//! was published there (each region keeps its own; see
//! `herald_domain::region`), and its ids resume that region's position.

use std::ops::Range;

use herald_domain::cursor::{Cursor, key};
use herald_domain::region::{Region, of_origin};
use herald_domain::subject::{Topic, UserId};
use herald_nats::history::{shard_of, stored_subject, stream_name};
use herald_proto::v1;
use herald_proto::v1::history_request::Target;
use tonic::Status;

use crate::scan::{self, Keep, Stored};
use crate::service::PublishService;

/// Events returned when the request sets no limit, and the most it may ask.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1_000;
/// Most event data in one answer: well under gRPC's usual 4 MiB message
/// limit, whatever the events' framing adds.
pub const MAX_BYTES: usize = 1 << 20;

/// A checked request.
#[derive(Debug, PartialEq, Eq)]
struct Query {
    /// The origin subject in this region (`herald.u.<token>` or
    /// `herald.t.<token>`, with the region's token in a supercluster).
    subject: String,
    limit: usize,
    /// The last sequence the caller has; `None` for the newest events.
    after: Option<u64>,
}

impl Query {
    /// Checks `request` the way a stream checks its connect: no NATS yet.
    fn parse(request: v1::HistoryRequest, region: &Region) -> Result<Self, Status> {
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            Status::invalid_argument(format!("{what}: {e}"))
        };
        let (subject, name) = match &request.target {
            Some(Target::UserId(raw)) => {
                let user = UserId::parse(raw).map_err(|e| invalid("user_id", &e))?;
                (user.subject(), format!("user {raw:?}"))
            }
            Some(Target::Topic(raw)) => {
                let topic = Topic::parse(raw).map_err(|e| invalid("topic", &e))?;
                (topic.subject(), format!("topic {raw:?}"))
            }
            None => {
                return Err(Status::invalid_argument(
                    "name whose history to read: `user_id` or `topic`",
                ));
            }
        };
        let subject = region.origin(&subject);
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            n if n > MAX_LIMIT => {
                return Err(Status::invalid_argument(format!(
                    "`limit` {n} is over {MAX_LIMIT}"
                )));
            }
            n => n,
        };
        let after = match request.since.as_str() {
            "" => None,
            since => {
                let cursor = Cursor::decode(since).map_err(|e| invalid("since", &e))?;
                let after = cursor.get(key(&subject)).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "since: the event id holds no position for {name}; \
                         pass an id that a stream following it sent, or none for the newest events"
                    ))
                })?;
                Some(after)
            }
        };
        Ok(Self {
            subject,
            limit: limit as usize,
            after,
        })
    }
}

/// Reads what `request` asks for.
pub async fn read(
    publish: &PublishService,
    request: v1::HistoryRequest,
) -> Result<v1::HistoryResponse, Status> {
    let query = Query::parse(request, &publish.config.region)?;
    if !publish.streams.ready() {
        return Err(Status::unavailable(
            "the history streams are not ready yet (JetStream is starting); retry shortly",
        ));
    }
    publish.connected()?;
    let shard = shard_of(&query.subject, publish.config.history.history_shards);
    let stream = publish
        .js
        .get_stream_no_info(stream_name(&of_origin(&query.subject), shard))
        .await
        .map_err(unavailable)?;
    let stored = stored_subject(&query.subject, shard);
    let (start, keep) = start(&stream, query.after).await?;
    let index = scan::index(&stream, &stored, start, query.limit, keep)
        .await
        .map_err(unavailable)?;
    let sizes: Vec<usize> = index.entries.iter().map(|e| e.1).collect();
    let (range, cut) = page(&sizes, MAX_BYTES, keep);
    let events = match (index.entries.get(range.start), range.end.checked_sub(1)) {
        (Some(&(first, _)), Some(end)) => {
            let last = index.entries[end].0;
            scan::events(&stream, &stored, first, last, range.len())
                .await
                .map_err(unavailable)?
        }
        _ => Vec::new(),
    };
    let subject_key = key(&query.subject);
    Ok(v1::HistoryResponse {
        events: events.into_iter().map(|e| answer(subject_key, e)).collect(),
        truncated: cut || index.left_out,
    })
}

/// Where the walk of the subject's events starts, and which of them a
/// page keeps. A position is checked as a resume from it would be: one
/// ahead of the stream was never sent by Herald.
async fn start(
    stream: &async_nats::jetstream::stream::Stream<()>,
    after: Option<u64>,
) -> Result<(u64, Keep), Status> {
    let Some(after) = after else {
        return Ok((1, Keep::Newest));
    };
    let info = stream.get_info().await.map_err(unavailable)?;
    if after > info.state.last_sequence {
        return Err(Status::invalid_argument(format!(
            "since: the event id is ahead of history (sequence {after} of {} was never written)",
            info.config.name
        )));
    }
    Ok((after + 1, Keep::First))
}

/// Which of the indexed events (their data sizes, oldest first) fit in
/// `max_bytes`, taken from the end `keep` says; and whether some did not.
/// The first one taken always is, however large: else a caller paging on
/// could never get past it.
fn page(sizes: &[usize], max_bytes: usize, keep: Keep) -> (Range<usize>, bool) {
    let mut bytes = 0usize;
    let mut fits = |taken: usize, size: usize| {
        bytes = bytes.saturating_add(size);
        taken == 0 || bytes <= max_bytes
    };
    let taken = match keep {
        Keep::First => sizes
            .iter()
            .enumerate()
            .take_while(|(i, s)| fits(*i, **s))
            .count(),
        Keep::Newest => sizes
            .iter()
            .rev()
            .enumerate()
            .take_while(|(i, s)| fits(*i, **s))
            .count(),
    };
    let range = match keep {
        Keep::First => 0..taken,
        Keep::Newest => sizes.len() - taken..sizes.len(),
    };
    (range, taken < sizes.len())
}

/// One event as History returns it, its id naming only its subject.
fn answer(subject_key: u32, stored: Stored) -> v1::HistoryEvent {
    let mut cursor = Cursor::default();
    cursor.set(subject_key, stored.seq);
    v1::HistoryEvent {
        id: cursor.encode(),
        event: stored.event.unwrap_or_default(),
        // Publish takes UTF-8 only; anything else was stored by someone else.
        data: String::from_utf8_lossy(&stored.data).into_owned(),
        time_unix_ms: stored.time_unix_ms,
    }
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("cannot read history ({e}); retry shortly"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: Option<Target>, since: &str, limit: u32) -> v1::HistoryRequest {
        v1::HistoryRequest {
            target,
            since: since.to_owned(),
            limit,
        }
    }

    fn user(id: &str) -> Option<Target> {
        Some(Target::UserId(id.to_owned()))
    }

    fn refusal(request: v1::HistoryRequest) -> String {
        let status = Query::parse(request, &Region::default()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status.message().to_owned()
    }

    #[test]
    fn a_request_becomes_a_subject_a_limit_and_a_position() {
        let query = Query::parse(request(user("alice"), "", 0), &Region::default()).unwrap();
        assert_eq!(
            query,
            Query {
                subject: "herald.u.alice".into(),
                limit: 100,
                after: None,
            }
        );
        let mut cursor = Cursor::default();
        cursor.set(key("herald.u.bob"), 9);
        cursor.set(key("herald.t.news"), 42);
        let topic = Some(Target::Topic("news".into()));
        let query =
            Query::parse(request(topic, &cursor.encode(), 1000), &Region::default()).unwrap();
        assert_eq!((query.limit, query.after), (1000, Some(42)));
    }

    #[test]
    fn hostile_requests_are_refused_with_the_reason() {
        let mut bobs = Cursor::default();
        bobs.set(key("herald.u.bob"), 9);
        for (request, says) in [
            (request(None, "", 0), "user_id` or `topic"),
            (
                request(user(""), "", 0),
                "user_id: user id must not be empty",
            ),
            (request(user("a\u{0}b"), "", 0), "control characters"),
            (request(Some(Target::Topic("a b".into())), "", 0), "topic:"),
            (
                request(user("alice"), "", 5000),
                "`limit` 5000 is over 1000",
            ),
            (
                request(user("alice"), "!!!", 0),
                "since: event id is not URL-safe",
            ),
            (
                request(user("alice"), &"A".repeat(5000), 0),
                "since: event id is longer",
            ),
            (
                request(user("alice"), "Ag", 0),
                "since: event id has an unknown version",
            ),
            (
                request(user("alice"), &bobs.encode(), 0),
                "no position for user \"alice\"",
            ),
        ] {
            let message = refusal(request);
            assert!(message.contains(says), "{message:?} lacks {says:?}");
        }
    }

    #[test]
    fn a_page_keeps_its_end_within_the_byte_cap() {
        let sizes = [400, 300, 200, 100];
        assert_eq!(page(&sizes, 1000, Keep::First), (0..4, false));
        assert_eq!(page(&sizes, 1000, Keep::Newest), (0..4, false));
        assert_eq!(page(&sizes, 600, Keep::First), (0..1, true));
        assert_eq!(page(&sizes, 600, Keep::Newest), (1..4, true));
        assert_eq!(page(&[], 600, Keep::Newest), (0..0, false));
        // One event over the cap alone still comes, so paging moves on.
        assert_eq!(page(&[5000, 1], 600, Keep::First), (0..1, true));
        assert_eq!(page(&[1, 5000], 600, Keep::Newest), (1..2, true));
    }

    #[test]
    fn an_answer_id_names_only_its_subject() {
        let stored = Stored {
            seq: 7,
            event: Some("price".into()),
            data: bytes::Bytes::from_static(b"{}"),
            time_unix_ms: 1_700_000_000_000,
        };
        let event = answer(key("herald.t.news"), stored);
        let cursor = Cursor::decode(&event.id).unwrap();
        assert_eq!(cursor.entries(), &[(key("herald.t.news"), 7)]);
        assert_eq!((event.event.as_str(), event.data.as_str()), ("price", "{}"));
    }
}
