//! Refusals. Each [`Refusal`] decides its answer's status, its `error`
//! code, the reason the `rejected` metric counts and, for a transient one,
//! its `Retry-After`, in one table ([`Refusal::terms`]) that a test checks
//! against the refusal table of docs/api.md.
//!
//! The answer is JSON `{"error": "...", "message": "..."}`, or, for a
//! transient refusal to a client that accepts `text/event-stream`, a
//! stream that ends at once with a jittered `retry:`. An EventSource gives
//! up for good on any other status or content type; on that stream it
//! just comes back.

use std::time::Duration;

use bytes::Bytes;
use herald_domain::access::AccessError;
use herald_domain::auth::AuthError;
use herald_domain::claims::ClaimError;
use herald_domain::request::RequestError;
use http::{Response, StatusCode, header};

use crate::admission::AdmitError;
use crate::body::Body;
use crate::fanout::SubscribeError;
use crate::metrics::RejectReason;
use crate::resume::replay::ResumeError;
use crate::sse;

/// A refused request; variants carry what the message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// An empty, over-long or ill-formed topic.
    InvalidTopic(String),
    TooManyTopics(String),
    /// Two followed subjects whose event-id keys collide.
    SubjectCollision(String),
    /// A malformed, foreign or future event id.
    InvalidCursor(String),
    MissingToken(String),
    InvalidToken(String),
    TokenExpired(String),
    /// A token the app revoked (`Control.Revoke`).
    TokenRevoked(String),
    TopicNotAllowed(String),
    /// A page of an origin not in `--allowed-origins`.
    OriginNotAllowed,
    /// The user holds `--max-connections-per-user` streams here.
    TooManyConnections(String),
    /// The user connects faster than `--connect-rate-per-user`: come back
    /// in this many seconds.
    TooManyConnects(u64),
    /// The edge holds `--max-connections` streams.
    NodeFull(String),
    Draining,
    NatsUnavailable(String),
    HistoryUnavailable(String),
    /// NATS refused a subscription the stream needs.
    SubscriptionRefused,
    NotFound,
    MethodNotAllowed,
}

