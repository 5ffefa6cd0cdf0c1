//! Dry runs: sample Debezium messages through one validator version, with nothing written
//! anywhere — the verdicts, the rows that would load, and the guest's output.

use serde::Deserialize;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::change::{Event, KafkaPosition, RowChange};
use crate::config::{RouteConfig, SandboxLimits};
use crate::control::TenantRoute;
use crate::debezium::Decoder;
use crate::dlq::Origin;
use crate::transform::{Outcome, Routes, Runtime, Staged};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// The message key: a JSON document, or a string holding the raw key.
    #[serde(default)]
    pub key: Json,
    /// The message value: a Debezium event, or a string holding it raw.
    #[serde(default)]
    pub value: Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    pub messages: Vec<Sample>,
    /// The version to run; default: the active one.
    #[serde(default)]
    pub version: Option<u32>,
}

fn bytes(v: &Json) -> Option<Vec<u8>> {
    match v {
        Json::Null => None,
        Json::String(s) => Some(s.clone().into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

fn row_json(row: &RowChange) -> Json {
    let mut out = serde_json::Map::new();
    for (column, value) in row.schema.columns.iter().zip(&row.values) {
        let v = serde_json::from_str(&value.to_json()).unwrap_or(Json::String(value.to_text()));
        out.insert(column.name.clone(), v);
    }
    Json::Object(out)
}

/// The most messages one dry run takes: a sample, not a load.
pub const MAX_SAMPLES: usize = 1000;

/// Runs `samples` through the component at `path`, routed as `routes` say (target and
/// key per source table), in the sandbox `limits` give (the tenant's, as in the pipeline).
pub fn run(
    runtime: &Runtime,
    path: &Path,
    label: &str,
    routes: &BTreeMap<String, TenantRoute>,
    limits: &SandboxLimits,
    samples: &[Sample],
) -> Json {
    let mut results: Vec<(usize, Json)> = Vec::new();
    let mut by_table: BTreeMap<Arc<str>, Vec<Staged>> = BTreeMap::new();
    let mut decoder = Decoder::new();
    let topic: Arc<str> = Arc::from("dry-run");
    for (index, sample) in samples.iter().enumerate() {
        let (key, value) = (bytes(&sample.key), bytes(&sample.value));
        let position = KafkaPosition {
            topic: topic.clone(),
            partition: 0,
            offset: index as i64,
        };
        match decoder.decode(key.as_deref(), value.as_deref(), position) {
            Err(e) => results.push((index, json!({"index": index, "verdict": "undecodable", "category": "decode", "message": e.to_string()}))),
            Ok(change) => match change.event {
                Event::Row(row) => {
                    let origin = Origin {
                        topic: topic.clone(),
                        partition: 0,
                        offset: index as i64,
                        key,
                        value,
                    };
                    by_table.entry(row.table.clone()).or_default().push(Staged { change: row, origin });
                }
                Event::Truncate { table } => results.push((index, json!({"index": index, "verdict": "truncate", "table": &*table}))),
                Event::Skip(reason) => results.push((index, json!({"index": index, "verdict": "skip", "reason": format!("{reason:?}")}))),
            },
        }
    }
    let mut output = Vec::new();
    for (table, staged) in by_table {
        let route = routes.get(&*table).cloned().unwrap_or_default();
        let config = RouteConfig {
            table: table.to_string(),
            validator: Some(path.to_path_buf()),
            name: Some(label.to_string()),
            target: route.target,
            key: route.key,
            limits: limits.clone(),
            dlq_topic: None,
            tenant: None,
        };
        let loaded = Routes::load(std::slice::from_ref(&config), Some(runtime));
        let (Ok(loaded), Some(validator)) = (
            &loaded,
            loaded.as_ref().ok().and_then(|r| r.validator(&table)),
        ) else {
            let message = loaded
                .err()
                .map_or_else(|| "no validator".to_string(), |e| e.to_string());
            return json!({"error": message});
        };
        let Some(route) = loaded.get(&table) else {
            continue;
        };
        validator.capture_output();
        for (origin, outcome) in route.validate(validator, staged) {
            let index = origin.offset as usize;
            let verdict = match outcome {
                Outcome::Accept(row) => {
                    json!({"index": index, "verdict": "accept", "table": &*row.table, "op": row.op.code(), "row": row_json(&row)})
                }
                Outcome::Skip => json!({"index": index, "verdict": "skip", "table": &*table}),
                Outcome::Reject { code, message } => {
                    json!({"index": index, "verdict": "reject", "table": &*table, "code": code, "message": message})
                }
                Outcome::Failed { category, reason } => {
                    json!({"index": index, "verdict": "failed", "table": &*table, "category": category.as_str(), "message": reason})
                }
            };
            results.push((index, verdict));
        }
        output.extend(validator.take_output());
    }
    results.sort_by_key(|(i, _)| *i);
    json!({
        "validator": label,
        "results": results.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        "output": output,
    })
}
