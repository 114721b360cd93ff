//! Generates the gRPC code with the protoc that `protoc-bin-vendored` ships,
//! so a fresh machine needs no system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        "herald/v1/publish.proto",
        "herald/v1/presence.proto",
        "herald/v1/control.proto",
    ]
    .map(|p| root.join(p));
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("herald_descriptor.bin");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptor)
        .compile_with_config(config, &protos, &[root])?;
    Ok(())
}
