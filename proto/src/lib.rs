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

/// Status helpers every Quarry service shares.
pub mod status {
    use tonic::{Code, Status};
    use tonic_types::{ErrorDetails, StatusExt as _};

    /// `INVALID_ARGUMENT` reading `invalid <field>: <description>`, with a
    /// google.rpc `BadRequest` field violation naming `field` (a request
    /// field path such as `filter.and[1].range.lower`) so a client can point
    /// at it.
    pub fn bad_request(field: &str, description: impl Into<String>) -> Status {
        let description = description.into();
        Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid {field}: {description}"),
            ErrorDetails::with_bad_request_violation(field, description),
        )
    }
}
