//! Herald's wire contract: the generated code for its gRPC API
//! (`proto/herald/v1`, package `herald.v1`) and what travels beside it.
//!
//! Clients and servers for `Publisher`, `Control` and `Presence` live in [`v1`];
//! [`FILE_DESCRIPTOR_SET`] feeds gRPC server reflection; [`json`] is the
//! proto3 JSON mapping of the Publish API's messages (HTTP publish, NDJSON),
//! [`control_json`] the Control API's;
//! [`result_error`] is how a failed batch item reads; [`target`] builds a
//! request's target.

pub mod control_json;
pub mod json;
pub mod result_error;
pub mod target;

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("herald.v1");
}

/// The encoded descriptors of every Herald proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("herald_descriptor");
