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
use herald_domain::subject::UserId;
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

impl Api {
    async fn handle(&self, request: Request<Incoming>) -> Answer {
        match self.route(request).await {
            Ok(answer) => answer,
            Err((status, error, message)) => {
                reply(status, &json!({"error": error, "message": message}))
            }
        }
    }

    async fn route(
        &self,
        request: Request<Incoming>,
    ) -> Result<Answer, (StatusCode, &'static str, String)> {
        self.authorize(&request)?;
        let user = user_in_path(request.uri().path())?;
        let method = request.method().clone();
        match method {
            Method::GET => {
                let tokens = self.devices.list(&user).await.map_err(refused)?;
                Ok(reply(StatusCode::OK, &json!({ "tokens": tokens })))
            }
            Method::PUT | Method::DELETE => {
                let token = token_in_body(request.into_body(), self.body_timeout).await?;
                if method == Method::PUT {
                    self.devices.add(&user, &token).await.map_err(refused)?;
                } else {
                    self.devices.remove(&user, &token).await.map_err(refused)?;
                }
                Ok(Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Full::default())
                    .expect("valid response"))
            }
            _ => Err((
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET, PUT or DELETE".into(),
            )),
        }
    }

    fn authorize(
        &self,
        request: &Request<Incoming>,
    ) -> Result<(), (StatusCode, &'static str, String)> {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.api_token.verdict(authorization) {
            Verdict::Allowed => Ok(()),
            Verdict::Missing | Verdict::Wrong => Err((
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send `Authorization: Bearer <api token>`".into(),
            )),
        }
    }
}

fn user_in_path(path: &str) -> Result<UserId, (StatusCode, &'static str, String)> {
    let encoded = path
        .strip_prefix(PREFIX)
        .filter(|rest| !rest.contains('/'))
        .ok_or((
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such resource; use {PREFIX}{{user}}"),
        ))?;
    let bad = |message: String| (StatusCode::BAD_REQUEST, "invalid_user", message);
    let raw = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| bad("the user id is not UTF-8 once decoded".into()))?;
    UserId::parse(&raw).map_err(|e| bad(e.to_string()))
}

async fn token_in_body(
    body: Incoming,
    timeout: Duration,
) -> Result<String, (StatusCode, &'static str, String)> {
    let read = tokio::time::timeout(timeout, Limited::new(body, MAX_BODY).collect());
    let bytes = read
        .await
        .map_err(|_| {
            (
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the body must arrive within {timeout:?}"),
            )
        })?
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body must be at most {MAX_BODY} bytes"),
            )
        })?;
    #[derive(serde::Deserialize)]
    struct Body {
        token: String,
    }
    let body: Body = serde_json::from_slice(&bytes.to_bytes()).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("expected {{\"token\": \"...\"}}: {e}"),
        )
    })?;
    Ok(body.token)
}

fn refused(e: DevicesError) -> (StatusCode, &'static str, String) {
    match e {
        DevicesError::BadToken => (StatusCode::BAD_REQUEST, "invalid_token", e.to_string()),
        DevicesError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

fn reply(status: StatusCode, body: &serde_json::Value) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}
