//! End-to-end: the real tansu broker, the real floe binary, a real DuckDB file.

use floe_e2e::*;
use std::time::Duration;

const LOAD_TIMEOUT: Duration = Duration::from_secs(240);

fn floe_env(
    broker: &Broker,
    topics: &str,
    group: &str,
    assignment: &str,
    db: &std::path::Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", topics.to_string()),
        ("FLOE_KAFKA_GROUP", group.to_string()),
        ("FLOE_KAFKA_ASSIGNMENT", assignment.to_string()),
        ("FLOE_SINK", "duckdb".to_string()),
        ("FLOE_DUCKDB_PATH", db.display().to_string()),
        ("FLOE_BATCH_MAX_ROWS", "2000".to_string()),
        ("FLOE_BATCH_MAX_AGE_MS", "100".to_string()),
        ("FLOE_STATS_INTERVAL_MS", "1000".to_string()),
    ]
}

fn assert_no_duplicate_keys(db: &std::path::Path, table: &str, key: &str) {
    let dup = query_text(
        db,
        &format!("SELECT CAST(count(*) - count(DISTINCT {key}) AS VARCHAR) FROM {table}"),
    );
    assert_eq!(dup[0][0].as_deref(), Some("0"), "duplicate keys in {table}");
}

/// The transactions table equals the model, once per key, and the sink's offsets cover all
/// `total` messages of the topic.
fn assert_loaded_exactly_once(db: &std::path::Path, tx: &Workload, total: i64) {
    assert_same_rows(&query_text(db, tx.check_query()), &tx.expected());
    assert_no_duplicate_keys(db, "transactions", "transaction_id");
    let stored = query_text(
        db,
        "SELECT CAST(sum(next_offset) AS VARCHAR) FROM _floe_offsets",
    );
    assert_eq!(stored[0][0].as_deref(), Some(total.to_string().as_str()));
}

