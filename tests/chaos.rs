//! The chaos run: change streams keep arriving while a driver kills floe with SIGKILL,
//! restarts the broker, stops the Snowflake sink (the emulator) for longer than its
//! breaker's threshold and uploads new validator versions, at random (seeded) moments.
//! Transactions load into DuckDB through a tenant's validator, `all_types` into Snowflake.
//! At the end the tables equal the reference model, every invalid change is in the
//! tenant's DLQ at least once (duplicates counted), the offsets floe stored are the topics'
//! ends, and floe's peak memory stayed bounded.
//!
//! `make test` runs a small run; `make chaos` a long one (`FLOE_CHAOS_EVENTS`, default
//! 1,000,000 there). Both print the driver's summary.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use floe_e2e::*;

const OPERATOR: &str = "operator-key-chaos";
const GROUP: &str = "chaos";
const TX_TOPIC: &str = "dbserver1.public.transactions";
const ALL_TOPIC: &str = "dbserver1.public.all_types";
/// floe's peak resident memory across every process of the run.
const PEAK_RSS_BOUND_KIB: u64 = 1024 * 1024;

/// A seeded xorshift: the same seed drives the same sequence of faults.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

#[derive(Default, Debug)]
struct Summary {
    events: u64,
    invalid: u64,
    kills: u32,
    broker_restarts: u32,
    sink_outages: u32,
    validator_versions: u32,
    dead_letters: usize,
    distinct_dead_letters: usize,
    peak_rss_kib: u64,
    seconds: f64,
}

impl Summary {
    fn line(&self) -> String {
        format!(
            "chaos summary: {} events ({} invalid) in {:.1} s; {} SIGKILLs, {} broker restarts, \
             {} sink outages, {} validator versions activated; {} dead letters for {} invalid \
             changes ({} duplicates); peak RSS {} MiB",
            self.events,
            self.invalid,
            self.seconds,
            self.kills,
            self.broker_restarts,
            self.sink_outages,
            self.validator_versions,
            self.dead_letters,
            self.distinct_dead_letters,
            self.dead_letters - self.distinct_dead_letters,
            self.peak_rss_kib / 1024,
        )
    }
}

