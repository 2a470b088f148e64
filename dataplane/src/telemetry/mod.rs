//! OpenTelemetry traces: one span per model request and per MCP `tools/call`, following the
//! GenAI semantic conventions, exported over OTLP/HTTP (protobuf) in batches.
//!
//! Configured by the standard environment variables ([`settings`]); **off by default**: with
//! neither an OTLP endpoint nor `OTEL_TRACES_EXPORTER=otlp` there is no exporter, no tracer,
//! and the request path's hooks do nothing (a [`CallSpan`] is then an empty `Option`).
//!
//! Guarantees:
//! - Export never blocks a request: spans end into the SDK's bounded batch queue (a full
//!   queue drops spans, it never waits); a background thread sends the batches through the
//!   proxy's own hyper client, on the proxy's runtime ([`export`]).
//! - [`Telemetry::shutdown`] flushes what is queued before the process exits.
//! - No key, credential or header value is ever an attribute: spans carry key *ids*, team,
//!   user, models, usage, cost, statuses and refusal reasons only. Prompt and completion
//!   content is not recorded at all (not even under `full` capture, for now).
//! - W3C trace context: a client's `traceparent`/`tracestate` make the request's span its
//!   child; the provider request carries a new `traceparent` naming this span, replacing any
//!   the client sent. With tracing off, the gateway changes no trace header.
//!
//! Non-guarantees: OTLP over gRPC is not built in (it would add tonic, h2 and tower to a
//! proxy that speaks HTTP/1.1 only); `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` is refused at start
//! with a message saying so. MCP tool spans do not yet join a client's trace.

pub mod export;
pub mod genai;
pub mod settings;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub use genai::{CallSpan, Finished, ToolSpan};
pub use settings::Settings;

use crate::upstream::HttpClient;

/// The service name spans are reported under unless `OTEL_SERVICE_NAME` (or
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "tollgate-proxy";

/// The tracer, once [`init`] configured one: none means tracing is off.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The configured tracer, if tracing is on.
pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// The running trace pipeline; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes queued spans (within the exporter's timeout) and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        // The SDK's shutdown blocks until its export thread is done, and that thread sends
        // through tasks on this runtime: wait on a blocking thread, not on a worker.
        let done = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(Duration::from_secs(15), done).await {
            Ok(Ok(Ok(()))) => tracing::info!("OpenTelemetry traces flushed"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "OpenTelemetry shutdown failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "OpenTelemetry shutdown failed"),
            Err(_) => tracing::warn!("OpenTelemetry shutdown timed out: spans may be lost"),
        }
    }
}

/// Starts the trace pipeline the environment asks for (see [`Settings::from_env`]), sending
/// through `client`. Call from within the Tokio runtime that serves requests; at most once
/// per process (a second pipeline is refused).
pub fn init(client: &HttpClient) -> anyhow::Result<Telemetry> {
    let Some(settings) = Settings::from_env(|k| std::env::var(k).ok())? else {
        return Ok(Telemetry::default());
    };
    let http = export::HyperExport::new(client.clone(), tokio::runtime::Handle::current());
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(http)
        .build()
        .map_err(|e| anyhow::anyhow!("OpenTelemetry OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(&settings))
        .build();
    let tracer = provider.tracer("tollgate-proxy");
    TRACER
        .set(tracer)
        .map_err(|_| anyhow::anyhow!("OpenTelemetry traces were already started"))?;
    tracing::info!(endpoint = %settings.endpoint, "exporting OpenTelemetry traces (OTLP/HTTP protobuf)");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The resource: `service.name` (ours unless configured), then `OTEL_RESOURCE_ATTRIBUTES`,
/// then `OTEL_SERVICE_NAME` (the spec's order of precedence, last wins).
fn resource(settings: &Settings) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_service_name(DEFAULT_SERVICE_NAME)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = &settings.service_name {
        builder = builder.with_service_name(name.clone());
    }
    builder.build()
}
