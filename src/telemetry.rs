//! OpenTelemetry export: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, `kite serve` exports its spans (one a
//! webhook taken in, one a delivery attempt) over OTLP/HTTP with protobuf, batched as the
//! SDK's `OTEL_BSP_*` variables say, its resource from `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES`, sampled as `OTEL_TRACES_SAMPLER` says. Unset, or with
//! `OTEL_SDK_DISABLED=true`, nothing is exported and no span is made.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::Layer;

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A protocol other than OTLP/HTTP with protobuf was asked for.
    #[error("{0}={1:?}: kite exports OTLP over http/protobuf only")]
    Protocol(&'static str, String),
    /// The exporter could not be built (an endpoint that is not a URL, say).
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(String),
}

fn set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The exporter, when the environment asks for one.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// The exporter the `OTEL_*` variables describe; None when no endpoint is set or the
    /// SDK is disabled.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        for name in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            if let Some(p) = set(name) {
                if p.trim() != "http/protobuf" {
                    return Err(TelemetryError::Protocol(name, p));
                }
            }
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        let named = set("OTEL_SERVICE_NAME").is_some()
            || set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
        if !named {
            resource = resource.with_service_name("kite");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Some(Self { provider }))
    }

    /// The layer that turns kite's spans (`kite_wire::trace::otel::TARGET`) into exported
    /// ones; installing it turns span making on.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        kite_wire::trace::otel::enable();
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("kite"))
            .with_filter(
                Targets::new().with_target(kite_wire::trace::otel::TARGET, tracing::Level::INFO),
            )
    }

    /// Exports what is still batched and stops (at the process' end).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("kite: OpenTelemetry exporter: {e}");
        }
    }
}
