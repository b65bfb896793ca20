//! [`AuthLayer`]: bearer-token authentication for a tonic server.

use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt as _;
use futures::future::{self, BoxFuture};
use http::header::AUTHORIZATION;
use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::error::{AuthError, Result};
use crate::jwt::JwtVerifier;

#[cfg(test)]
mod tests;

/// Path prefixes served without a token: gRPC health checking and server
/// reflection (both `v1` and `v1alpha`).
const PUBLIC_PREFIXES: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

/// Whether `path` (an HTTP/2 `:path`, `/package.Service/Method`) is served
/// without authentication: health and reflection.
pub fn is_public_path(path: &str) -> bool {
    PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// A bearer token this process has verified already, and the principal it
/// verified to. [`Auth`] puts one into the extensions of every request it
/// authenticates; the orchestrator copies it onto the requests it makes to
/// tool services in the same process for that caller (and the MCP surface
/// onto the gRPC calls it makes for its own caller), and [`Auth`] then takes
/// the principal from it instead of verifying the token again.
///
/// Safe by construction: request extensions exist only inside this process
/// (nothing a client sends becomes one: hyper starts every request with
/// empty extensions), and the principal is used only for the very token it
/// was verified from — a request whose bearer token differs is verified as
/// usual. A token that expires while an `Ask` runs still authorises that
/// `Ask`'s tool calls (its deadline bounds them), as it authorised the
/// `Ask` itself.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    token: Arc<str>,
    principal: crate::Principal,
}

impl VerifiedToken {
    /// The principal of `token`, once verified.
    pub fn new(token: &str, principal: crate::Principal) -> Self {
        Self {
            token: Arc::from(token),
            principal,
        }
    }

    /// The principal, when `token` is the token that was verified.
    pub fn principal_for(&self, token: &str) -> Option<&crate::Principal> {
        (*self.token == *token).then_some(&self.principal)
    }
}

/// Layer producing [`Auth`]; see there.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Arc<JwtVerifier>,
}

impl AuthLayer {
    /// Authenticate requests with `verifier`.
    pub fn new(verifier: JwtVerifier) -> Self {
        AuthLayer {
            verifier: Arc::new(verifier),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            verifier: Arc::clone(&self.verifier),
        }
    }
}

/// Authenticates each HTTP request of a gRPC server.
///
/// Reads `authorization: Bearer <jwt>` (RFC 6750 §2.1), verifies the token
/// with [`JwtVerifier`] (inside the response future: with a key set,
/// verification may wait for a refetch of the set), inserts the
/// [`Principal`](crate::Principal) into the request extensions and runs the
/// inner service inside an `info_span!("request", tenant, subject)` so every
/// log line of the call carries the tenant. A missing or invalid token is
/// answered directly with a trailers-only gRPC response, `grpc-status: 16`
/// (`UNAUTHENTICATED`; `14`, `UNAVAILABLE`, when an unknown key could not be
/// fetched); the inner service is not called. Paths for which
/// [`is_public_path`] holds pass through untouched.
///
/// Works for any response body with a `Default` (an empty body), which
/// includes `tonic::body::Body`; errors are the inner service's own.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    verifier: Arc<JwtVerifier>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Auth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        if is_public_path(req.uri().path()) {
            let clone = self.inner.clone();
            let mut inner = mem::replace(&mut self.inner, clone);
            return Box::pin(inner.call(req));
        }

        let token = match bearer_token(req.headers()) {
            Ok(token) => token.to_owned(),
            Err(err) => return Box::pin(future::ready(Ok(refuse(&req, err)))),
        };
        let verifier = Arc::clone(&self.verifier);
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        // verified in this process already (an in-process call made for a
        // caller this layer authenticated): the same token's principal
        let known = req
            .extensions()
            .get::<VerifiedToken>()
            .and_then(|v| v.principal_for(&token))
            .cloned();
        async move {
            let principal = match known {
                Some(principal) => principal,
                None => match verifier.verify(&token).await {
                    Ok(principal) => principal,
                    Err(err) => return Ok(refuse(&req, err)),
                },
            };
            let span = tracing::info_span!(
                "request",
                tenant = %principal.tenant,
                subject = %principal.subject,
            );
            req.extensions_mut()
                .insert(VerifiedToken::new(&token, principal.clone()));
            req.extensions_mut().insert(principal);
            let fut = span.in_scope(|| inner.call(req));
            fut.instrument(span).await
        }
        .boxed()
    }
}

/// The trailers-only gRPC response refusing `req` for `err`.
fn refuse<ReqBody, ResBody: Default>(
    req: &http::Request<ReqBody>,
    err: AuthError,
) -> http::Response<ResBody> {
    tracing::debug!(path = req.uri().path(), error = %err, "request not authenticated");
    Status::from(err).into_http::<ResBody>()
}

/// The token of the one `authorization: Bearer <token>` header. The scheme
/// is case-insensitive (RFC 7235 §2.1). Also read by the HTTP surfaces
/// (the MCP endpoint), so that they accept exactly what gRPC accepts. A second `authorization` header is
/// refused rather than ignored: which of two credentials a proxy, the
/// server and a log each read first is not something to leave to chance.
///
/// # Errors
/// [`AuthError::MissingToken`], [`AuthError::SeveralTokens`] or
/// [`AuthError::NotBearer`].
pub fn bearer_token(headers: &http::HeaderMap) -> Result<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingToken)?;
    if values.next().is_some() {
        return Err(AuthError::SeveralTokens);
    }
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}
