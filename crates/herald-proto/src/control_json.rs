//! The proto3 JSON mapping of the Control API's messages, for
//! `POST /v1/<method>` on herald-publish's port: the same rules as
//! [`crate::json`] (lowerCamelCase or proto names, `null` as the default,
//! unknown fields refused), 64-bit integers written as strings and read
//! from strings or numbers, as proto3 JSON says.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::json::JsonError;
use crate::v1;

/// `DisconnectRequest` as JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisconnectRequest {
    #[serde(default, alias = "user_ids")]
    pub user_ids: Option<Vec<String>>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub reconnect: Option<bool>,
}

/// `RevokeRequest` as JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default, alias = "user_ids")]
    pub user_ids: Option<Vec<String>>,
    #[serde(default, alias = "issued_before_unix", deserialize_with = "int64")]
    pub issued_before_unix: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `FollowRequest` as JSON (Follow and Unfollow).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FollowRequest {
    #[serde(default, alias = "user_ids")]
    pub user_ids: Option<Vec<String>>,
    #[serde(default)]
    pub topics: Option<Vec<String>>,
}

/// `HistoryRequest` as JSON: `userId` or `topic` (one `oneof target`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryRequest {
    #[serde(default, alias = "user_id")]
    pub user_id: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `TopicsRequest` as JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicsRequest {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

impl From<DisconnectRequest> for v1::DisconnectRequest {
    fn from(json: DisconnectRequest) -> Self {
        Self {
            user_ids: json.user_ids.unwrap_or_default(),
            reason: json.reason.unwrap_or_default(),
            reconnect: json.reconnect.unwrap_or_default(),
        }
    }
}

impl From<RevokeRequest> for v1::RevokeRequest {
    fn from(json: RevokeRequest) -> Self {
        Self {
            user_ids: json.user_ids.unwrap_or_default(),
            issued_before_unix: json.issued_before_unix.unwrap_or_default(),
            reason: json.reason.unwrap_or_default(),
        }
    }
}

impl From<FollowRequest> for v1::FollowRequest {
    fn from(json: FollowRequest) -> Self {
        Self {
            user_ids: json.user_ids.unwrap_or_default(),
            topics: json.topics.unwrap_or_default(),
        }
    }
}

impl TryFrom<HistoryRequest> for v1::HistoryRequest {
    type Error = JsonError;

    fn try_from(json: HistoryRequest) -> Result<Self, JsonError> {
        use v1::history_request::Target;
        let target = match (json.user_id, json.topic) {
            (Some(_), Some(_)) => return Err(JsonError::TwoHistoryTargets),
            (Some(user), None) => Some(Target::UserId(user)),
            (None, Some(topic)) => Some(Target::Topic(topic)),
            (None, None) => None,
        };
        Ok(Self {
            target,
            since: json.since.unwrap_or_default(),
            limit: json.limit.unwrap_or_default(),
        })
    }
}

impl From<TopicsRequest> for v1::TopicsRequest {
    fn from(json: TopicsRequest) -> Self {
        Self {
            prefix: json.prefix.unwrap_or_default(),
            limit: json.limit.unwrap_or_default(),
        }
    }
}

/// An `int64` field: a number, or a string holding one (proto3 JSON
/// writes 64-bit integers as strings).
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(i64),
        String(String),
    }
    match Option::<NumberOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(n)),
        Some(NumberOrString::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a 64-bit integer"))),
    }
}

/// A 64-bit integer written as a string, as proto3 JSON says.
fn as_string<S: Serializer, T: ToString>(n: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&n.to_string())
}

/// `DisconnectResponse` as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct DisconnectResponse {
    #[serde(serialize_with = "as_string")]
    pub streams: u64,
    pub edges: u32,
}

/// `RevokeResponse` and `FollowResponse` as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct StreamsResponse {
    #[serde(serialize_with = "as_string")]
    pub streams: u64,
}

