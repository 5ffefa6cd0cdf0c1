//! `/metrics`: the pipeline's counters in the Prometheus (OpenMetrics) text format, read
//! from [`Stats`] at each scrape so the figures are counted in one place.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::telemetry::Stats;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric, as Prometheus scrapes it.
pub fn render(stats: &Arc<Stats>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector(stats.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct StatsCollector(Arc<Stats>);

type Labels = Vec<(&'static str, String)>;

/// A label value as the text format needs it: the encoder writes values as given, and a
/// table name from the source may hold quotes, backslashes or line breaks.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: `name` (counters gain `_total`) with a value per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let Some(kind) = values.first().map(|(_, m)| m.metric_type()) else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        if labels.is_empty() {
            // An unlabelled family holds one value.
            return value.encode(metric);
        }
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "floe_messages_consumed",
                "Kafka messages read",
                get(&s.consumed),
            ),
            (
                "floe_changes_decoded",
                "Debezium changes decoded",
                get(&s.decoded),
            ),
            (
                "floe_changes_skipped",
                "tombstones and changes a validator skipped",
                get(&s.skipped),
            ),
            (
                "floe_rows_loaded",
                "rows merged into targets after in-batch deduplication",
                get(&s.loaded),
            ),
            (
                "floe_changes_rejected",
                "changes a validator rejected",
                get(&s.rejected),
            ),
            (
                "floe_dead_letters",
                "records the DLQ acknowledged",
                get(&s.dead_lettered),
            ),
            ("floe_flushes", "batches applied", get(&s.flushes)),
            (
                "floe_toast_missing",
                "TOAST placeholders for rows the target did not hold",
                get(&s.toast_missing),
            ),
        ] {
            family(&mut encoder, name, help, vec![(vec![], counter(value))])?;
        }
        let errors = s.errors_by_category();
        let errors = errors
            .iter()
            .map(|(category, n)| (vec![("category", label(category))], counter(*n)))
            .collect();
        family(&mut encoder, "floe_errors", "errors by category", errors)?;
        family(
            &mut encoder,
            "floe_consumer_lag_messages",
            "messages behind the partitions' high watermarks",
            vec![(vec![], ConstGauge::new(s.lag()))],
        )?;
        let partitions = s
            .partition_lag()
            .into_iter()
            .map(|((topic, partition), lag)| {
                let labels = vec![
                    ("topic", label(&topic)),
                    ("partition", partition.to_string()),
                ];
                (labels, ConstGauge::new(lag))
            })
            .collect();
        family(
            &mut encoder,
            "floe_consumer_partition_lag_messages",
            "messages behind the high watermark, per assigned partition",
            partitions,
        )?;
        let deleted = get(&s.deleted);
        let merged = vec![
            (
                vec![("op", "upsert".to_string())],
                counter(get(&s.loaded).saturating_sub(deleted)),
            ),
            (vec![("op", "delete".to_string())], counter(deleted)),
        ];
        family(
            &mut encoder,
            "floe_rows_merged",
            "rows merged, by operation (inserts and updates are upserts)",
            merged,
        )?;
        family(
            &mut encoder,
            "floe_pipeline_running",
            "1 while the pipeline consumes",
            vec![(
                vec![],
                ConstGauge::new(i64::from(s.running.load(Ordering::Relaxed))),
            )],
        )?;
        let breakers = s.breaker_states();
        let states = breakers
            .iter()
            .flat_map(|(name, state)| {
                ["closed", "half_open", "open"].map(|candidate| {
                    let labels = vec![("breaker", label(name)), ("state", candidate.to_string())];
                    (labels, ConstGauge::new(i64::from(*state == candidate)))
                })
            })
            .collect();
        family(
            &mut encoder,
            "floe_breaker_state",
            "1 for each breaker's current state",
            states,
        )?;
        let tables = s.tables();
        let labelled = |f: &dyn Fn(&crate::telemetry::TableStats) -> Vec<(&'static str, u64)>| {
            tables
                .iter()
                .flat_map(|(table, t)| {
                    let tenant = label(t.tenant.as_deref().unwrap_or(""));
                    let table = label(table);
                    f(t).into_iter().map(move |(verdict, n)| {
                        let mut labels = vec![("tenant", tenant.clone()), ("table", table.clone())];
                        if !verdict.is_empty() {
                            labels.push(("verdict", verdict.to_string()));
                        }
                        (labels, counter(n))
                    })
                })
                .collect::<Vec<_>>()
        };
        family(
            &mut encoder,
            "floe_table_changes",
            "changes a table's validator judged, by verdict",
            labelled(&|t| {
                vec![
                    ("accepted", t.accepted),
                    ("rejected", t.rejected),
                    ("failed", t.failed),
                ]
            }),
        )?;
        family(
            &mut encoder,
            "floe_table_rows_loaded",
            "rows merged into a target table",
            labelled(&|t| vec![("", t.loaded)]),
        )?;
        let versions = tables
            .iter()
            .filter_map(|(table, t)| {
                let labels = vec![
                    ("tenant", label(t.tenant.as_deref().unwrap_or(""))),
                    ("table", label(table)),
                    ("validator", label(t.validator.as_deref()?)),
                ];
                Some((labels, ConstGauge::new(1i64)))
            })
            .collect();
        family(
            &mut encoder,
            "floe_validator_version",
            "the validator version in force per table",
            versions,
        )?;
        let timings = &s.timings;
        for (name, help, histogram) in [
            (
                "floe_flush_duration_seconds",
                "from a batch reaching its load thread to its sink commit",
                &timings.flush_seconds,
            ),
            (
                "floe_batch_rows",
                "rows per applied batch",
                &timings.batch_rows,
            ),
            (
                "floe_end_to_end_seconds",
                "from the source commit to the row's load",
                &timings.end_to_end_seconds,
            ),
            (
                "floe_validator_duration_seconds",
                "one validator run over a table's changes of a batch",
                &timings.validator_seconds,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, histogram.metric_type())?;
            histogram.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::Breaker;

    #[test]
    fn the_exposition_carries_counters_errors_breakers_and_tables() {
        let stats = Arc::new(Stats::default());
        Stats::add(&stats.consumed, 3);
        stats.set_partition_lag(
            [
                (("orders".to_string(), 1), 5),
                (("orders".to_string(), 0), 2),
            ]
            .into(),
        );
        stats.error("decode");
        stats.error("decode");
        stats.watch(Breaker::new(
            "kafka",
            &crate::config::ResilienceConfig::default(),
        ));
        stats.count_table("Orders \"EU\"", Some("acme"), |t| {
            t.validator = Some("acme/orders@v2".into());
            t.rejected = 4;
            t.loaded = 7;
        });
        let text = render(&stats).unwrap();
        for line in [
            "floe_messages_consumed_total 3",
            "floe_errors_total{category=\"decode\"} 2",
            "floe_breaker_state{breaker=\"kafka\",state=\"closed\"} 1",
            "floe_breaker_state{breaker=\"kafka\",state=\"open\"} 0",
            "floe_table_changes_total{tenant=\"acme\",table=\"Orders \\\"EU\\\"\",verdict=\"rejected\"} 4",
            "floe_table_rows_loaded_total{tenant=\"acme\",table=\"Orders \\\"EU\\\"\"} 7",
            "floe_validator_version{tenant=\"acme\",table=\"Orders \\\"EU\\\"\",validator=\"acme/orders@v2\"} 1",
            "floe_consumer_lag_messages 7",
            "floe_consumer_partition_lag_messages{topic=\"orders\",partition=\"1\"} 5",
            "floe_rows_merged_total{op=\"delete\"} 0",
            "# TYPE floe_flush_duration_seconds histogram",
            "floe_batch_rows_count 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
    }
}
