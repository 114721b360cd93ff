//! A local stand-in for Google's OAuth token endpoint and the FCM HTTP v1
//! `messages:send` API: the one fake in Herald's tests, because the real
//! service is outside this network. It checks what the real one checks
//! (a JWT-bearer grant signed by the service account's key, the access
//! token, a well-formed message), records every send, and answers as a
//! test scripts it (e.g. 503 twice, then 200).

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// Private key of the test service account (also in `keys/rsa.pem`).
const PRIVATE_KEY: &str = include_str!("../keys/rsa.pem");
const PUBLIC_KEY: &str = include_str!("../keys/rsa.pub.pem");
pub const CLIENT_EMAIL: &str = "herald-push@test-project.iam.gserviceaccount.com";
pub const PROJECT: &str = "test-project";

/// What the fake answers a `messages:send` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Ok,
    /// An HTTP error without an FCM error code (e.g. 503, 500, 429).
    Status(u16),
    /// 404 with FCM error code `UNREGISTERED`.
    Unregistered,
}

/// One `messages:send` the fake received.
#[derive(Debug, Clone)]
pub struct Send {
    pub body: Value,
    pub answered: u16,
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    sends: Vec<Send>,
    grants: usize,
    issued: HashSet<String>,
    refused: Vec<String>,
}

/// The fake FCM server, on a free loopback port until dropped.
pub struct FakeFcm {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeFcm {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, &state, addr).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// Base URL, as `--fcm-endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OAuth token URL, as a service account's `token_uri`.
    pub fn token_url(&self) -> String {
        token_url(self.addr)
    }

    /// A service-account key file for this fake, written into `dir`.
    pub fn service_account(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("service-account.json");
        let account = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "test-key-1",
            "private_key": PRIVATE_KEY,
            "client_email": CLIENT_EMAIL,
            "token_uri": self.token_url(),
        });
        std::fs::write(&path, account.to_string()).unwrap();
        path
    }

    /// Queues answers for the next sends; after them, every send gets 200.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Every send received so far.
    pub fn sends(&self) -> Vec<Send> {
        self.state.lock().unwrap().sends.clone()
    }

    /// Access tokens granted so far.
    pub fn grants(&self) -> usize {
        self.state.lock().unwrap().grants
    }

    /// Why requests were refused (bad grant, bad token, bad message).
    pub fn refused(&self) -> Vec<String> {
        self.state.lock().unwrap().refused.clone()
    }
}

impl Drop for FakeFcm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn token_url(addr: SocketAddr) -> String {
    format!("http://{addr}/token")
}

async fn handle(
    request: Request<Incoming>,
    state: &Mutex<State>,
    addr: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let bearer = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let send_path = format!("/v1/projects/{PROJECT}/messages:send");
    let (status, answer) = if path == "/token" {
        grant(&body, state, addr)
    } else if path == send_path {
        send(&body, bearer, state)
    } else {
        (
            404,
            json!({"error": {"code": 404, "status": "NOT_FOUND", "message": path}}),
        )
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap()
}

/// The JWT-bearer grant: a valid RS256 assertion by the service account.
fn grant(body: &[u8], state: &Mutex<State>, addr: SocketAddr) -> (u16, Value) {
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(body).into_owned().collect();
    let mut state = state.lock().unwrap();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        state.refused.push("grant_type".into());
        return (400, json!({"error": "unsupported_grant_type"}));
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[token_url(addr)]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    let assertion = form
        .get("assertion")
        .map(String::as_str)
        .unwrap_or_default();
    let claims = match jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            state.refused.push(format!("assertion: {e}"));
            return (
                400,
                json!({"error": "invalid_grant", "error_description": e.to_string()}),
            );
        }
    };
    if claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging" {
        state.refused.push("scope".into());
        return (400, json!({"error": "invalid_scope"}));
    }
    state.grants += 1;
    let token = format!("fake-access-{}", state.grants);
    state.issued.insert(token.clone());
    (
        200,
        json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
    )
}

fn send(body: &[u8], bearer: Option<String>, state: &Mutex<State>) -> (u16, Value) {
    let mut state = state.lock().unwrap();
    if !bearer.is_some_and(|b| state.issued.contains(&b)) {
        state.refused.push("access token".into());
        return (
            401,
            json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}),
        );
    }
    let message: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let well_formed = message["message"]["token"].is_string()
        && message["message"]["data"]
            .as_object()
            .is_some_and(|data| data.values().all(Value::is_string));
    if !well_formed {
        state.refused.push(format!("message: {message}"));
        return (
            400,
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT"}}),
        );
    }
    let reply = state.script.pop_front().unwrap_or(Reply::Ok);
    let (status, answer) = match reply {
        Reply::Ok => (
            200,
            json!({"name": format!("projects/{PROJECT}/messages/{}", state.sends.len())}),
        ),
        Reply::Status(code) => (
            code,
            json!({"error": {"code": code, "status": "UNAVAILABLE", "message": "scripted"}}),
        ),
        Reply::Unregistered => (
            404,
            json!({"error": {"code": 404, "status": "NOT_FOUND", "message": "Requested entity was not found.",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}),
        ),
    };
    state.sends.push(Send {
        body: message,
        answered: status,
    });
    (status, answer)
}
