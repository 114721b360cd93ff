//! Walks one subject's stored events in a history stream, for
//! `Control.History` (see [`crate::history`]): first the headers alone,
//! to learn which events a page holds and their sizes, then the payloads
//! of just those. Each walk is one short-lived consumer filtered on the
//! subject, pulled from for exactly what is left to read.
//!
//! JetStream cannot read a subject backwards, so the newest `limit` events
//! are found by walking all the subject's events' headers. That is bounded:
//! a history stream keeps at most `--history-max-per-subject` events per
//! subject (default 1,000), a header costs a few hundred bytes, and only
//! the last `limit` positions are kept while walking. A page after a
//! position walks at most `limit` headers, whatever that flag says.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::message::Info;
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::StreamExt;
use herald_nats::envelope::Envelope;

/// A failed read of history.
pub type ScanError = Box<dyn std::error::Error + Send + Sync>;

/// How long one step of a walk (creating its consumer, or its next
/// message) may take: a JetStream that stopped answering fails the call
/// rather than holding it open.
const STALL: Duration = Duration::from_secs(5);

/// Most messages asked for in one pull: a subject's whole history in one
/// would be more than a client buffers comfortably.
const PULL: usize = 1_000;

/// Header JetStream puts on a headers-only delivery: the payload's size.
const MSG_SIZE_HEADER: &str = "Nats-Msg-Size";

/// A subject's events as the headers walk saw them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// (stream sequence, data size in bytes), oldest first.
    pub entries: VecDeque<(u64, usize)>,
    /// Whether the walk left events out: older ones when it kept the
    /// newest, newer ones when it stopped at `limit`.
    pub left_out: bool,
}

/// Which end of the subject's history [`index`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The newest `limit` events.
    Newest,
    /// The first `limit` events at or after the start.
    First,
}

/// One stored event, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    /// The publisher's event type; `None` for the default.
    pub event: Option<String>,
    pub data: Bytes,
    /// When JetStream stored it.
    pub time_unix_ms: i64,
}

/// Positions and sizes of `stored`'s events from sequence `start` on,
/// `limit` of them at the end `keep` says. Reads headers only.
pub async fn index(
    stream: &stream::Stream<()>,
    stored: &str,
    start: u64,
    limit: usize,
    keep: Keep,
) -> Result<Index, ScanError> {
    let mut index = Index::default();
    // The newest are found by walking all (see the module's doc).
    let most = match keep {
        Keep::Newest => usize::MAX,
        Keep::First => limit,
    };
    let walked = walk(
        stream,
        consumer(stored, start, true),
        most,
        |info, message| {
            index
                .entries
                .push_back((info.stream_sequence, data_size(message)));
            match keep {
                Keep::Newest if index.entries.len() > limit => {
                    index.entries.pop_front();
                    index.left_out = true;
                    true
                }
                Keep::First if index.entries.len() == limit => {
                    index.left_out = info.pending > 0;
                    false
                }
                _ => true,
            }
        },
    );
    walked.await?;
    Ok(index)
}

/// The size of a headers-only delivery's payload, as JetStream says.
fn data_size(message: &async_nats::Message) -> usize {
    let header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(MSG_SIZE_HEADER));
    header
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(message.payload.len())
}

/// `stored`'s events from sequence `first` to `last`, oldest first.
/// Events removed since they were indexed are missing (history drops a
/// subject's oldest first, so those are the first ones).
pub async fn events(
    stream: &stream::Stream<()>,
    stored: &str,
    first: u64,
    last: u64,
    count: usize,
) -> Result<Vec<Stored>, ScanError> {
    let mut events = Vec::with_capacity(count);
    let walked = walk(
        stream,
        consumer(stored, first, false),
        count,
        |info, message| {
            let seq = info.stream_sequence;
            if seq > last {
                return false;
            }
            let envelope = Envelope::from_parts(message.headers.as_ref(), &message.payload);
            events.push(Stored {
                seq,
                event: envelope.event,
                data: envelope.data,
                time_unix_ms: (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
            });
            seq < last
        },
    );
    walked.await?;
    Ok(events)
}

/// A consumer of `stored` from sequence `start`: in memory, one replica,
/// no acks (as an ordered consumer's), gone 30 s after its last use.
fn consumer(stored: &str, start: u64, headers_only: bool) -> pull::Config {
    pull::OrderedConfig {
        filter_subject: stored.to_owned(),
        headers_only,
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: start.max(1),
        },
        ..Default::default()
    }
    .into()
}

