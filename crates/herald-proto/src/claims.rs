//! The claims of a client token, part of the SSE API's contract: what an
//! application's auth service signs and the edge verifies. One definition
//! for the edge, which reads them, and for `herald token`, herald-bench and
//! the tests, which mint them. Signing and verifying stay with them, so
//! this module needs serde alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How long a token from [`Claims::new`] lives: `herald token --ttl`'s
/// default too.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Claims Herald reads from a client token. Optional claims are left out
/// of a minted token when unset, as an issuer would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch; the stream closes then.
    pub exp: u64,
    /// Not before, seconds since the epoch, if the issuer set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Whom the token is for; the edge checks it against `--jwt-audience`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Who issued the token; the edge checks it against `--jwt-issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Topics the holder may follow; an entry ending in `*` is a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
}

/// RFC 7519 lets `aud` be one string or an array of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// Whether the token is meant for `audience`.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

impl Claims {
    /// Claims for `sub` alone, valid for [`DEFAULT_TTL`] from now.
    pub fn new(sub: impl Into<String>) -> Self {
        Self {
            sub: sub.into(),
            exp: 0,
            nbf: None,
            aud: None,
            iss: None,
            topics: Vec::new(),
        }
        .valid_for(DEFAULT_TTL)
    }

    /// Whether the claims let the holder follow `topic`.
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => allowed == topic,
            })
    }

    /// Expires `ttl` from now.
    pub fn valid_for(self, ttl: Duration) -> Self {
        self.expires_at(now().saturating_add(ttl.as_secs()))
    }

    /// Expires at `exp`, seconds since the epoch.
    pub fn expires_at(mut self, exp: u64) -> Self {
        self.exp = exp;
        self
    }

    /// Not valid before `nbf`, seconds since the epoch.
    pub fn not_before(mut self, nbf: u64) -> Self {
        self.nbf = Some(nbf);
        self
    }

    /// `aud` as one string.
    pub fn audience(mut self, aud: &str) -> Self {
        self.aud = Some(Audience::One(aud.to_owned()));
        self
    }

    /// `aud` as an array.
    pub fn audiences(mut self, auds: &[&str]) -> Self {
        self.aud = Some(Audience::Many(auds.iter().map(|a| a.to_string()).collect()));
        self
    }

    pub fn issuer(mut self, iss: &str) -> Self {
        self.iss = Some(iss.to_owned());
        self
    }

    /// The topics the holder may follow (a trailing `*` is a prefix).
    pub fn topics<T: AsRef<str>>(mut self, topics: &[T]) -> Self {
        self.topics = topics.iter().map(|t| t.as_ref().to_owned()).collect();
        self
    }
}

/// Seconds since the epoch (0 on a clock before it).
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_claims_are_left_out_and_read_back_as_unset() {
        let minimal = Claims::new("alice").expires_at(7);
        let json = serde_json::to_value(&minimal).unwrap();
        assert_eq!(json, serde_json::json!({"sub": "alice", "exp": 7}));
        let full = minimal
            .clone()
            .not_before(3)
            .audiences(&["herald"])
            .issuer("https://id.example/")
            .topics(&["news", "room.*"]);
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(serde_json::from_str::<Claims>(&json).unwrap(), full);
        let read: Claims = serde_json::from_str(r#"{"sub":"alice","exp":7}"#).unwrap();
        assert_eq!(read, minimal);
    }

    #[test]
    fn new_claims_live_the_default_ttl() {
        let claims = Claims::new("alice");
        let ttl = claims.exp.saturating_sub(now());
        assert!(
            (DEFAULT_TTL.as_secs() - 5..=DEFAULT_TTL.as_secs()).contains(&ttl),
            "{ttl}"
        );
    }

    #[test]
    fn topics_match_exactly_or_by_prefix() {
        let claims = Claims::new("a").topics(&["news", "room.42.*"]);
        assert!(claims.allows_topic("news"));
        assert!(!claims.allows_topic("news2"));
        assert!(claims.allows_topic("room.42.chat"));
        assert!(!claims.allows_topic("room.43.chat"));
        assert!(!Claims::new("a").allows_topic("news"));
    }
}
