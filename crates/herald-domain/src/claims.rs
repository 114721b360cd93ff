//! A client token's claims: what an application's auth service signs and
//! the edge verifies (part of the SSE API's contract), and the rules they
//! must meet once the signature verifies: audience, issuer and time
//! window. One definition for the edge, which reads them, and for `herald
//! token`, herald-bench and the tests, which mint them. Pure code (serde
//! alone), so the fuzz targets and property tests check exactly what the
//! edge runs; signing and verifying stay with the callers.

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
    /// Issued at, seconds since the epoch: a revocation refuses tokens
    /// issued before it (and tokens without `iat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
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
            iat: Some(now()),
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

/// Most clock skew `exp` is ever given, whatever `--jwt-leeway` says: more
/// would accept tokens whose stream the edge closes at once (a stream ends
/// at `exp`), so a client would reconnect in a loop with its dead token.
pub const MAX_EXP_LEEWAY_SECS: u64 = 5;

/// Why signed claims are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("token expired; fetch a new one and reconnect")]
    Expired,
    #[error(
        "token not valid yet: its `nbf` is {ahead}s ahead of this edge's clock (leeway {leeway}s); check the issuer's clock"
    )]
    NotYetValid { ahead: u64, leeway: u64 },
    #[error("token has no `aud` claim; this edge requires its audience (--jwt-audience)")]
    NoAudience,
    #[error("token's `aud` does not include this edge's audience (--jwt-audience)")]
    WrongAudience,
    #[error("token has no `iss` claim; this edge requires its issuer (--jwt-issuer)")]
    NoIssuer,
    #[error("token's `iss` is not this edge's issuer (--jwt-issuer)")]
    WrongIssuer,
}

/// What a verified token must also say; from `--jwt-audience`,
/// `--jwt-issuer` and `--jwt-leeway`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Required `aud` entry; `None` accepts any `aud` or none.
    pub audience: Option<String>,
    /// Required `iss`; `None` accepts any `iss` or none.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `nbf`, in seconds; `exp` gets at most
    /// [`MAX_EXP_LEEWAY_SECS`] of it.
    pub leeway: u64,
}

