//! The proto3 JSON mapping of the Publish API's messages, for HTTP
//! publish and `herald publish --ndjson`: lowerCamelCase field names (the
//! proto names are accepted too), enums as their names (numbers accepted),
//! `null` as the default, unknown fields refused so a misspelt field is an
//! error rather than silently ignored. Hand-written mirrors of the few
//! messages involved, converted to and from the prost types.

use serde::{Deserialize, Deserializer, Serialize};

use crate::v1;

/// `PublishRequest` as JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishRequest {
    #[serde(default)]
    pub users: Option<UserTarget>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub ephemeral: Option<bool>,
    #[serde(default, deserialize_with = "offline_policy")]
    pub offline: Option<i32>,
    #[serde(default, alias = "idempotency_key")]
    pub idempotency_key: Option<String>,
}

/// `UserTarget` as JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserTarget {
    #[serde(default, alias = "user_ids")]
    pub user_ids: Option<Vec<String>>,
}

/// `PublishBatchRequest` as JSON: `{"requests": [...]}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBatchRequest {
    #[serde(default)]
    pub requests: Option<Vec<PublishRequest>>,
}

/// A request that the JSON mapping itself refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JsonError {
    #[error("set either `users` or `topic`, not both (they are one `oneof target`)")]
    TwoTargets,
    #[error("set either `userId` or `topic`, not both (they are one `oneof target`)")]
    TwoHistoryTargets,
}

/// A batch's request that the JSON mapping refuses, and where it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("requests[{index}]: {error}")]
pub struct BatchItemError {
    /// Its index in `requests`.
    pub index: usize,
    pub error: JsonError,
}

impl TryFrom<PublishRequest> for v1::PublishRequest {
    type Error = JsonError;

    fn try_from(json: PublishRequest) -> Result<Self, JsonError> {
        let target = match (json.users, json.topic) {
            (Some(_), Some(_)) => return Err(JsonError::TwoTargets),
            (Some(users), None) => Some(v1::publish_request::Target::users(
                users.user_ids.unwrap_or_default(),
            )),
            (None, Some(topic)) => Some(v1::publish_request::Target::Topic(topic)),
            (None, None) => None,
        };
        Ok(Self {
            target,
            event: json.event.unwrap_or_default(),
            data: json.data.unwrap_or_default(),
            ephemeral: json.ephemeral.unwrap_or_default(),
            offline: json.offline.unwrap_or_default(),
            idempotency_key: json.idempotency_key.unwrap_or_default(),
        })
    }
}

impl PublishBatchRequest {
    /// The prost requests; the first one the mapping refuses, with its index.
    pub fn into_requests(self) -> Result<Vec<v1::PublishRequest>, BatchItemError> {
        let requests = self.requests.unwrap_or_default().into_iter().enumerate();
        requests
            .map(|(index, r)| {
                r.try_into()
                    .map_err(|error| BatchItemError { index, error })
            })
            .collect()
    }
}

/// An enum field: its name, or its number (an unknown number is kept, for
/// validation to name).
fn offline_policy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Name(String),
        Number(i32),
    }
    match Option::<NameOrNumber>::deserialize(d)? {
        None => Ok(None),
        Some(NameOrNumber::Number(n)) => Ok(Some(n)),
        Some(NameOrNumber::Name(name)) => v1::OfflinePolicy::from_str_name(&name)
            .map(|p| Some(p as i32))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "offline: unknown OfflinePolicy {name:?} (OFFLINE_POLICY_STORE, \
                     OFFLINE_POLICY_DROP or OFFLINE_POLICY_FALLBACK)"
                ))
            }),
    }
}

/// `PublishResponse` as JSON. Every field is written, defaults too, so
/// scripts need not know proto3's omissions.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishResponse {
    pub event_id: String,
    pub receipts: Vec<Receipt>,
}

/// `Receipt` as JSON; `outcome` by name, e.g. `OUTCOME_DELIVERED`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub user_id: String,
    pub online: bool,
    pub outcome: &'static str,
}