/// `HistoryResponse` as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryResponse {
    pub events: Vec<HistoryEvent>,
    pub truncated: bool,
}

/// `HistoryEvent` as JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEvent {
    pub id: String,
    pub event: String,
    pub data: String,
    #[serde(serialize_with = "as_string")]
    pub time_unix_ms: i64,
}

/// `TopicsResponse` as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct TopicsResponse {
    pub topics: Vec<TopicInfo>,
}

/// `TopicInfo` as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct TopicInfo {
    pub topic: String,
    #[serde(serialize_with = "as_string")]
    pub streams: u64,
    pub edges: u32,
}

impl From<v1::DisconnectResponse> for DisconnectResponse {
    fn from(r: v1::DisconnectResponse) -> Self {
        Self {
            streams: r.streams,
            edges: r.edges,
        }
    }
}

impl From<v1::RevokeResponse> for StreamsResponse {
    fn from(r: v1::RevokeResponse) -> Self {
        Self { streams: r.streams }
    }
}

impl From<v1::FollowResponse> for StreamsResponse {
    fn from(r: v1::FollowResponse) -> Self {
        Self { streams: r.streams }
    }
}

impl From<v1::HistoryResponse> for HistoryResponse {
    fn from(r: v1::HistoryResponse) -> Self {
        let events = r.events.into_iter().map(|e| HistoryEvent {
            id: e.id,
            event: e.event,
            data: e.data,
            time_unix_ms: e.time_unix_ms,
        });
        Self {
            events: events.collect(),
            truncated: r.truncated,
        }
    }
}

impl From<v1::TopicsResponse> for TopicsResponse {
    fn from(r: v1::TopicsResponse) -> Self {
        let topics = r.topics.into_iter().map(|t| TopicInfo {
            topic: t.topic,
            streams: t.streams,
            edges: t.edges,
        });
        Self {
            topics: topics.collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_by_either_name_and_refuse_mistakes() {
        let camel: RevokeRequest =
            serde_json::from_str(r#"{"userIds":["a"],"issuedBeforeUnix":"1700000000"}"#).unwrap();
        let snake: RevokeRequest =
            serde_json::from_str(r#"{"user_ids":["a"],"issued_before_unix":1700000000}"#).unwrap();
        let (camel, snake) = (
            v1::RevokeRequest::from(camel),
            v1::RevokeRequest::from(snake),
        );
        assert_eq!(camel, snake);
        assert_eq!(camel.issued_before_unix, 1_700_000_000);

        for (json, says) in [
            (
                r#"{"userIds":["a"],"issuedBeforeUnix":"soon"}"#,
                "not a 64-bit",
            ),
            (r#"{"userIds":["a"],"reasn":"x"}"#, "unknown field `reasn`"),
            (r#"{"userIds":"a"}"#, "expected a sequence"),
        ] {
            let error = serde_json::from_str::<RevokeRequest>(json).unwrap_err();
            assert!(error.to_string().contains(says), "{json}: {error}");
        }
        let both: HistoryRequest = serde_json::from_str(r#"{"userId":"a","topic":"b"}"#).unwrap();
        assert_eq!(
            v1::HistoryRequest::try_from(both),
            Err(JsonError::TwoHistoryTargets)
        );
    }

    #[test]
    fn responses_write_64_bit_integers_as_strings() {
        let json = serde_json::to_value(DisconnectResponse::from(v1::DisconnectResponse {
            streams: 3,
            edges: 2,
        }))
        .unwrap();
        assert_eq!(json, serde_json::json!({"streams": "3", "edges": 2}));
        let json = serde_json::to_value(HistoryResponse::from(v1::HistoryResponse {
            events: vec![v1::HistoryEvent {
                id: "i".into(),
                event: String::new(),
                data: "d".into(),
                time_unix_ms: 5,
            }],
            truncated: true,
        }))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"events": [{"id": "i", "event": "", "data": "d", "timeUnixMs": "5"}], "truncated": true})
        );
    }
}
