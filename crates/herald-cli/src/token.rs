//! HS256 client tokens as the edge reads them, minted by `herald token`
//! and by `herald subscribe --jwt-secret` (afresh for each connection).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a minted token says.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    /// The user id.
    pub sub: &'a str,
    /// Topics the holder may follow (a trailing `*` is a prefix).
    pub topics: &'a [String],
    /// For an edge started with `--jwt-audience`.
    pub aud: Option<&'a str>,
    /// For an edge started with `--jwt-issuer`.
    pub iss: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Wire<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    topics: &'a [String],
}

impl Claims<'_> {
    /// A token signed with `secret`, valid for `ttl` from now.
    pub fn mint(&self, secret: &str, ttl: Duration) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let wire = Wire {
            sub: self.sub,
            exp: now.saturating_add(ttl.as_secs()),
            aud: self.aud,
            iss: self.iss,
            topics: self.topics,
        };
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &wire,
            &key,
        )?)
    }
}
