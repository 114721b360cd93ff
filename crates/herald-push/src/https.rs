//! The HTTPS client FCM and the token endpoint are reached with: hyper's
//! pooled client over rustls (ring, Mozilla's roots built in, so a slim
//! container image needs no CA bundle), HTTP/2 where the server offers it.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Longest time one call may take, answer body included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer body read.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
    #[error("bad request to {url}: {error}")]
    Request { url: String, error: http::Error },
    #[error("{0}")]
    Call(#[from] hyper_util::client::legacy::Error),
    #[error("{0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// What a server answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After`, when given in seconds.
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// A pooled HTTPS (and plain HTTP, for local endpoints) client.
#[derive(Clone)]
pub struct Client {
    pool: Pool<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    pub fn new() -> Result<Self, HttpsError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(HttpsError::Setup)?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(Self {
            pool: Pool::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// POSTs `body` as `content_type`, with `authorization` if given.
    pub async fn post(
        &self,
        url: &str,
        authorization: Option<&str>,
        content_type: &str,
        body: Bytes,
    ) -> Result<Answer, HttpsError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|error| HttpsError::Request {
                url: url.to_owned(),
                error,
            })?;
        let call = async {
            let response = self.pool.request(request).await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse().ok())
                .map(Duration::from_secs);
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(HttpsError::Body)?
                .to_bytes();
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| HttpsError::TimedOut(TIMEOUT))?
    }
}
