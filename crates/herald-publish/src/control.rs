//! The Control API: the app steers its streams. Orders go to every edge
//! at once (see [`crate::edges`]); what must outlive a message
//! (revocations, follows) is written to its bucket first, so an edge that
//! misses the order, or starts later, still obeys it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use herald_domain::control::{
    self, DISCONNECT_SUBJECT, Disconnect, Done, EdgeTopics, FOLLOWS_BUCKET, FOLLOWS_SUBJECT,
    Follows, FollowsChanged, REVOCATIONS_BUCKET, REVOKE_SUBJECT, Revocation, Revoke,
    TOPICS_SUBJECT, TopicsQuery, UserFollows,
};
use herald_domain::subject::{MAX_ID_LEN, Topic, UserId};
use herald_proto::v1;
use herald_proto::v1::control_server::Control;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tonic::{Request, Response, Status};

use crate::edges;
use crate::service::PublishService;

/// A revocation may name an instant this far ahead of this node's clock
/// (another machine's clock, a little ahead), no further.
const CLOCK_SKEW_SECS: u64 = 60;
/// Topics listed when the request sets no limit, and the most it may ask.
const DEFAULT_TOPICS: u32 = 100;
const MAX_TOPICS_LISTED: u32 = 1_000;
/// Attempts at a compare-and-set update of one bucket entry before the
/// call gives up (another writer keeps winning).
const UPDATE_ATTEMPTS: usize = 16;

/// The Control API's state: the Publish API's (NATS, presence, config)
/// and the buckets, opened once they exist.
pub struct ControlService {
    pub publish: Arc<PublishService>,
    revocations: OnceCell<kv::Store>,
    follows: OnceCell<kv::Store>,
}

impl ControlService {
    pub fn new(publish: Arc<PublishService>) -> Self {
        Self {
            publish,
            revocations: OnceCell::new(),
            follows: OnceCell::new(),
        }
    }

    async fn bucket(&self, which: &'static str) -> Result<&kv::Store, Status> {
        let cell = match which {
            REVOCATIONS_BUCKET => &self.revocations,
            _ => &self.follows,
        };
        if !self.publish.streams.ready() {
            return Err(Status::unavailable(
                "the control buckets are not ready yet (JetStream is starting); retry shortly",
            ));
        }
        cell.get_or_try_init(|| async {
            self.publish.js.get_key_value(which).await.map_err(|e| {
                Status::unavailable(format!(
                    "cannot open the {which} bucket ({e}); retry shortly"
                ))
            })
        })
        .await
    }

    async fn ask<A: edges::Answer>(
        &self,
        subject: &'static str,
        order: &impl Serialize,
    ) -> Result<Vec<A>, Status> {
        self.publish.connected()?;
        edges::ask(&self.publish.nats, &self.publish.presence, subject, order).await
    }

    /// Adds `topics` to (or, `follow` false, removes them from) each
    /// user's follows, then tells the edges.
    async fn change_follows(
        &self,
        request: v1::FollowRequest,
        follow: bool,
    ) -> Result<Response<v1::FollowResponse>, Status> {
        let users = parse_users(&request.user_ids)?;
        let topics = self.parse_topics(&request.topics)?;
        let bucket = self.bucket(FOLLOWS_BUCKET).await?;
        let max = self.publish.config.max_topics;
        let mut changed = Vec::with_capacity(users.len());
        for (index, user) in users.iter().enumerate() {
            let follows = update(bucket, &control::bucket_key(user), |old: Option<Follows>| {
                let mut set: BTreeSet<String> = old.unwrap_or_default().topics.into_iter().collect();
                for topic in &topics {
                    match follow {
                        true => set.insert(topic.as_str().to_owned()),
                        false => set.remove(topic.as_str()),
                    };
                }
                if set.len() > max {
                    return Err(Status::invalid_argument(format!(
                        "user_ids[{index}] would follow {} topics; the limit is {max} (--max-topics){}",
                        set.len(),
                        earlier_changed(index)
                    )));
                }
                Ok(Follows {
                    topics: set.into_iter().collect(),
                })
            })
            .await?;
            changed.push(UserFollows {
                user: user.as_str().to_owned(),
                follows,
            });
        }
        let done: Vec<Done> = self
            .ask(FOLLOWS_SUBJECT, &FollowsChanged { users: changed })
            .await?;
        let streams = done.iter().map(|d| d.streams).sum();
        Ok(Response::new(v1::FollowResponse { streams }))
    }

