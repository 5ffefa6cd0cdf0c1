//! The pipeline's counters and distributions; logging and trace export set-up.

mod logging;
mod otlp;
pub mod trace;

pub use logging::{init, Telemetry};
pub use otlp::{OtlpError, OtlpTarget};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::resilience::Breaker;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Counters shared by the pipeline stages; read by the stats line.
#[derive(Debug, Default)]
pub struct Stats {
    pub consumed: AtomicU64,
    pub decoded: AtomicU64,
    pub skipped: AtomicU64,
    /// Rows merged (inserts, updates, deletes) after in-batch deduplication.
    pub loaded: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Changes a validator rejected.
    pub rejected: AtomicU64,
    /// Records acknowledged by the dead-letter queue, any category.
    pub dead_lettered: AtomicU64,
    /// Failed validator calls (traps, timeouts, out of memory, contract breaches).
    pub guest_failures: AtomicU64,
    pub sink_errors: AtomicU64,
    pub toast_missing: AtomicU64,
    pub flushes: AtomicU64,
    /// Rows merged as deletes (the rest of `loaded` are inserts and updates).
    pub deleted: AtomicU64,
    /// True while the pipeline consumes (every sink opened, every breaker registered).
    pub running: std::sync::atomic::AtomicBool,
    /// Errors by category (`decode`, `sink_transient`, `kafka`, `dlq`, …).
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// The lag of each assigned partition, by (topic, partition), from librdkafka
    /// statistics.
    partition_lag: Mutex<BTreeMap<(String, i32), i64>>,
    breakers: Mutex<Vec<Arc<Breaker>>>,
    /// Verdicts by source table, rows loaded by target table.
    tables: Mutex<BTreeMap<String, TableStats>>,
    pub timings: Timings,
}

/// Distributions, observed where they happen; `/metrics` shows them as histograms.
#[derive(Debug)]
pub struct Timings {
    /// From a batch reaching its load thread to its sink commit, retries included.
    pub flush_seconds: Histogram,
    /// Rows per applied batch (after in-batch deduplication).
    pub batch_rows: Histogram,
    /// From the source database's commit (`ts_ms`) to the row's load.
    pub end_to_end_seconds: Histogram,
    /// One validator's run over a table's changes of a batch.
    pub validator_seconds: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            batch_rows: Histogram::new(exponential_buckets(1.0, 2.0, 17)),
            // Finer than doubling: a latency objective (say p99 ≤ 300 ms) must be readable.
            end_to_end_seconds: Histogram::new(exponential_buckets(0.005, 1.5, 26)),
            validator_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
        }
    }
}

/// One table's figures and the tenant whose route it takes.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct TableStats {
    pub tenant: Option<String>,
    /// The validator version that judged its latest changes (`tenant/name@vN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validator: Option<String>,
    /// Changes its validator accepted, rejected, or failed on (trap, deadline, memory).
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Rows merged into it after in-batch deduplication.
    pub loaded: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one error of `category` (a DLQ category name or `kafka`/`dlq`).
    pub fn error(&self, category: &'static str) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(category).or_default() += 1;
        }
    }

    /// Each assigned partition's lag, as librdkafka last reported it.
    pub fn set_partition_lag(&self, lags: BTreeMap<(String, i32), i64>) {
        if let Ok(mut current) = self.partition_lag.lock() {
            *current = lags;
        }
    }

    /// Messages behind the high watermarks of every assigned partition.
    pub fn lag(&self) -> i64 {
        self.partition_lag
            .lock()
            .map(|l| l.values().sum())
            .unwrap_or_default()
    }

    pub fn partition_lag(&self) -> BTreeMap<(String, i32), i64> {
        self.partition_lag
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    pub fn errors_by_category(&self) -> BTreeMap<&'static str, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Updates the figures of `table` (taken once per table and batch, not per change).
    pub fn count_table(&self, table: &str, tenant: Option<&str>, f: impl FnOnce(&mut TableStats)) {
        if let Ok(mut tables) = self.tables.lock() {
            let entry = tables.entry(table.to_string()).or_default();
            if entry.tenant.is_none() {
                entry.tenant = tenant.map(str::to_string);
            }
            f(entry);
        }
    }

    pub fn tables(&self) -> BTreeMap<String, TableStats> {
        self.tables.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The tables' figures summed by tenant.
    pub fn tenants(&self) -> BTreeMap<String, TableStats> {
        let mut out: BTreeMap<String, TableStats> = BTreeMap::new();
        for t in self.tables().into_values() {
            let Some(tenant) = t.tenant else { continue };
            let sum = out.entry(tenant.clone()).or_default();
            sum.tenant = Some(tenant);
            sum.accepted += t.accepted;
            sum.rejected += t.rejected;
            sum.failed += t.failed;
            sum.loaded += t.loaded;
        }
        out
    }

    /// Registers a breaker so its state shows in the stats (in place of an earlier one of
    /// the same name, from before the pipeline restarted).
    pub fn watch(&self, breaker: Arc<Breaker>) {
        if let Ok(mut breakers) = self.breakers.lock() {
            breakers.retain(|b| b.name != breaker.name);
            breakers.push(breaker);
        }
    }

    /// Each watched breaker's name and state.
    pub fn breaker_states(&self) -> Vec<(String, &'static str)> {
        self.breakers
            .lock()
            .map(|b| {
                b.iter()
                    .map(|b| (b.name.clone(), b.state().as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The counters, errors by category and breaker states as one JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let breakers: serde_json::Map<String, serde_json::Value> = self
            .breaker_states()
            .into_iter()
            .map(|(n, s)| (n, serde_json::Value::from(s)))
            .collect();
        serde_json::json!({
            "consumed": get(&self.consumed),
            "decoded": get(&self.decoded),
            "skipped": get(&self.skipped),
            "loaded": get(&self.loaded),
            "rejected": get(&self.rejected),
            "dead_lettered": get(&self.dead_lettered),
            "flushes": get(&self.flushes),
            "toast_missing": get(&self.toast_missing),
            "lag": self.lag(),
            "lag_by_partition": self
                .partition_lag()
                .into_iter()
                .map(|((topic, partition), lag)| (format!("{topic}/{partition}"), lag))
                .collect::<BTreeMap<_, _>>(),
            "deleted": get(&self.deleted),
            "errors": self.errors_by_category(),
            "breakers": breakers,
            "tables": self.tables(),
            "tenants": self.tenants(),
        })
    }

    pub fn line(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let by_category: Vec<String> = self
            .errors_by_category()
            .iter()
            .map(|(c, n)| format!("{c}:{n}"))
            .collect();
        let breakers: Vec<String> = self
            .breaker_states()
            .iter()
            .map(|(n, s)| format!("{n}:{s}"))
            .collect();
        format!(
            "consumed={} decoded={} skipped={} loaded={} rejected={} dlq={} flushes={} errors={} error_categories={} breakers={} toast_missing={} lag={}",
            get(&self.consumed),
            get(&self.decoded),
            get(&self.skipped),
            get(&self.loaded),
            get(&self.rejected),
            get(&self.dead_lettered),
            get(&self.flushes),
            get(&self.decode_errors) + get(&self.sink_errors),
            if by_category.is_empty() { "-".to_string() } else { by_category.join(",") },
            breakers.join(","),
            get(&self.toast_missing),
            self.lag(),
        )
    }
}
