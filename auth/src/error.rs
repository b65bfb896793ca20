//! The crate's error type and its single mapping to `tonic::Status`.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `Result` with [`AuthError`].
pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// Why a caller was not authenticated, not allowed, or not admitted.
///
/// Token problems map to `UNAUTHENTICATED`, a valid token without the needed
/// scope or role to `PERMISSION_DENIED`, a tenant over its quota to
/// `RESOURCE_EXHAUSTED` (with `RetryInfo`), an identity provider whose key
/// set cannot be fetched to `UNAVAILABLE`, configuration and signing failures
/// to `INTERNAL` — see `From<AuthError> for tonic::Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header (or metadata) on the request.
    #[error("missing bearer token")]
    MissingToken,
    /// More than one `authorization` header: exactly one is accepted.
    #[error("more than one authorization header")]
    SeveralTokens,
    /// An `authorization` header that is not `Bearer <token>`.
    #[error("authorization header is not a bearer token")]
    NotBearer,
    /// Not a compact JWS (RFC 7515 §7.1): wrong shape, bad base64url, bad
    /// JSON, or claims that do not fit [`crate::Claims`].
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The JOSE `alg` (RFC 7515 §4.1.1) is not accepted: with an HS256
    /// secret anything but `HS256`; with a key set an algorithm outside the
    /// allowed list (HMAC algorithms always are) or one the token's key does
    /// not allow (RFC 7518 §3.1). `none` (RFC 7518 §3.6) is never accepted.
    #[error("token algorithm {0:?} is not accepted")]
    UnsupportedAlgorithm(String),
    /// The token's `kid` (RFC 7515 §4.1.4) names no key of the identity
    /// provider's key set (RFC 7517 §5), even after a refetch or because
    /// the set was fetched too recently to fetch again.
    #[error("token key {0:?} is not in the key set")]
    UnknownKey(String),
    /// The token's `kid` was unknown and refetching the identity provider's
    /// key set failed; retrying later may succeed.
    #[error("the identity provider's key set is unavailable")]
    KeySetUnavailable,
    /// The signature over header and payload does not verify under the key
    /// (RFC 7518 §3.2 HMAC, §3.3 RSA, §3.4 ECDSA; RFC 8037 §3.1 EdDSA).
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` (RFC 7519 §4.1.4) is in the past, beyond the allowed leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` (RFC 7519 §4.1.5) is in the future, beyond the allowed leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// A claim this server requires is absent (always `exp`; `iss`/`aud`
    /// when configured).
    #[error("token lacks required claim {0}")]
    MissingClaim(String),
    /// `iss` (RFC 7519 §4.1.1) is not the configured issuer.
    #[error("token issuer is not accepted")]
    InvalidIssuer,
    /// `aud` (RFC 7519 §4.1.3) does not name this server's audience.
    #[error("token audience is not accepted")]
    InvalidAudience,
    /// A valid token whose principal lacks a scope.
    #[error("missing scope {0}")]
    MissingScope(String),
    /// The tenant exceeded its request quota; try again after `retry_after`.
    #[error("rate limit exceeded for tenant {tenant}")]
    RateLimited {
        /// The tenant that was refused.
        tenant: String,
        /// How long until a request would be admitted (governor's wait time).
        retry_after: Duration,
    },
    /// A token could not be signed.
    #[error("cannot sign token: {0}")]
    Signing(String),
    /// The auth configuration is unusable.
    #[error("invalid auth config: {0}")]
    Config(String),
}

impl AuthError {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            AuthError::MissingToken
            | AuthError::SeveralTokens
            | AuthError::NotBearer
            | AuthError::Malformed(_)
            | AuthError::UnsupportedAlgorithm(_)
            | AuthError::UnknownKey(_)
            | AuthError::BadSignature
            | AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::MissingClaim(_)
            | AuthError::InvalidIssuer
            | AuthError::InvalidAudience => Code::Unauthenticated,
            AuthError::MissingScope(_) => Code::PermissionDenied,
            AuthError::RateLimited { .. } => Code::ResourceExhausted,
            AuthError::KeySetUnavailable => Code::Unavailable,
            AuthError::Signing(_) | AuthError::Config(_) => Code::Internal,
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        // the code of every variant is decided in `AuthError::code`
        let code = err.code();
        if let AuthError::RateLimited { retry_after, .. } = &err {
            return Status::with_error_details(
                code,
                err.to_string(),
                ErrorDetails::with_retry_info(Some(*retry_after)),
            );
        }
        if matches!(err, AuthError::Signing(_) | AuthError::Config(_)) {
            // do not leak server configuration to callers
            return Status::new(code, "authentication is misconfigured");
        }
        Status::new(code, err.to_string())
    }
}
