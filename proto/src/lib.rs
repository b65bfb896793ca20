//! Quarry's gRPC protocol: the `quarry.v1` package (`proto/quarry/v1/*.proto`)
//! compiled to prost messages and tonic clients/servers.
//!
//! The `.proto` files are the contract; `buf lint` (STANDARD) and
//! `buf breaking` (FILE) guard them. Code is generated at build time by
//! `tonic-prost-build` from a descriptor set produced by `protox`, so no system
//! `protoc` is needed.

/// Generated messages, clients (`*_client`) and servers (`*_server`) of `quarry.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("quarry.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of `quarry.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/quarry_descriptor.bin"));
