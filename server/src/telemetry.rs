//! Logging set-up and the pipeline's counters.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
    /// Messages behind the partitions' high watermarks, from librdkafka statistics.
    pub lag: AtomicI64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn line(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "consumed={} decoded={} skipped={} loaded={} rejected={} dlq={} flushes={} errors={} toast_missing={} lag={}",
            get(&self.consumed),
            get(&self.decoded),
            get(&self.skipped),
            get(&self.loaded),
            get(&self.rejected),
            get(&self.dead_lettered),
            get(&self.flushes),
            get(&self.decode_errors) + get(&self.sink_errors),
            get(&self.toast_missing),
            self.lag.load(Ordering::Relaxed),
        )
    }
}

/// Human-readable logs by default, JSON lines when asked. `FLOE_LOG` (or `RUST_LOG`)
/// sets the filter, e.g. `FLOE_LOG=floe=debug`.
pub fn init_logging(json: bool) {
    let filter = std::env::var("FLOE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
