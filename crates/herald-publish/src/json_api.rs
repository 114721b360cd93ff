//! HTTP on the gRPC port, for services and scripts without gRPC:
//! `POST /v1/publish` (a `PublishRequest` in proto3 JSON → a
//! `PublishResponse`), `POST /v1/publish:batch` (`{"requests": [...]}`
//! → `{"results": [...]}`) and the Control calls (`POST /v1/disconnect`,
//! `/v1/revoke`, `/v1/follow`, `/v1/unfollow`, `/v1/history`,
//! `/v1/topics`), behind the same API token, validation and limits as
//! gRPC. Errors are `{"error": "<code>", "message": "..."}`.

use std::sync::Arc;

use bytes::Bytes;
use herald_core::api_token::{ApiToken, Verdict};
use herald_core::grpc::HttpApi;
use herald_proto::v1::control_server::Control;
use herald_proto::{control_json, json};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tonic::{Code, Status};
use tracing::Instrument;

use crate::admin_page;
use crate::control::ControlService;
use crate::metrics::Outcome;
use crate::service::{PublishService, request_span};

/// The JSON API's paths.
pub const PUBLISH: &str = "/v1/publish";
pub const PUBLISH_BATCH: &str = "/v1/publish:batch";
const CONTROL: [&str; 8] = [
    "/v1/disconnect",
    "/v1/revoke",
    "/v1/follow",
    "/v1/unfollow",
    "/v1/history",
    "/v1/topics",
    "/v1/presence",
    "/v1/stats",
];

/// The largest Control request body: a thousand users (the most one call
/// may name) with the longest ids fit.
const MAX_CONTROL_BODY: usize = 1024 * 1024;

/// What the JSON API needs; cheap to clone.
#[derive(Clone)]
pub struct JsonApi {
    pub service: Arc<PublishService>,
    pub control: Arc<ControlService>,
    pub token: ApiToken,
}

impl HttpApi for JsonApi {
    /// Its paths, and anything over HTTP/1 (gRPC needs HTTP/2).
    fn wants(&self, request: &Request<Incoming>) -> bool {
        let path = request.uri().path();
        path == PUBLISH
            || path == PUBLISH_BATCH
            || CONTROL.contains(&path)
            || admin_page::PATHS.contains(&path)
            || request.version() < http::Version::HTTP_2
    }

    /// Answers one HTTP request; never fails (errors are JSON responses).
    async fn handle(self, request: Request<Incoming>) -> Response<tonic::body::Body> {
        let span = request_span(request.headers(), "http");
        let answer = self.answer(request).instrument(span).await;
        answer.unwrap_or_else(Refusal::into_response)
    }
}

