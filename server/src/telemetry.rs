//! The `tracing` subscriber of a Quarry process: log lines on stderr
//! (filtered by `RUST_LOG`, default `info`) and, when `[tracing]
//! otlp_endpoint` is set, every `info` span exported to an OpenTelemetry
//! collector over OTLP/gRPC (`tracing-opentelemetry` into the OpenTelemetry
//! SDK's batch span processor).
//!
//! The span tree of an `Ask`: `rpc` (the gRPC call; its parent is the
//! client's W3C `traceparent`, see [`TraceContextLayer`](crate::TraceContextLayer))
//! → `ask` → `ask.step` → `model.call` and `tool.call` → (a remote tool's own
//! `rpc`) → `sql.statement`.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider},
};
use serde::{Deserialize, Serialize};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::Targets, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// `[tracing]`: where spans go. Off (nothing exported) while `otlp_endpoint`
/// is unset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// An OTLP/gRPC collector, e.g. `http://127.0.0.1:4317` (4317 is the
    /// OTLP/gRPC port of the OTLP specification, "OTLP/gRPC"); `http` or
    /// `https`. Unset: spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of every span. Default
    /// `quarry`; give each Deployment its own (`quarry-sql`, …) to tell the
    /// roles apart.
    pub service_name: String,
    /// The fraction of new traces (no sampled `traceparent` from the
    /// client) that are recorded, `0.0..=1.0`; a trace the client started
    /// follows the client's sampled flag (OpenTelemetry `ParentBased`
    /// sampler). Default 1.0.
    pub sampling_ratio: f64,
    /// How long finished spans may wait before they are sent, in
    /// milliseconds. Default 5,000 (the OpenTelemetry SDK specification's
    /// `OTEL_BSP_SCHEDULE_DELAY`).
    pub batch_delay_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "quarry".to_owned(),
            sampling_ratio: 1.0,
            batch_delay_ms: 5000,
        }
    }
}

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A `[tracing]` value is out of range; the message names the key.
    #[error("{0}")]
    Config(String),
    /// The OTLP exporter could not be built.
    #[error("otlp exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber was already installed.
    #[error("tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

impl TracingConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`TelemetryError::Config`] naming `tracing.sampling_ratio` outside
    /// `0.0..=1.0` or a `tracing.otlp_endpoint` that is not an `http(s)://`
    /// URL.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(TelemetryError::Config(format!(
                "tracing.sampling_ratio must be between 0 and 1, not {}",
                self.sampling_ratio
            )));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri: http::Uri = endpoint.parse().map_err(|_| {
                TelemetryError::Config(format!("tracing.otlp_endpoint {endpoint:?} is not a URL"))
            })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(TelemetryError::Config(format!(
                    "tracing.otlp_endpoint {endpoint:?} must be an http:// or https:// URL"
                )));
            }
        }
        Ok(())
    }
}

/// The process's telemetry: keep it until the end of `main`, then
/// [`Telemetry::shutdown`] it so the last spans are sent.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: log lines on stderr (`RUST_LOG`,
    /// default `info`) and, with `config.otlp_endpoint`, the OTLP export of
    /// `info` spans (and their events). Needs a Tokio runtime (the gRPC
    /// exporter's connection lives on it).
    ///
    /// # Errors
    /// An invalid `config` ([`TracingConfig::validate`]), an exporter that
    /// cannot be built, or a global subscriber already set.
    pub fn init(config: &TracingConfig) -> Result<Self, TelemetryError> {
        config.validate()?;
        let provider = config
            .otlp_endpoint
            .as_deref()
            .map(|endpoint| provider(config, endpoint))
            .transpose()?;
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
            );
        let spans = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("quarry"))
                .with_filter(span_filter())
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .try_init()?;
        Ok(Self { provider })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends every finished span now and waits for the collector's answer
    /// (on a blocking thread: the SDK's flush blocks). Errors are logged.
    pub async fn flush(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        match tokio::task::spawn_blocking(move || provider.force_flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "span export flush failed"),
            Err(error) => tracing::warn!(%error, "span export flush panicked"),
        }
    }

    /// Sends the remaining spans and stops the exporter (bounded by the
    /// SDK's shutdown timeout). Errors are logged.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "span exporter shutdown failed"),
            Err(error) => tracing::warn!(%error, "span exporter shutdown panicked"),
        }
    }
}

/// The OpenTelemetry SDK pipeline: OTLP/gRPC exporter to `endpoint`, batch
/// processor, `ParentBased(TraceIdRatioBased(sampling_ratio))`, the
/// service name as resource.
fn provider(config: &TracingConfig, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(config.batch_delay_ms))
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build())
}

/// Which spans are exported: `info` and above, except those of the HTTP/2
/// and gRPC machinery the exporter itself runs on (their spans would be
/// exported by the export, without end).
fn span_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn out_of_range_values_are_refused_naming_the_key() {
        let ratio = TracingConfig {
            sampling_ratio: 1.5,
            ..TracingConfig::default()
        };
        assert!(
            ratio
                .validate()
                .unwrap_err()
                .to_string()
                .contains("tracing.sampling_ratio")
        );
        for endpoint in ["127.0.0.1:4317", "grpc://collector:4317", "not a url"] {
            let config = TracingConfig {
                otlp_endpoint: Some(endpoint.to_owned()),
                ..TracingConfig::default()
            };
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains("tracing.otlp_endpoint"),
                "{endpoint}: {error}"
            );
        }
        let fine = TracingConfig {
            otlp_endpoint: Some("http://collector:4317".to_owned()),
            ..TracingConfig::default()
        };
        fine.validate().unwrap();
    }
}