/// What a refusal answers, and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Terms {
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    pub reason: RejectReason,
    /// Seconds for `Retry-After`; set only when the refusal is transient
    /// (the same request may succeed later), which is what lets an SSE
    /// client be told to come back instead.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// Every refusal's terms: docs/api.md's table, as the edge answers it.
    pub(crate) fn terms(&self) -> Terms {
        use RejectReason as R;
        use StatusCode as S;
        let (status, code, reason, retry_after) = match self {
            Self::InvalidTopic(_) => (S::BAD_REQUEST, "invalid_topic", R::BadRequest, None),
            Self::TooManyTopics(_) => (S::BAD_REQUEST, "too_many_topics", R::BadRequest, None),
            Self::SubjectCollision(_) => (S::BAD_REQUEST, "subject_collision", R::BadRequest, None),
            Self::InvalidCursor(_) => (S::BAD_REQUEST, "invalid_cursor", R::BadRequest, None),
            Self::MissingToken(_) => (S::UNAUTHORIZED, "missing_token", R::Unauthorized, None),
            Self::InvalidToken(_) => (S::UNAUTHORIZED, "invalid_token", R::Unauthorized, None),
            Self::TokenExpired(_) => (S::UNAUTHORIZED, "token_expired", R::Unauthorized, None),
            Self::TokenRevoked(_) => (S::UNAUTHORIZED, "token_revoked", R::Unauthorized, None),
            Self::TopicNotAllowed(_) => (S::FORBIDDEN, "topic_not_allowed", R::Forbidden, None),
            Self::OriginNotAllowed => (S::FORBIDDEN, "origin_not_allowed", R::Origin, None),
            // A slot frees when one of the user's streams ends: a guess.
            Self::TooManyConnections(_) => (
                S::TOO_MANY_REQUESTS,
                "too_many_connections",
                R::UserLimit,
                Some(5),
            ),
            Self::TooManyConnects(secs) => (
                S::TOO_MANY_REQUESTS,
                "too_many_connects",
                R::ConnectRate,
                Some(*secs),
            ),
            Self::NodeFull(_) => (S::SERVICE_UNAVAILABLE, "node_full", R::NodeFull, Some(5)),
            Self::Draining => (S::SERVICE_UNAVAILABLE, "draining", R::Draining, Some(1)),
            Self::NatsUnavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "nats_unavailable",
                R::Unavailable,
                Some(2),
            ),
            Self::HistoryUnavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "history_unavailable",
                R::Unavailable,
                Some(2),
            ),
            Self::SubscriptionRefused => (
                S::SERVICE_UNAVAILABLE,
                "subscription_refused",
                R::SubscriptionRefused,
                Some(5),
            ),
            Self::NotFound => (S::NOT_FOUND, "not_found", R::BadRequest, None),
            Self::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                R::BadRequest,
                None,
            ),
        };
        Terms {
            status,
            code,
            reason,
            retry_after,
        }
    }

    /// 429 for a user over `--connect-rate-per-user`, told to come back
    /// when the next connect would be admitted.
    pub(crate) fn too_many_connects(wait: Duration) -> Self {
        Self::TooManyConnects(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// What was wrong and what to do.
    fn message(&self) -> String {
        match self {
            Self::InvalidTopic(m)
            | Self::TooManyTopics(m)
            | Self::SubjectCollision(m)
            | Self::InvalidCursor(m)
            | Self::MissingToken(m)
            | Self::InvalidToken(m)
            | Self::TokenExpired(m)
            | Self::TokenRevoked(m)
            | Self::TopicNotAllowed(m)
            | Self::TooManyConnections(m)
            | Self::NodeFull(m)
            | Self::NatsUnavailable(m)
            | Self::HistoryUnavailable(m) => m.clone(),
            Self::TooManyConnects(secs) => {
                format!("this user connects to this edge too often; retry in {secs} s")
            }
            Self::OriginNotAllowed => "this edge does not serve pages of the request's Origin; its operator lists the origins it serves in --allowed-origins (HERALD_ALLOWED_ORIGINS)".into(),
            Self::Draining => "this edge is shutting down; reconnect to another node".into(),
            Self::SubscriptionRefused => "NATS refused a subscription this stream needs (a permissions rule or a subscription limit on the edge's NATS user); retry later".into(),
            Self::NotFound => "no such endpoint; SSE streams are at GET /v1/events, the browser client at GET /herald.js, the demo page at GET /demo".into(),
            Self::MethodNotAllowed => "use GET".into(),
        }
    }

    /// The answer; `event_stream` says whether the client accepts
    /// `text/event-stream` (only transient refusals use it).
    pub(crate) fn into_response(self, event_stream: bool) -> Response<Body> {
        let terms = self.terms();
        match terms.retry_after {
            Some(secs) if event_stream => retry_stream(secs, terms.code),
            _ => self.into_json(terms),
        }
    }

    fn into_json(self, terms: Terms) -> Response<Body> {
        let body = serde_json::json!({ "error": terms.code, "message": self.message() });
        let mut response = Response::new(crate::body::full(Bytes::from(body.to_string())));
        *response.status_mut() = terms.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        if let Some(secs) = terms.retry_after {
            headers.insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if terms.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// 200 `text/event-stream`: come back in [1, 2] × `Retry-After`, so the
/// refused clients spread out, and why; then the end.
fn retry_stream(secs: u64, code: &str) -> Response<Body> {
    let retry = sse::jittered(secs.saturating_mul(1000));
    sse::response(crate::body::full(sse::closing(retry, code)))
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => Self::MissingToken(e.to_string()),
            AuthError::Claim(ClaimError::Expired) => Self::TokenExpired(e.to_string()),
            AuthError::Claim(_) | AuthError::Algorithm(_) | AuthError::Invalid(_) => {
                Self::InvalidToken(e.to_string())
            }
        }
    }
}

impl From<RequestError> for Refusal {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Topic { .. } => Self::InvalidTopic(e.to_string()),
            RequestError::TooManyTopics { .. } => Self::TooManyTopics(e.to_string()),
            RequestError::CursorNotAscii | RequestError::Cursor(_) => {
                Self::InvalidCursor(e.to_string())
            }
        }
    }
}

impl From<AccessError> for Refusal {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::TopicNotAllowed(_) => Self::TopicNotAllowed(e.to_string()),
            AccessError::SubjectCollision(..) => Self::SubjectCollision(e.to_string()),
        }
    }
}

impl From<AdmitError> for Refusal {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::NodeFull(_) => Self::NodeFull(e.to_string()),
            AdmitError::UserLimit(_) => Self::TooManyConnections(e.to_string()),
        }
    }
}

impl From<SubscribeError> for Refusal {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::Unavailable(_) => Self::NatsUnavailable(format!("{e}; retry shortly")),
            SubscribeError::Refused(_) => Self::SubscriptionRefused,
        }
    }
}

