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
    BoxCloneSyncService::new(
        channel
            .map_request(with_trace_context)
            .map_err(|error| TransportError(error.into())),
    )
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
    BoxCloneSyncService::new(service.map_err(|never: Infallible| match never {}))
}
