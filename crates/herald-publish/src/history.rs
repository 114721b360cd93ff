//! `Control.History`: the newest events of a user or topic, or those
//! after an id, read from JetStream without opening a stream.

use herald_proto::v1;
use tonic::Status;

use crate::service::PublishService;

/// Reads what `request` asks for.
pub async fn read(
    _publish: &PublishService,
    _request: v1::HistoryRequest,
) -> Result<v1::HistoryResponse, Status> {
    Err(Status::unimplemented("History is not implemented yet"))
}
