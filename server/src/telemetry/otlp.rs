//! The OTLP span exporter (gRPC or HTTP/protobuf), chosen from the configuration and the
//! standard `OTEL_*` variables.
//!
//! The SDK's batch processor exports from a thread of its own and drops spans when its
//! queue is full, so a slow or absent collector never holds up the pipeline. Both OTLP
//! transports need a Tokio reactor, which that thread lacks: the exporter owns a
//! one-thread runtime of its own rather than borrow the pipeline's.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::config::{OtlpProtocol, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot start the trace exporter's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("invalid OTLP exporter settings: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("invalid OTLP header {0:?}")]
    Header(String),
}

/// Where traces go, after the configuration and the environment have been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    /// Empty: the exporter's own resolution (`OTEL_EXPORTER_OTLP_*ENDPOINT`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: BTreeMap<String, String>,
}

impl OtlpTarget {
    /// The export target, or `None` when traces are not to be exported: no endpoint in
    /// the configuration nor the environment, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`.
    pub fn resolve(config: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let set = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return None;
        }
        let from_env = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        if config.otlp_endpoint.is_empty() && !from_env {
            return None;
        }
        let protocol = config.otlp_protocol.unwrap_or_else(|| {
            let named = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
            match named.as_deref() {
                Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
                _ => OtlpProtocol::Grpc,
            }
        });
        Some(Self {
            endpoint: config.otlp_endpoint.clone(),
            protocol,
            headers: config.otlp_headers.clone(),
        })
    }

    /// What `floe check` and the start-up log name.
    pub fn describe(&self) -> String {
        let endpoint = if self.endpoint.is_empty() {
            "endpoint from OTEL_EXPORTER_OTLP_*"
        } else {
            &self.endpoint
        };
        let protocol = match self.protocol {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        };
        format!("OTLP {protocol} {endpoint}")
    }

    pub(super) fn exporter(&self) -> Result<OwnRuntimeExporter, OtlpError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("floe-otlp")
            .enable_all()
            .build()
            .map_err(OtlpError::Runtime)?;
        // tonic's channel spawns its connection task on the runtime it is built in.
        let _entered = runtime.enter();
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => {
                let mut headers = http::HeaderMap::new();
                for (name, value) in &self.headers {
                    let bad = || OtlpError::Header(name.clone());
                    let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
                    headers.insert(name, value.parse().map_err(|_| bad())?);
                }
                let metadata =
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
                let mut b = builder.with_tonic().with_metadata(metadata);
                if !self.endpoint.is_empty() {
                    b = b.with_endpoint(&self.endpoint);
                }
                b.build()?
            }
            OtlpProtocol::HttpProtobuf => {
                let mut b = builder
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_headers(self.headers.clone().into_iter().collect());
                if !self.endpoint.is_empty() {
                    b = b.with_endpoint(http_traces_url(&self.endpoint));
                }
                b.build()?
            }
        };
        drop(_entered);
        Ok(OwnRuntimeExporter { exporter, runtime })
    }
}

impl OtlpTarget {
    /// Exports one span named `floe check` and says what the collector answered: the
    /// check of `floe check` (unreachable, refused, unauthorized, …).
    pub fn probe(&self) -> Result<(), String> {
        let exporter = self.exporter().map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now();
        let context = SpanContext::new(
            TraceId::from_bytes(rand::random()),
            SpanId::from_bytes(rand::random()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let span = SpanData {
            span_context: context,
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "floe check".into(),
            start_time: now,
            end_time: now,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Ok,
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("floe").build(),
        };
        exporter.export_now(vec![span]).map_err(|e| e.to_string())
    }
}

/// An OTLP/HTTP endpoint in the configuration names the collector, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` does; the exporter wants the traces URL.
fn http_traces_url(endpoint: &str) -> String {
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

/// The OTLP exporter, run on a runtime of its own (see the module's note).
#[derive(Debug)]
pub(super) struct OwnRuntimeExporter {
    exporter: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Runtime,
}

impl OwnRuntimeExporter {
    fn export_now(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.runtime.block_on(self.exporter.export(batch))
    }
}

impl SpanExporter for OwnRuntimeExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> {
        std::future::ready(self.export_now(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |var| {
            pairs
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn no_endpoint_anywhere_means_no_export() {
        let config = TelemetryConfig::default();
        assert_eq!(OtlpTarget::resolve(&config, env(&[])), None);
    }

    #[test]
    fn the_standard_variables_choose_endpoint_and_protocol() {
        let config = TelemetryConfig::default();
        let target = OtlpTarget::resolve(
            &config,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]),
        )
        .expect("exported");
        assert_eq!(target.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(
            target.endpoint, "",
            "the exporter reads the variable itself"
        );
        let disabled = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(OtlpTarget::resolve(&config, disabled), None);
    }

    #[test]
    fn the_configuration_wins_over_the_environment() {
        let config = TelemetryConfig {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            otlp_protocol: Some(OtlpProtocol::Grpc),
            ..TelemetryConfig::default()
        };
        let target = OtlpTarget::resolve(
            &config,
            env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
        )
        .expect("exported");
        assert_eq!(target.protocol, OtlpProtocol::Grpc);
        assert_eq!(target.describe(), "OTLP grpc http://127.0.0.1:4317");
    }

    #[test]
    fn an_http_endpoint_is_the_collector_not_the_traces_url() {
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            http_traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
