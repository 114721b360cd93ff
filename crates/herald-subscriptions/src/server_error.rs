//! What a server's `-ERR` means for the subscriptions (pure).
//!
//! nats-server answers a SUB it will not take with `-ERR` and keeps the
//! connection open: `Permissions Violation for Subscription to "<subject>"`
//! (with ` using queue "<q>"` for a queue group) or `maximum subscriptions
//! exceeded`. A permissions change it reloads drops subscriptions already
//! made, saying `... to "<subject>" (sid "<sid>")`. Every other `-ERR` is
//! followed by the server closing the connection.

use crate::deliver::{RefusalReason, Sid};

/// A refused subscription, as a `-ERR` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub reason: RefusalReason,
    /// The subject, when the text names it.
    pub subject: Option<String>,
    /// The subscription, when the text names it: the server dropped it on
    /// its own (a reload), rather than refusing the SUB just sent.
    pub sid: Option<Sid>,
}

const PERMISSIONS: &str = "permissions violation for subscription to ";
const MAX_SUBSCRIPTIONS: &str = "maximum subscriptions exceeded";

/// The refused subscription `text` tells of, if it tells of one.
pub(crate) fn refused(text: &str) -> Option<Refused> {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with(MAX_SUBSCRIPTIONS) {
        return Some(Refused {
            reason: RefusalReason::MaxSubscriptions,
            subject: None,
            sid: None,
        });
    }
    if !lower.starts_with(PERMISSIONS) {
        return None;
    }
    // ASCII lowering keeps byte offsets.
    let rest = &text[PERMISSIONS.len()..];
    let (subject, rest) = quoted_or_word(rest);
    let sid = rest
        .find("(sid ")
        .and_then(|at| quoted_or_word(&rest[at + "(sid ".len()..]).0)
        .and_then(|sid| sid.trim_end_matches(')').parse().ok());
    Some(Refused {
        reason: RefusalReason::Permissions,
        subject,
        sid,
    })
}

/// The first word of `text`, or its first double-quoted string; and what
/// follows it.
fn quoted_or_word(text: &str) -> (Option<String>, &str) {
    let text = text.trim_start();
    if let Some(quoted) = text.strip_prefix('"') {
        return match quoted.find('"') {
            Some(end) => (Some(quoted[..end].to_owned()), &quoted[end + 1..]),
            None => (None, ""),
        };
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    let word = &text[..end];
    ((!word.is_empty()).then(|| word.to_owned()), &text[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_nats_server_says_is_understood() {
        let refused_sub = refused(r#"Permissions Violation for Subscription to "herald.u.bad""#);
        assert_eq!(
            refused_sub,
            Some(Refused {
                reason: RefusalReason::Permissions,
                subject: Some("herald.u.bad".into()),
                sid: None,
            })
        );
        let queue = refused(r#"Permissions Violation for Subscription to "a.b" using queue "q""#);
        assert_eq!(queue.unwrap().subject.as_deref(), Some("a.b"));
        let reloaded =
            refused(r#"Permissions Violation for Subscription to "herald.t.x" (sid "17")"#)
                .unwrap();
        assert_eq!(
            (reloaded.subject.as_deref(), reloaded.sid),
            (Some("herald.t.x"), Some(17))
        );
        let unquoted = refused("Permissions Violation for Subscription to foo.bar").unwrap();
        assert_eq!(unquoted.subject.as_deref(), Some("foo.bar"));
        let limit = refused("maximum subscriptions exceeded").unwrap();
        assert_eq!(limit.reason, RefusalReason::MaxSubscriptions);
    }

    #[test]
    fn other_errors_and_hostile_texts_are_not_refusals() {
        for text in [
            "Authorization Violation",
            "Slow Consumer",
            "Permissions Violation for Publish to \"x\"",
            "",
            "Permissions Violation for Subscription to",
        ] {
            let got = refused(text);
            assert!(
                got.is_none() || got.as_ref().unwrap().subject.is_none(),
                "{text:?}: {got:?}"
            );
        }
        // Garbage where the sid goes is no sid.
        let odd = refused("Permissions Violation for Subscription to \"x\" (sid \"-1\")").unwrap();
        assert_eq!(odd.sid, None);
        let unterminated = refused("Permissions Violation for Subscription to \"x").unwrap();
        assert_eq!(unterminated.subject, None);
        // Multi-byte text never splits a character.
        assert!(refused("Ünïcödé").is_none());
    }
}