/// `PublishResult` as JSON: `response` on success, else `error`.
#[derive(Debug, Clone, Serialize)]
pub struct PublishResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<PublishResponse>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `PublishBatchResponse` as JSON: `{"results": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct PublishBatchResponse {
    pub results: Vec<PublishResult>,
}

impl From<v1::PublishResponse> for PublishResponse {
    fn from(r: v1::PublishResponse) -> Self {
        let receipts = r.receipts.into_iter().map(|receipt| Receipt {
            outcome: receipt.outcome().as_str_name(),
            user_id: receipt.user_id,
            online: receipt.online,
        });
        Self {
            event_id: r.event_id,
            receipts: receipts.collect(),
        }
    }
}

impl From<v1::PublishResult> for PublishResult {
    fn from(r: v1::PublishResult) -> Self {
        Self {
            response: r.response.map(Into::into),
            error: r.error,
        }
    }
}

impl From<v1::PublishBatchResponse> for PublishBatchResponse {
    fn from(r: v1::PublishBatchResponse) -> Self {
        Self {
            results: r.results.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<v1::PublishRequest, String> {
        let request: PublishRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        request.try_into().map_err(|e: JsonError| e.to_string())
    }

    #[test]
    fn camel_case_and_proto_names_both_map() {
        let camel = parse(
            r#"{"users":{"userIds":["a","b"]},"data":"hi","event":"e","ephemeral":true,
                "offline":"OFFLINE_POLICY_DROP","idempotencyKey":"k1"}"#,
        )
        .unwrap();
        let snake = parse(
            r#"{"users":{"user_ids":["a","b"]},"data":"hi","event":"e","ephemeral":true,
                "offline":2,"idempotency_key":"k1"}"#,
        )
        .unwrap();
        assert_eq!(camel, snake);
        assert_eq!(camel.offline(), v1::OfflinePolicy::Drop);
        assert_eq!(camel.idempotency_key, "k1");
        let Some(v1::publish_request::Target::Users(users)) = camel.target else {
            panic!("users expected");
        };
        assert_eq!(users.user_ids, ["a", "b"]);
    }

    #[test]
    fn nulls_are_defaults_and_topics_map() {
        let r = parse(r#"{"topic":"news","data":null,"ephemeral":null,"offline":null}"#).unwrap();
        assert_eq!(
            r.target,
            Some(v1::publish_request::Target::Topic("news".into()))
        );
        assert_eq!((r.data.as_str(), r.ephemeral, r.offline), ("", false, 0));
    }

    #[test]
    fn hostile_or_mistaken_json_is_refused_with_a_reason() {
        for (json, says) in [
            (r#"{"topic":"a","users":{"userIds":["b"]}}"#, "not both"),
            (r#"{"topic":"a","dat":"x"}"#, "unknown field `dat`"),
            (r#"{"topic":"a","ephemeral":"yes"}"#, "expected a boolean"),
            (
                r#"{"topic":"a","offline":"LATER"}"#,
                "unknown OfflinePolicy",
            ),
            (r#"{"topic":7}"#, "expected a string"),
            (r#"{"users":{"userIds":"alice"}}"#, "expected a sequence"),
            (r#"["topic"]"#, "expected struct"),
        ] {
            let error = parse(json).unwrap_err();
            assert!(error.contains(says), "{json}: {error}");
        }
    }

    #[test]
    fn responses_write_names_and_defaults() {
        let response = v1::PublishBatchResponse {
            results: vec![
                v1::PublishResult {
                    response: Some(v1::PublishResponse {
                        event_id: String::new(),
                        receipts: vec![v1::Receipt {
                            user_id: "a".into(),
                            online: false,
                            outcome: v1::Outcome::Stored as i32,
                        }],
                    }),
                    error: String::new(),
                },
                v1::PublishResult {
                    response: None,
                    error: "INVALID_ARGUMENT: no".into(),
                },
            ],
        };
        let json = serde_json::to_value(PublishBatchResponse::from(response)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"results": [
                {"response": {"eventId": "", "receipts": [
                    {"userId": "a", "online": false, "outcome": "OUTCOME_STORED"}]}},
                {"error": "INVALID_ARGUMENT: no"}
            ]})
        );
    }
}
