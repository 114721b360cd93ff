//! gRPC server reflection for Herald's services, in both versions that
//! clients ask for: grpcurl 1.9+ and tonic's client ask
//! `grpc.reflection.v1`; grpcurl before 1.9, Postman, evans and grpcio's
//! client ask `v1alpha`. Each lists what its port serves (not the other
//! Herald service, whose proto shares the descriptor set).

use tonic::service::Routes;
use tonic_reflection::pb::{v1, v1alpha};

/// `routes` with reflection of `services` (their full names, described
/// in the encoded descriptor set `descriptors`), health and reflection
/// itself, in both versions.
pub fn with_reflection(
    routes: Routes,
    descriptors: &'static [u8],
    services: &'static [&'static str],
) -> Routes {
    let builder = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let own = [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        services
            .iter()
            .chain(&own)
            .fold(builder, |b, name| b.with_service_name(*name))
    };
    let invalid = "descriptors are generated at build time and valid";
    let current = builder()
        .register_encoded_file_descriptor_set(v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect(invalid);
    let alpha = builder()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect(invalid);
    routes.add_service(current).add_service(alpha)
}
