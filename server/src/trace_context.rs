//! W3C trace context on the way in: the `rpc` span of every gRPC call,
//! child of the caller's `traceparent` when it sends a valid one.

use std::{
    mem,
    task::{Context, Poll},
};

use futures::{FutureExt as _, future::BoxFuture};
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator as _},
    trace::TraceContextExt as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::{Layer, Service};
use tracing::{Instrument as _, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `traceparent` header (W3C Trace Context §3.2).
const TRACEPARENT: &str = "traceparent";

/// Wraps a gRPC service so that each call runs in an `info` span `rpc`
/// (`otel.kind = server`, `rpc.system = grpc`, `rpc.service`,
/// `rpc.method`, and `rpc.grpc.status_code` when the handler answers with
/// a trailers-only status). A `traceparent` header that is valid by W3C
/// Trace Context §3.2 ([`valid_traceparent`]) makes the span a child of
/// the caller's span, in the caller's trace, with its `tracestate`; an
/// invalid one is ignored (the call starts a new trace, it does not fail).
/// Health checks pass untraced.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextLayer;

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContext { inner }
    }
}

/// The service of [`TraceContextLayer`]; errors are the inner service's.
#[derive(Clone, Debug)]
pub struct TraceContext<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for TraceContext<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let path = req.uri().path();
        if path.starts_with("/grpc.health.v1.Health/") {
            return Box::pin(inner.call(req));
        }
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
        );
        if let Some(parent) = remote_parent(req.headers()) {
            // only fails without the OpenTelemetry layer (nothing to export)
            let _ = span.set_parent(parent);
        }
        let future = span.in_scope(|| inner.call(req));
        let recorder = span.clone();
        async move {
            let response = future.await?;
            if let Some(code) = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
            {
                recorder.record("rpc.grpc.status_code", code);
            }
            Ok(response)
        }
        .instrument(span)
        .boxed()
    }
}

/// The caller's span as a parent context: `None` unless the request has
/// exactly one `traceparent` and it is [`valid_traceparent`].
fn remote_parent(headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    if !value.to_str().is_ok_and(valid_traceparent) {
        tracing::debug!("invalid traceparent ignored: the call starts a new trace");
        return None;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    context.span().span_context().is_valid().then_some(context)
}

/// Whether `value` is a `traceparent` W3C Trace Context (§3.2.2) accepts:
/// `version-traceid-parentid-flags` in lowercase hex of 2, 32, 16 and 2
/// digits; version `ff` is invalid; version `00` is exactly those 55
/// characters, a later version may append fields after a `-`; neither the
/// trace id nor the parent id is all zeros. Stricter than the SDK's
/// parser, which reads `00-1-2-01` as trace 1, span 2.
pub fn valid_traceparent(value: &str) -> bool {
    let bytes = value.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    };
    let nonzero = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().any(|&b| b != b'0'))
    };
    if bytes.len() < 55
        || !hex(0..2)
        || bytes.get(2) != Some(&b'-')
        || !hex(3..35)
        || bytes.get(35) != Some(&b'-')
        || !hex(36..52)
        || bytes.get(52) != Some(&b'-')
        || !hex(53..55)
        || !nonzero(3..35)
        || !nonzero(36..52)
    {
        return false;
    }
    match &value[0..2] {
        "ff" => false,
        "00" => bytes.len() == 55,
        _ => bytes.len() == 55 || bytes.get(55) == Some(&b'-'),
    }
}

/// Request headers read by the propagator.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::valid_traceparent;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_is_valid() {
        assert!(valid_traceparent(VALID));
        // a later version may carry more fields after a dash
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
    }

    #[test]
    fn malformed_ones_are_refused() {
        for bad in [
            "",
            "00-1-2-01",
            "00-abc-def-01",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // all-zero trace id, all-zero parent id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // version 00 with a trailing field
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            // a later version whose extra part does not start with a dash
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // a separator out of place, a non-hex digit
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // a structure smuggled after a valid prefix
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'; DROP TABLE x; --",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
        }
    }
}
