//! What any client may ask a Herald gRPC server without an API token:
//! health checks and server reflection.

use futures::StreamExt;
use prost::Message as _;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Connects to `http://<addr>`.
pub async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// The health of `service` (e.g. `herald.v1.Publisher`), asked with no token.
pub async fn health(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let answer = HealthClient::new(channel)
        .check(request)
        .await?
        .into_inner();
    Ok(answer.status())
}

/// Whether the server says `service` is serving (`""`: the server as a
/// whole, what a check naming no service asks).
pub async fn serving(channel: Channel, service: &str) -> Result<bool, tonic::Status> {
    Ok(health(channel, service).await? == ServingStatus::Serving)
}

/// The services server reflection (v1) lists, asked with no token.
pub async fn reflected_services(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    reflect(channel, Reflection::V1, Ask::Services).await
}

/// A version of the server reflection protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reflection {
    /// `grpc.reflection.v1` (grpcurl 1.9+, tonic).
    V1,
    /// `grpc.reflection.v1alpha` (grpcurl before 1.9, Postman, evans, grpcio).
    V1alpha,
}

/// What to ask server reflection.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// The services it lists (`grpcurl list`).
    Services,
    /// The names of the files that define `symbol` and its dependencies
    /// (`grpcurl describe <symbol>`).
    FileOf(&'a str),
}

/// Asks server reflection in `version`, with no token; answers the
/// service names or the file names.
pub async fn reflect(
    channel: Channel,
    version: Reflection,
    ask: Ask<'_>,
) -> Result<Vec<String>, tonic::Status> {
    // The two versions' generated types have the same shape, in two modules.
    macro_rules! ask_in {
        ($pb:path) => {{
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use $pb as pb;
            let message_request = match ask {
                Ask::Services => MessageRequest::ListServices(String::new()),
                Ask::FileOf(symbol) => MessageRequest::FileContainingSymbol(symbol.to_owned()),
            };
            let request = pb::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message_request),
            };
            let mut answers = pb::server_reflection_client::ServerReflectionClient::new(channel)
                .server_reflection_info(futures::stream::iter([request]))
                .await?
                .into_inner();
            let answer = answers
                .next()
                .await
                .ok_or_else(|| tonic::Status::unknown("no reflection answer"))??;
            match answer.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    Ok(list.service.into_iter().map(|s| s.name).collect())
                }
                Some(MessageResponse::FileDescriptorResponse(files)) => files
                    .file_descriptor_proto
                    .iter()
                    .map(|bytes| {
                        let file = FileName::decode(bytes.as_slice())
                            .map_err(|e| tonic::Status::unknown(e.to_string()))?;
                        Ok(file.name)
                    })
                    .collect(),
                other => Err(tonic::Status::unknown(format!(
                    "unexpected answer {other:?}"
                ))),
            }
        }};
    }
    match version {
        Reflection::V1 => ask_in!(tonic_reflection::pb::v1),
        Reflection::V1alpha => ask_in!(tonic_reflection::pb::v1alpha),
    }
}

/// A `google.protobuf.FileDescriptorProto` read for its name alone.
#[derive(Clone, PartialEq, prost::Message)]
struct FileName {
    #[prost(string, tag = "1")]
    name: String,
}
