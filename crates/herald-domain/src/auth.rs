//! Client authentication: the JWT that [`crate::request::token`] finds in
//! the `Authorization: Bearer` header, the `herald_token` cookie or the
//! `access_token` query parameter. Its signature and algorithm are checked
//! here, then its claims against the [`Rules`] (audience, issuer, time).

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::claims::{ClaimError, Claims, Rules};

/// Why a request was not authenticated (each a 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no token: send `Authorization: Bearer <jwt>`, the `herald_token` cookie or `access_token`"
    )]
    Missing,
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error("token signed with {0:?}, which this edge does not accept")]
    Algorithm(Algorithm),
    #[error("invalid token: {0}")]
    Invalid(String),
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
    /// Audience, issuer and clock skew every token must meet.
    rules: Rules,
}

impl Authenticator {
    /// From an HS256 secret and/or a public key PEM; at least one is required
    /// (the config checks that).
    pub fn new(
        secret: Option<&[u8]>,
        public_pem: Option<(&str, &[u8])>,
        rules: Rules,
    ) -> Result<Self, KeyError> {
        let public = match public_pem {
            None => None,
            Some((path, pem)) => {
                Some(public_key(pem).ok_or_else(|| KeyError::Unrecognised(path.to_owned()))?)
            }
        };
        Ok(Self {
            secret: secret.map(DecodingKey::from_secret),
            public,
            rules,
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
        let token = crate::request::token(headers, query).ok_or(AuthError::Missing)?;
        self.verify(&token)
    }

    /// Verifies one token now: signature and algorithm here, then the
    /// claims against the [`Rules`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// [`Authenticator::verify`] at `now`, seconds since the epoch.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let key = self
            .key_for(header.alg)
            .ok_or(AuthError::Algorithm(header.alg))?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Time, audience and issuer are the Rules' to check, in one pure
        // function that tests and fuzzing reach directly.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        self.rules.check(&claims, now)?;
        Ok(claims)
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

/// Seconds since the epoch by this machine's clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "unit-test-secret-0123456789abcdef";

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        unix_now()
    }

    fn auth() -> Authenticator {
        with_rules(Rules {
            leeway: 30,
            ..Rules::default()
        })
    }

    fn with_rules(rules: Rules) -> Authenticator {
        Authenticator::new(Some(SECRET.as_bytes()), None, rules).unwrap()
    }

    #[test]
    fn accepts_a_good_token() {
        let token = sign(
            serde_json::json!({"sub": "alice", "exp": now() + 60, "topics": ["news"]}),
            SECRET,
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
            SECRET,
        );
        assert!(matches!(
            a.verify(&expired),
            Err(AuthError::Claim(ClaimError::Expired))
        ));
        let wrong_key = sign(
            serde_json::json!({"sub": "alice", "exp": now() + 60}),
            "other",
        );
        assert!(matches!(a.verify(&wrong_key), Err(AuthError::Invalid(_))));
        let no_exp = sign(serde_json::json!({"sub": "alice"}), SECRET);
        assert!(matches!(a.verify(&no_exp), Err(AuthError::Invalid(_))));
        let no_sub = sign(serde_json::json!({"exp": now() + 60}), SECRET);
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

    /// Signed tokens with `aud`, `iss` and `nbf` as an identity provider
    /// would send them: each rule is enforced on the whole verify path.
    #[test]
    fn audience_issuer_and_nbf_are_enforced_on_signed_tokens() {
        let a = with_rules(Rules {
            audience: Some("herald".into()),
            issuer: Some("https://id.example.com/".into()),
            leeway: 30,
        });
        let token = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"sub": "alice", "exp": now() + 60});
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            sign(claims, SECRET)
        };
        let iss = "https://id.example.com/";
        let ok = [
            serde_json::json!({"aud": "herald", "iss": iss}),
            serde_json::json!({"aud": ["app", "herald"], "iss": iss}),
            serde_json::json!({"aud": "herald", "iss": iss, "nbf": now() + 20}),
        ];
        for claims in ok {
            assert!(a.verify(&token(claims.clone())).is_ok(), "{claims}");
        }
        let refused = [
            (serde_json::json!({"iss": iss}), ClaimError::NoAudience),
            (
                serde_json::json!({"aud": "app", "iss": iss}),
                ClaimError::WrongAudience,
            ),
            (
                serde_json::json!({"aud": ["app"], "iss": iss}),
                ClaimError::WrongAudience,
            ),
            (serde_json::json!({"aud": "herald"}), ClaimError::NoIssuer),
            (
                serde_json::json!({"aud": "herald", "iss": "https://other/"}),
                ClaimError::WrongIssuer,
            ),
        ];
        for (claims, want) in refused {
            match a.verify(&token(claims.clone())) {
                Err(e @ AuthError::Claim(_)) => {
                    assert!(
                        matches!(e, AuthError::Claim(ref got) if *got == want),
                        "{claims}: {e}"
                    );
                }
                other => panic!("{claims}: {other:?}"),
            }
        }
        let early = token(serde_json::json!({"aud": "herald", "iss": iss, "nbf": now() + 300}));
        let err = a.verify(&early).unwrap_err();
        assert!(
            matches!(err, AuthError::Claim(ClaimError::NotYetValid { .. })),
            "{err}"
        );
        // A malformed aud is no audience at all.
        let odd = token(serde_json::json!({"aud": 5, "iss": iss}));
        assert!(matches!(a.verify(&odd), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn nbf_is_checked_even_without_audience_or_issuer() {
        let early = sign(
            serde_json::json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 120}),
            SECRET,
        );
        assert!(matches!(
            auth().verify(&early),
            Err(AuthError::Claim(ClaimError::NotYetValid { .. }))
        ));
        assert!(auth().verify_at(&early, now() + 100).is_ok());
    }

