//! How a failed item reads in `PublishResult.error` (PublishBatch, HTTP
//! batch, the CLI's NDJSON): `"<GRPC_CODE_NAME>: <message>"`.

use tonic::{Code, Status};

/// A batch item's error as `PublishResult.error`: `"<GRPC_CODE_NAME>: <message>"`.
pub fn error_text(status: &Status) -> String {
    format!("{}: {}", code_name(status.code()), status.message())
}

/// The canonical upper-snake name of a gRPC status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_code_as_grpc_spells_it() {
        let status = Status::invalid_argument("data is 9 bytes; the limit is 8");
        assert_eq!(
            error_text(&status),
            "INVALID_ARGUMENT: data is 9 bytes; the limit is 8"
        );
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
    }
}
