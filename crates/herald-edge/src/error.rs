//! Refusals: JSON `{"error": "...", "message": "..."}`, or, for a transient
//! refusal to a client that accepts `text/event-stream`, a stream that ends
//! at once with a jittered `retry:`. An EventSource gives up for good on
//! any other status or content type; on that stream it just comes back.

use bytes::Bytes;
use http::{Response, StatusCode, header};

use crate::body::Body;
use crate::metrics::RejectReason;
use crate::sse;

/// A refused request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
    /// Seconds for `Retry-After`; set only when the refusal is transient
    /// (the same request may succeed later), which is what lets an SSE
    /// client be told to come back instead.
    pub retry_after: Option<u64>,
    /// How the refusal is counted.
    pub reject: RejectReason,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl ToString,
        reject: RejectReason,
    ) -> Self {
        Self {
            status,
            code,
            message: message.to_string(),
            retry_after: None,
            reject,
        }
    }

    pub fn bad_request(code: &'static str, message: impl ToString) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code,
            message,
            RejectReason::BadRequest,
        )
    }

    /// A refusal the client should retry after `retry_after` seconds.
    pub fn transient(
        status: StatusCode,
        code: &'static str,
        message: impl ToString,
        retry_after: u64,
        reject: RejectReason,
    ) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(status, code, message, reject)
        }
    }

    pub fn unavailable(
        code: &'static str,
        message: impl ToString,
        retry_after: u64,
        reject: RejectReason,
    ) -> Self {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        Self::transient(status, code, message, retry_after, reject)
    }

    /// The answer; `event_stream` says whether the client accepts
    /// `text/event-stream` (only transient refusals use it).
    pub fn into_response(self, event_stream: bool) -> Response<Body> {
        match self.retry_after {
            Some(secs) if event_stream => self.retry_stream(secs),
            _ => self.into_json(),
        }
    }

    /// 200 `text/event-stream`: come back in [1, 2] × `Retry-After`, so
    /// the refused clients spread out, and why; then the end.
    fn retry_stream(self, secs: u64) -> Response<Body> {
        let retry = sse::jittered(secs.saturating_mul(1000));
        sse::response(crate::body::full(sse::closing(retry, self.code)))
    }

    fn into_json(self) -> Response<Body> {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut response = Response::new(crate::body::full(Bytes::from(body.to_string())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
