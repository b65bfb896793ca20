//! Prometheus exposition: the process's recorder (the `metrics` facade's
//! Prometheus exporter, installed once per process), the `/metrics` HTTP
//! endpoint on `[metrics] listen`, and the tower layer that measures every
//! gRPC call. The series themselves are listed in `quarry-metrics`.
//!
//! Library: `metrics` + `metrics-exporter-prometheus` rather than the
//! `prometheus` crate, because the crates that emit (SQL tool, sync,
//! summaries, orchestrator, pools) then depend only on a facade that is a
//! no-op until a recorder is installed (tests, the CLI's one-off commands),
//! and the one place that exports is this module.

use std::{
    collections::HashSet,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};
use tracing::{info, warn};

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`GET /metrics`, text exposition
    /// format 0.0.4), e.g. `0.0.0.0:9464`; port 0 picks a free port (logged
    /// as `metrics serving`). Unset (the default): no endpoint, nothing
    /// recorded.
    pub listen: Option<SocketAddr>,
    /// Tenants that keep their own `tenant` label in this process; later
    /// ones share `tenant="other"` (see `quarry_metrics`). Default 1,000.
    pub max_tenant_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_tenant_labels: quarry_metrics::DEFAULT_MAX_TENANT_LABELS,
        }
    }
}

impl MetricsConfig {
    /// Binds `listen`, when set.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(&self) -> std::io::Result<Option<TcpListener>> {
        match self.listen {
            Some(addr) => Ok(Some(TcpListener::bind(addr).await?)),
            None => Ok(None),
        }
    }
}

static RECORDER: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// The process's Prometheus recorder, installed on first use (with the
/// buckets of `quarry_metrics`); every later server of the process shares
/// it.
///
/// # Errors
/// Bad bucket lists, or another recorder is already installed.
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    let mut installed = RECORDER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            quarry_metrics::SECONDS_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(quarry_metrics::names::MODEL_CALL_COST.to_owned()),
            quarry_metrics::USD_BUCKETS,
        )?
        .install_recorder()?;
    quarry_metrics::describe();
    *installed = Some(handle.clone());
    Ok(handle)
}

/// How often histogram samples are folded in when nobody scrapes (the
/// exporter's upkeep; its documented default is 5 s).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` until `stop`: `collect` runs first
/// (gauges sampled at scrape time), then the recorder renders.
pub(crate) fn spawn_endpoint(
    listener: TcpListener,
    handle: PrometheusHandle,
    collect: Arc<dyn Fn() + Send + Sync>,
    stop: CancellationToken,
) {
    let local = listener.local_addr().ok();
    let render = handle.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            let collect = Arc::clone(&collect);
            async move {
                collect();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render.render(),
                )
            }
        }),
    );
    if let Some(local) = local {
        info!(%local, "metrics serving");
    }
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(error) = server.await {
                warn!(%error, "metrics endpoint stopped");
            }
        });
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(UPKEEP_INTERVAL) => handle.run_upkeep(),
            }
        }
    });
}

/// The canonical name of a gRPC status code (grpc/doc/statuscodes.md), the
/// `code` label.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The gRPC code in a `grpc-status` header or trailer, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from_i32(value.trim().parse().ok()?))
}

/// A tower layer that records each gRPC call ([`quarry_metrics::rpc_started`],
/// [`quarry_metrics::rpc_finished`]): the code comes from the `grpc-status`
/// header (a trailers-only response: errors before the handler's stream)
/// or trailer; the call ends when the response body does — a streaming
/// `Ask` is measured until its last event. A response dropped before its
/// end (the client went away) counts as `CANCELLED`. Paths that are not a
/// known method (from the descriptor sets given) are labelled `other`, so
/// a client cannot grow the series with made-up paths.
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    known: Arc<HashSet<String>>,
    /// `false`: pass calls through unmeasured (no `[metrics]`).
    on: bool,
}

