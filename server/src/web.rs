//! gRPC for browsers: grpc-web ([`tonic_web`]) and CORS
//! ([`tower_http::cors`]) in front of the gRPC layers, so that a browser
//! call meets the same auth, rate limits and policy as any gRPC call.
//!
//! Layer order in [`crate::serve`]: surfaces (console, MCP) → CORS (a
//! preflight `OPTIONS` is answered here and never meets auth) → grpc-web
//! (translates `application/grpc-web[+proto|-text]` to gRPC and back) →
//! trace, metrics, auth, rate limit, policy. An HTTP/1.x request they
//! answer without reading has the rest of its body read, up to a small
//! limit, so its connection stays usable ([`DrainRefusedHttp1Layer`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{FutureExt as _, future::BoxFuture};
use http::{HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt as _, Limited};
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

/// The most of a refused HTTP/1.x request's body read after its answer,
/// bytes, here and by the MCP surface's 401: a grpc-web call refused on its headers
/// (no token, a bad one, a rate limit) with a body up to this long leaves
/// its connection usable for the next call; a longer one has its
/// connection closed, as before. Small, so that a caller without a token
/// cannot make the server hold much for it.
pub const REFUSED_BODY_LIMIT: usize = 64 * 1024;

/// How long the rest of a refused request's body is waited for: a client
/// that sends its head and then stalls gets its answer after this, and
/// its connection is closed, rather than holding the refusal back forever.
pub const REFUSED_BODY_WAIT: Duration = Duration::from_secs(2);

/// Reads `body`, the body of a request answered without reading it, to its
/// end and drops it: at most [`REFUSED_BODY_LIMIT`] bytes, for at most
/// [`REFUSED_BODY_WAIT`]. Whether it was read to its end (then an HTTP/1.1
/// connection carries the next request; else hyper closes it). Shared by
/// [`DrainRefusedHttp1`] and the MCP surface's 401.
pub(crate) async fn drain_refused<B>(body: B) -> bool
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let read = Limited::new(body, REFUSED_BODY_LIMIT).collect();
    matches!(
        tokio::time::timeout(REFUSED_BODY_WAIT, read).await,
        Ok(Ok(_))
    )
}

/// Reads the rest of an HTTP/1.x request's body ([`drain_refused`]: at most
/// [`REFUSED_BODY_LIMIT`], for at most [`REFUSED_BODY_WAIT`]), when the layers inside it (grpc-web, auth, rate
/// limit, policy) answered without reading it.
///
/// Why: a layer may answer on the head alone (auth refusing a missing or
/// bad token, a rate limit), dropping the body unread. Over HTTP/2 that
/// ends one stream; over HTTP/1.1 hyper must then close the connection,
/// since the unread body stands between this request and the next, and a
/// browser reusing the connection would see it drop. The body is shared
/// with the inner service; once the inner service has answered and let go
/// of it unread, the rest is read and dropped before the answer goes out.
/// A call the inner service reads is not touched, and HTTP/2 requests pass
/// through untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct DrainRefusedHttp1Layer;

impl<S> Layer<S> for DrainRefusedHttp1Layer {
    type Service = DrainRefusedHttp1<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DrainRefusedHttp1 { inner }
    }
}

/// The service of [`DrainRefusedHttp1Layer`].
#[derive(Debug, Clone)]
pub struct DrainRefusedHttp1<S> {
    inner: S,
}

/// A request body the inner service reads while the layer keeps a hold on
/// it (`Arc` count 2 while the inner service holds it).
struct SharedBody(Arc<Mutex<Body>>);

impl http_body::Body for SharedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size_hint()
    }
}

