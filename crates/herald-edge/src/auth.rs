//! Client authentication: a JWT from the `Authorization: Bearer` header,
//! the `herald_token` cookie or the `access_token` query parameter.

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

/// Claims Herald reads from a client token.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch; the stream closes then.
    pub exp: u64,
    /// Topics the holder may follow; an entry ending in `*` is a prefix.
    #[serde(default)]
    pub topics: Vec<String>,
}

impl Claims {
    /// Whether the claim lets the holder follow `topic`.
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => allowed == topic,
            })
    }
}

/// Why a request was not authenticated; each maps to a 401 code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no token: send `Authorization: Bearer <jwt>`, the `herald_token` cookie or `access_token`"
    )]
    Missing,
    #[error("token expired; fetch a new one and reconnect")]
    Expired,
    #[error("token signed with {0:?}, which this edge does not accept")]
    Algorithm(Algorithm),
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// Machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Expired => "token_expired",
            Self::Algorithm(_) | Self::Invalid(_) => "invalid_token",
        }
    }
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} holds no RSA, EC (P-256/P-384) or Ed25519 public key in PEM")]
    Unrecognised(String),
}

/// Verifies client tokens against the configured keys.
pub struct Authenticator {
    /// HS256 secret, if configured.
    secret: Option<DecodingKey>,
    /// Public key and the algorithms it verifies, if configured.
    public: Option<(DecodingKey, &'static [Algorithm])>,
}

impl Authenticator {
    /// From an HS256 secret and/or a public key PEM; at least one is required
    /// (the config checks that).
    pub fn new(secret: Option<&[u8]>, public_pem: Option<(&str, &[u8])>) -> Result<Self, KeyError> {
        let public = match public_pem {
            None => None,
            Some((path, pem)) => {
                Some(public_key(pem).ok_or_else(|| KeyError::Unrecognised(path.to_owned()))?)
            }
        };
        Ok(Self {
            secret: secret.map(DecodingKey::from_secret),
            public,
        })
    }

    /// Loads the public key from a PEM file.
    pub fn read_pem(path: &str) -> Result<Vec<u8>, KeyError> {
        std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })
    }

    /// Finds and verifies the request's token.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Claims, AuthError> {
        let token = find_token(headers, query).ok_or(AuthError::Missing)?;
        self.verify(&token)
    }

    /// Verifies one token: signature, algorithm, `exp` and `sub`.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let key = self
            .key_for(header.alg)
            .ok_or(AuthError::Algorithm(header.alg))?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(AuthError::Expired)
            }
            Err(e) => Err(AuthError::Invalid(e.to_string())),
        }
    }

    fn key_for(&self, alg: Algorithm) -> Option<&DecodingKey> {
        if alg == Algorithm::HS256 {
            return self.secret.as_ref();
        }
        let (key, algs) = self.public.as_ref()?;
        algs.contains(&alg).then_some(key)
    }
}

/// Recognises the key type of a public key PEM.
fn public_key(pem: &[u8]) -> Option<(DecodingKey, &'static [Algorithm])> {
    const RSA: &[Algorithm] = &[
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];
    const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
    const ED: &[Algorithm] = &[Algorithm::EdDSA];
    let text = std::str::from_utf8(pem).ok()?;
    if text.contains("BEGIN RSA PUBLIC KEY") {
        return DecodingKey::from_rsa_pem(pem).ok().map(|k| (k, RSA));
    }
    // An SPKI `PUBLIC KEY` block may hold any of the three; try each.
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Some((k, ED));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Some((k, EC));
    }
    DecodingKey::from_rsa_pem(pem).ok().map(|k| (k, RSA))
}

/// Header first, then cookie, then query: the order of how deliberate each is.
fn find_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    let cookie = || {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == "herald_token")
            .map(|(_, value)| value.to_owned())
    };
    let query = || {
        form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    };
    bearer
        .or_else(cookie)
        .or_else(query)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn auth() -> Authenticator {
        Authenticator::new(Some(b"s3cret"), None).unwrap()
    }

    #[test]
    fn finds_token_in_header_cookie_and_query_in_that_order() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            find_token(&headers, Some("access_token=q")),
            Some("q".into())
        );
        headers.insert("cookie", "a=1; herald_token=c; b=2".parse().unwrap());
        assert_eq!(
            find_token(&headers, Some("access_token=q")),
            Some("c".into())
        );
        headers.insert("authorization", "Bearer h".parse().unwrap());
        assert_eq!(
            find_token(&headers, Some("access_token=q")),
            Some("h".into())
        );
        assert_eq!(
            find_token(&HeaderMap::new(), Some("topic=x&access_token=")),
            None
        );
        assert_eq!(find_token(&HeaderMap::new(), None), None);
    }

    #[test]
    fn accepts_a_good_token() {
        let token = sign(
            serde_json::json!({"sub": "alice", "exp": now() + 60, "topics": ["news"]}),
            "s3cret",
        );
        let claims = auth().verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.topics, vec!["news"]);
    }

    #[test]
    fn rejects_hostile_tokens() {
        let a = auth();
        let expired = sign(
            serde_json::json!({"sub": "alice", "exp": now() - 60}),
            "s3cret",
        );
        assert!(matches!(a.verify(&expired), Err(AuthError::Expired)));
        let wrong_key = sign(
            serde_json::json!({"sub": "alice", "exp": now() + 60}),
            "other",
        );
        assert!(matches!(a.verify(&wrong_key), Err(AuthError::Invalid(_))));
        let no_exp = sign(serde_json::json!({"sub": "alice"}), "s3cret");
        assert!(matches!(a.verify(&no_exp), Err(AuthError::Invalid(_))));
        let no_sub = sign(serde_json::json!({"exp": now() + 60}), "s3cret");
        assert!(matches!(a.verify(&no_sub), Err(AuthError::Invalid(_))));
        for garbage in [
            "",
            "a.b.c",
            "....",
            &"x".repeat(100_000),
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
        ] {
            assert!(a.verify(garbage).is_err(), "{garbage:.20}");
        }
    }

    #[test]
    fn a_secret_alone_refuses_public_key_algorithms() {
        // alg=RS256 header on an HMAC-only edge: the classic confusion attack.
        let header = Header::new(Algorithm::RS256);
        let body = serde_json::json!({"sub": "alice", "exp": now() + 60});
        let forged = format!(
            "{}.{}.sig",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(&body).unwrap())
        );
        assert!(matches!(
            auth().verify(&forged),
            Err(AuthError::Algorithm(Algorithm::RS256))
        ));
    }

    fn b64(bytes: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn topic_claims_match_exactly_or_by_prefix() {
        let claims = Claims {
            sub: "a".into(),
            exp: 0,
            topics: vec!["news".into(), "room.42.*".into()],
        };
        assert!(claims.allows_topic("news"));
        assert!(!claims.allows_topic("news2"));
        assert!(claims.allows_topic("room.42.chat"));
        assert!(!claims.allows_topic("room.43.chat"));
        let none = Claims {
            topics: vec![],
            ..claims
        };
        assert!(!none.allows_topic("news"));
    }

    #[test]
    fn unrecognised_pem_is_refused() {
        assert!(matches!(
            Authenticator::new(None, Some(("k.pem", b"not a key"))),
            Err(KeyError::Unrecognised(_))
        ));
    }
}