impl RpcMetricsLayer {
    /// A layer knowing the methods of the services in `descriptor_sets`
    /// (encoded `FileDescriptorSet`s; ones that do not decode are skipped).
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        let mut known = HashSet::new();
        for set in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    for method in service.method {
                        known.insert(format!(
                            "/{package}.{service_name}/{}",
                            method.name.unwrap_or_default()
                        ));
                    }
                }
            }
        }
        Self {
            known: Arc::new(known),
            on: true,
        }
    }

    /// A layer that measures nothing (the response body is only wrapped).
    pub fn off() -> Self {
        Self {
            known: Arc::new(HashSet::new()),
            on: false,
        }
    }

    /// The layer for the services a Quarry node serves: Quarry's, health
    /// and reflection (v1 and v1alpha).
    pub fn for_quarry() -> Self {
        let mut layer = Self::new(&[
            quarry_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]);
        // tonic-reflection keeps its descriptor sets private
        let known = Arc::make_mut(&mut layer.known);
        for version in ["v1", "v1alpha"] {
            known.insert(format!(
                "/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
            ));
        }
        layer
    }

    /// `(service, method)` labels of a request path.
    fn labels(&self, path: &str) -> (String, String) {
        if self.known.contains(path)
            && let Some((service, method)) = path.trim_start_matches('/').split_once('/')
        {
            return (service.to_owned(), method.to_owned());
        }
        ("other".to_owned(), "other".to_owned())
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    layer: RpcMetricsLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !self.layer.on {
            return Box::pin(async move {
                let response = inner.call(req).await?;
                Ok(response.map(|body| MeteredBody {
                    inner: body,
                    call: None,
                }))
            });
        }
        let (service, method) = self.layer.labels(req.uri().path());
        quarry_metrics::rpc_started(&service, &method);
        let mut call = Call {
            service,
            method,
            started: Instant::now(),
            code: None,
        };
        Box::pin(async move {
            match inner.call(req).await {
                Ok(response) => {
                    call.code = grpc_status(response.headers());
                    Ok(response.map(|body| MeteredBody {
                        inner: body,
                        call: Some(call),
                    }))
                }
                Err(error) => {
                    call.code = Some(tonic::Code::Unknown);
                    call.finish(None);
                    Err(error)
                }
            }
        })
    }
}

/// One call being measured.
struct Call {
    service: String,
    method: String,
    started: Instant,
    /// From the response headers (trailers-only) or trailers.
    code: Option<tonic::Code>,
}

impl Call {
    /// Records the call with its code, else `fallback`'s, else `CANCELLED`.
    fn finish(self, fallback: Option<tonic::Code>) {
        let code = self.code.or(fallback).unwrap_or(tonic::Code::Cancelled);
        quarry_metrics::rpc_finished(
            &self.service,
            &self.method,
            code_name(code),
            self.started.elapsed(),
        );
    }
}

/// A response body that records its call when it ends (or is dropped).
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = self.call.as_mut()
                {
                    call.code = grpc_status(trailers).or(call.code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    // the stream broke: hyper resets it
                    call.finish(Some(tonic::Code::Unknown));
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    // a stream that ends without a status: tonic always
                    // sends one, so this is the trailers-only case
                    call.finish(Some(tonic::Code::Unknown));
                }
            }
            Poll::Pending => {}
        }
        if self.inner.is_end_stream()
            && let Some(call) = self.call.take()
        {
            call.finish(Some(tonic::Code::Unknown));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            // dropped before its end: the client went away
            call.finish(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_keep_their_labels_and_others_share_one() {
        let layer = RpcMetricsLayer::for_quarry();
        assert_eq!(
            layer.labels("/quarry.v1.SqlService/ExecuteSql"),
            ("quarry.v1.SqlService".to_owned(), "ExecuteSql".to_owned())
        );
        assert_eq!(
            layer.labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health".to_owned(), "Check".to_owned())
        );
        assert_eq!(
            layer.labels("/quarry.v1.SqlService/Nope"),
            ("other".to_owned(), "other".to_owned())
        );
        assert_eq!(
            layer.labels("/x/y"),
            ("other".to_owned(), "other".to_owned())
        );
    }

    #[test]
    fn codes_have_their_canonical_names() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::from_i32(3)), "INVALID_ARGUMENT");
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(grpc_status(&headers), Some(tonic::Code::Unavailable));
    }
}
