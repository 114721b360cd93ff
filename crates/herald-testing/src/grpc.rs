//! What any client may ask a Herald gRPC server without an API token:
//! health checks and server reflection.

use futures::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

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

/// The services server reflection (v1) lists, asked with no token.
pub async fn reflected_services(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([ask]))
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
        other => Err(tonic::Status::unknown(format!(
            "unexpected answer {other:?}"
        ))),
    }
}