/// Every type, TOAST placeholders, a column added mid-stream, deletes with tombstones and
/// a second table, through the consumer-group protocol: the tables equal the model.
#[test]
fn stream_loads_into_tables_equal_to_the_model() {
    let broker = Broker::start("e2e");
    let dir = scratch_dir("e2e");
    let db = dir.join("floe.duckdb");
    broker.create_topic("dbserver1.public.all_types", 3);
    broker.create_topic("dbserver1.public.transactions", 2);
    let mut types = Workload::new(Profile::AllTypes, 300, 3000, 11);
    broker.produce("dbserver1.public.all_types", &mut types, 3000);
    // Messages floe cannot decode go to the DLQ and are committed; the rest still loads.
    broker.produce_raw(
        "dbserver1.public.all_types",
        &[
            (
                Some("{\"id\":1}"),
                Some(b"{\"op\":\"c\",\"after\":{\"id\":1}".as_slice()),
            ),
            (
                Some("{\"id\":2}"),
                Some(b"{\"op\":\"x\",\"source\":{\"table\":\"all_types\"}}".as_slice()),
            ),
            (Some("{\"id\":3}"), Some(b"\xff\xfe not utf-8".as_slice())),
        ],
    );
    let mut tx = Workload::new(Profile::Transactions, 500, 4000, 12);
    broker.produce("dbserver1.public.transactions", &mut tx, 4000);

    let topics = "dbserver1.public.all_types,dbserver1.public.transactions";
    let mut floe = Floe::start(
        &floe_env(&broker, topics, "e2e", "group", &db),
        dir.join("floe.log"),
    );
    broker.wait_fully_committed("e2e", "dbserver1.public.all_types", LOAD_TIMEOUT);
    broker.wait_fully_committed("e2e", "dbserver1.public.transactions", LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    // The model must be worth comparing against: many live rows, after many deletes.
    assert!(types.expected().len() > 150 && tx.expected().len() > 250);
    assert_same_rows(&query_text(&db, types.check_query()), &types.expected());
    assert_same_rows(&query_text(&db, tx.check_query()), &tx.expected());
    assert_no_duplicate_keys(&db, "all_types", "id");
    assert_no_duplicate_keys(&db, "transactions", "transaction_id");
    let log = floe.log_text();
    assert!(log.contains("consumed="), "stats line missing:\n{log}");
    assert_eq!(log.matches("cannot decode").count(), 3, "{log}");
    assert!(
        log.contains("unknown op \"x\""),
        "the reason is logged:\n{log}"
    );
    assert!(
        log.contains("topic=\"dbserver1.public.all_types\"") && log.contains("offset="),
        "{log}"
    );
    assert!(log.contains("errors=3"), "{log}");
    let dead: Vec<TopicRecord> = broker.read_all("floe.dlq");
    assert_eq!(
        dead.len(),
        3,
        "each undecodable message is dead-lettered: {dead:?}"
    );
    assert!(dead.iter().all(|r| r.header("floe.category") == "decode"));
    assert!(
        dead.iter()
            .any(|r| r.value.as_deref() == Some(b"\xff\xfe not utf-8".as_slice())),
        "dead letters keep the original bytes"
    );
}

/// kill -9 while loading, several times; each restart resumes from the sink's offsets.
#[test]
fn kill_9_loses_nothing_and_duplicates_nothing() {
    let broker = Broker::start("crash");
    let dir = scratch_dir("crash");
    let db = dir.join("floe.duckdb");
    let topic = "dbserver1.public.transactions";
    broker.create_topic(topic, 3);
    let mut tx = Workload::new(Profile::Transactions, 3000, 30_000, 21);
    broker.produce(topic, &mut tx, 30_000);
    let total: i64 = broker.progress("crash", topic).iter().map(|p| p.high).sum();
    let mut env = floe_env(&broker, topic, "crash", "all", &db);
    env.push(("FLOE_BATCH_MAX_ROWS", "500".into()));
    env.push(("FLOE_BATCH_MAX_PENDING_ROWS", "1000".into()));

    let kills = kill_mid_load(
        4,
        total,
        |round| Floe::start(&env, dir.join(format!("floe-{round}.log"))),
        || broker.committed_total("crash", topic),
    );
    assert!(
        kills >= 2,
        "floe finished before it could be killed mid-load"
    );
    let mut floe = Floe::start(&env, dir.join("floe-final.log"));
    broker.wait_fully_committed("crash", topic, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    assert_loaded_exactly_once(&db, &tx, total);
}

/// SIGTERM mid-stream: exit 0, and what the group committed equals what the sink applied.
#[test]
fn sigterm_flushes_and_commits_what_was_loaded() {
    let broker = Broker::start("term");
    let dir = scratch_dir("term");
    let db = dir.join("floe.duckdb");
    let topic = "dbserver1.public.transactions";
    broker.create_topic(topic, 2);
    let mut tx = Workload::new(Profile::Transactions, 2000, 20_000, 31);
    broker.produce(topic, &mut tx, 20_000);
    let mut env = floe_env(&broker, topic, "term", "all", &db);
    env.push(("FLOE_BATCH_MAX_ROWS", "300".into()));
    env.push(("FLOE_BATCH_MAX_PENDING_ROWS", "600".into()));
    let mut floe = Floe::start(&env, dir.join("floe.log"));
    wait_for("some progress", LOAD_TIMEOUT, || {
        (broker.committed_total("term", topic) > 0).then_some(())
    });
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    let committed: std::collections::BTreeMap<i32, i64> = broker
        .progress("term", topic)
        .iter()
        .filter_map(|p| Some((p.partition, p.committed?)))
        .collect();
    let stored: std::collections::BTreeMap<i32, i64> = query_text(
        &db,
        "SELECT CAST(\"partition\" AS VARCHAR), CAST(next_offset AS VARCHAR) FROM _floe_offsets",
    )
    .into_iter()
    .filter_map(|r| Some((r[0].as_ref()?.parse().ok()?, r[1].as_ref()?.parse().ok()?)))
    .collect();
    assert_eq!(
        committed, stored,
        "group offsets must cover exactly what the sink applied"
    );

    // A restart finishes the stream from there.
    let mut floe = Floe::start(&env, dir.join("floe-2.log"));
    broker.wait_fully_committed("term", topic, LOAD_TIMEOUT);
    assert_eq!(floe.terminate(Duration::from_secs(30)), 0);
    assert_same_rows(&query_text(&db, tx.check_query()), &tx.expected());
}

/// The broker is killed and restarted mid-run: floe reconnects, loads what was produced
/// before and after, and the table equals the model.
#[test]
fn a_broker_restart_mid_run_loses_nothing() {
    let mut broker = Broker::start("restart");
    let dir = scratch_dir("restart");
    let db = dir.join("floe.duckdb");
    let topic = "dbserver1.public.transactions";
    broker.create_topic(topic, 2);
    let mut tx = Workload::new(Profile::Transactions, 1000, 16_000, 61);
    broker.produce(topic, &mut tx, 8000);
    let mut env = floe_env(&broker, topic, "restart", "all", &db);
    env.push(("FLOE_BATCH_MAX_ROWS", "500".into()));
    env.push(("FLOE_RETRY_MAX_MS", "500".into()));
    env.push(("FLOE_BREAKER_COOLDOWN_MS", "500".into()));
    let mut floe = Floe::start(&env, dir.join("floe.log"));
    wait_for("some progress", LOAD_TIMEOUT, || {
        (broker.committed_total("restart", topic) > 0).then_some(())
    });

    broker.restart();
    broker.produce(topic, &mut tx, 8000);
    broker.wait_fully_committed("restart", topic, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    let total: i64 = broker
        .progress("restart", topic)
        .iter()
        .map(|p| p.high)
        .sum();
    assert_loaded_exactly_once(&db, &tx, total);
}
