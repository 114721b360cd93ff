//! Opening one SSE stream on an edge: the request a browser's EventSource
//! sends (`Accept: text/event-stream`, `Last-Event-ID`), the token as a
//! bearer header, and the answer sorted into what the caller does next:
//! read the stream, retry later, or give up.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::config_error::ConfigError;
use herald_nats::pem::{PemError, read_certs};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Longest wait for a connection and a response head.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest refusal body read (the edge's are a line of JSON).
const MAX_REFUSAL: usize = 16 * 1024;

/// Why no stream was opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The edge could not be reached, or broke off: try again later.
    #[error("{0}")]
    Unreachable(String),
    /// A refusal that may pass later (429, 502, 503, 504): try again, no
    /// sooner than `retry_after` when the server named it.
    #[error("{status}: {message}")]
    Busy {
        status: StatusCode,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A refusal a browser would not retry either (401, 403, 400, …, or an
    /// answer that is not an event stream).
    #[error("{status}: {message}")]
    Refused { status: StatusCode, message: String },
}

/// A pooled HTTP/1.1 and HTTP/2 client, TLS through rustls.
#[derive(Clone)]
pub(crate) struct Client {
    pool: Pool<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Client {
    /// Trusts the built-in (Mozilla) roots, or only the CA certificates in
    /// the PEM file `ca_file`.
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<Self, ConfigError> {
        let provider = rustls::crypto::ring::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca_file {
            None => builder
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| ConfigError::new("--ca-file", format!("TLS setup failed: {e}")))?,
            Some(path) => builder
                .with_tls_config(tls_config(provider, path).map_err(ConfigError::of("--ca-file"))?),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(OPEN_TIMEOUT));
        let connector = builder
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            pool: Pool::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Opens the stream at `uri`, resuming after `last_event_id` if not
    /// empty; returns its body once the edge answered 200 with an event
    /// stream.
    pub(crate) async fn open(
        &self,
        uri: &Uri,
        token: &str,
        last_event_id: &str,
    ) -> Result<Incoming, OpenError> {
        let mut request = Request::get(uri.clone())
            .header(header::ACCEPT, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if !last_event_id.is_empty() {
            request = request.header("last-event-id", last_event_id);
        }
        let request = request.body(Empty::new()).map_err(|e| OpenError::Refused {
            status: StatusCode::BAD_REQUEST,
            message: format!("cannot send this request: {e} (check --token and --last-event-id)"),
        })?;
        let response = tokio::time::timeout(OPEN_TIMEOUT, self.pool.request(request))
            .await
            .map_err(|_| OpenError::Unreachable(format!("no answer within {OPEN_TIMEOUT:?}")))?
            .map_err(|e| OpenError::Unreachable(error_chain(&e)))?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(refusal(response).await);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        if !content_type.starts_with("text/event-stream") {
            return Err(OpenError::Refused {
                status,
                message: format!(
                    "the answer is {content_type}, not text/event-stream; is --url the edge's base URL?"
                ),
            });
        }
        Ok(response.into_body())
    }
}

/// Sorts a non-200 answer, with the edge's JSON `message` (or the start of
/// whatever body a proxy sent) as the reason.
async fn refusal(response: http::Response<Incoming>) -> OpenError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .map(Duration::from_secs);
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = tokio::time::timeout(
        OPEN_TIMEOUT,
        http_body_util::Limited::new(response.into_body(), MAX_REFUSAL).collect(),
    )
    .await;
    let body = match body {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => Bytes::new(),
    };
    let mut message = reason(&body);
    if let Some(location) = location {
        message = format!("redirected to {location}; pass that as --url");
    }
    match status.as_u16() {
        429 | 502 | 503 | 504 => OpenError::Busy {
            status,
            message,
            retry_after,
        },
        _ => OpenError::Refused { status, message },
    }
}

/// `message (error)` from the edge's `{"error", "message"}`; otherwise the
/// body's first line.
fn reason(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ApiError {
        error: String,
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<ApiError>(body) {
        return format!("{} ({})", e.message, e.error);
    }
    let text = String::from_utf8_lossy(body);
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let first: String = first
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if first.is_empty() {
        "no reason given".to_owned()
    } else {
        first
    }
}

/// An error and its causes on one line: hyper's own says only "client error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why `--ca-file` cannot be trusted.
#[derive(Debug, thiserror::Error)]
enum CaError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{}: {error}", path.display())]
    Cert {
        path: std::path::PathBuf,
        error: rustls::Error,
    },
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
}

fn tls_config(
    provider: rustls::crypto::CryptoProvider,
    path: &Path,
) -> Result<rustls::ClientConfig, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|error| CaError::Cert {
            path: path.to_owned(),
            error,
        })?;
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(CaError::Setup)?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_the_edges_json_or_the_first_line() {
        assert_eq!(
            reason(br#"{"error":"token_expired","message":"token expired; fetch a new one"}"#),
            "token expired; fetch a new one (token_expired)"
        );
        assert_eq!(
            reason(b"\n<html>\x1b[31m502 Bad Gateway</html>\nmore"),
            "<html>[31m502 Bad Gateway</html>"
        );
        assert_eq!(reason(b""), "no reason given");
        assert_eq!(reason(&[b'x'; 5000]).len(), 200);
    }
}