impl Rules {
    /// Checks `claims` at `now` (seconds since the epoch). Time first: an
    /// expired token is reported as expired, which tells the client to
    /// fetch a new one, whatever else is wrong with it.
    pub fn check(&self, claims: &Claims, now: u64) -> Result<(), ClaimError> {
        if claims.exp.saturating_add(self.exp_leeway()) < now {
            return Err(ClaimError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && nbf > now.saturating_add(self.leeway)
        {
            return Err(ClaimError::NotYetValid {
                ahead: nbf - now,
                leeway: self.leeway,
            });
        }
        if let Some(want) = &self.audience {
            match &claims.aud {
                None => return Err(ClaimError::NoAudience),
                Some(aud) if !aud.contains(want) => return Err(ClaimError::WrongAudience),
                Some(_) => {}
            }
        }
        if let Some(want) = &self.issuer {
            match &claims.iss {
                None => return Err(ClaimError::NoIssuer),
                Some(iss) if iss != want => return Err(ClaimError::WrongIssuer),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Skew tolerated on `exp`.
    pub fn exp_leeway(&self) -> u64 {
        self.leeway.min(MAX_EXP_LEEWAY_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;

    fn claims(json: serde_json::Value) -> Claims {
        serde_json::from_value(json).unwrap()
    }

    fn rules(audience: Option<&str>, issuer: Option<&str>) -> Rules {
        Rules {
            audience: audience.map(str::to_owned),
            issuer: issuer.map(str::to_owned),
            leeway: 30,
        }
    }

    #[test]
    fn audience_is_one_string_or_an_array_containing_it() {
        let r = rules(Some("herald"), None);
        let exp = NOW + 60;
        let check = |aud: serde_json::Value| {
            r.check(
                &claims(serde_json::json!({"sub": "a", "exp": exp, "aud": aud})),
                NOW,
            )
        };
        assert_eq!(check("herald".into()), Ok(()));
        assert_eq!(check(serde_json::json!(["other", "herald"])), Ok(()));
        assert_eq!(check("other".into()), Err(ClaimError::WrongAudience));
        assert_eq!(check("Herald".into()), Err(ClaimError::WrongAudience));
        assert_eq!(check("herald ".into()), Err(ClaimError::WrongAudience));
        assert_eq!(
            check(serde_json::json!(["other"])),
            Err(ClaimError::WrongAudience)
        );
        assert_eq!(check(serde_json::json!([])), Err(ClaimError::WrongAudience));
        assert_eq!(
            r.check(&claims(serde_json::json!({"sub": "a", "exp": exp})), NOW),
            Err(ClaimError::NoAudience)
        );
        // Without --jwt-audience any aud (or none) is accepted.
        let open = rules(None, None);
        assert_eq!(
            open.check(
                &claims(serde_json::json!({"sub": "a", "exp": exp, "aud": "x"})),
                NOW
            ),
            Ok(())
        );
    }

    #[test]
    fn a_malformed_aud_does_not_deserialize() {
        for aud in [
            serde_json::json!(5),
            serde_json::json!({"a": 1}),
            serde_json::json!([1]),
        ] {
            let json = serde_json::json!({"sub": "a", "exp": NOW, "aud": aud});
            assert!(serde_json::from_value::<Claims>(json).is_err(), "{aud}");
        }
    }

    #[test]
    fn issuer_must_match_exactly() {
        let r = rules(None, Some("https://id.example.com/"));
        let with = |iss: Option<&str>| {
            let mut json = serde_json::json!({"sub": "a", "exp": NOW + 60});
            if let Some(iss) = iss {
                json["iss"] = iss.into();
            }
            r.check(&claims(json), NOW)
        };
        assert_eq!(with(Some("https://id.example.com/")), Ok(()));
        assert_eq!(
            with(Some("https://id.example.com")),
            Err(ClaimError::WrongIssuer)
        );
        assert_eq!(
            with(Some("https://evil.example/")),
            Err(ClaimError::WrongIssuer)
        );
        assert_eq!(with(None), Err(ClaimError::NoIssuer));
    }

    #[test]
    fn nbf_is_honoured_with_the_leeway() {
        let r = rules(None, None);
        let at = |nbf: u64| {
            r.check(
                &claims(serde_json::json!({"sub": "a", "exp": NOW + 600, "nbf": nbf})),
                NOW,
            )
        };
        assert_eq!(at(NOW - 10), Ok(()));
        assert_eq!(at(NOW + 30), Ok(()), "within the leeway");
        assert_eq!(
            at(NOW + 31),
            Err(ClaimError::NotYetValid {
                ahead: 31,
                leeway: 30
            })
        );
        assert!(matches!(at(u64::MAX), Err(ClaimError::NotYetValid { .. })));
    }

    #[test]
    fn exp_gets_at_most_five_seconds_of_the_leeway() {
        let at = |leeway: u64, exp: u64| {
            let r = Rules {
                leeway,
                ..Rules::default()
            };
            r.check(&claims(serde_json::json!({"sub": "a", "exp": exp})), NOW)
        };
        assert_eq!(at(30, NOW - 5), Ok(()));
        assert_eq!(at(30, NOW - 6), Err(ClaimError::Expired));
        assert_eq!(at(0, NOW), Ok(()));
        assert_eq!(at(0, NOW - 1), Err(ClaimError::Expired));
        assert_eq!(at(u64::MAX, 0), Err(ClaimError::Expired));
        assert_eq!(at(u64::MAX, u64::MAX), Ok(()));
    }

    #[test]
    fn topic_claims_match_exactly_or_by_prefix() {
        let claims = claims(serde_json::json!({
            "sub": "a", "exp": 0, "topics": ["news", "room.42.*"]
        }));
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

    fn any_claims() -> impl Strategy<Value = Claims> {
        let aud = prop_oneof![
            Just(None),
            "[a-c]{0,2}".prop_map(|a| Some(Audience::One(a))),
            proptest::collection::vec("[a-c]{0,2}", 0..4).prop_map(|a| Some(Audience::Many(a))),
        ];
        (
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            aud,
            proptest::option::of("[a-c]{0,2}"),
        )
            .prop_map(|(exp, nbf, aud, iss)| Claims {
                sub: "a".into(),
                exp,
                nbf,
                iat: None,
                aud,
                iss,
                topics: vec![],
            })
    }

    proptest! {
        /// `check` agrees with the rules written out plainly, in u128 so
        /// that no overflow can hide in the model.
        #[test]
        fn check_accepts_exactly_what_the_rules_say(
            claims in any_claims(),
            now in any::<u64>(),
            leeway in prop_oneof![0..120u64, any::<u64>()],
            audience in proptest::option::of("[a-c]{0,2}"),
            issuer in proptest::option::of("[a-c]{0,2}"),
        ) {
            let r = Rules { audience: audience.clone(), issuer: issuer.clone(), leeway };
            let (now128, exp_leeway) = (u128::from(now), u128::from(leeway.min(5)));
            let timely = u128::from(claims.exp) + exp_leeway >= now128
                && claims.nbf.is_none_or(|nbf| u128::from(nbf) <= now128 + u128::from(leeway));
            let for_us = audience.as_ref().is_none_or(|want| match &claims.aud {
                Some(Audience::One(a)) => a == want,
                Some(Audience::Many(all)) => all.contains(want),
                None => false,
            });
            let from_them = issuer.is_none_or(|want| claims.iss.as_ref() == Some(&want));
            prop_assert_eq!(r.check(&claims, now).is_ok(), timely && for_us && from_them);
        }

        /// `allows_topic` agrees with a plain model of the claim syntax.
        #[test]
        fn allows_topic_matches_the_model(
            allowed in proptest::collection::vec("[ab.]{0,3}\\*?", 0..4),
            topic in "[ab.]{0,4}",
        ) {
            let model = allowed.iter().any(|a| match a.strip_suffix('*') {
                Some(prefix) => topic.len() >= prefix.len() && topic[..prefix.len()] == *prefix,
                None => *a == topic,
            });
            let claims = Claims {
                sub: "a".into(), exp: 0, nbf: None, iat: None, aud: None, iss: None, topics: allowed,
            };
            prop_assert_eq!(claims.allows_topic(&topic), model);
        }

        /// Arbitrary JSON never panics the parse or the check.
        #[test]
        fn any_json_payload_is_safe(json in "\\PC{0,120}", now in any::<u64>()) {
            if let Ok(claims) = serde_json::from_str::<Claims>(&json) {
                let _ = Rules { audience: Some("a".into()), issuer: Some("b".into()), leeway: 30 }
                    .check(&claims, now);
            }
        }
    }

    #[test]
    fn unset_claims_are_left_out_and_read_back_as_unset() {
        let minimal = Claims {
            iat: None,
            ..Claims::new("alice").expires_at(7)
        };
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
}
