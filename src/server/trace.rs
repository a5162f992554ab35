//! Distributed traces: the OpenTelemetry pipeline and each request's place in a trace.
//!
//! - [`Telemetry::from_env`]: OTLP over gRPC (our tonic), configured only by the standard
//!   `OTEL_*` environment variables and off unless they ask for it, so a deployment that sets
//!   nothing pays nothing: `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//!   or `OTEL_TRACES_EXPORTER=otlp` turn it on; `OTEL_SDK_DISABLED=true` or
//!   `OTEL_TRACES_EXPORTER=none` keep it off. The SDK reads the rest itself (`OTEL_SERVICE_NAME`,
//!   default here "lnrs"; `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_TRACES_SAMPLER[_ARG]`;
//!   `OTEL_BSP_*`; `OTEL_EXPORTER_OTLP_{HEADERS,TIMEOUT,COMPRESSION}`).
//! - [`adopt`]: a request's W3C `traceparent` becomes the parent of its `rpc` span, and the
//!   trace id its events record comes from that header, or from the trace the server started
//!   for the request when tracing is on.
//!
//! The spans themselves are ordinary `tracing` spans (`rpc` in [`super::observe`], a
//! delete's and a restore's phases in the app): the layer built here exports the ones of
//! target `lnrs` at INFO and above (health checks excepted), whatever the log filter says.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The span of a health check (`super::observe`): probes every few seconds would bury the
/// traces that matter, so it is not exported.
pub const HEALTH_SPAN: &str = "rpc_health";

/// The service name traces carry unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "lnrs";

/// Whether a pipeline is exporting (set once by [`Telemetry::from_env`]): without one, a request
/// with no `traceparent` has no trace at all, and [`adopt`] skips the propagator.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// A running trace pipeline: flushes and stops with [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Whether the environment asks for traces (see the module docs); an unsupported exporter or
/// protocol is an error rather than traces silently going nowhere.
fn wanted(var: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    let exporter = set("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase());
    match exporter.as_deref() {
        Some("none") => return Ok(false),
        None | Some("otlp") => {}
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={other} is not supported (use otlp or none)"
            ))
        }
    }
    let on = exporter.is_some()
        || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    if on {
        for k in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = set(k).filter(|p| p.trim() != "grpc") {
                return Err(format!(
                    "{k}={p} is not supported: traces are sent as OTLP/gRPC"
                ));
            }
        }
    }
    Ok(on)
}

impl Telemetry {
    /// The pipeline the `OTEL_*` variables ask for, and the layer that feeds it; `None` when
    /// they do not ask for traces. Must run inside a tokio runtime (the exporter's channel).
    pub fn from_env<S>() -> Result<Option<(Self, impl Layer<S> + Send + Sync)>, String>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        if !wanted(|k| std::env::var(k).ok())? {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| format!("OpenTelemetry exporter: {e}"))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("lnrs");
        EXPORTING.store(true, Ordering::Relaxed);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                Targets::new()
                    .with_target("lnrs", tracing::Level::INFO)
                    .and(filter_fn(|m| m.name() != HEALTH_SPAN)),
            );
        Ok(Some((Self { provider }, layer)))
    }

    /// Sends the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: OpenTelemetry shutdown: {e}");
        }
    }
}

/// Reads `traceparent` / `tracestate` from a request's headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes the request's `traceparent` the parent of its `span`, and returns the trace id its
/// events record: the span's when it is being traced (the caller's trace, or a new one),
/// else the caller's own from a valid `traceparent`, else none.
pub fn adopt(span: &tracing::Span, headers: &http::HeaderMap) -> Option<String> {
    // The common case, on every request: nothing exported and no caller's trace.
    if !EXPORTING.load(Ordering::Relaxed) && !headers.contains_key("traceparent") {
        return None;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let remote = parent.span().span_context().clone();
    // Fails only without the OpenTelemetry layer (tracing off): the header still names the
    // caller's trace.
    if span.set_parent(parent).is_ok() {
        let ours = span.context().span().span_context().clone();
        if ours.is_valid() {
            return Some(ours.trace_id().to_string());
        }
    }
    remote.is_valid().then(|| remote.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn traces_are_off_unless_the_environment_asks() {
        assert_eq!(wanted(env(&[])), Ok(false));
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert_eq!(wanted(env(&[ep])), Ok(true));
        assert_eq!(
            wanted(env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4317"
            )])),
            Ok(true)
        );
        assert_eq!(wanted(env(&[("OTEL_TRACES_EXPORTER", "otlp")])), Ok(true));
        assert_eq!(wanted(env(&[ep, ("OTEL_SDK_DISABLED", "true")])), Ok(false));
        assert_eq!(
            wanted(env(&[ep, ("OTEL_TRACES_EXPORTER", "none")])),
            Ok(false)
        );
        assert!(wanted(env(&[("OTEL_TRACES_EXPORTER", "zipkin")])).is_err());
        assert!(wanted(env(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])).is_err());
        assert_eq!(
            wanted(env(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])),
            Ok(true)
        );
    }

    #[test]
    fn a_traceparent_names_the_trace_even_with_tracing_off() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let span = tracing::info_span!("rpc");
        assert_eq!(
            adopt(&span, &h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.insert("traceparent", "00-zz-00f067aa0ba902b7-01".parse().unwrap());
        assert_eq!(adopt(&span, &h), None);
        assert_eq!(adopt(&span, &http::HeaderMap::new()), None);
    }
}
