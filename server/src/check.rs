//! `floe check`: every dependency a configuration names, reached once, with what failed —
//! the first thing an operator runs.

use std::time::Duration;

use crate::config::{Config, SinkConfig, SinkKind};
use crate::source::BrokerProbe;
use crate::telemetry::OtlpTarget;

/// One dependency and, when it failed, why.
#[derive(Debug, PartialEq)]
pub struct Finding {
    pub dependency: String,
    pub problem: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            None => write!(f, "OK    {}", self.dependency),
            Some(problem) => write!(f, "FAIL  {}: {problem}", self.dependency),
        }
    }
}

fn finding(dependency: String, result: Result<(), String>) -> Finding {
    Finding {
        dependency,
        problem: result.err(),
    }
}

/// The brokers, each topic floe reads or writes, and each sink.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let probe = BrokerProbe::new(&config.kafka)
        .and_then(|p| p.check(Duration::from_secs(10)).map(|()| p))
        .map_err(|e| e.to_string());
    let brokers = format!("kafka brokers {}", config.kafka.brokers);
    match probe {
        Err(e) => out.push(finding(brokers, Err(e))),
        Ok(probe) => {
            out.push(finding(brokers, Ok(())));
            let topics = config.kafka.topics.iter().map(|t| (t, "source topic"));
            for (topic, role) in topics.chain([(&config.dlq.topic, "DLQ topic")]) {
                let known = match probe.partitions(topic) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("missing: create it, or check the configuration".into()),
                    Err(e) => Err(e.to_string()),
                };
                out.push(finding(format!("{role} {topic}"), known));
            }
        }
    }
    if let Some(target) = OtlpTarget::resolve(&config.telemetry, |v| std::env::var(v).ok()) {
        out.push(finding(
            format!("trace export {}", target.describe()),
            target.probe(),
        ));
    }
    let sinks = std::iter::once(("sink".to_string(), &config.sink))
        .chain(config.sinks.iter().map(|(n, s)| (format!("sink.{n}"), s)));
    for (name, sink) in sinks {
        let reached = crate::sink::open(sink)
            .and_then(|s| s.offset_reader()?.stored_offsets())
            .map(|_| ())
            .map_err(|e| e.to_string());
        out.push(finding(format!("{name} ({})", describe(sink)), reached));
    }
    out
}

fn describe(sink: &SinkConfig) -> String {
    match sink.kind {
        SinkKind::Duckdb => format!("duckdb {}", sink.duckdb.path.display()),
        SinkKind::Snowflake => format!(
            "snowflake {}/{}.{} as {}",
            sink.snowflake.account,
            sink.snowflake.database,
            sink.snowflake.schema,
            sink.snowflake.user
        ),
    }
}
