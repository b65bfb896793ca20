//! How the orchestrator reaches a tool service: over the network (a tonic
//! [`Channel`] to another Deployment) or, when the tool runs in the same
//! process, by calling the tool's gRPC service directly.
//!
//! Both are a [`ToolChannel`], so the generated clients
//! (`SqlServiceClient<ToolChannel>`, …) and everything above them are the
//! same either way: requests are still encoded as gRPC messages, carry the
//! caller's forwarded `authorization`, and go through the tool server's
//! authentication layer, which puts the caller's `Principal` into the
//! request as a network call would. What the in-process path leaves out is
//! the socket and HTTP/2: no framing, no flow-control window, no wake-up of a
//! connection task per message. `quarry bench ask` measured the SQL tool's
//! loopback hop at ≈ 0.5 ms per Ask, idle.
//!
//! A remote tool call carries the W3C trace context of the span it is made
//! in (`traceparent`, `tracestate`), so the tool's own spans join the
//! Ask's trace.
//!
//! Cancellation is unchanged: dropping the client's response future drops
//! the tool's handler future (in process, it is polled inside it), which
//! cancels a running database statement exactly as a reset HTTP/2 stream
//! does.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::propagation::{Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{BoxError, Service, ServiceExt as _, util::BoxCloneSyncService};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A gRPC transport to one tool service: `http::Request<Body>` in,
/// `http::Response<Body>` out; errors are transport errors (a service in
/// this process has none).
pub type ToolChannel =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;

/// A tool could not be reached: the connection failed or broke. (A concrete
/// type rather than a boxed error: rustc cannot prove a spawned task that
/// awaits a client over `Box<dyn Error>` to be `Send`, rust-lang/rust#110338.)
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TransportError(BoxError);

/// A tool served by another process, reached through `channel`. Each
/// request carries the current span's trace context as `traceparent` and
/// `tracestate` headers (W3C Trace Context; none when the span is not
/// exported).
pub fn remote(channel: Channel) -> ToolChannel {
    watched(BoxCloneSyncService::new(
        channel
            .map_request(with_trace_context)
            .map_err(|error| TransportError(error.into())),
    ))
}

/// `request` with the current span's context injected into its headers.
fn with_trace_context(mut request: http::Request<Body>) -> http::Request<Body> {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut Headers(request.headers_mut()));
    request
}

/// Request headers written by the propagator (it writes lowercase hex and
/// `tracestate` as validated on the way in; a value a header may not hold
/// is dropped).
struct Headers<'a>(&'a mut http::HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// A tool served by this process: `service` is the tool's generated gRPC
/// server (e.g. `SqlServiceServer`), wrapped in the same authentication
/// layer the network server uses, so that handlers find the caller's
/// `Principal` in the request extensions.
pub fn in_process<S>(service: S) -> ToolChannel
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    watched(BoxCloneSyncService::new(
        service.map_err(|never: Infallible| match never {}),
    ))
}

/// Whether a tool service an `Ask` called was unavailable: set when a call
/// carrying it (in its request extensions, see
/// [`crate::AskCaller::request`]) failed to connect or came back
/// `UNAVAILABLE` (the tool's database unreachable, say), so the `Ask` can
/// end with `UNAVAILABLE` rather than a failed answer. Cheap to clone
/// (shared).
#[derive(Debug, Clone, Default)]
pub struct DependencyWatch(Arc<Mutex<Option<String>>>);

impl DependencyWatch {
    /// Records that a dependency is unavailable, and why (the first reason
    /// is kept).
    pub fn note(&self, why: impl Into<String>) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(why.into());
        }
    }

    /// Why a dependency was unavailable, if one was.
    pub fn unavailable(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `inner`, noting in each request's [`DependencyWatch`] (when it carries
/// one) a transport failure or an `UNAVAILABLE` answer. Tool RPCs are unary,
/// so an error comes back as a trailers-only response: its `grpc-status`
/// is in the response headers.
fn watched(inner: ToolChannel) -> ToolChannel {
    BoxCloneSyncService::new(tower::service_fn(move |request: http::Request<Body>| {
        let watch = request.extensions().get::<DependencyWatch>().cloned();
        let path = request.uri().path().to_owned();
        let call = inner.clone().oneshot(request);
        async move {
            let result = call.await;
            if let Some(watch) = watch {
                match &result {
                    Err(error) => watch.note(format!("{path}: {error}")),
                    Ok(response) => {
                        if let Some(status) = tonic::Status::from_header_map(response.headers())
                            && status.code() == tonic::Code::Unavailable
                        {
                            watch.note(format!("{path}: {}", status.message()));
                        }
                    }
                }
            }
            result
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tool service answering every call with `status` (a trailers-only
    /// response, as tonic's servers send for an error).
    fn answering(status: tonic::Status) -> ToolChannel {
        in_process(tower::service_fn(move |_: http::Request<Body>| {
            let status = status.clone();
            async move { Ok::<_, Infallible>(status.into_http()) }
        }))
    }

    fn call_with(watch: &DependencyWatch) -> http::Request<Body> {
        let mut request = http::Request::builder()
            .uri("http://tool/quarry.v1.SqlService/ExecuteSql")
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(watch.clone());
        request
    }

    #[tokio::test]
    async fn an_unavailable_tool_is_noted_in_the_asks_watch_and_other_errors_are_not() {
        let watch = DependencyWatch::default();
        let refused = answering(tonic::Status::invalid_argument("bad sql"));
        refused.oneshot(call_with(&watch)).await.unwrap();
        assert_eq!(
            watch.unavailable(),
            None,
            "a wrong request is not an outage"
        );
        let down = answering(tonic::Status::unavailable(
            "database pool: connection refused",
        ));
        down.oneshot(call_with(&watch)).await.unwrap();
        let why = watch.unavailable().unwrap();
        assert!(
            why.contains("ExecuteSql") && why.contains("connection refused"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn a_tool_that_cannot_be_reached_is_noted() {
        let watch = DependencyWatch::default();
        // nothing listens on port 1
        let channel = Channel::from_static("http://127.0.0.1:1").connect_lazy();
        let result = remote(channel).oneshot(call_with(&watch)).await;
        assert!(result.is_err());
        assert!(watch.unavailable().is_some());
    }
}
