//! The HTTP surfaces served on the gRPC port beside gRPC: everything that
//! is not a gRPC call (the web console, the MCP endpoint, OAuth metadata)
//! is routed by path prefix to an [`axum::Router`] before the gRPC layers
//! (auth, rate limits, policy) see it. Each surface authenticates its own
//! requests with the same verifier and policy.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::{FutureExt as _, future::BoxFuture};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt as _};

/// The non-gRPC routes of a node: path prefixes and the router that
/// answers them. Empty by default (every request goes to gRPC).
#[derive(Clone, Default)]
pub struct Surfaces {
    prefixes: Vec<&'static str>,
    router: axum::Router,
}

impl Surfaces {
    /// Adds `router`, which answers every path equal to one of `prefixes`
    /// or under it (`"/mcp"` takes `/mcp` and `/mcp/…`, not `/mcpx`).
    /// `"/"` takes only `/` itself. A prefix must not be a gRPC path
    /// (`/package.Service/`).
    #[must_use]
    pub fn mount(mut self, prefixes: &[&'static str], router: axum::Router) -> Self {
        self.prefixes.extend_from_slice(prefixes);
        self.router = self.router.merge(router);
        self
    }

    /// Whether `path` belongs to a mounted surface.
    #[must_use]
    pub fn owns(&self, path: &str) -> bool {
        self.prefixes.iter().any(|prefix| {
            if *prefix == "/" {
                return path == "/";
            }
            path.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
            })
        })
    }

    /// Whether no surface is mounted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }
}

/// Routes requests to mounted [`Surfaces`] and the rest to the wrapped
/// gRPC stack. Must be the outermost layer, so that a surface's requests
/// never meet the gRPC auth layer (which would refuse them).
#[derive(Clone)]
pub struct SurfacesLayer {
    surfaces: Arc<Surfaces>,
}

impl SurfacesLayer {
    /// The layer over `surfaces`.
    #[must_use]
    pub fn new(surfaces: Surfaces) -> Self {
        Self {
            surfaces: Arc::new(surfaces),
        }
    }
}

impl<S> Layer<S> for SurfacesLayer {
    type Service = SurfacesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SurfacesService {
            inner,
            surfaces: Arc::clone(&self.surfaces),
        }
    }
}

/// The service of [`SurfacesLayer`]; errors are the gRPC stack's, boxed.
#[derive(Clone)]
pub struct SurfacesService<S> {
    inner: S,
    surfaces: Arc<Surfaces>,
}

impl<S, ResBody> Service<http::Request<Body>> for SurfacesService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError> + Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if self.surfaces.owns(req.uri().path()) {
            let router = self.surfaces.router.clone();
            return async move {
                let response = router
                    .oneshot(req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|never| match never {});
                Ok(response.map(Body::new))
            }
            .boxed();
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        async move {
            let response = inner.call(req).await.map_err(Into::into)?;
            Ok(response.map(Body::new))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_owns_itself_and_what_is_under_it_only() {
        let surfaces = Surfaces::default().mount(&["/mcp", "/console/"], axum::Router::new());
        assert!(surfaces.owns("/mcp"));
        assert!(surfaces.owns("/mcp/session"));
        assert!(!surfaces.owns("/mcpx"));
        assert!(surfaces.owns("/console/app.js"));
        assert!(!surfaces.owns("/quarry.v1.AssistantService/Ask"));
        assert!(!Surfaces::default().owns("/"));
        let root = Surfaces::default().mount(&["/"], axum::Router::new());
        assert!(root.owns("/"));
        assert!(!root.owns("/quarry.v1.AssistantService/Ask"));
    }
}