impl<S> Service<http::Request<Body>> for DrainRefusedHttp1<S>
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
        let (parts, body) = request.into_parts();
        let shared = Arc::new(Mutex::new(body));
        let request = http::Request::from_parts(parts, Body::new(SharedBody(Arc::clone(&shared))));
        async move {
            let response = inner.call(request).await?;
            // the inner service let go of the body: read what it left
            if let Ok(body) = Arc::try_unwrap(shared) {
                let body = body.into_inner().unwrap_or_else(PoisonError::into_inner);
                if !http_body::Body::is_end_stream(&body) {
                    drain_refused(body).await;
                }
            }
            Ok(response)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures::StreamExt as _;
    use http_body_util::Full;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// An inner service that reads the body when `read`, else answers at
    /// once without it.
    fn service(
        read: bool,
    ) -> DrainRefusedHttp1<
        tower::util::BoxCloneService<
            http::Request<Body>,
            http::Response<Body>,
            std::convert::Infallible,
        >,
    > {
        DrainRefusedHttp1Layer.layer(tower::util::BoxCloneService::new(tower::service_fn(
            move |request: http::Request<Body>| async move {
                let text = if read {
                    let bytes = request.into_body().collect().await.unwrap().to_bytes();
                    bytes.len().to_string()
                } else {
                    "refused".to_owned()
                };
                Ok(http::Response::new(Body::new(Full::new(
                    bytes::Bytes::from(text),
                ))))
            },
        )))
    }

    /// A body of `length` bytes in 1 KiB frames that sets `done` once read
    /// to its end.
    fn body(length: usize, done: Arc<AtomicBool>) -> Body {
        let frames: Vec<Result<http_body::Frame<bytes::Bytes>, tonic::Status>> = (0..length)
            .step_by(1024)
            .map(|at| {
                let size = (length - at).min(1024);
                Ok(http_body::Frame::data(bytes::Bytes::from(vec![7u8; size])))
            })
            .collect();
        let stream = futures::stream::iter(frames).chain(futures::stream::poll_fn(move |_| {
            done.store(true, Ordering::SeqCst);
            Poll::Ready(None)
        }));
        Body::new(http_body_util::StreamBody::new(stream))
    }

    async fn call(version: http::Version, read: bool, length: usize) -> (String, bool) {
        use tower::ServiceExt as _;
        let done = Arc::new(AtomicBool::new(false));
        let request = http::Request::builder()
            .version(version)
            .body(body(length, Arc::clone(&done)))
            .unwrap();
        let response = service(read).oneshot(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            String::from_utf8(bytes.to_vec()).unwrap(),
            done.load(Ordering::SeqCst),
        )
    }

    #[tokio::test]
    async fn a_refused_http1_body_is_read_up_to_its_limit() {
        // read by the inner service: untouched, whole
        assert_eq!(
            call(http::Version::HTTP_11, true, 100_000).await,
            ("100000".into(), true)
        );
        // refused unread: the rest is read before the answer goes out
        assert_eq!(
            call(http::Version::HTTP_11, false, 5_000).await,
            ("refused".into(), true)
        );
        assert_eq!(
            call(http::Version::HTTP_11, false, REFUSED_BODY_LIMIT).await,
            ("refused".into(), true)
        );
        // longer than the limit: left unread (hyper closes the connection)
        assert_eq!(
            call(http::Version::HTTP_11, false, REFUSED_BODY_LIMIT + 2048).await,
            ("refused".into(), false)
        );
        // HTTP/2: a refused stream ends alone; nothing is read for it
        assert_eq!(
            call(http::Version::HTTP_2, false, 5_000).await,
            ("refused".into(), false)
        );
    }

    /// A refused body that stalls after its first frame holds the answer
    /// back for [`REFUSED_BODY_WAIT`] only (without the bound it would
    /// wait forever: the bound on the test's own wait fails it then).
    #[tokio::test]
    async fn a_stalled_refused_body_is_waited_for_a_bounded_time() {
        use tower::ServiceExt as _;
        let first: Result<http_body::Frame<bytes::Bytes>, tonic::Status> =
            Ok(http_body::Frame::data(bytes::Bytes::from_static(b"grpc")));
        let stalled = futures::stream::iter([first]).chain(futures::stream::pending());
        let request = http::Request::builder()
            .version(http::Version::HTTP_11)
            .body(Body::new(http_body_util::StreamBody::new(stalled)))
            .unwrap();
        let started = std::time::Instant::now();
        let response =
            tokio::time::timeout(REFUSED_BODY_WAIT * 10, service(false).oneshot(request))
                .await
                .expect("the refusal was held back past the drain's bound")
                .unwrap();
        assert!(
            started.elapsed() >= REFUSED_BODY_WAIT,
            "{:?}",
            started.elapsed()
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"refused");
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