    fn parse_topics(&self, raw: &[String]) -> Result<Vec<Topic>, Status> {
        if raw.is_empty() {
            return Err(Status::invalid_argument(
                "name at least one topic in `topics`",
            ));
        }
        let max = self.publish.config.max_topics;
        if raw.len() > max {
            return Err(Status::invalid_argument(format!(
                "{} topics in one call; the limit is {max} (--max-topics)",
                raw.len()
            )));
        }
        raw.iter()
            .enumerate()
            .map(|(i, t)| {
                Topic::parse(t).map_err(|e| Status::invalid_argument(format!("topics[{i}]: {e}")))
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn disconnect(
        &self,
        request: Request<v1::DisconnectRequest>,
    ) -> Result<Response<v1::DisconnectResponse>, Status> {
        let request = request.into_inner();
        let users = parse_users(&request.user_ids)?;
        control::check_reason(&request.reason).map_err(Status::invalid_argument)?;
        let order = Disconnect {
            users: ids(&users),
            reason: request.reason,
            reconnect: request.reconnect,
        };
        let done: Vec<Done> = self.ask(DISCONNECT_SUBJECT, &order).await?;
        Ok(Response::new(v1::DisconnectResponse {
            streams: done.iter().map(|d| d.streams).sum(),
            edges: done.len() as u32,
        }))
    }

    async fn revoke(
        &self,
        request: Request<v1::RevokeRequest>,
    ) -> Result<Response<v1::RevokeResponse>, Status> {
        let request = request.into_inner();
        let users = parse_users(&request.user_ids)?;
        control::check_reason(&request.reason).map_err(Status::invalid_argument)?;
        let now = unix_now();
        let issued_before = match request.issued_before_unix {
            0 => now,
            t if t < 0 => {
                return Err(Status::invalid_argument(
                    "issued_before_unix must be 0 (now) or seconds since the Unix epoch",
                ));
            }
            t if t as u64 > now + CLOCK_SKEW_SECS => {
                return Err(Status::invalid_argument(format!(
                    "issued_before_unix {t} is in the future (now is {now}); tokens not issued yet cannot be revoked"
                )));
            }
            t => t as u64,
        };
        let revocation = Revocation {
            issued_before,
            reason: request.reason,
            expires: now + self.publish.config.buckets.revocation_ttl.as_secs(),
        };
        let bucket = self.bucket(REVOCATIONS_BUCKET).await?;
        for user in &users {
            update(
                bucket,
                &control::bucket_key(user),
                |old: Option<Revocation>| {
                    let mut kept = revocation.clone();
                    if let Some(old) = old {
                        kept.merge(old);
                    }
                    Ok(kept)
                },
            )
            .await?;
        }
        let order = Revoke {
            users: ids(&users),
            revocation,
        };
        let done: Vec<Done> = self.ask(REVOKE_SUBJECT, &order).await?;
        let streams = done.iter().map(|d| d.streams).sum();
        Ok(Response::new(v1::RevokeResponse { streams }))
    }

    async fn follow(
        &self,
        request: Request<v1::FollowRequest>,
    ) -> Result<Response<v1::FollowResponse>, Status> {
        self.change_follows(request.into_inner(), true).await
    }

    async fn unfollow(
        &self,
        request: Request<v1::FollowRequest>,
    ) -> Result<Response<v1::FollowResponse>, Status> {
        self.change_follows(request.into_inner(), false).await
    }

    async fn history(
        &self,
        request: Request<v1::HistoryRequest>,
    ) -> Result<Response<v1::HistoryResponse>, Status> {
        crate::history::read(&self.publish, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn topics(
        &self,
        request: Request<v1::TopicsRequest>,
    ) -> Result<Response<v1::TopicsResponse>, Status> {
        let request = request.into_inner();
        if request.prefix.len() > MAX_ID_LEN || request.prefix.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "`prefix` must be at most {MAX_ID_LEN} bytes without control characters"
            )));
        }
        let limit = match request.limit {
            0 => DEFAULT_TOPICS,
            n if n > MAX_TOPICS_LISTED => {
                return Err(Status::invalid_argument(format!(
                    "`limit` {n} is over {MAX_TOPICS_LISTED}"
                )));
            }
            n => n,
        };
        let query = TopicsQuery {
            prefix: request.prefix,
            limit,
        };
        let answers: Vec<EdgeTopics> = self.ask(TOPICS_SUBJECT, &query).await?;
        Ok(Response::new(v1::TopicsResponse {
            topics: merge_topics(answers, limit),
        }))
    }
}

/// The edges' topic lists as one: streams summed, edges counted, by name,
/// the first `limit` (each edge sent its first `limit`, so none is missed).
fn merge_topics(answers: Vec<EdgeTopics>, limit: u32) -> Vec<v1::TopicInfo> {
    let mut merged: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    for answer in answers {
        for (topic, streams) in answer.topics {
            let entry = merged.entry(topic).or_default();
            entry.0 += streams;
            entry.1 += 1;
        }
    }
    merged
        .into_iter()
        .take(limit as usize)
        .map(|(topic, (streams, edges))| v1::TopicInfo {
            topic,
            streams,
            edges,
        })
        .collect()
}

fn parse_users(raw: &[String]) -> Result<Vec<UserId>, Status> {
    control::parse_users(raw).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn ids(users: &[UserId]) -> Vec<String> {
    users.iter().map(|u| u.as_str().to_owned()).collect()
}

fn earlier_changed(index: usize) -> &'static str {
    match index {
        0 => "",
        _ => "; the users before it were changed",
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Sets `key` to what `change` makes of its value, compare-and-set: a
/// writer that changed it meanwhile makes this read and change it again.
async fn update<T: Serialize + DeserializeOwned>(
    bucket: &kv::Store,
    key: &str,
    change: impl Fn(Option<T>) -> Result<T, Status>,
) -> Result<T, Status> {
    let unavailable = |e: &dyn std::fmt::Display| {
        Status::unavailable(format!("cannot update the bucket ({e}); retry shortly"))
    };
    for _ in 0..UPDATE_ATTEMPTS {
        let entry = bucket.entry(key).await.map_err(|e| unavailable(&e))?;
        let (old, revision) = match entry {
            Some(e) if e.operation == Operation::Put => {
                (serde_json::from_slice(&e.value).ok(), e.revision)
            }
            Some(e) => (None, e.revision),
            None => (None, 0),
        };
        let new = change(old)?;
        let value = serde_json::to_vec(&new).expect("plain structs");
        match bucket.update(key, value.into(), revision).await {
            Ok(_) => return Ok(new),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(unavailable(&e)),
        }
    }
    Err(Status::aborted(
        "the entry kept changing under this call; retry",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_from_the_edges_are_summed_and_cut_by_name() {
        let answer = |node: &str, topics: &[(&str, u64)]| EdgeTopics {
            node: node.into(),
            topics: topics.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
        };
        let merged = merge_topics(
            vec![
                answer("a", &[("news", 3), ("sport", 1)]),
                answer("b", &[("chat", 2), ("news", 4)]),
            ],
            2,
        );
        let got: Vec<_> = merged
            .iter()
            .map(|t| (t.topic.as_str(), t.streams, t.edges))
            .collect();
        assert_eq!(got, [("chat", 2, 1), ("news", 7, 2)]);
    }
}