#[test]
fn a_chaos_run_loses_nothing() {
    let events: u64 = std::env::var("FLOE_CHAOS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24_000);
    let seed: u64 = std::env::var("FLOE_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f10e);
    let rounds = 16u64.max(events / 50_000);
    let started = Instant::now();
    let mut dice = Dice(seed | 1);

    let mut broker = Broker::start("chaos");
    let mut fakesnow = Fakesnow::start("chaos");
    let dir = scratch_dir("chaos");
    let config = dir.join("floe.toml");
    std::fs::write(&config, fakesnow.sink_toml("warehouse", &[ALL_TOPIC])).expect("config");
    broker.create_topic(TX_TOPIC, 2);
    broker.create_topic(ALL_TOPIC, 2);
    let topics = format!("{TX_TOPIC},{ALL_TOPIC}");
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [
        ("FLOE_BATCH_MAX_ROWS", "2000".to_string()),
        ("FLOE_BATCH_MAX_PENDING_ROWS", "4000".to_string()),
        ("FLOE_BREAKER_COOLDOWN_MS", "500".to_string()),
        ("FLOE_CONFIG", config.display().to_string()),
    ];
    let mut floe = start_floe(&broker, &dir, &topics, &addr, &env);
    let key = create_tenant(&addr, OPERATOR, "acme");
    let wasm = std::fs::read(guest("transactions-validator")).expect("guest");
    route_through_validator(&addr, &key, "acme", "orders", wasm.clone(), "transactions");
    wait_for("the route", Duration::from_secs(30), || {
        floe.log_text().contains("acme/orders@v1").then_some(())
    });

    // The emulator loads a few hundred rows a second: Snowflake's share stays small.
    let all_events = (events / 4).min(25_000);
    let tx_events = events - all_events;
    let mut tx =
        Workload::new(Profile::Transactions, 2_000, tx_events, seed).with_invalid_percent(5);
    let mut all = Workload::new(Profile::AllTypes, 500, all_events, seed ^ 0xa11);
    let mut summary = Summary {
        events,
        ..Summary::default()
    };
    for round in 0..rounds {
        broker.produce(TX_TOPIC, &mut tx, tx_events / rounds);
        broker.produce(ALL_TOPIC, &mut all, all_events / rounds);
        // Let floe get into the middle of loading before the fault.
        std::thread::sleep(Duration::from_millis(100 + dice.roll(400)));
        summary.peak_rss_kib = summary.peak_rss_kib.max(peak_rss_kib(floe.pid()));
        match dice.roll(4) {
            0 => {
                floe.kill9();
                summary.kills += 1;
                floe = start_floe(&broker, &dir, &topics, &addr, &env);
            }
            1 => {
                broker.restart();
                summary.broker_restarts += 1;
            }
            2 => {
                // Down while changes for it arrive, until its breaker opens and holds its
                // partitions, and for longer than the breaker's cool-down.
                fakesnow.kill();
                let paused = floe.log_text().matches("partitions paused").count();
                broker.produce(ALL_TOPIC, &mut all, 200);
                wait_for(
                    "the warehouse breaker to open",
                    Duration::from_secs(120),
                    || {
                        (floe.log_text().matches("partitions paused").count() > paused)
                            .then_some(())
                    },
                );
                std::thread::sleep(Duration::from_millis(1_500));
                fakesnow.restart();
                summary.sink_outages += 1;
            }
            _ => {
                // A new version of the same rules, activated while changes flow.
                upload_and_activate(&addr, &key, &wasm);
                summary.validator_versions += 1;
            }
        }
        eprintln!("chaos: round {round} done");
    }
    // Whatever the rounds left over.
    broker.produce(TX_TOPIC, &mut tx, tx_events % rounds);
    broker.produce(ALL_TOPIC, &mut all, all_events % rounds);
    for topic in [TX_TOPIC, ALL_TOPIC] {
        broker.wait_fully_committed(GROUP, topic, Duration::from_secs(600));
    }
    summary.peak_rss_kib = summary.peak_rss_kib.max(peak_rss_kib(floe.pid()));
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    let db = dir.join("floe.duckdb");
    assert_same_rows(&query_text(&db, tx.check_query()), &tx.expected());
    assert_same_rows(&fakesnow.all_types_rows(), &all.expected());
    // The offsets each sink stored are its topic's ends: nothing committed past an
    // unapplied record, nothing left behind.
    let ends = |topic| -> f64 {
        broker
            .progress(GROUP, topic)
            .iter()
            .map(|p| p.high)
            .sum::<i64>() as f64
    };
    let number =
        |rows: Vec<Vec<Option<String>>>| rows[0][0].as_deref().and_then(|v| v.parse().ok());
    let stored = query_text(
        &db,
        &format!("SELECT sum(next_offset)::VARCHAR FROM _floe_offsets WHERE topic = '{TX_TOPIC}'"),
    );
    assert_eq!(number(stored), Some(ends(TX_TOPIC)), "DuckDB's offsets");
    let stored = fakesnow.query(&format!(
        "SELECT TO_VARCHAR(SUM(NEXT_OFFSET)) FROM _FLOE_OFFSETS WHERE TOPIC = '{ALL_TOPIC}'"
    ));
    assert_eq!(number(stored), Some(ends(ALL_TOPIC)), "Snowflake's offsets");
    let dlq = broker.read_all("floe.dlq.acme");
    let distinct: BTreeSet<(String, String)> = dlq
        .iter()
        .map(|r| {
            (
                r.header("floe.source.partition").to_string(),
                r.header("floe.source.offset").to_string(),
            )
        })
        .collect();
    summary.invalid = tx.invalid_events;
    summary.dead_letters = dlq.len();
    summary.distinct_dead_letters = distinct.len();
    summary.seconds = started.elapsed().as_secs_f64();
    eprintln!("{}", summary.line());
    assert_eq!(
        distinct.len() as u64,
        tx.invalid_events,
        "every invalid change, at least once"
    );
    assert!(
        dlq.len() == distinct.len() || summary.kills > 0,
        "duplicates come only from a kill between a dead letter's write and its batch's commit"
    );
    assert!(
        broker.read_all("floe.dlq").is_empty(),
        "nothing failed to decode"
    );
    assert!(summary.peak_rss_kib < PEAK_RSS_BOUND_KIB, "{summary:?}");
}

fn start_floe(
    broker: &Broker,
    dir: &std::path::Path,
    topics: &str,
    addr: &str,
    env: &[(&str, String)],
) -> Floe {
    start_floe_with_admin_and(broker, dir, topics, GROUP, addr, OPERATOR, env)
}

/// Uploads `wasm` as a new version of the tenant's validator and activates it.
fn upload_and_activate(addr: &str, key: &str, wasm: &[u8]) {
    let base = "/v1/tenants/acme/validators/orders";
    let (status, answer) = api(addr, "PUT", base, key, "application/wasm", wasm);
    assert!(status < 300, "upload: {status} {answer}");
    let version = answer["version"]["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {answer}"));
    let body = format!(r#"{{"version":{version}}}"#);
    let (status, answer) = api(
        addr,
        "POST",
        &format!("{base}/activate"),
        key,
        "application/json",
        body.as_bytes(),
    );
    assert!(status < 300, "activate v{version}: {status} {answer}");
}
