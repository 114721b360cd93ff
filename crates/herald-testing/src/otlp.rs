//! An OpenTelemetry collector stand-in: an OTLP trace receiver speaking
//! the real protocol, over gRPC (`opentelemetry.proto.collector.trace.v1.
//! TraceService`) and over HTTP (`POST /v1/traces`, protobuf body), that
//! keeps every span it is sent, for tests to inspect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use tonic::transport::server::TcpIncoming;

/// One span as received, ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the sending process.
    pub service: String,
    /// `service.instance.id` (Herald sets the node id).
    pub instance: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:<port>`: OTLP/gRPC, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// `http://127.0.0.1:<port>`: OTLP/HTTP with protobuf bodies.
    pub http_endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
    http: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.http.abort();
    }
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = Collector {
            spans: spans.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                }),
        );
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http_listener.local_addr().unwrap();
        let http = tokio::spawn(serve_http(http_listener, spans.clone()));
        Self {
            endpoint: format!("http://{addr}"),
            http_endpoint: format!("http://{http_addr}"),
            spans,
            _stop: stop,
            http,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.spans, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// OTLP/HTTP: `POST /v1/traces` with an `ExportTraceServiceRequest` body.
async fn serve_http(listener: tokio::net::TcpListener, spans: Arc<Mutex<Vec<ReceivedSpan>>>) {
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response, StatusCode, body::Incoming};
    use prost::Message;

    while let Ok((stream, _)) = listener.accept().await {
        let spans = spans.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let spans = spans.clone();
            async move {
                let path_ok = request.uri().path() == "/v1/traces";
                let body = request.into_body().collect().await?.to_bytes();
                let status = match ExportTraceServiceRequest::decode(body) {
                    Ok(export) if path_ok => {
                        keep(&spans, export);
                        StatusCode::OK
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                let reply = ExportTraceServiceResponse::default().encode_to_vec();
                let mut response = Response::new(Full::new(bytes::Bytes::from(reply)));
                *response.status_mut() = status;
                Ok::<_, hyper::Error>(response)
            }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
        );
    }
}

/// Records the spans of one export.
fn keep(spans: &Mutex<Vec<ReceivedSpan>>, export: ExportTraceServiceRequest) {
    let mut received = Vec::new();
    for resource_spans in export.resource_spans {
        let resource = resource_spans.resource.as_ref();
        let service = attribute(resource, "service.name");
        let instance = attribute(resource, "service.instance.id");
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(ReceivedSpan {
                service: service.clone(),
                instance: instance.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
            });
        }
    }
    spans.lock().unwrap().extend(received);
}

fn attribute(resource: Option<&Resource>, key: &str) -> String {
    let value = resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref());
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
