//! One `tracing` subscriber for log lines (human, or JSON) and spans (to OpenTelemetry).
//!
//! The span layer is always installed, exporter or not, so that every log line of a batch
//! carries the batch's trace id; it has its own filter, so `FLOE_LOG=warn` quiets the logs
//! without losing traces.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use super::otlp::{OtlpError, OtlpTarget};
use crate::config::TelemetryConfig;

/// Keeps the tracer provider; dropping it exports what is queued (for a bounded time).
pub struct Telemetry {
    provider: SdkTracerProvider,
    target: Option<OtlpTarget>,
}

impl Telemetry {
    /// Where spans are exported, if anywhere.
    pub fn target(&self) -> Option<&OtlpTarget> {
        self.target.as_ref()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if self.target.is_some() {
            let _ = self.provider.shutdown_with_timeout(Duration::from_secs(3));
        }
    }
}

/// Human-readable logs by default, JSON lines when asked. `FLOE_LOG` (or `RUST_LOG`) sets
/// the log filter, e.g. `FLOE_LOG=floe=debug`. Spans are exported as `config` and the
/// `OTEL_*` variables say.
pub fn init(json: bool, config: &TelemetryConfig) -> Result<Telemetry, OtlpError> {
    let target = OtlpTarget::resolve(config, |var| std::env::var(var).ok());
    let mut builder = SdkTracerProvider::builder().with_resource(resource(config));
    if let Some(target) = &target {
        builder = builder.with_batch_exporter(target.exporter()?);
    }
    let provider = builder.build();
    let _ = subscriber(json, &provider).try_init();
    Ok(Telemetry { provider, target })
}

/// Spans of floe's own stages go to `provider` whatever the log filter says; log lines
/// are filtered by `FLOE_LOG`.
fn subscriber(json: bool, provider: &SdkTracerProvider) -> impl tracing::Subscriber + Send + Sync {
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("floe"))
        .with_tracked_inactivity(false)
        // A closure, not `Targets`: a per-layer filter that answers at callsite
        // registration ("always") was seen to leave the batch span out of this layer
        // while the log layer kept it; a closure is asked for every span.
        .with_filter(filter_fn(|meta| {
            meta.target().starts_with("floe") && *meta.level() <= LevelFilter::INFO
        }));
    let log_filter = || {
        let filter = std::env::var("FLOE_LOG")
            .or_else(|_| std::env::var("RUST_LOG"))
            .unwrap_or_else(|_| "info".into());
        EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let ansi = std::io::stderr().is_terminal();
    let json_lines = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
    });
    let human_lines = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
    });
    tracing_subscriber::registry()
        .with(spans)
        .with(json_lines)
        .with(human_lines)
}

fn resource(config: &TelemetryConfig) -> Resource {
    let builder = Resource::builder();
    // `OTEL_SERVICE_NAME` (read by the builder) names the service when set.
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty()) {
        builder.build()
    } else {
        builder
            .with_service_name(config.service_name.clone())
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};
    use rdkafka::message::{Header, OwnedHeaders};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0
                .lock()
                .map_err(|_| {
                    opentelemetry_sdk::error::OTelSdkError::InternalFailure("poisoned".into())
                })?
                .extend(batch);
            Ok(())
        }
    }

    #[test]
    fn a_batch_is_a_tree_under_the_producers_span() {
        let spans = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let dispatch = tracing::Dispatch::new(subscriber(false, &provider));
        tracing::dispatcher::with_default(&dispatch, || {
            let headers = OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            });
            let mut batch = Batch::default();
            batch
                .trace
                .on_message(Some(headers.as_borrowed()), "sink", "g");
            batch.trace.received(&batch.offsets);
            let root = batch.trace.root();
            let on_load_thread = dispatch.clone();
            std::thread::spawn(move || {
                let _default = tracing::dispatcher::set_default(&on_load_thread);
                let _entered = root.enter();
                let _merge = tracing::info_span!("merge").entered();
            })
            .join()
            .expect("load thread");
            drop(batch);
        });
        let spans = spans.0.lock().expect("spans");
        let names: Vec<(&str, String, String)> = spans
            .iter()
            .map(|s| {
                (
                    s.name.as_ref(),
                    s.span_context.trace_id().to_string(),
                    s.parent_span_id.to_string(),
                )
            })
            .collect();
        let batch = spans
            .iter()
            .find(|s| s.name == "batch")
            .unwrap_or_else(|| panic!("{names:?}"));
        assert_eq!(
            batch.parent_span_id.to_string(),
            "00f067aa0ba902b7",
            "{names:?}"
        );
        for span in spans.iter() {
            assert_eq!(
                span.span_context.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{names:?}"
            );
        }
        assert_eq!(spans.len(), 4, "{names:?}");
    }
}
