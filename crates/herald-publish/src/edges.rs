//! Asking every edge at once: an order goes out on a control subject
//! with a reply inbox, and the answers are gathered until every edge
//! presence knows has answered, or [`ANSWER_WAIT`] has passed (an edge
//! that crashed cannot answer; presence forgets it soon after).

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use herald_nats::presence::Follower;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;

/// Longest wait for the edges' answers.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// After every known edge answered, how long an edge presence does not
/// know yet (one that just started) may still answer.
const STRAGGLER_WAIT: Duration = Duration::from_millis(20);

/// An edge's answer: which node it came from.
pub trait Answer: DeserializeOwned {
    fn node(&self) -> &str;
}

impl Answer for herald_domain::control::Done {
    fn node(&self) -> &str {
        &self.node
    }
}

impl Answer for herald_domain::control::EdgeTopics {
    fn node(&self) -> &str {
        &self.node
    }
}

/// Sends `order` on `subject` to every edge and returns their answers,
/// one per edge (a second answer of one node is dropped).
pub async fn ask<A: Answer>(
    nats: &async_nats::Client,
    presence: &Follower,
    subject: &'static str,
    order: &impl Serialize,
) -> Result<Vec<A>, Status> {
    let payload = serde_json::to_vec(order).expect("orders are plain structs");
    let inbox = nats.new_inbox();
    let unavailable = |e: &dyn std::fmt::Display| {
        Status::unavailable(format!(
            "cannot reach the edges over NATS ({e}); retry shortly"
        ))
    };
    let mut answers = nats
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable(&e))?;
    nats.publish_with_reply(subject, inbox, payload.into())
        .await
        .map_err(|e| unavailable(&e))?;
    let mut waiting: HashSet<String> = presence
        .directory()
        .node_connections()
        .map(|(node, _)| node.to_owned())
        .collect();
    let mut heard = HashSet::new();
    let mut gathered = Vec::new();
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    loop {
        let until = match waiting.is_empty() {
            true => deadline.min(tokio::time::Instant::now() + STRAGGLER_WAIT),
            false => deadline,
        };
        let Ok(Some(message)) = tokio::time::timeout_at(until, answers.next()).await else {
            break;
        };
        let Ok(answer) = serde_json::from_slice::<A>(&message.payload) else {
            tracing::warn!(subject, "an edge's answer does not parse; ignored");
            continue;
        };
        waiting.remove(answer.node());
        if heard.insert(answer.node().to_owned()) {
            gathered.push(answer);
        }
    }
    if !waiting.is_empty() {
        tracing::warn!(subject, missing = ?waiting, "edges did not answer in time");
    }
    Ok(gathered)
}
