//! Authentication and per-tenant admission control for Quarry's gRPC servers.
//!
//! Every Quarry RPC carries `authorization: Bearer <jwt>`. This crate turns
//! that header into a typed [`Principal`] (tenant, subject, roles, scopes) and
//! refuses callers that exceed their tenant's request rate:
//!
//! - [`JwtVerifier`] checks a JSON Web Token (RFC 7519) and yields a
//!   [`Principal`]: signed by an identity provider whose keys it fetches from
//!   a JSON Web Key Set URL (RFC 7517 §5; `RS256`, `ES256`, `EdDSA`, RFC 7518
//!   §3.3–3.4, RFC 8037 §3.1; see [`JwksOptions`] for key rotation), or, for
//!   development, with an HS256 secret (RFC 7518 §3.2), which [`mint_hs256`]
//!   uses to issue tokens for the `quarry token` command.
//! - [`AuthConfig`] is the `[auth]` section; [`AuthConfig::validate`] refuses
//!   a non-development setup without `issuer` and `audience` or with an
//!   inline secret, and [`AuthConfig::verifier`] builds the verifier.
//! - [`AuthLayer`] is a tower layer over the HTTP request that tonic serves: it
//!   verifies the token, puts the [`Principal`] into the request extensions
//!   (handlers read `request.extensions().get::<Principal>()`), and answers
//!   `UNAUTHENTICATED` otherwise. Health and reflection pass untouched.
//! - [`RateLimitLayer`], placed after [`AuthLayer`], admits requests through a
//!   [`TenantRateLimiter`] (governor's GCRA, keyed by tenant) and answers
//!   `RESOURCE_EXHAUSTED` with a google.rpc `RetryInfo` when a tenant is over
//!   its quota, so one tenant's load cannot starve another's.
//! - [`Policy`] (from [`PolicyConfig`], the `[policy]` section) maps roles
//!   to scopes, tables, columns, masks, row filters and a database role;
//!   [`PolicyLayer`], placed after [`AuthLayer`], resolves each request's
//!   [`Grant`] and refuses an RPC whose scope the grant lacks (default deny).
//! - [`shares::TenantShares`] bounds what one tenant holds at once (Asks and
//!   tool calls in flight, database connections): past its share a request
//!   gets `RESOURCE_EXHAUSTED` with `RetryInfo`.
//! - [`Caller`] is the caller context (principal, request id, deadline)
//!   that every tool's domain calls take; adapters build it with
//!   [`Caller::of`].
//! - [`AuthError`] is the crate's one error type; `From<AuthError> for
//!   tonic::Status` is the one place that maps it to gRPC codes.
//!
//! The stack is composed once per binary, e.g.
//! `ServiceBuilder::new().layer(AuthLayer::new(verifier)).layer(RateLimitLayer::new(limiter))`.
//!
//! The governor stage is per process; a [`SharedRateStore`]
//! ([`TenantRateLimiter::with_shared`]) makes the quota hold across
//! replicas.

mod caller;
mod config;
mod error;
mod jwks;
mod jwt;
mod layer;
mod policy;
mod principal;
mod rate_limit;
pub mod shares;

pub use caller::{Caller, MAX_REQUEST_ID_BYTES, REQUEST_ID_HEADER, grpc_timeout};
pub use config::{AuthConfig, DEFAULT_JWT_SECRET_ENV};
pub use error::{AuthError, Result};
pub use jwks::{
    DEFAULT_JWKS_ALGORITHMS, DEFAULT_JWKS_MAX_AGE_SECS, DEFAULT_JWKS_REFRESH_FLOOR_SECS,
    DEFAULT_JWKS_TIMEOUT_SECS, JwksOptions, MAX_JWKS_BYTES,
};
pub use jwt::{
    Claims, DEFAULT_LEEWAY_SECS, JwtVerifier, MAX_TOKEN_BYTES, MIN_HS256_SECRET_BYTES, mint_hs256,
};
pub use layer::{Auth, AuthLayer, VerifiedToken, bearer_token, is_public_path};
pub use policy::{
    Access, DEVELOPMENT_HASH_SALT, Grant, Mask, Policy, PolicyConfig, PolicyLayer, PolicyService,
    PolicyStore, RefusalHook, RoleConfig, RpcScopes, TableName, TableView, scopes,
};
pub use principal::Principal;
pub use rate_limit::{
    LEASE_TTL, MAX_CELLS_AHEAD, RateLimit, RateLimitConfig, RateLimitLayer, SHARED_STORE_TIMEOUT,
    SharedRateStore, TenantRateLimiter, cells_ahead,
};
