//! The FCM HTTP v1 client: signs in with a service account (a signed JWT
//! exchanged for an OAuth access token, cached until shortly before it
//! expires) and sends one message per device token.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::config::FcmConfig;
use crate::https::{self, HttpsError};

/// OAuth scope FCM requires.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// An access token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(60);
/// FCM refuses data payloads over 4 KiB; larger events are sent without
/// their data (with `herald_truncated`), and the app fetches them over SSE.
pub const MAX_DATA_BYTES: usize = 3 * 1024;

/// One event as the phone receives it.
#[derive(Debug, Clone)]
pub struct PushMessage {
    pub event: String,
    pub event_id: String,
    pub data: String,
}

/// How one send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    /// Worth another try (429, 5xx, network), after `retry_after` if FCM said.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The device token is no longer valid: forget it.
    Unregistered,
    /// FCM refused this message for good (e.g. 400); retrying cannot help.
    Rejected(String),
}

/// Why the client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("{0}")]
    Key(jsonwebtoken::errors::Error),
    #[error(transparent)]
    Https(#[from] HttpsError),
}

/// Why no access token could be had; the send is tried again later.
#[derive(Debug, thiserror::Error)]
enum SignInError {
    #[error("{0}")]
    Sign(jsonwebtoken::errors::Error),
    #[error("token endpoint unreachable: {0}")]
    Unreachable(HttpsError),
    #[error("token endpoint answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("token endpoint answered an unexpected body: {0}")]
    Unexpected(serde_json::Error),
}

/// Sends through FCM HTTP v1.
pub struct FcmClient {
    http: https::Client,
    config: FcmConfig,
    key: jsonwebtoken::EncodingKey,
    token: Mutex<Option<(String, Instant)>>,
}

impl FcmClient {
    pub fn new(config: FcmConfig) -> Result<Self, FcmError> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(config.account.private_key.as_bytes())
            .map_err(FcmError::Key)?;
        let http = https::Client::new()?;
        Ok(Self {
            http,
            config,
            key,
            token: Mutex::new(None),
        })
    }

    /// Sends `message` to one device.
    pub async fn send(&self, device: &str, message: &PushMessage) -> SendOutcome {
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(reason) => return retry(reason.to_string(), None),
        };
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.config.endpoint, self.config.project_id
        );
        let body = serde_json::to_vec(&body(device, message)).expect("serializable");
        let bearer = format!("Bearer {token}");
        let answer = self
            .http
            .post(&url, Some(&bearer), "application/json", body.into())
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return retry(format!("FCM unreachable: {e}"), None),
        };
        if (200..300).contains(&answer.status) {
            return SendOutcome::Sent;
        }
        if answer.status == 401 {
            // Our access token was refused: sign in again on the next try.
            *self.token.lock().await = None;
        }
        let text = String::from_utf8_lossy(&answer.body);
        classify(answer.status, &text, answer.retry_after)
    }

    /// A valid access token, signing in again when the cached one is about to expire.
    async fn access_token(&self) -> Result<String, SignInError> {
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + RENEW_BEFORE < *expires
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.sign_in().await?;
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// The OAuth 2.0 JWT-bearer grant (RFC 7523) Google uses for service accounts.
    async fn sign_in(&self) -> Result<(String, Duration), SignInError> {
        let account = &self.config.account;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = json!({
            "iss": account.client_email,
            "scope": SCOPE,
            "aud": self.config.token_url,
            "iat": now,
            "exp": now + 3600,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = account.private_key_id.clone();
        let assertion =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(SignInError::Sign)?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let answer = self
            .http
            .post(
                &self.config.token_url,
                None,
                "application/x-www-form-urlencoded",
                form.into(),
            )
            .await
            .map_err(SignInError::Unreachable)?;
        let text = String::from_utf8_lossy(&answer.body);
        if !(200..300).contains(&answer.status) {
            return Err(SignInError::Refused {
                status: answer.status,
                body: text.into_owned(),
            });
        }
        #[derive(Deserialize)]
        struct Grant {
            access_token: String,
            expires_in: u64,
        }
        let grant: Grant = serde_json::from_str(&text).map_err(SignInError::Unexpected)?;
        Ok((grant.access_token, Duration::from_secs(grant.expires_in)))
    }
}

fn retry(reason: String, retry_after: Option<Duration>) -> SendOutcome {
    SendOutcome::Retry {
        reason,
        retry_after,
    }
}

/// The `messages:send` body: a data message (all values strings, as FCM
/// requires), high priority on Android so it wakes the app.
fn body(device: &str, message: &PushMessage) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    data.insert("herald_event".into(), message.event.clone().into());
    data.insert("herald_event_id".into(), message.event_id.clone().into());
    if message.data.len() <= MAX_DATA_BYTES {
        data.insert("herald_data".into(), message.data.clone().into());
    } else {
        data.insert("herald_truncated".into(), "true".into());
    }
    json!({
        "message": {
            "token": device,
            "data": data,
            "android": { "priority": "high" },
            "apns": { "headers": { "apns-priority": "10" } },
        }
    })
}

/// Reads an FCM error answer: its HTTP status and the `errorCode` of the
/// `FcmError` detail, when there is one.
fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> SendOutcome {
    let error_code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["details"]
                .as_array()?
                .iter()
                .find_map(|d| d["errorCode"].as_str().map(str::to_owned))
        });
    match (status, error_code.as_deref()) {
        (_, Some("UNREGISTERED" | "SENDER_ID_MISMATCH")) => SendOutcome::Unregistered,
        (401 | 429 | 500..=599, _) => retry(format!("FCM answered {status}"), retry_after),
        _ => {
            let detail = error_code.unwrap_or_else(|| body.chars().take(200).collect());
            SendOutcome::Rejected(format!("FCM answered {status}: {detail}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fcm_error(code: u16, status: &str, error_code: &str) -> String {
        json!({"error": {"code": code, "status": status, "message": "x", "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}
        ]}})
        .to_string()
    }

    #[test]
    fn fcm_answers_map_to_outcomes() {
        let unregistered = fcm_error(404, "NOT_FOUND", "UNREGISTERED");
        assert_eq!(
            classify(404, &unregistered, None),
            SendOutcome::Unregistered
        );
        let quota = fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED");
        let after = Some(Duration::from_secs(7));
        assert!(
            matches!(classify(429, &quota, after), SendOutcome::Retry { retry_after, .. } if retry_after == after)
        );
        assert!(matches!(
            classify(503, "<html>", None),
            SendOutcome::Retry { .. }
        ));
        assert!(matches!(classify(401, "", None), SendOutcome::Retry { .. }));
        let invalid = fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT");
        assert!(
            matches!(classify(400, &invalid, None), SendOutcome::Rejected(r) if r.contains("INVALID_ARGUMENT"))
        );
        assert!(matches!(
            classify(403, "garbage", None),
            SendOutcome::Rejected(_)
        ));
    }

    #[test]
    fn large_events_go_without_their_data() {
        let small = PushMessage {
            event: "message".into(),
            event_id: "e1".into(),
            data: "hi".into(),
        };
        let b = body("dev", &small);
        assert_eq!(b["message"]["token"], "dev");
        assert_eq!(b["message"]["data"]["herald_data"], "hi");
        let large = PushMessage {
            data: "x".repeat(MAX_DATA_BYTES + 1),
            ..small
        };
        let b = body("dev", &large);
        assert_eq!(b["message"]["data"]["herald_truncated"], "true");
        assert!(b["message"]["data"].get("herald_data").is_none());
    }
}
