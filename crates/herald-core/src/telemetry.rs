//! Logging and tracing: `tracing` to stderr as text or JSON, and, when an
//! OTLP endpoint is set, spans exported to an OpenTelemetry collector.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flushes exported spans when dropped; keep it alive for the process's life.
#[must_use = "dropping the guard stops span export"]
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing spans failed: {e}");
        }
    }
}

/// Installs the global subscriber. `filter` uses `tracing`'s directive
/// syntax; `otlp_endpoint` (e.g. `http://collector:4317`) turns on span
/// export over OTLP/gRPC. Call from inside the Tokio runtime.
pub fn init(
    format: LogFormat,
    filter: &str,
    service: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Guard, String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("bad log filter: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let provider = otlp_endpoint
        .map(|e| otlp_provider(e, service))
        .transpose()?;
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Guard(provider))
}

fn otlp_provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot set up OTLP export to {endpoint}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