    #[test]
    fn unrecognised_pem_is_refused() {
        assert!(matches!(
            Authenticator::new(None, Some(("k.pem", b"not a key")), Rules::default()),
            Err(KeyError::Unrecognised(_))
        ));
    }

    /// A claim value of the right type or not.
    fn value() -> impl proptest::strategy::Strategy<Value = Option<serde_json::Value>> {
        use proptest::prelude::*;
        let times = prop_oneof![
            Just(1_800_000_000u64),
            1_799_999_000..1_800_001_000u64,
            any::<u64>()
        ];
        proptest::option::of(prop_oneof![
            times.prop_map(serde_json::Value::from),
            "[a-c]{0,2}".prop_map(serde_json::Value::from),
            proptest::collection::vec("[a-c]{0,2}", 0..3).prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::json!(-1)),
            Just(serde_json::json!(1.5)),
        ])
    }

    proptest::proptest! {
        /// Signed claims of any shape verify exactly when they parse and
        /// meet the rules: nothing in the signed path loosens or skips them.
        #[test]
        fn the_signed_path_agrees_with_the_rules(
            sub in value(), exp in value(), nbf in value(), aud in value(), iss in value(),
            want_aud in proptest::option::of("[a-c]{0,2}"),
            want_iss in proptest::option::of("[a-c]{0,2}"),
        ) {
            let mut object = serde_json::Map::new();
            for (name, value) in [("sub", sub), ("exp", exp), ("nbf", nbf), ("aud", aud), ("iss", iss)] {
                if let Some(value) = value {
                    object.insert(name.into(), value);
                }
            }
            let payload = serde_json::Value::Object(object);
            let rules = Rules { audience: want_aud, issuer: want_iss, leeway: 30 };
            let now = 1_800_000_000;
            let expected = serde_json::from_value::<Claims>(payload.clone())
                .is_ok_and(|claims| rules.check(&claims, now).is_ok());
            let verified = with_rules(rules).verify_at(&sign(payload, SECRET), now);
            proptest::prop_assert_eq!(verified.is_ok(), expected, "{:?}", verified.err());
        }
    }
}
