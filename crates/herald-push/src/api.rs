//! The device registration API (HTTP/1.1 and h2c), for the app's backend:
//!
//! - `PUT /v1/devices/{user}` with `{"token": "..."}`: register a device.
//! - `DELETE /v1/devices/{user}` with `{"token": "..."}`: forget one.
//! - `GET /v1/devices/{user}`: `{"tokens": [...]}`, oldest first.
//!
//! `{user}` is percent-encoded. Errors are JSON `{"error", "message"}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::api_token::{ApiToken, Verdict};
use herald_core::listener::Listener;
use herald_core::serve::Http;
use herald_domain::subject::{IdError, UserId};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::devices::{DevicesError, MAX_TOKEN_LEN, Registry};

/// Largest request body read.
const MAX_BODY: usize = MAX_TOKEN_LEN + 1024;
const PREFIX: &str = "/v1/devices/";

struct Api {
    devices: Registry,
    api_token: ApiToken,
    /// A body must arrive within this (the listener's header timeout).
    body_timeout: Duration,
}

/// Serves the API on `listener` (through TLS with `tls`) until `shutdown`;
/// the listener bounds every connection (see [`herald_core::serve`]).
pub async fn serve(
    listener: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    devices: Registry,
    api_token: ApiToken,
    shutdown: CancellationToken,
) {
    let body_timeout = listener.bounds().header_timeout;
    let api = Arc::new(Api {
        devices,
        api_token,
        body_timeout,
    });
    let http = Http::auto(&listener);
    let service = || {
        let api = api.clone();
        service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(req).await) }
        })
    };
    herald_core::serve::serve(listener, http, tls, service, shutdown.cancelled()).await
}

type Answer = Response<Full<Bytes>>;

/// Why a call is refused; each reason has its status and error code.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("send `Authorization: Bearer <api token>`")]
    Unauthorized,
    #[error("no such resource; use {PREFIX}{{user}}")]
    NotFound,
    #[error("use GET, PUT or DELETE")]
    MethodNotAllowed,
    #[error("the user id is not UTF-8 once decoded")]
    UserNotUtf8,
    #[error("{0}")]
    BadUser(#[from] IdError),
    #[error("the body must arrive within {0:?}")]
    SlowBody(Duration),
    #[error("the body must be at most {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("expected {{\"token\": \"...\"}}: {0}")]
    BadBody(serde_json::Error),
    #[error(transparent)]
    Devices(#[from] DevicesError),
}

impl Refusal {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::UserNotUtf8 | Self::BadUser(_) => (StatusCode::BAD_REQUEST, "invalid_user"),
            Self::SlowBody(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            Self::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::BadBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            Self::Devices(DevicesError::BadToken) => (StatusCode::BAD_REQUEST, "invalid_token"),
            Self::Devices(DevicesError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        }
    }

    fn answer(&self) -> Answer {
        let (status, error) = self.status_and_code();
        reply(
            status,
            &json!({"error": error, "message": self.to_string()}),
        )
    }
}

impl Api {
    async fn handle(&self, request: Request<Incoming>) -> Answer {
        match self.route(request).await {
            Ok(answer) => answer,
            Err(refusal) => refusal.answer(),
        }
    }

    async fn route(&self, request: Request<Incoming>) -> Result<Answer, Refusal> {
        self.authorize(&request)?;
        let user = user_in_path(request.uri().path())?;
        let method = request.method().clone();
        match method {
            Method::GET => {
                let tokens = self.devices.list(&user).await?;
                Ok(reply(StatusCode::OK, &json!({ "tokens": tokens })))
            }
            Method::PUT | Method::DELETE => {
                let token = token_in_body(request.into_body(), self.body_timeout).await?;
                if method == Method::PUT {
                    self.devices.add(&user, &token).await?;
                } else {
                    self.devices.remove(&user, &token).await?;
                }
                Ok(Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::default())
                    .expect("valid response"))
            }
            _ => Err(Refusal::MethodNotAllowed),
        }
    }

    fn authorize(&self, request: &Request<Incoming>) -> Result<(), Refusal> {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.api_token.verdict(authorization) {
            Verdict::Allowed => Ok(()),
            Verdict::Missing | Verdict::Wrong => Err(Refusal::Unauthorized),
        }
    }
}

fn user_in_path(path: &str) -> Result<UserId, Refusal> {
    let encoded = path
        .strip_prefix(PREFIX)
        .filter(|rest| !rest.contains('/'))
        .ok_or(Refusal::NotFound)?;
    let raw = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| Refusal::UserNotUtf8)?;
    Ok(UserId::parse(&raw)?)
}

async fn token_in_body(body: Incoming, timeout: Duration) -> Result<String, Refusal> {
    let read = tokio::time::timeout(timeout, Limited::new(body, MAX_BODY).collect());
    let bytes = read
        .await
        .map_err(|_| Refusal::SlowBody(timeout))?
        .map_err(|_| Refusal::BodyTooLarge)?;
    #[derive(serde::Deserialize)]
    struct Body {
        token: String,
    }
    let body: Body = serde_json::from_slice(&bytes.to_bytes()).map_err(Refusal::BadBody)?;
    Ok(body.token)
}

fn reply(status: StatusCode, body: &serde_json::Value) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}
