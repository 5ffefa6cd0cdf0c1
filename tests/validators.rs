//! End-to-end with validators: the real broker, real components, the real DLQ topic.

use floe_e2e::*;
use std::path::Path;
use std::time::Duration;

const LOAD_TIMEOUT: Duration = Duration::from_secs(240);
const TX_TOPIC: &str = "dbserver1.public.transactions";
const CUSTOMERS_TOPIC: &str = "dbserver1.public.customers";

fn write_config(dir: &Path, broker: &Broker, topics: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("floe.toml");
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
topics = [{topics}]
group = "floe-validators"
assignment = "all"

[sink.duckdb]
path = "{db}"

[batch]
max_rows = 2000
max_age_ms = 100

[runtime]
stats_interval_ms = 1000

[wasm]
cache_dir = "{cache}"
{extra}
"#,
        brokers = broker.addr,
        topics = topics
            .split(',')
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(","),
        db = dir.join("floe.duckdb").display(),
        cache = dir.join("wasm-cache").display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn tx_route(validator: &str) -> String {
    format!(
        "[[routes]]\ntable = \"transactions\"\nvalidator = \"{}\"\n",
        guest(validator).display()
    )
}

/// A bare Debezium payload (no schema) for the `customers` table.
fn customer(op: &str, id: i64, email: &str, lsn: i64) -> (String, Vec<u8>) {
    let row = serde_json::json!({
        "id": id, "email": email, "ssn": format!("{id:03}-00-0000"), "name": format!("customer {id}")
    });
    let (before, after) = match op {
        "d" => (serde_json::json!({"id": id}), serde_json::Value::Null),
        _ => (serde_json::Value::Null, row),
    };
    let value = serde_json::json!({
        "before": before, "after": after, "op": op,
        "source": {"table": "customers", "schema": "public", "lsn": lsn, "ts_ms": 1_767_225_600_000i64},
    });
    (format!("{{\"id\":{id}}}"), value.to_string().into_bytes())
}

fn query_one(db: &Path, sql: &str) -> String {
    query_text(db, sql)[0][0].clone().unwrap_or_default()
}

/// Rejected changes reach the DLQ, unchanged and with every header; accepted ones load;
/// a mapping validator's rows land as mapped, in the route's target table.
#[test]
fn rejected_changes_reach_the_dlq_and_mapped_rows_load() {
    let broker = Broker::start("validators");
    let dir = scratch_dir("validators");
    let db = dir.join("floe.duckdb");
    broker.create_topic(TX_TOPIC, 2);
    broker.create_topic(CUSTOMERS_TOPIC, 1);
    let mut tx = Workload::new(Profile::Transactions, 400, 4000, 41).with_invalid_percent(5);
    broker.produce(TX_TOPIC, &mut tx, 4000);
    let mut customers: Vec<(String, Vec<u8>)> = (1..=40)
        .map(|id| customer("c", id, &format!("Person.{id}@Mail.example"), 100 + id))
        .collect();
    customers.push(customer("u", 3, "new.three@other.example", 500));
    customers.push(customer("d", 4, "", 501));
    customers.push(("{\"id\":99}".into(), b"{\"op\":\"c\",".to_vec()));
    let raw: Vec<(Option<&str>, Option<&[u8]>)> = customers
        .iter()
        .map(|(k, v)| (Some(k.as_str()), Some(v.as_slice())))
        .collect();
    broker.produce_raw(CUSTOMERS_TOPIC, &raw);

    let routes = format!(
        "{}[[routes]]\ntable = \"customers\"\nvalidator = \"{}\"\ntarget = \"customers_masked\"\n",
        tx_route("transactions-validator"),
        guest("pii-mask").display()
    );
    let config = write_config(
        &dir,
        &broker,
        &format!("{TX_TOPIC},{CUSTOMERS_TOPIC}"),
        &routes,
    );
    let mut floe = Floe::start_with_config(&config, &[], dir.join("floe.log"));
    broker.wait_fully_committed("floe-validators", TX_TOPIC, LOAD_TIMEOUT);
    broker.wait_fully_committed("floe-validators", CUSTOMERS_TOPIC, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    assert!(
        tx.invalid_events > 50,
        "the stream must carry invalid changes"
    );
    assert_same_rows(&query_text(&db, tx.check_query()), &tx.expected());

    let dlq = broker.read_all("floe.dlq");
    let source = broker.read_all(TX_TOPIC);
    let rejected: Vec<&TopicRecord> = dlq
        .iter()
        .filter(|r| r.header("floe.category") == "validation")
        .collect();
    assert_eq!(
        rejected.len() as u64,
        tx.invalid_events,
        "one dead letter per invalid change"
    );
    for letter in &rejected {
        assert!(
            ["amount_negative", "status_unknown"].contains(&letter.header("floe.code")),
            "{letter:?}"
        );
        assert!(
            letter
                .header("floe.reason")
                .contains("must not be negative")
                || letter.header("floe.reason").contains("is not one of")
        );
        assert_eq!(letter.header("floe.source.topic"), TX_TOPIC);
        assert_eq!(letter.header("floe.table"), "transactions");
        assert_eq!(letter.header("floe.validator"), "transactions-validator");
        assert_eq!(letter.header("floe.validator.hash").len(), 64);
        assert!(letter
            .header("floe.time")
            .parse::<i64>()
            .is_ok_and(|t| t > 0));
        let partition: i32 = letter
            .header("floe.source.partition")
            .parse()
            .expect("partition");
        let offset: i64 = letter.header("floe.source.offset").parse().expect("offset");
        let original = source
            .iter()
            .find(|r| r.partition == partition && r.offset == offset)
            .expect("the source record");
        assert_eq!(letter.key, original.key, "the key is kept unchanged");
        assert_eq!(letter.value, original.value, "the value is kept unchanged");
    }
    let undecodable: Vec<&TopicRecord> = dlq
        .iter()
        .filter(|r| r.header("floe.category") == "decode")
        .collect();
    assert_eq!(undecodable.len(), 1, "{dlq:?}");
    assert_eq!(
        undecodable[0].value.as_deref(),
        Some(b"{\"op\":\"c\",".as_slice())
    );
    assert!(
        undecodable[0].header("floe.reason").contains("JSON"),
        "{:?}",
        undecodable[0]
    );

    // pii-mask: ssn dropped, email masked, domain derived; the delete applied. (The bare
    // payloads above carry their columns in serde_json's sorted order.)
    let columns = query_text(
        &db,
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns \
         WHERE table_name = 'customers_masked' AND NOT starts_with(column_name, '_floe')",
    );
    assert_eq!(columns[0][0].as_deref(), Some("email,id,name,email_domain"));
    assert_eq!(
        query_one(
            &db,
            "SELECT CAST(count(*) AS VARCHAR) FROM customers_masked"
        ),
        "39"
    );
    assert_eq!(
        query_text(
            &db,
            "SELECT email, email_domain FROM customers_masked WHERE id IN (3, 7) ORDER BY id"
        ),
        vec![
            vec![
                Some("n***@other.example".into()),
                Some("other.example".into())
            ],
            vec![
                Some("P***@Mail.example".into()),
                Some("mail.example".into())
            ],
        ]
    );
    let log = floe.log_text();
    assert!(log.contains("validator loaded"), "{log}");
}

/// A validator that imports WASI filesystem interfaces never runs: floe refuses to start
/// and says which import is the problem.
#[test]
fn a_validator_with_a_forbidden_import_is_refused_at_start() {
    let broker = Broker::start("forbidden");
    let dir = scratch_dir("forbidden");
    broker.create_topic(TX_TOPIC, 1);
    let route = format!(
        "[[routes]]\ntable = \"transactions\"\nvalidator = \"{}\"\n",
        guest("reads-files").display()
    );
    let config = write_config(&dir, &broker, TX_TOPIC, &route);
    let mut floe = Floe::start_with_config(&config, &[], dir.join("floe.log"));
    let code = floe.wait_exit(Duration::from_secs(60));
    let log = floe.log_text();
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("imports wasi:filesystem/"), "{log}");
    assert!(
        log.contains("reads-files.wasm"),
        "the route and file are named: {log}"
    );
}

/// Rejected changes replayed after the validator is fixed load; the rest stay rejected.
#[test]
fn dlq_replay_after_fixing_the_validator_loads_the_rejected_rows() {
    let broker = Broker::start("replay");
    let dir = scratch_dir("replay");
    let db = dir.join("floe.duckdb");
    broker.create_topic(TX_TOPIC, 2);
    let mut tx = Workload::new(Profile::Transactions, 300, 3000, 43).with_invalid_percent(8);
    broker.produce(TX_TOPIC, &mut tx, 3000);
    // Soft deletes keep a deleted key's position, so a replayed older change cannot
    // bring the row back.
    let soft = "[sink]\nsoft_delete = true\n";
    let strict = write_config(
        &dir,
        &broker,
        TX_TOPIC,
        &format!("{soft}{}", tx_route("transactions-validator")),
    );
    let mut floe = Floe::start_with_config(&strict, &[], dir.join("floe.log"));
    broker.wait_fully_committed("floe-validators", TX_TOPIC, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    let live = tx.check_query().replace(
        "FROM transactions",
        "FROM transactions WHERE NOT _floe_deleted",
    );
    assert_same_rows(&query_text(&db, &live), &tx.expected());
    assert_ne!(
        tx.expected(),
        tx.expected_lenient(),
        "chargebacks must change the table"
    );

    let fixed = write_config(
        &dir,
        &broker,
        TX_TOPIC,
        &format!("{soft}{}", tx_route("transactions-validator-chargebacks")),
    );
    let mut floe = Floe::start_with_config(&fixed, &[], dir.join("floe-fixed.log"));
    let config = fixed.display().to_string();
    let (code, out, err) = floe_command(
        &[
            "dlq",
            "replay",
            "--config",
            &config,
            "--category",
            "validation",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let dlq = broker.read_all("floe.dlq");
    let chargebacks = dlq
        .iter()
        .filter(|r| r.header("floe.code") == "status_unknown")
        .count();
    let negatives = dlq
        .iter()
        .filter(|r| r.header("floe.code") == "amount_negative")
        .count();
    assert_eq!((chargebacks + negatives) as u64, tx.invalid_events);
    assert!(
        out.contains(&format!("resent={chargebacks} "))
            && out.contains(&format!("rejected:amount_negative={negatives}")),
        "{out}"
    );
    broker.wait_fully_committed("floe-validators", TX_TOPIC, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    assert_same_rows(&query_text(&db, &live), &tx.expected_lenient());
}

/// kill -9 while loading through a validator: the table equals the model and every
/// invalid change is in the DLQ (a change dead-lettered just before a crash is
/// dead-lettered again after it, so duplicates are possible, never gaps).
#[test]
fn kill9_with_a_validator_loses_nothing() {
    let broker = Broker::start("kill9-validator");
    let dir = scratch_dir("kill9-validator");
    let db = dir.join("floe.duckdb");
    broker.create_topic(TX_TOPIC, 3);
    let mut tx = Workload::new(Profile::Transactions, 3000, 30_000, 44).with_invalid_percent(5);
    broker.produce(TX_TOPIC, &mut tx, 30_000);
    let batch = "[batch]\nmax_rows = 500\nmax_pending_rows = 1000\nmax_age_ms = 100\n";
    let config = write_config(&dir, &broker, TX_TOPIC, &tx_route("transactions-validator"));
    // The [batch] table above is replaced by a smaller one, so runs are killed mid-load.
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace("[batch]\nmax_rows = 2000\nmax_age_ms = 100\n", batch);
    std::fs::write(&config, text).expect("config");
    let total: i64 = broker
        .progress("floe-validators", TX_TOPIC)
        .iter()
        .map(|p| p.high)
        .sum();
    let kills = kill_mid_load(
        3,
        total,
        |round| Floe::start_with_config(&config, &[], dir.join(format!("floe-{round}.log"))),
        || broker.committed_total("floe-validators", TX_TOPIC),
    );
    assert!(
        kills >= 2,
        "floe finished before it could be killed mid-load"
    );
    let mut floe = Floe::start_with_config(&config, &[], dir.join("floe.log"));
    broker.wait_fully_committed("floe-validators", TX_TOPIC, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    assert_same_rows(&query_text(&db, tx.check_query()), &tx.expected());
    let dlq = broker.read_all("floe.dlq");
    let distinct: std::collections::BTreeSet<(String, String)> = dlq
        .iter()
        .map(|r| {
            (
                r.header("floe.source.partition").to_string(),
                r.header("floe.source.offset").to_string(),
            )
        })
        .collect();
    assert_eq!(
        distinct.len() as u64,
        tx.invalid_events,
        "every invalid change, once or more"
    );
    assert!(dlq.len() >= distinct.len());
}

/// Each hostile guest on its own table, all in one process: the server stays up, only the
/// poisoned change of each table reaches the DLQ with its category, and everything else —
/// the rest of each batch and a table without a validator — loads.
#[test]
fn hostile_guests_cost_only_their_culprit_change() {
    let broker = Broker::start("hostile");
    let dir = scratch_dir("hostile");
    let db = dir.join("floe.duckdb");
    let topic = "dbserver1.public.notes";
    broker.create_topic(topic, 1);
    let hostile = [
        ("looping", "poison-infinite-loop", "transform_timeout"),
        ("bombing", "poison-memory-bomb", "transform_oom"),
        ("trapping", "poison-trap", "transform_trap"),
        ("miscounting", "poison-wrong-count", "transform_contract"),
    ];
    let mut records = Vec::new();
    for i in 0..300 {
        for (table, _, _) in hostile.iter().chain([&("plain", "", "")]) {
            let text = if i == 150 { "poison" } else { "fine" };
            records.push(note_record(table, i, text));
        }
    }
    let raw: Vec<(Option<&str>, Option<&[u8]>)> = records
        .iter()
        .map(|(k, v)| (Some(k.as_str()), Some(v.as_slice())))
        .collect();
    broker.produce_raw(topic, &raw);
    let routes: String = hostile
        .iter()
        .map(|(table, guest_name, _)| {
            // The bomb must run out of memory, not time, however slow the machine.
            let limits = if *table == "bombing" {
                "limits.deadline_ms = 10000\n"
            } else {
                ""
            };
            format!(
                "[[routes]]\ntable = \"{table}\"\nvalidator = \"{}\"\n{limits}",
                guest(guest_name).display()
            )
        })
        .collect();
    let config = write_config(&dir, &broker, topic, &routes);
    let mut floe = Floe::start_with_config(&config, &[], dir.join("floe.log"));
    broker.wait_fully_committed("floe-validators", topic, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    let dlq = broker.read_all("floe.dlq");
    assert_eq!(dlq.len(), hostile.len(), "only the culprits: {dlq:?}");
    for (table, guest_name, category) in hostile {
        let letter = dlq
            .iter()
            .find(|r| r.header("floe.table") == table)
            .unwrap_or_else(|| panic!("no dead letter for {table}: {dlq:?}"));
        assert_eq!(letter.header("floe.category"), category, "{letter:?}");
        assert_eq!(letter.header("floe.validator"), guest_name);
        let value = String::from_utf8_lossy(letter.value.as_deref().unwrap_or_default());
        assert!(value.contains("\"poison\""), "the culprit itself: {value}");
        assert_eq!(
            query_one(
                &db,
                &format!("SELECT CAST(count(*) AS VARCHAR) FROM {table}")
            ),
            "299",
            "{table}: the rest of the batch loads"
        );
    }
    let trap = dlq
        .iter()
        .find(|r| r.header("floe.table") == "trapping")
        .expect("trap");
    assert!(
        trap.header("floe.reason")
            .contains("poisoned record reached the validator"),
        "the guest's panic message is in the reason: {trap:?}"
    );
    assert_eq!(
        query_one(&db, "SELECT CAST(count(*) AS VARCHAR) FROM plain"),
        "300"
    );
}

/// A row the target refuses (text where the table holds integers) goes to the DLQ alone,
/// with category `sink_permanent` and its original bytes; the rest of its batch loads.
#[test]
fn a_row_the_sink_refuses_is_dead_lettered_alone() {
    let broker = Broker::start("refused");
    let dir = scratch_dir("refused");
    let db = dir.join("floe.duckdb");
    let topic = "dbserver1.public.things";
    broker.create_topic(topic, 1);
    let records = produce_things_with_one_refused(&broker, topic);
    let config = write_config(&dir, &broker, topic, "");
    let mut floe = Floe::start_with_config(&config, &[], dir.join("floe.log"));
    broker.wait_fully_committed("floe-validators", topic, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    let reason = assert_only_the_refused_thing_is_dead_lettered(&broker, &records);
    assert!(
        reason.contains(
            "column \"x\" cannot take the value \"not a number\": it is staged as BIGINT"
        ),
        "the reason names the column and value: {reason}"
    );
    assert_eq!(
        query_one(&db, "SELECT CAST(count(*) AS VARCHAR) FROM things"),
        "199"
    );
    assert_eq!(
        query_one(&db, "SELECT CAST(sum(x) AS VARCHAR) FROM things"),
        (10 * (200 * 201 / 2 - 150)).to_string()
    );
}
