//! gRPC for browsers: grpc-web ([`tonic_web`]) and CORS
//! ([`tower_http::cors`]) in front of the gRPC layers, so that a browser
//! call meets the same auth, rate limits and policy as any gRPC call.
//!
//! Layer order in [`crate::serve`]: surfaces (console, MCP) → CORS (a
//! preflight `OPTIONS` is answered here and never meets auth) → grpc-web
//! (translates `application/grpc-web[+proto|-text]` to gRPC and back) →
//! trace, metrics, auth, rate limit, policy. An HTTP/1.x request's body is
//! read whole before any of them ([`WholeHttp1BodyLayer`]).

use std::task::{Context, Poll};
use std::time::Duration;

use futures::{FutureExt as _, future::BoxFuture};
use http::{HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt as _, Full, Limited};
use serde::{Deserialize, Serialize};
use tonic::body::Body;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// `[server.web]`: what browsers may reach.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Origins (`scheme://host[:port]`, e.g. `"https://app.example"`) whose
    /// pages may call the gRPC services over grpc-web (CORS,
    /// <https://fetch.spec.whatwg.org/#http-cors-protocol>). Default: none,
    /// so only pages served by this node (the console, same origin) can;
    /// a page from any other origin is refused by the browser. No wildcard.
    pub cors_origins: Vec<String>,
}

/// A `[server.web]` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// An entry of `cors_origins` is not `scheme://host[:port]`.
    #[error(
        "server.web.cors_origins: {origin:?} is not an origin (http or https scheme, host, optional port, nothing after)"
    )]
    NotAnOrigin {
        /// The entry as written.
        origin: String,
    },
}

/// Request headers a grpc-web client sends (connect-web, grpc-web's
/// generated clients) plus W3C trace context, allowed in CORS preflights.
pub const ALLOWED_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "traceparent",
];

/// Response headers a grpc-web client must read (the status of a call
/// that fails before its body, and its details: `RetryInfo`, `BadRequest`).
pub const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// How long a browser may cache a preflight answer: 10 minutes, Chromium's
/// cap (<https://fetch.spec.whatwg.org/#http-access-control-max-age>).
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

impl WebConfig {
    /// The CORS layer for these origins: `POST` only, [`ALLOWED_HEADERS`],
    /// [`EXPOSED_HEADERS`], no credentials (the token travels in
    /// `authorization`, not in cookies). With no origins it answers no
    /// cross-origin request, preflight included.
    ///
    /// # Errors
    /// [`WebConfigError::NotAnOrigin`] for an entry that is not an origin.
    pub fn cors_layer(&self) -> Result<CorsLayer, WebConfigError> {
        let origins = self
            .cors_origins
            .iter()
            .map(|origin| parse_origin(origin))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE))
    }
}

/// `origin` as the exact `Origin` header value a browser sends for it
/// (RFC 6454 §6.1: scheme, host, port only; lowercase, no trailing slash).
fn parse_origin(origin: &str) -> Result<HeaderValue, WebConfigError> {
    let bad = || WebConfigError::NotAnOrigin {
        origin: origin.to_owned(),
    };
    let uri: http::Uri = origin.parse().map_err(|_| bad())?;
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|scheme| scheme == "http" || scheme == "https");
    let authority = uri.authority().ok_or_else(bad)?;
    // `http::Uri` adds "/" as the path of `https://host`; any other path,
    // a query or user info is not part of an origin
    let bare = uri.path() == "/" && !origin.ends_with('/') && uri.query().is_none();
    if !scheme_ok || !bare || authority.as_str().contains('@') || origin != origin.to_lowercase() {
        return Err(bad());
    }
    HeaderValue::from_str(origin).map_err(|_| bad())
}

/// The largest HTTP/1.x request body read whole, bytes: a grpc-web-text
/// body (base64, 4 bytes per 3) carrying one message of tonic's default
/// decoding limit (4 MiB, `tonic::codec`), with room for the 5-byte frame
/// headers. A longer body is refused, and its connection closed.
pub const HTTP1_BODY_LIMIT: usize = 4 * 1024 * 1024 / 3 * 4 + 1024;