/// Hands `visit` the messages of a consumer made with `config`, oldest
/// first, until it returns false or `most` were read. Each pull asks for
/// no more than remain to be read (and at most [`PULL`]), so nothing past
/// what the page needs is sent; events stored after the consumer was made
/// are not waited for.
async fn walk(
    stream: &stream::Stream<()>,
    config: pull::Config,
    most: usize,
    mut visit: impl FnMut(&Info, &async_nats::Message) -> bool,
) -> Result<(), ScanError> {
    let consumer = timeout(stream.create_consumer(config)).await??;
    let name = consumer.cached_info().name.clone();
    let pending = consumer.cached_info().num_pending;
    let read = async {
        let mut left = most.min(usize::try_from(pending).unwrap_or(usize::MAX));
        while left > 0 {
            let pull = consumer.fetch().max_messages(left.min(PULL));
            let mut messages = timeout(pull.messages()).await??;
            let mut got = 0;
            while let Some(message) = timeout(messages.next()).await? {
                let message = message?;
                let info = message.info()?;
                got += 1;
                if !visit(&info, &message) || info.pending == 0 {
                    return Ok(());
                }
            }
            if got == 0 {
                return Ok(()); // removed since the consumer counted them
            }
            left = left.saturating_sub(got);
        }
        Ok(())
    };
    let read: Result<(), ScanError> = read.await;
    // Not waited for: the answer need not wait on the JetStream API (the
    // consumer expires by itself if this is lost).
    let stream = stream.clone();
    tokio::spawn(async move { stream.delete_consumer(&name).await });
    read
}

/// `tokio::time::timeout` at [`STALL`], its error a scan error.
async fn timeout<T>(f: impl std::future::Future<Output = T>) -> Result<T, ScanError> {
    tokio::time::timeout(STALL, f)
        .await
        .map_err(|_| format!("no answer from JetStream in {STALL:?}").into())
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream;
    use futures::FutureExt;

    use super::*;

    /// A stream `T` holding `t.a` events `a1`..`a10` (sequences 2, 4, …,
    /// 20) between `t.b` ones, and a subscription seeing every pull.
    async fn ten_events_on_t_a() -> (
        herald_testing::NatsServer,
        async_nats::Client,
        stream::Stream<()>,
        async_nats::Subscriber,
    ) {
        let nats = herald_testing::NatsServer::start();
        let client = async_nats::connect(nats.client_url()).await.unwrap();
        let js = jetstream::new(client.clone());
        let config = stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            ..Default::default()
        };
        js.create_stream(config).await.unwrap();
        for i in 1..=10 {
            for (subject, data) in [("t.b", format!("b{i}")), ("t.a", format!("a{i}"))] {
                js.publish(subject, data.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
        let pulls = client
            .subscribe("$JS.API.CONSUMER.MSG.NEXT.T.>")
            .await
            .unwrap();
        herald_nats::connection::round_trip(&client).await.unwrap();
        let stream = js.get_stream_no_info("T").await.unwrap();
        (nats, client, stream, pulls)
    }

    fn seqs(index: &Index) -> Vec<u64> {
        index.entries.iter().map(|e| e.0).collect()
    }

    /// The `batch` of every pull request made so far (the pulls come
    /// from `client`'s own connection: one round trip sees them all).
    async fn pulls_made(
        client: &async_nats::Client,
        pulls: &mut async_nats::Subscriber,
    ) -> Vec<u64> {
        herald_nats::connection::round_trip(client).await.unwrap();
        let mut batches = Vec::new();
        while let Some(Some(pull)) = pulls.next().now_or_never() {
            let request: serde_json::Value = serde_json::from_slice(&pull.payload).unwrap();
            batches.push(request["batch"].as_u64().unwrap());
        }
        batches
    }

    #[tokio::test]
    async fn walks_keep_one_end_and_read_no_further_than_the_page() {
        let (_nats, client, stream, mut pulls) = ten_events_on_t_a().await;

        let newest = index(&stream, "t.a", 1, 3, Keep::Newest).await.unwrap();
        assert_eq!((seqs(&newest), newest.left_out), (vec![16, 18, 20], true));
        let sizes: Vec<usize> = newest.entries.iter().map(|e| e.1).collect();
        assert_eq!(sizes, [2, 2, 3], "a8, a9, a10");
        let first = index(&stream, "t.a", 5, 3, Keep::First).await.unwrap();
        assert_eq!((seqs(&first), first.left_out), (vec![6, 8, 10], true));
        let rest = index(&stream, "t.a", 15, 10, Keep::First).await.unwrap();
        assert_eq!((seqs(&rest), rest.left_out), (vec![16, 18, 20], false));
        let none = index(&stream, "t.c", 1, 10, Keep::Newest).await.unwrap();
        assert_eq!(none, Index::default());

        // Each walk asks for what it may still need: none for an empty one.
        assert_eq!(pulls_made(&client, &mut pulls).await, [10, 3, 3]);
        let events = events(&stream, "t.a", 6, 10, 3).await.unwrap();
        let got: Vec<_> = events.iter().map(|e| (e.seq, e.data.as_ref())).collect();
        assert_eq!(got, [(6, &b"a3"[..]), (8, b"a4"), (10, b"a5")]);
        assert!(
            events
                .iter()
                .all(|e| e.event.is_none() && e.time_unix_ms > 0)
        );
        assert_eq!(
            pulls_made(&client, &mut pulls).await,
            [3],
            "one pull, for the page alone"
        );
    }
}
