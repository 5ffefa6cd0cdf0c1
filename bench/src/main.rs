//! `floe-bench`: what `make bench` (scripts/bench.sh) needs beside floe itself — the raw
//! consume baseline and writing to a DuckDB file floe is not running on.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "floe-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The baseline: consume a topic from the beginning and parse every value with
    /// serde_json, nothing else; prints JSON with events/s.
    RawConsume {
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
        /// librdkafka `fetch.wait.max.ms`, the same value floe is given in the benchmark.
        #[arg(long, default_value_t = 500)]
        fetch_wait_ms: u64,
    },
    /// Run SQL statements that write (floe's own `floe query` only reads), e.g. to fill a
    /// target table with millions of rows before a latency run.
    Sql {
        #[arg(long)]
        duckdb: PathBuf,
        sql: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::RawConsume {
            brokers,
            topic,
            fetch_wait_ms,
        } => raw_consume(&brokers, &topic, fetch_wait_ms),
        Command::Sql { duckdb, sql } => {
            let db = duckdb::Connection::open(&duckdb)
                .with_context(|| format!("cannot open {}", duckdb.display()))?;
            db.execute_batch(&sql).context("statement failed")?;
            Ok(())
        }
    }
}

fn raw_consume(brokers: &str, topic: &str, fetch_wait_ms: u64) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "floe-raw-consume")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .set("enable.auto.commit", "false")
        // The fetch sizes floe's own consumer uses: the baseline reads as floe does.
        .set(
            "max.partition.fetch.bytes",
            floe::source::LARGEST_FETCH_BYTES,
        )
        .set("fetch.max.bytes", floe::source::LARGEST_FETCH_BYTES)
        .create()?;
    let parts = floe::source::group_progress(brokers, "floe-raw-consume", topic)?;
    let total: i64 = parts.iter().map(|p| p.high).sum();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, p.partition, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let (mut seen, mut parsed) = (0i64, 0u64);
    while seen < total {
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m?;
            seen += 1;
            if let Some(v) = m.payload() {
                if serde_json::from_slice::<serde_json::Value>(v).is_ok() {
                    parsed += 1;
                }
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "raw consume timed out at {seen}/{total}"
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{{\"messages\": {seen}, \"parsed\": {parsed}, \"seconds\": {secs:.3}, \"events_per_s\": {:.0}}}", seen as f64 / secs);
    Ok(())
}