/// Reads the body of every HTTP/1.x request before the layers inside it
/// (grpc-web, auth, rate limit, policy) see the request.
///
/// Why: a layer may answer on the head alone (auth refusing a missing or
/// bad token, a rate limit), dropping the body unread. Over HTTP/2 that
/// ends one stream; over HTTP/1.1 hyper must then close the connection,
/// since the unread body stands between this request and the next. A
/// browser or client reusing the connection would see it drop. grpc-web
/// bodies are whole messages (no client streaming), so reading them first
/// changes nothing else. HTTP/2 requests pass through untouched.
///
/// A body over [`HTTP1_BODY_LIMIT`] is answered `RESOURCE_EXHAUSTED`; a
/// body that fails to arrive, `INVALID_ARGUMENT` (grpc-status in the
/// headers, as a trailers-only gRPC response).
#[derive(Debug, Clone, Copy, Default)]
pub struct WholeHttp1BodyLayer;

impl<S> Layer<S> for WholeHttp1BodyLayer {
    type Service = WholeHttp1Body<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WholeHttp1Body { inner }
    }
}

/// The service of [`WholeHttp1BodyLayer`].
#[derive(Debug, Clone)]
pub struct WholeHttp1Body<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for WholeHttp1Body<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // the clone is the one that is ready: `inner` was polled ready
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if request.version() >= http::Version::HTTP_2 {
            return inner.call(request).boxed();
        }
        async move {
            let (parts, body) = request.into_parts();
            let bytes = match Limited::new(body, HTTP1_BODY_LIMIT).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let status = if error.is::<http_body_util::LengthLimitError>() {
                        tonic::Status::resource_exhausted(format!(
                            "request body: over {HTTP1_BODY_LIMIT} bytes"
                        ))
                    } else {
                        tonic::Status::invalid_argument(format!("request body: {error}"))
                    };
                    return Ok(status.into_http());
                }
            };
            inner
                .call(http::Request::from_parts(
                    parts,
                    Body::new(Full::new(bytes)),
                ))
                .await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inner service answering with the length of the body it read.
    fn echo_length() -> WholeHttp1Body<
        tower::util::BoxCloneService<
            http::Request<Body>,
            http::Response<Body>,
            std::convert::Infallible,
        >,
    > {
        WholeHttp1BodyLayer.layer(tower::util::BoxCloneService::new(tower::service_fn(
            |request: http::Request<Body>| async move {
                let bytes = request.into_body().collect().await.unwrap().to_bytes();
                Ok(http::Response::new(Body::new(Full::new(
                    bytes::Bytes::from(bytes.len().to_string()),
                ))))
            },
        )))
    }

    async fn call(version: http::Version, length: usize) -> http::Response<Body> {
        use tower::ServiceExt as _;
        let request = http::Request::builder()
            .version(version)
            .body(Body::new(Full::new(bytes::Bytes::from(vec![7u8; length]))))
            .unwrap();
        echo_length().oneshot(request).await.unwrap()
    }

    async fn text(response: http::Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn an_http1_body_is_read_whole_up_to_its_limit() {
        for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
            assert_eq!(text(call(version, 1000).await).await, "1000");
        }
        let at_limit = call(http::Version::HTTP_11, HTTP1_BODY_LIMIT).await;
        assert_eq!(text(at_limit).await, HTTP1_BODY_LIMIT.to_string());
        let over = call(http::Version::HTTP_11, HTTP1_BODY_LIMIT + 1).await;
        assert_eq!(over.headers()["grpc-status"], "8", "RESOURCE_EXHAUSTED");
        // HTTP/2 bodies are not read here: the inner service streams them
        let h2 = call(http::Version::HTTP_2, HTTP1_BODY_LIMIT + 1).await;
        assert_eq!(text(h2).await, (HTTP1_BODY_LIMIT + 1).to_string());
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "https://app.example",
            "http://127.0.0.1:8080",
            "https://a.b.example:8443",
        ] {
            assert!(parse_origin(good).is_ok(), "{good}");
        }
        for bad in [
            "*",
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://app.example?x=1",
            "ftp://app.example",
            "https://user@app.example",
            "https://App.example",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
