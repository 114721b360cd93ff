//! A token's claims are whatever JSON its issuer signed (an identity
//! provider signs what its clients ask for). Parsing them and checking the
//! rules (`aud`, `iss`, `nbf`, `exp`) must never panic, must accept exactly
//! what the rules say, and the whole signed verify path must agree; a topic
//! claim allows exactly its name or, ending in `*`, its prefix.
//!
//! Input: 8 bytes `now`, 1 byte leeway, 1 byte of flags (require aud, iss),
//! then `topic` NUL `claims JSON`.
#![no_main]

use herald_domain::auth::Authenticator;
use herald_domain::claims::{Audience, Claims, Rules};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-0123456789-0123456789";

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_at_checked(10) else {
        return;
    };
    let now = u64::from_le_bytes(head[..8].try_into().unwrap());
    let rules = Rules {
        audience: (head[9] & 1 != 0).then(|| "herald".to_owned()),
        issuer: (head[9] & 2 != 0).then(|| "https://id.example/".to_owned()),
        leeway: u64::from(head[8]),
    };
    let (topic, json) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let parsed = serde_json::from_value::<Claims>(value.clone()).ok();
    if let Some(claims) = &parsed {
        assert_eq!(rules.check(claims, now).is_ok(), model(&rules, claims, now));
        if let Ok(topic) = std::str::from_utf8(topic) {
            let by_claim = claims.topics.iter().any(|allowed| {
                allowed == topic
                    || allowed
                        .strip_suffix('*')
                        .is_some_and(|prefix| topic.as_bytes().starts_with(prefix.as_bytes()))
            });
            assert_eq!(claims.allows_topic(topic), by_claim);
        }
    }
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &value,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let auth = Authenticator::new(Some(SECRET), None, rules.clone()).unwrap();
    // serde would also read claims from an array (`["alice", 2]`, by field
    // order); the verify path must accept JSON objects only.
    let expected =
        value.is_object() && parsed.is_some_and(|claims| rules.check(&claims, now).is_ok());
    assert_eq!(auth.verify_at(&token, now).is_ok(), expected);
});

/// The rules written out plainly, in u128 so no overflow can hide.
fn model(rules: &Rules, claims: &Claims, now: u64) -> bool {
    let now = u128::from(now);
    let not_expired = u128::from(claims.exp) + u128::from(rules.leeway.min(5)) >= now;
    let started = claims
        .nbf
        .is_none_or(|nbf| u128::from(nbf) <= now + u128::from(rules.leeway));
    let for_us = rules
        .audience
        .as_ref()
        .is_none_or(|want| match &claims.aud {
            Some(Audience::One(one)) => one == want,
            Some(Audience::Many(many)) => many.contains(want),
            None => false,
        });
    let from_them = rules
        .issuer
        .as_ref()
        .is_none_or(|want| claims.iss.as_ref() == Some(want));
    not_expired && started && for_us && from_them
}
