//! Single reads of one subject's history: the leaf that `replay` builds
//! on. Each method is one JetStream request (two when the first way of
//! reading fails and the other is tried).

use async_nats::jetstream::{self, message::StreamMessage, stream};
use herald_nats::history::{shard_of, stored_subject, stream_of};

/// A failed read of history.
pub(crate) type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// Who answers single reads of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Any server holding the stream (direct get): cheap, and exact while
    /// history has one replica.
    Direct,
    /// The stream leader, through the JetStream API: a replica may lag
    /// the leader, and a lagging answer would skip or reset events.
    Leader,
}

impl Reads {
    pub fn for_replicas(replicas: u8) -> Self {
        if replicas == 1 {
            Self::Direct
        } else {
            Self::Leader
        }
    }
}

/// One subject's events in one history stream.
#[derive(Debug)]
pub(crate) struct Source {
    pub stream: stream::Stream<()>,
    pub reads: Reads,
    /// Stored (history) subject.
    pub stored: String,
}

impl Source {
    /// Live `subject`'s events in its history shard (of `shards`). Makes
    /// no request.
    pub(crate) async fn of(
        js: &jetstream::Context,
        subject: &str,
        shards: u16,
        reads: Reads,
    ) -> Result<Self, ReadError> {
        let shard = shard_of(subject, shards);
        Ok(Self {
            stream: js.get_stream_no_info(stream_of(subject, shards)).await?,
            reads,
            stored: stored_subject(subject, shard),
        })
    }

    /// The subject's first stored event at or after sequence `from`.
    pub(crate) async fn next(&self, from: u64) -> Result<Option<StreamMessage>, ReadError> {
        match self.reads {
            Reads::Direct => match self.direct_next(from).await {
                Ok(found) => Ok(found),
                // E.g. a stream made before direct gets were allowed: ask the leader.
                Err(e) => {
                    tracing::debug!(error = %e, "direct get failed");
                    self.leader_next(from).await
                }
            },
            Reads::Leader => match self.leader_next(from).await {
                Ok(found) => Ok(found),
                Err(e) => {
                    tracing::debug!(error = %e, "read from the stream leader failed");
                    self.direct_next(from).await
                }
            },
        }
    }

    /// The sequence of the subject's newest stored event.
    pub(crate) async fn newest(&self) -> Result<Option<u64>, ReadError> {
        match self.reads {
            Reads::Direct => match self.direct_newest().await {
                Ok(found) => Ok(found),
                Err(e) => {
                    tracing::debug!(error = %e, "direct get failed");
                    self.leader_newest().await
                }
            },
            Reads::Leader => match self.leader_newest().await {
                Ok(found) => Ok(found),
                Err(e) => {
                    tracing::debug!(error = %e, "read from the stream leader failed");
                    self.direct_newest().await
                }
            },
        }
    }

    // A leader read fails while the JetStream meta group has no leader
    // (nats-server answers "cluster not available"): in a two-region
    // supercluster, while the other region is lost. Direct gets need no
    // meta leader, so a failed leader read is asked again of a replica;
    // one that lags shows as a reset, never as a skipped event.

    async fn direct_next(&self, from: u64) -> Result<Option<StreamMessage>, ReadError> {
        let request = self.stream.direct_get_builder().sequence(from);
        match request.next_by_subject(self.stored.as_str()).send().await {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn leader_next(&self, from: u64) -> Result<Option<StreamMessage>, ReadError> {
        let request = self.stream.raw_message_builder().sequence(from);
        match request.next_by_subject(self.stored.as_str()).send().await {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn direct_newest(&self) -> Result<Option<u64>, ReadError> {
        let request = self.stream.direct_get_builder();
        match request.last_by_subject(self.stored.as_str()).send().await {
            Ok(message) => Ok(Some(message.sequence)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn leader_newest(&self) -> Result<Option<u64>, ReadError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.stored)
            .await
        {
            Ok(message) => Ok(Some(message.sequence)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the subject's event `seq` is still stored. History drops a
    /// subject's oldest events first, so if it is, everything after it is too.
    pub(crate) async fn holds(&self, seq: u64) -> Result<bool, ReadError> {
        Ok(self.next(seq).await?.is_some_and(|m| m.sequence == seq))
    }
}
