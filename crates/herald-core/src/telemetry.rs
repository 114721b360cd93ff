//! Logging and tracing: `tracing` to stderr as text or JSON, and, when an
//! OTLP endpoint is set, spans exported to an OpenTelemetry collector,
//! configured by the standard `OTEL_*` variables:
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `--otlp-endpoint`): unset = no
//!   exporter, no spans, no trace headers: no cost;
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (default), `http/protobuf` or
//!   `http/json`;
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: default service name
//!   is the binary's;
//! - `OTEL_TRACES_SAMPLER` / `_ARG` and `OTEL_BSP_*`: read by the SDK.
//!
//! W3C trace context (`traceparent`) goes from gRPC metadata into NATS
//! message headers and out again on the edge ([`extract_http`],
//! [`inject_nats`], [`extract_nats`]), so one trace spans services.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Why logging or span export cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("bad log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL {0:?}: use grpc, http/protobuf or http/json")]
    Protocol(String),
    #[error("cannot set up OTLP export to {endpoint}: {error}")]
    Exporter {
        endpoint: String,
        error: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("{0}")]
    Installed(#[from] tracing_subscriber::util::TryInitError),
}

/// Whether spans are exported; hot paths make spans only then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans (an OTLP endpoint is set).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// `make()`'s span when spans are exported, else a disabled one: spans on
/// hot paths cost nothing unless someone collects them.
pub fn span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if exporting() {
        make()
    } else {
        tracing::Span::none()
    }
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
/// syntax; `service` is the service name and this instance's node id;
/// `otlp_endpoint` (e.g. `http://collector:4317`) turns on span export.
/// Call from inside the Tokio runtime.
pub fn init(
    format: LogFormat,
    filter: &str,
    (service, instance): (&str, &str),
    otlp_endpoint: Option<&str>,
) -> Result<Guard, TelemetryError> {
    let filter = EnvFilter::try_new(filter)?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let provider = otlp_endpoint
        .map(|e| otlp_provider(e, service, instance))
        .transpose()?;
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    if provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Guard(provider))
}

fn otlp_provider(
    endpoint: &str,
    service: &str,
    instance: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match protocol()? {
        Protocol::Grpc => builder.with_tonic().with_endpoint(endpoint).build(),
        http => builder
            .with_http()
            .with_protocol(http)
            .with_endpoint(traces_url(endpoint))
            .build(),
    }
    .map_err(|error| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        error,
    })?;
    // Which node a span comes from; OTEL_RESOURCE_ATTRIBUTES may override.
    let node = opentelemetry::KeyValue::new("service.instance.id", instance.to_owned());
    let mut resource = opentelemetry_sdk::Resource::builder_empty()
        .with_attribute(node)
        .with_detectors(&[
            Box::new(opentelemetry_sdk::resource::EnvResourceDetector::new()),
            Box::new(opentelemetry_sdk::resource::SdkProvidedResourceDetector),
        ]);
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`.
fn protocol() -> Result<Protocol, TelemetryError> {
    let value = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    match value.as_str() {
        "" | "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpBinary),
        "http/json" => Ok(Protocol::HttpJson),
        other => Err(TelemetryError::Protocol(other.to_owned())),
    }
}

/// Over HTTP the base endpoint gets the signal's path, as the spec says.
fn traces_url(endpoint: &str) -> String {
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

/// Makes `span` a child of the trace context in HTTP (gRPC) headers, if
/// they carry one (a `traceparent` from the caller).
pub fn continue_http(span: &tracing::Span, headers: &http::HeaderMap) {
    let _ = span.set_parent(extract_http(headers));
}

/// Makes `span` a child of the trace context in a NATS message's headers.
pub fn continue_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    let _ = span.set_parent(extract_nats(headers));
}

/// The trace context carried by HTTP (gRPC) headers, if any.
pub fn extract_http(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HttpHeaders(headers))
}

/// The trace context carried by a NATS message's headers, if any.
pub fn extract_nats(headers: Option<&async_nats::HeaderMap>) -> opentelemetry::Context {
    match headers {
        Some(headers) => TraceContextPropagator::new().extract(&NatsHeaders(headers)),
        None => opentelemetry::Context::new(),
    }
}

/// Writes `span`'s trace context into NATS headers (nothing if the span
/// is not being exported).
pub fn inject_nats(span: &tracing::Span, headers: &mut async_nats::HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut NatsHeadersMut(headers));
}

struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct NatsHeaders<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(async_nats::HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

struct NatsHeadersMut<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_survives_nats_headers() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut http = http::HeaderMap::new();
        http.insert("traceparent", traceparent.parse().unwrap());
        let cx = extract_http(&http);
        let mut nats = async_nats::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut NatsHeadersMut(&mut nats));
        assert_eq!(
            nats.get("traceparent").map(|v| v.as_str()),
            Some(traceparent)
        );
        let back = extract_nats(Some(&nats));
        use opentelemetry::trace::TraceContextExt;
        assert_eq!(
            back.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn garbage_trace_context_is_ignored() {
        use opentelemetry::trace::TraceContextExt;
        for bad in [
            "",
            "00-zz-yy-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let mut http = http::HeaderMap::new();
            http.insert("traceparent", bad.parse().unwrap());
            let cx = extract_http(&http);
            assert!(!cx.span().span_context().is_valid(), "{bad:?}");
        }
        assert!(!extract_nats(None).span().span_context().is_valid());
    }

    #[test]
    fn protocols_and_urls() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
