//! The bad-input corpus (`tests/fixtures/bad/`): each case between two good records, one
//! floe over all of it. Each bad record is dead-lettered once, byte for byte, with its
//! category and a reason naming the problem; every good record loads; the cases marked
//! `loads` load as given; floe keeps running and its peak memory stays bounded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use floe_e2e::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
const TOPIC: &str = "dbserver1.public.notes";
const GROUP: &str = "bad-input";
/// Peak resident memory floe may reach over the whole corpus (the largest record is 3 MB).
const PEAK_RSS_BOUND_KIB: u64 = 768 * 1024;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/bad")
}

/// The value of a case: its file, or what the corpus describes as generated.
fn value_of(case: &serde_json::Value) -> Vec<u8> {
    if let Some(file) = case["file"].as_str() {
        return std::fs::read(corpus().join(file)).expect("corpus file");
    }
    let key = case["key"].as_i64().expect("key");
    let event = |after: String| {
        format!(
            r#"{{"before":null,"after":{after},"op":"c","source":{{"table":"notes","ts_ms":1767225600000}}}}"#
        )
    };
    match case["generate"].as_str().expect("file or generate") {
        "value-3mb" => event(format!(
            r#"{{"id":{key},"note":"{}"}}"#,
            "x".repeat(3 << 20)
        )),
        "deep-nesting" => event(format!(
            r#"{{"id":{key},"note":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        )),
        "many-columns" => {
            let columns: Vec<String> = (0..10_000).map(|i| format!(r#""c{i}":{i}"#)).collect();
            event(format!(r#"{{"id":{key},{}}}"#, columns.join(",")))
        }
        other => panic!("unknown generated case {other}"),
    }
    .into_bytes()
}

fn produce(broker: &Broker, records: &[(String, Vec<u8>)]) {
    let producer: BaseProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("message.max.bytes", "33554432")
        .create()
        .expect("producer");
    for (key, value) in records {
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(TOPIC)
            .key(key.as_str())
            .payload(value.as_slice());
        producer.send(record).map_err(|(e, _)| e).expect("send");
        // One at a time keeps the 10 MB record in a produce request of its own.
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
}

#[test]
fn every_bad_record_is_dead_lettered_with_its_reason_and_the_rest_loads() {
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(corpus().join("cases.json")).expect("cases.json"),
    )
    .expect("cases.json is JSON");
    let broker = Broker::start("bad-input");
    let dir = scratch_dir("bad-input");
    broker.create_topic(TOPIC, 1);

    // good, bad, good, bad, …, good: offsets tell which case a dead letter is.
    let mut records = Vec::new();
    let mut by_offset = BTreeMap::new();
    let mut good = 0;
    for case in &cases {
        good += 1;
        records.push(note_record("notes", good, "good"));
        by_offset.insert(records.len() as i64, case);
        let key = case["key"].as_i64().expect("key");
        records.push((format!(r#"{{"id":{key}}}"#), value_of(case)));
    }
    good += 1;
    records.push(note_record("notes", good, "good"));
    produce(&broker, &records);

    let db = dir.join("floe.duckdb");
    let env = [
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", TOPIC.to_string()),
        ("FLOE_KAFKA_GROUP", GROUP.to_string()),
        ("FLOE_KAFKA_ASSIGNMENT", "all".to_string()),
        ("FLOE_BATCH_MAX_AGE_MS", "100".to_string()),
        ("FLOE_KAFKA_MAX_VALUE_BYTES", (2 << 20).to_string()),
        ("FLOE_DUCKDB_PATH", db.display().to_string()),
    ];
    let mut floe = Floe::start(&env, dir.join("floe.log"));
    broker.wait_fully_committed(GROUP, TOPIC, LOAD_TIMEOUT);

    let dead = broker.read_all("floe.dlq");
    let expected: Vec<&serde_json::Value> = cases.iter().filter(|c| c["loads"] != true).collect();
    let named = |r: &TopicRecord| r.header("floe.source.offset").parse::<i64>().ok();
    assert_eq!(
        dead.len(),
        expected.len(),
        "one dead letter per bad case: {:#?}",
        dead.iter()
            .map(|r| (named(r), r.header("floe.reason")))
            .collect::<Vec<_>>()
    );
    for letter in &dead {
        let offset = named(letter).expect("source offset header");
        let case = by_offset
            .get(&offset)
            .unwrap_or_else(|| panic!("a good record was dead-lettered: {letter:?}"));
        let what = case["file"]
            .as_str()
            .or(case["generate"].as_str())
            .unwrap_or("?");
        assert_ne!(case["loads"], true, "{what} should have loaded: {letter:?}");
        assert_eq!(letter.header("floe.category"), case["category"], "{what}");
        let reason = letter.header("floe.reason");
        let phrase = case["reason"].as_str().expect("reason");
        assert!(
            reason.contains(phrase),
            "{what}: reason {reason:?} does not say {phrase:?}"
        );
        assert!(
            letter.value.as_deref() == Some(records[offset as usize].1.as_slice()),
            "{what}: the dead letter is not the original record"
        );
    }

    let peak = peak_rss_kib(floe.pid());
    assert!(peak < PEAK_RSS_BOUND_KIB, "peak RSS {peak} KiB");
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    // Every good record loaded, and the cases that load are there as given.
    let ids = query_text(
        &db,
        "SELECT id::VARCHAR FROM notes WHERE note = 'good' ORDER BY id",
    );
    assert_eq!(ids.len() as i64, good, "every good record loaded");
    let packed = query_text(&db, "SELECT hex(packed) FROM notes WHERE id = 108");
    assert_eq!(packed, vec![vec![Some("000102".to_string())]]);
    let infinity = query_text(&db, "SELECT seen_at::VARCHAR FROM notes WHERE id = 118");
    assert_eq!(infinity, vec![vec![Some("infinity".to_string())]]);
    let year_10000 = query_text(&db, "SELECT seen_at::VARCHAR FROM notes WHERE id = 119");
    assert_eq!(
        year_10000,
        vec![vec![Some("10000-01-01 00:00:00".to_string())]]
    );
    let strange = query_text(
        &db,
        r#"SELECT "co""l. ü mn" FROM "we""ird. täble name" WHERE id = 116"#,
    );
    assert_eq!(
        strange,
        vec![vec![Some(
            r#"it's "quoted"; DROP TABLE notes; --"#.to_string()
        )]]
    );
}
