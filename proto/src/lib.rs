//! Quarry's gRPC protocol: the `quarry.v1` package (`proto/quarry/v1/*.proto`)
//! compiled to prost messages and tonic clients/servers.
//!
//! The `.proto` files are the contract; `buf lint` (STANDARD) and
//! `buf breaking` (FILE) guard them. Code is generated at build time by
//! `tonic-prost-build` from a descriptor set produced by `protox`, so no system
//! `protoc` is needed.
//!
//! [`error`] is the one contract that maps every service's errors to gRPC
//! status codes ([`ServiceErrorCode`], [`ServiceError`], [`status_of`]).
//!
//! [`codec`] is the codec of every generated client and server
//! ([`codec::CheckedCodec`]): a request that does not decode, or holds a
//! NUL (U+0000) in any string field, is `INVALID_ARGUMENT` before any
//! handler runs.

/// Generated messages, clients (`*_client`) and servers (`*_server`) of `quarry.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("quarry.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of `quarry.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/quarry_descriptor.bin"));

pub mod codec;
pub mod error;

pub use error::{FieldViolation, ServiceError, ServiceErrorCode, status_of};

/// Status helpers every Quarry service shares.
pub mod status {
    use tonic::Status;

    use crate::error::{FieldViolation, status_of};

    /// `INVALID_ARGUMENT` reading `invalid <field>: <description>`, with a
    /// google.rpc `BadRequest` field violation naming `field` (a request
    /// field path such as `filter.and[1].range.lower`) so a client can point
    /// at it ([`FieldViolation`] as a status).
    pub fn bad_request(field: &str, description: impl Into<String>) -> Status {
        status_of(&FieldViolation::new(field, description))
    }
}
