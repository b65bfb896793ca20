//! [`PolicyLayer`]: resolves the caller's [`Grant`] and refuses an RPC whose
//! scope it lacks, before the service sees the request.

use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{self, BoxFuture};
use tonic::Status;
use tower::{Layer, Service};

use super::{Grant, PolicyStore};
use crate::layer::is_public_path;
use crate::principal::Principal;

/// Maps an RPC path (`/package.Service/Method`) to the scope it needs;
/// `None` for a path the server does not know, which is refused (default
/// deny: an RPC added without a scope is unreachable, not open).
pub type RpcScopes = fn(&str) -> Option<&'static str>;

/// Told of every request [`PolicyLayer`] refuses: `(principal, RPC path,
/// refusal message, x-request-id)` — e.g. to write the audit log. Called
/// on the request's task; spawn anything slow.
pub type RefusalHook = Arc<dyn Fn(&Principal, &str, &str, Option<&str>) + Send + Sync>;

/// Layer producing [`PolicyService`]; place it after [`crate::AuthLayer`].
#[derive(Clone)]
pub struct PolicyLayer {
    store: Arc<PolicyStore>,
    scopes: RpcScopes,
    on_refusal: Option<RefusalHook>,
}

impl std::fmt::Debug for PolicyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyLayer")
            .field("policy_version", &self.store.current().version())
            .finish_non_exhaustive()
    }
}

impl PolicyLayer {
    /// Apply the policy in `store`, with `scopes` naming each RPC's scope.
    pub fn new(store: Arc<PolicyStore>, scopes: RpcScopes) -> Self {
        Self {
            store,
            scopes,
            on_refusal: None,
        }
    }

    /// Also tell `hook` of every refusal.
    #[must_use]
    pub fn with_refusal_hook(mut self, hook: RefusalHook) -> Self {
        self.on_refusal = Some(hook);
        self
    }
}

impl<S> Layer<S> for PolicyLayer {
    type Service = PolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService {
            inner,
            store: Arc::clone(&self.store),
            scopes: self.scopes,
            on_refusal: self.on_refusal.clone(),
        }
    }
}

/// Resolves the [`Principal`] that [`crate::AuthLayer`] put on the request
/// into a [`Grant`] under the policy in force, inserts `Arc<Grant>` into the
/// request extensions ([`crate::Caller::of`] reads it), and answers
/// `PERMISSION_DENIED` naming the scope when the grant lacks the RPC's
/// scope. Health and reflection pass untouched; a request without a
/// principal is `UNAUTHENTICATED`.
#[derive(Clone)]
pub struct PolicyService<S> {
    inner: S,
    store: Arc<PolicyStore>,
    scopes: RpcScopes,
    on_refusal: Option<RefusalHook>,
}

impl<S> std::fmt::Debug for PolicyService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for PolicyService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        if !is_public_path(path) {
            let refusal = match req.extensions().get::<Principal>() {
                None => Some(Status::unauthenticated("no principal on the request")),
                Some(principal) => {
                    let grant = self.store.current().grant(principal);
                    let refusal = match (self.scopes)(path) {
                        None => Some(Status::permission_denied(format!(
                            "no scope grants {path}"
                        ))),
                        Some(scope) => grant.require(scope).err().map(|e| {
                            tracing::debug!(path, scope, tenant = %principal.tenant, "scope refused");
                            Status::from(e)
                        }),
                    };
                    if let (Some(status), Some(hook)) = (&refusal, &self.on_refusal) {
                        let request_id = req
                            .headers()
                            .get(crate::REQUEST_ID_HEADER)
                            .and_then(|v| v.to_str().ok());
                        hook(principal, path, status.message(), request_id);
                    }
                    req.extensions_mut().insert(Arc::new(grant));
                    refusal
                }
            };
            if let Some(status) = refusal {
                return Box::pin(future::ready(Ok(status.into_http::<ResBody>())));
            }
        }
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

/// The grant on `request` ([`PolicyLayer`] put it there), or
/// [`Grant::none`] when there is none: a service served without the policy
/// layer allows nothing.
pub(crate) fn grant_of<T>(request: &tonic::Request<T>) -> Arc<Grant> {
    request
        .extensions()
        .get::<Arc<Grant>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(Grant::none()))
}
