//! What edges and presence followers say to each other over NATS.
//!
//! Each edge publishes everything about itself on one subject,
//! `herald.presence.n.<node>`, so NATS keeps its messages in order for every
//! follower: numbered deltas (`seq` grows by one per message) and a periodic
//! heartbeat that repeats the last `seq`. A follower that sees a gap, an
//! unknown node or a new `epoch` (the edge restarted) asks that edge for a
//! snapshot on [`SYNC_SUBJECT`]; the edge answers on the follower's own
//! subject in parts, each naming the `seq` the snapshot was taken at.

use serde::{Deserialize, Serialize};

use crate::subject::encode_token;

/// Prefix of the per-node subjects edges publish on.
pub const NODE_PREFIX: &str = "herald.presence.n.";
/// Every node's subject, for followers.
pub const NODE_WILDCARD: &str = "herald.presence.n.*";
/// Where followers ask edges for snapshots (every edge listens).
pub const SYNC_SUBJECT: &str = "herald.presence.sync";
/// Prefix of the subjects followers receive snapshots on.
pub const SNAPSHOT_PREFIX: &str = "herald.presence.snap.";
/// Request/reply for in-cluster callers: a protobuf `GetPresenceRequest`
/// in, `GetPresenceResponse` out.
pub const QUERY_SUBJECT: &str = "herald.presence.query";
/// Request/reply: empty in, protobuf `StatsResponse` out.
pub const STATS_SUBJECT: &str = "herald.presence.stats";
/// Queue group of the presence replicas, so one of them answers a request.
pub const QUEUE_GROUP: &str = "herald-presence";
/// Header of an error reply to a query, with the reason.
pub const ERROR_HEADER: &str = "Herald-Error";

/// Largest share of a snapshot in one message: user ids escape to at most
/// twice their length in JSON, which keeps a part well below NATS's
/// default 1 MiB payload limit.
pub const SNAPSHOT_PART_BUDGET: usize = 128 * 1024;

/// The subject an edge named `node` publishes on.
pub fn node_subject(node: &str) -> String {
    format!("{NODE_PREFIX}{}", encode_token(node))
}

/// What an edge says on its node subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeMessage {
    /// Connection counts changed: `(user, change)`, never zero.
    Delta {
        node: String,
        epoch: u64,
        seq: u64,
        /// Unix time of sending, in milliseconds, to measure lag.
        sent_ms: u64,
        changes: Vec<(String, i64)>,
    },
    /// The edge is alive; `seq` is its latest delta.
    Heartbeat {
        node: String,
        /// The edge's region (`--region`); absent for the unnamed one.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        region: String,
        epoch: u64,
        seq: u64,
        interval_ms: u64,
        connections: u64,
    },
    /// The edge is shutting down; forget it now rather than at expiry.
    Leaving { node: String, epoch: u64 },
}

/// Why a message received on a node subject was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    #[error("malformed presence message: {0}")]
    Malformed(String),
    /// The payload speaks for another node than the subject it came on.
    #[error("presence message on {subject} speaks for node {claimed:?}")]
    Spoofed { subject: String, claimed: String },
}

impl NodeMessage {
    /// Reads a message received on `subject`. NATS permissions decide who
    /// may publish on a node's subject; the payload says whatever its
    /// publisher wrote. So a message counts only for the node whose
    /// subject it came on: one naming another node is refused, or any
    /// client allowed to publish presence could speak for every edge.
    pub fn receive(subject: &str, payload: &[u8]) -> Result<Self, ReceiveError> {
        let message: Self =
            serde_json::from_slice(payload).map_err(|e| ReceiveError::Malformed(e.to_string()))?;
        if node_subject(message.node()) != subject {
            return Err(ReceiveError::Spoofed {
                subject: subject.to_owned(),
                claimed: message.node().to_owned(),
            });
        }
        Ok(message)
    }

    pub fn node(&self) -> &str {
        match self {
            Self::Delta { node, .. }
            | Self::Heartbeat { node, .. }
            | Self::Leaving { node, .. } => node,
        }
    }
}

/// A follower's request for snapshots; `node: None` asks every edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub node: Option<String>,
}

/// One part of an edge's snapshot: every user with connections at `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    pub node: String,
    /// The edge's region (`--region`); absent for the unnamed one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    pub epoch: u64,
    pub seq: u64,
    pub interval_ms: u64,
    /// Zero-based index of this part, and how many there are.
    pub part: u32,
    pub parts: u32,
    pub users: Vec<(String, u32)>,
}

