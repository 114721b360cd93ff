//! Errors answered to clients as JSON `{"error": "...", "message": "..."}`.

use bytes::Bytes;
use http::{Response, StatusCode, header};

use crate::metrics::RejectReason;
use crate::server::Body;

/// A refused request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
    /// Seconds for `Retry-After` on 503.
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

    pub fn unavailable(
        code: &'static str,
        message: impl ToString,
        retry_after: u64,
        reject: RejectReason,
    ) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message, reject)
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut response = Response::new(crate::server::full(Bytes::from(body.to_string())));
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