impl From<ResumeError> for Refusal {
    fn from(e: ResumeError) -> Self {
        match e {
            ResumeError::Future { .. } => Self::InvalidCursor(e.to_string()),
            ResumeError::Unavailable(_) => Self::HistoryUnavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One refusal of each kind. The match below does not compile when a
    /// kind is added, which sends whoever adds it here.
    fn one_of_each() -> Vec<Refusal> {
        let text = || String::from("why");
        let all = vec![
            Refusal::InvalidTopic(text()),
            Refusal::TooManyTopics(text()),
            Refusal::SubjectCollision(text()),
            Refusal::InvalidCursor(text()),
            Refusal::MissingToken(text()),
            Refusal::InvalidToken(text()),
            Refusal::TokenExpired(text()),
            Refusal::TokenRevoked(text()),
            Refusal::TopicNotAllowed(text()),
            Refusal::OriginNotAllowed,
            Refusal::TooManyConnections(text()),
            Refusal::TooManyConnects(3),
            Refusal::NodeFull(text()),
            Refusal::Draining,
            Refusal::NatsUnavailable(text()),
            Refusal::HistoryUnavailable(text()),
            Refusal::SubscriptionRefused,
            Refusal::NotFound,
            Refusal::MethodNotAllowed,
        ];
        for refusal in &all {
            match refusal {
                Refusal::InvalidTopic(_)
                | Refusal::TooManyTopics(_)
                | Refusal::SubjectCollision(_)
                | Refusal::InvalidCursor(_)
                | Refusal::MissingToken(_)
                | Refusal::InvalidToken(_)
                | Refusal::TokenExpired(_)
                | Refusal::TokenRevoked(_)
                | Refusal::TopicNotAllowed(_)
                | Refusal::OriginNotAllowed
                | Refusal::TooManyConnections(_)
                | Refusal::TooManyConnects(_)
                | Refusal::NodeFull(_)
                | Refusal::Draining
                | Refusal::NatsUnavailable(_)
                | Refusal::HistoryUnavailable(_)
                | Refusal::SubscriptionRefused
                | Refusal::NotFound
                | Refusal::MethodNotAllowed => {}
            }
        }
        all
    }

    /// A row of docs/api.md's refusal table: its status, its codes (one
    /// row may name several) and its "when" text.
    struct Row {
        status: u16,
        codes: Vec<String>,
        when: String,
    }

    fn documented() -> Vec<Row> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let table = doc
            .split("### Refusals")
            .nth(1)
            .expect("docs/api.md has a `### Refusals` section");
        let rows: Vec<Row> = table
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let status = cells.get(1)?.parse().ok()?;
                let codes = cells[2]
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect();
                Some(Row {
                    status,
                    codes,
                    when: cells[3].to_owned(),
                })
            })
            .collect();
        assert!(rows.len() > 10, "only {} rows read", rows.len());
        rows
    }

    #[test]
    fn every_refusal_is_answered_as_docs_api_md_says() {
        let rows = documented();
        let all = one_of_each();
        for refusal in &all {
            let terms = refusal.terms();
            let row = rows
                .iter()
                .find(|row| row.codes.iter().any(|code| code == terms.code))
                .unwrap_or_else(|| panic!("docs/api.md has no row for `{}`", terms.code));
            assert_eq!(row.status, terms.status.as_u16(), "`{}`", terms.code);
            let transient = row.when.contains("`Retry-After");
            assert_eq!(
                terms.retry_after.is_some(),
                transient,
                "`{}`: Retry-After in docs: {transient}",
                terms.code
            );
            if let Some(secs) = row.when.split("`Retry-After: ").nth(1) {
                let secs: u64 = secs.split('`').next().unwrap().parse().unwrap();
                assert_eq!(terms.retry_after, Some(secs), "`{}`", terms.code);
            }
        }
        for row in rows.iter().filter(|row| !row.codes.is_empty()) {
            for code in &row.codes {
                assert!(
                    all.iter().any(|r| r.terms().code == code),
                    "docs/api.md documents `{code}`, which the edge never answers"
                );
            }
        }
    }

    #[test]
    fn domain_errors_become_the_refusal_of_their_kind() {
        let expired: Refusal = AuthError::Claim(ClaimError::Expired).into();
        assert_eq!(expired.terms().code, "token_expired");
        let missing: Refusal = AuthError::Missing.into();
        assert_eq!(missing.terms().code, "missing_token");
        let full: Refusal = AdmitError::NodeFull(3).into();
        assert_eq!(full.terms().code, "node_full");
        let rate = Refusal::too_many_connects(Duration::from_millis(1_200));
        assert_eq!(rate.terms().retry_after, Some(2));
        let refused: Refusal = SubscribeError::Refused("s".into()).into();
        assert_eq!(refused, Refusal::SubscriptionRefused);
    }

    #[test]
    fn a_transient_refusal_tells_an_event_stream_to_come_back() {
        let answer = Refusal::Draining.into_response(true);
        assert_eq!(answer.status(), StatusCode::OK);
        let answer = Refusal::Draining.into_response(false);
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers()[header::RETRY_AFTER], "1");
        let answer = Refusal::InvalidToken("bad".into()).into_response(true);
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(answer.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