/// A refusal, as JSON.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl ToString) -> Self {
        let message = message.to_string();
        Self {
            status,
            code,
            message,
        }
    }

    /// A gRPC status as HTTP: 400, 401, 503 (or 500 for what should not happen).
    fn of(status: &Status) -> Self {
        let (http, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, "invalid_argument")
            }
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Code::Aborted => (StatusCode::CONFLICT, "aborted"),
            Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(http, code, status.message())
    }

    fn into_response(self) -> Response<tonic::body::Body> {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut response = json_response(self.status, &body);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let retry = HeaderValue::from_static("1");
            response.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        response
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<tonic::body::Body> {
    let bytes = serde_json::to_vec(body).expect("JSON of plain structs");
    let mut response = Response::new(tonic::body::Body::new(Full::new(Bytes::from(bytes))));
    *response.status_mut() = status;
    let json = HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    response
}

impl JsonApi {
    async fn answer(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<tonic::body::Body>, Refusal> {
        let path = request.uri().path().to_owned();
        if request.method() == Method::GET
            && let Some(page) = admin_page::asset(&path)
        {
            return Ok(page);
        }
        if path != PUBLISH && path != PUBLISH_BATCH && !CONTROL.contains(&path.as_str()) {
            let message = format!(
                "no {path} here: POST {PUBLISH}, {PUBLISH_BATCH} or one of {}",
                CONTROL.join(", ")
            );
            return Err(Refusal::new(StatusCode::NOT_FOUND, "not_found", message));
        }
        if request.method() != Method::POST {
            let message = format!("{path} takes POST");
            let status = StatusCode::METHOD_NOT_ALLOWED;
            return Err(Refusal::new(status, "method_not_allowed", message));
        }
        self.authorize(&request)?;
        if CONTROL.contains(&path.as_str()) {
            let body = self.body(request, MAX_CONTROL_BODY, "").await?;
            return self.control(&path, &body).await;
        }
        // A body refused here never reaches the service, which counts the
        // rest; as a gRPC call that does not decode, it is counted here.
        let invalid = |_: &Refusal| self.service.metrics.request(Outcome::InvalidArgument);
        let max = self.service.config.max_batch_bytes;
        let body = self.body(request, max, " (--max-batch-bytes)");
        let body = body.await.inspect_err(invalid)?;
        if path == PUBLISH_BATCH {
            self.batch(&body, invalid).await
        } else {
            self.single(&body, invalid).await
        }
    }

    /// One Control call: its JSON request to the gRPC method, its answer
    /// back to JSON.
    async fn control(
        &self,
        path: &str,
        body: &[u8],
    ) -> Result<Response<tonic::body::Body>, Refusal> {
        use control_json as j;
        let c = &*self.control;
        match path {
            "/v1/disconnect" => {
                let r: j::DisconnectRequest = parse(body)?;
                answer(
                    c.disconnect(tonic::Request::new(r.into())).await,
                    j::DisconnectResponse::from,
                )
            }
            "/v1/revoke" => {
                let r: j::RevokeRequest = parse(body)?;
                answer(
                    c.revoke(tonic::Request::new(r.into())).await,
                    j::StreamsResponse::from,
                )
            }
            "/v1/follow" => {
                let r: j::FollowRequest = parse(body)?;
                answer(
                    c.follow(tonic::Request::new(r.into())).await,
                    j::StreamsResponse::from,
                )
            }
            "/v1/unfollow" => {
                let r: j::FollowRequest = parse(body)?;
                answer(
                    c.unfollow(tonic::Request::new(r.into())).await,
                    j::StreamsResponse::from,
                )
            }
            "/v1/history" => {
                let r: j::HistoryRequest = parse(body)?;
                let r = r.try_into().map_err(invalid)?;
                answer(
                    c.history(tonic::Request::new(r)).await,
                    j::HistoryResponse::from,
                )
            }
            "/v1/topics" => {
                let r: j::TopicsRequest = parse(body)?;
                answer(
                    c.topics(tonic::Request::new(r.into())).await,
                    j::TopicsResponse::from,
                )
            }
            "/v1/presence" => {
                let r: PresenceRequest = parse(body)?;
                Ok(json_response(StatusCode::OK, &self.presence(&r)?))
            }
            _ => Ok(json_response(StatusCode::OK, &self.stats())),
        }
    }

    /// Who is connected where, as this node's presence follower knows it
    /// (the admin page's user lookup).
    fn presence(&self, request: &PresenceRequest) -> Result<Value, Refusal> {
        let users = herald_domain::control::parse_users(&request.user_ids).map_err(invalid)?;
        let directory = self.service.presence.directory();
        let users = users.iter().map(|user| {
            let edges = directory.user_nodes(user.as_str());
            let connections: u32 = edges.iter().map(|(_, n)| n).sum();
            let edges: Vec<Value> = edges
                .into_iter()
                .map(|(node, n)| json!({"node": node, "connections": n}))
                .collect();
            json!({"userId": user.as_str(), "online": connections > 0,
                   "connections": connections, "edges": edges})
        });
        Ok(json!({ "users": users.collect::<Vec<_>>() }))
    }

    /// The cluster's totals and each edge's streams (the admin page's header).
    fn stats(&self) -> Value {
        let directory = self.service.presence.directory();
        let mut edges: Vec<(&str, u64)> = directory.node_connections().collect();
        edges.sort_unstable();
        let edges: Vec<Value> = edges
            .into_iter()
            .map(|(node, n)| json!({"node": node, "connections": n.to_string()}))
            .collect();
        json!({
            "connections": directory.connections().to_string(),
            "usersOnline": directory.users_online().to_string(),
            "edges": edges,
        })
    }

    fn authorize(&self, request: &Request<Incoming>) -> Result<(), Refusal> {
        let authorization = request.headers().get(header::AUTHORIZATION);
        let message = match self
            .token
            .verdict(authorization.and_then(|v| v.to_str().ok()))
        {
            Verdict::Allowed => return Ok(()),
            Verdict::Missing => "missing API token: send `Authorization: Bearer <token>`",
            Verdict::Wrong => "wrong API token",
        };
        Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            message,
        ))
    }

    /// The whole body, refused with 413 past `max` bytes (before reading
    /// it when `Content-Length` says so); `flag` names what sets `max`.
    async fn body(
        &self,
        request: Request<Incoming>,
        max: usize,
        flag: &str,
    ) -> Result<Bytes, Refusal> {
        let too_large = || {
            let message = format!("the body is over {max} bytes{flag}");
            Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max as u64) {
            return Err(too_large());
        }
        match Limited::new(request.into_body(), max).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => {
                let message = format!("cannot read the body: {e}");
                Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    message,
                ))
            }
        }
    }

    async fn single(
        &self,
        body: &[u8],
        count: impl Fn(&Refusal),
    ) -> Result<Response<tonic::body::Body>, Refusal> {
        let request: json::PublishRequest = parse(body).inspect_err(&count)?;
        let request = request.try_into().map_err(invalid).inspect_err(&count)?;
        let response = self.service.publish_one(request).await;
        let response = response.map_err(|s| Refusal::of(&s))?;
        Ok(json_response(
            StatusCode::OK,
            &json::PublishResponse::from(response),
        ))
    }

    async fn batch(
        &self,
        body: &[u8],
        count: impl Fn(&Refusal),
    ) -> Result<Response<tonic::body::Body>, Refusal> {
        let batch: json::PublishBatchRequest = parse(body).inspect_err(&count)?;
        let requests = batch.into_requests().map_err(invalid).inspect_err(&count)?;
        let response = self.service.publish_many(requests).await;
        let response = response.map_err(|s| Refusal::of(&s))?;
        Ok(json_response(
            StatusCode::OK,
            &json::PublishBatchResponse::from(response),
        ))
    }
}

/// `POST /v1/presence`: the users to look up.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PresenceRequest {
    #[serde(default, alias = "user_ids")]
    user_ids: Vec<String>,
}

/// A Control call's answer as JSON, or its refusal.
fn answer<R, J: serde::Serialize>(
    result: Result<tonic::Response<R>, Status>,
    to_json: impl FnOnce(R) -> J,
) -> Result<Response<tonic::body::Body>, Refusal> {
    let response = result.map_err(|s| Refusal::of(&s))?;
    Ok(json_response(
        StatusCode::OK,
        &to_json(response.into_inner()),
    ))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("invalid JSON: {e}")))
}

fn invalid(message: impl ToString) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
}