/// Splits a node's counts into snapshot parts of bounded size.
pub fn snapshot_parts(
    node: &str,
    region: &str,
    epoch: u64,
    seq: u64,
    interval_ms: u64,
    users: impl IntoIterator<Item = (String, u32)>,
) -> Vec<SnapshotPart> {
    let mut chunks = vec![Vec::new()];
    let mut size = 0;
    for (user, count) in users {
        let cost = user.len() + 16;
        if size + cost > SNAPSHOT_PART_BUDGET && size > 0 {
            chunks.push(Vec::new());
            size = 0;
        }
        size += cost;
        chunks.last_mut().expect("never empty").push((user, count));
    }
    let parts = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(part, users)| SnapshotPart {
            node: node.to_owned(),
            region: region.to_owned(),
            epoch,
            seq,
            interval_ms,
            part: part as u32,
            parts,
            users,
        })
        .collect()
}

/// True when `reply` is a follower's snapshot inbox
/// (`herald.presence.snap.<token>`). Edges send snapshots nowhere else: a
/// sync request must not make an edge publish its users on a subject the
/// requester picked, such as `herald.u.<user>`, which a client can read
/// over SSE.
pub fn is_snapshot_inbox(reply: &str) -> bool {
    reply.strip_prefix(SNAPSHOT_PREFIX).is_some_and(|token| {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_messages_round_trip_as_tagged_json() {
        let delta = NodeMessage::Delta {
            node: "edge-1".into(),
            epoch: 7,
            seq: 3,
            sent_ms: 1,
            changes: vec![("alice".into(), 2), ("bob".into(), -1)],
        };
        let json = serde_json::to_string(&delta).unwrap();
        assert!(json.starts_with(r#"{"type":"delta""#), "{json}");
        assert_eq!(serde_json::from_str::<NodeMessage>(&json).unwrap(), delta);
        assert!(serde_json::from_str::<NodeMessage>(r#"{"type":"nope"}"#).is_err());
    }

    fn heartbeat(node: &str) -> Vec<u8> {
        let message = NodeMessage::Heartbeat {
            node: node.into(),
            region: String::new(),
            epoch: 1,
            seq: 0,
            interval_ms: 1000,
            connections: 0,
        };
        serde_json::to_vec(&message).unwrap()
    }

    #[test]
    fn a_message_counts_only_for_the_node_of_its_subject() {
        let own = NodeMessage::receive("herald.presence.n.edge-1", &heartbeat("edge-1"));
        assert_eq!(own.unwrap().node(), "edge-1");
        for (subject, claimed) in [
            ("herald.presence.n.edge-1", "edge-2"),
            ("herald.presence.n.edge-1", "edge-1 "),
            ("herald.presence.n.edge-1", ""),
            ("herald.presence.n.evil", "edge-1"),
            // The encoded form of a hostile name is not the name itself.
            ("herald.presence.n.a.b", "a.b"),
            ("herald.presence.n.a~2Eb", "a~2Eb"),
        ] {
            let refused = NodeMessage::receive(subject, &heartbeat(claimed));
            assert!(
                matches!(refused, Err(ReceiveError::Spoofed { .. })),
                "{subject} / {claimed:?}: {refused:?}"
            );
        }
        let hostile = NodeMessage::receive("herald.presence.n.a~2Eb", &heartbeat("a.b"));
        assert_eq!(hostile.unwrap().node(), "a.b");
        for garbage in [&b""[..], b"{", b"{\"type\":\"heartbeat\"}", &[0xff; 8]] {
            let refused = NodeMessage::receive("herald.presence.n.x", garbage);
            assert!(
                matches!(refused, Err(ReceiveError::Malformed(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn snapshots_go_only_to_snapshot_inboxes() {
        assert!(is_snapshot_inbox("herald.presence.snap.AbC123_-x"));
        for reply in [
            "herald.u.alice",
            "herald.t.news",
            "herald.presence.snap.",
            "herald.presence.snap",
            "herald.presence.snap.a.herald.u.alice",
            "herald.presence.snap.*",
            "herald.presence.snap.>",
            "herald.presence.snap.a b",
            "_INBOX.abc",
            "xherald.presence.snap.abc",
        ] {
            assert!(!is_snapshot_inbox(reply), "{reply}");
        }
    }

    #[test]
    fn hostile_node_ids_stay_one_subject_token() {
        assert_eq!(node_subject("a.>"), "herald.presence.n.a~2E~3E");
        assert_eq!(node_subject("edge-1"), "herald.presence.n.edge-1");
    }

    #[test]
    fn snapshots_split_under_the_budget_and_keep_every_user() {
        let users: Vec<_> = (0..20_000).map(|i| (format!("user-{i:0>40}"), 1)).collect();
        let parts = snapshot_parts("n", "", 1, 9, 1000, users.clone());
        assert!(parts.len() > 1);
        for part in &parts {
            assert!(serde_json::to_vec(part).unwrap().len() < 2 * SNAPSHOT_PART_BUDGET);
            assert_eq!(part.parts as usize, parts.len());
        }
        let joined: Vec<_> = parts.into_iter().flat_map(|p| p.users).collect();
        assert_eq!(joined, users);
        let empty = snapshot_parts("n", "", 1, 0, 1000, []);
        assert_eq!((empty.len(), empty[0].parts), (1, 1));
    }
}
