//! Minting client tokens the way an application's auth service would.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Claims as Herald reads them.
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
}

/// `aud` as one string or an array, both of which RFC 7519 allows.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Claims {
    /// Claims for `sub`, valid for an hour.
    pub fn new(sub: &str) -> Self {
        Self {
            sub: sub.to_owned(),
            exp: now() + 3600,
            nbf: None,
            aud: None,
            iss: None,
            topics: Vec::new(),
        }
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

    /// Not valid before `nbf`, seconds since the epoch.
    pub fn not_before(mut self, nbf: u64) -> Self {
        self.nbf = Some(nbf);
        self
    }

    pub fn topics(mut self, topics: &[&str]) -> Self {
        self.topics = topics.iter().map(|t| t.to_string()).collect();
        self
    }

    pub fn expires_at(mut self, exp: u64) -> Self {
        self.exp = exp;
        self
    }

    /// Signs with an HS256 secret.
    pub fn hs256(&self, secret: &str) -> String {
        self.sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
    }

    /// Signs with `alg` and a private key in PEM.
    pub fn sign_pem(&self, alg: Algorithm, pem: &[u8]) -> String {
        let key = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                EncodingKey::from_rsa_pem(pem)
            }
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            other => panic!("no PEM signing for {other:?}"),
        }
        .expect("test key parses");
        self.sign(alg, &key)
    }

    fn sign(&self, alg: Algorithm, key: &EncodingKey) -> String {
        jsonwebtoken::encode(&Header::new(alg), self, key).expect("token encodes")
    }
}
