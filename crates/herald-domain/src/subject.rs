//! NATS subject naming for users and topics.
//!
//! NATS gives `.`, `*`, `>` and whitespace special meaning in subjects, so a
//! raw id such as `a.>` would subscribe to everyone. Every id is therefore
//! encoded into exactly one token of the safe alphabet `[A-Za-z0-9_-]` plus
//! `~`, the escape: each other byte of the id's UTF-8 becomes `~XX` (upper
//! case hex). `~` itself is escaped, so the mapping is injective and
//! [`decode_token`] reverses it.

use std::fmt::Write;

/// Longest user id or topic name, in bytes. Escaping at most triples the
/// length, which keeps a subject well under NATS's 4 KiB control line.
pub const MAX_ID_LEN: usize = 256;

/// Prefix of per-user live subjects.
pub const USER_PREFIX: &str = "herald.u.";
/// Prefix of per-topic live subjects.
pub const TOPIC_PREFIX: &str = "herald.t.";

/// Why an id cannot name a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes; the limit is {MAX_ID_LEN}")]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} must not contain control characters")]
    Control { kind: &'static str },
    #[error("topic must not contain whitespace or '*' (the claim wildcard)")]
    TopicSyntax,
}

/// A validated user id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

/// A validated topic name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic(String);

impl UserId {
    /// Any UTF-8 of 1..=256 bytes without control characters.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        check_common("user id", raw)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The live subject `herald.u.<token>`.
    pub fn subject(&self) -> String {
        subject(USER_PREFIX, &self.0)
    }
}

impl Topic {
    /// Like a user id, and also without whitespace or `*`, which the
    /// `topics` claim reserves as its prefix wildcard.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        check_common("topic", raw)?;
        if raw.chars().any(|c| c.is_whitespace() || c == '*') {
            return Err(IdError::TopicSyntax);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The live subject `herald.t.<token>`.
    pub fn subject(&self) -> String {
        subject(TOPIC_PREFIX, &self.0)
    }
}

fn check_common(kind: &'static str, raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if raw.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: raw.len(),
        });
    }
    if raw.chars().any(char::is_control) {
        return Err(IdError::Control { kind });
    }
    Ok(())
}

fn subject(prefix: &str, id: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + id.len() * 3);
    out.push_str(prefix);
    encode_token_into(id, &mut out);
    out
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Encodes `id` as one safe subject token (see the module docs).
pub fn encode_token(id: &str) -> String {
    let mut out = String::with_capacity(id.len() * 3);
    encode_token_into(id, &mut out);
    out
}

fn encode_token_into(id: &str, out: &mut String) {
    for &b in id.as_bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "~{b:02X}");
        }
    }
}

/// Reverses [`encode_token`]; `None` for anything it could not have made.
pub fn decode_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'~' => {
                let hex = token.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h))
                {
                    return None;
                }
                let b = u8::from_str_radix(hex, 16).ok()?;
                if is_plain(b) {
                    return None; // plain bytes are never escaped: not canonical
                }
                out.push(b);
                i += 3;
            }
            b if is_plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A token is safe when NATS cannot read it as anything but one literal token.
    fn is_safe_token(t: &str) -> bool {
        !t.is_empty()
            && t.bytes()
                .all(|b| is_plain(b) || b == b'~' || b.is_ascii_hexdigit())
    }

    #[test]
    fn hostile_ids_become_one_literal_token() {
        let hostile = [
            "a.>",
            ">",
            "*",
            "a.*",
            "alice.bob",
            " ",
            "a b",
            "\u{3000}",
            "~",
            "~41",
            "ünïcødé",
            "用户",
            "🦀",
            "a\u{200b}b",
            "%2E",
            "..",
            "herald.u.alice",
            "a\tb",
        ];
        for id in hostile {
            let token = encode_token(id);
            assert!(is_safe_token(&token), "{id:?} -> {token:?}");
            assert!(!token.contains(['.', '*', '>', ' ']), "{id:?} -> {token:?}");
            assert_eq!(decode_token(&token).as_deref(), Some(id));
        }
    }

    #[test]
    fn distinct_ids_never_share_a_subject() {
        // Pairs that a naive scheme would confuse.
        let pairs = [
            ("a.b", "a_b"),
            ("a.b", "a-b"),
            ("a~2Eb", "a.b"),
            ("~", "~7E"),
            ("a b", "a~20b"),
            ("A", "a"),
        ];
        for (x, y) in pairs {
            assert_ne!(encode_token(x), encode_token(y), "{x:?} vs {y:?}");
        }
    }

    #[test]
    fn validation_rejects_what_cannot_be_a_stream() {
        assert_eq!(UserId::parse(""), Err(IdError::Empty { kind: "user id" }));
        assert!(matches!(
            UserId::parse(&"x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong { len: 257, .. })
        ));
        assert!(UserId::parse(&"x".repeat(MAX_ID_LEN)).is_ok());
        assert!(matches!(
            UserId::parse("a\nb"),
            Err(IdError::Control { .. })
        ));
        assert!(matches!(UserId::parse("a\0"), Err(IdError::Control { .. })));
        assert!(UserId::parse("a.>").is_ok(), "hostile but encodable");
        assert_eq!(Topic::parse("news*"), Err(IdError::TopicSyntax));
        assert_eq!(Topic::parse("a b"), Err(IdError::TopicSyntax));
        assert!(Topic::parse("sports.>").is_ok());
    }

    #[test]
    fn longest_id_fits_nats_control_line() {
        let worst = "🦀".repeat(MAX_ID_LEN / 4);
        let subject = UserId::parse(&worst).unwrap().subject();
        assert!(subject.len() < 1024, "{}", subject.len());
    }

    #[test]
    fn users_and_topics_live_apart() {
        let u = UserId::parse("x").unwrap().subject();
        let t = Topic::parse("x").unwrap().subject();
        assert_eq!(u, "herald.u.x");
        assert_eq!(t, "herald.t.x");
    }

    #[test]
    fn decode_rejects_non_canonical_tokens() {
        for bad in ["~", "~4", "~41", "~2e", "~ZZ", "a.b", "a*", "~C3"] {
            assert_eq!(decode_token(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trips_and_stays_safe(id in "\\PC{0,80}") {
            let token = encode_token(&id);
            prop_assert!(token.is_empty() || is_safe_token(&token));
            prop_assert_eq!(decode_token(&token), Some(id));
        }

        #[test]
        fn injective(a in "\\PC{0,12}", b in "\\PC{0,12}") {
            prop_assume!(a != b);
            prop_assert_ne!(encode_token(&a), encode_token(&b));
        }
    }
}
