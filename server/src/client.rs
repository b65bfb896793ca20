//! Helpers for Quarry's own gRPC clients (the `quarry` commands, benchmarks).

use anyhow::Context as _;

/// `message` as a gRPC request carrying `authorization: Bearer <token>`.
///
/// # Errors
/// The token holds characters a header may not.
pub fn bearer_request<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token contains characters not allowed in a header")?,
    );
    Ok(request)
}

/// A failed RPC as an error reading `<code>: <message>`.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}
