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
//! Cancellation is unchanged: dropping the client's response future drops
//! the tool's handler future (in process, it is polled inside it), which
//! cancels a running database statement exactly as a reset HTTP/2 stream
//! does.

use std::convert::Infallible;

use tonic::body::Body;
use tonic::transport::Channel;
use tower::{BoxError, Service, ServiceExt as _, util::BoxCloneSyncService};

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

/// A tool served by another process, reached through `channel`.
pub fn remote(channel: Channel) -> ToolChannel {
    BoxCloneSyncService::new(channel.map_err(|error| TransportError(error.into())))
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
