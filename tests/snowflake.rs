//! The Snowflake sink through the real `snowflake-api` crate against a real fakesnow
//! server, fed by the real broker.

use floe_e2e::*;
use std::time::Duration;

const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

fn floe_env(
    broker: &Broker,
    fakesnow: &Fakesnow,
    topics: &str,
    group: &str,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", topics.to_string()),
        ("FLOE_KAFKA_GROUP", group.to_string()),
        ("FLOE_KAFKA_ASSIGNMENT", "all".to_string()),
        ("FLOE_BATCH_MAX_ROWS", "2000".to_string()),
        ("FLOE_BATCH_MAX_AGE_MS", "200".to_string()),
        ("FLOE_STATS_INTERVAL_MS", "1000".to_string()),
        ("FLOE_RETRY_INITIAL_MS", "100".to_string()),
        ("FLOE_RETRY_MAX_MS", "500".to_string()),
        ("FLOE_BREAKER_COOLDOWN_MS", "500".to_string()),
    ];
    env.extend(fakesnow.floe_env());
    env
}

/// Every type, TOAST placeholders, an added column and a mixed-case column name: the
/// Snowflake tables equal the model.
#[test]
fn stream_loads_into_snowflake_equal_to_the_model() {
    let broker = Broker::start("sf-e2e");
    let fakesnow = Fakesnow::start("sf-e2e");
    let dir = scratch_dir("sf-e2e");
    broker.create_topic("dbserver1.public.all_types", 2);
    broker.create_topic("dbserver1.public.transactions", 2);
    let mut types = Workload::new(Profile::AllTypes, 200, 2000, 41);
    broker.produce("dbserver1.public.all_types", &mut types, 2000);
    let mut tx = Workload::new(Profile::Transactions, 300, 3000, 42);
    broker.produce("dbserver1.public.transactions", &mut tx, 3000);

    let topics = "dbserver1.public.all_types,dbserver1.public.transactions";
    let mut floe = Floe::start(
        &floe_env(&broker, &fakesnow, topics, "sf-e2e"),
        dir.join("floe.log"),
    );
    broker.wait_fully_committed("sf-e2e", "dbserver1.public.all_types", LOAD_TIMEOUT);
    broker.wait_fully_committed("sf-e2e", "dbserver1.public.transactions", LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    assert!(types.expected().len() > 100 && tx.expected().len() > 150);
    assert_same_rows(&fakesnow.all_types_rows(), &types.expected());
    assert_same_rows(&fakesnow.query(TRANSACTIONS_QUERY), &tx.expected());
    let stored =
        fakesnow.query("SELECT TO_VARCHAR(SUM(NEXT_OFFSET)::NUMBER(38,0)) FROM _FLOE_OFFSETS");
    let total: i64 = [
        "dbserver1.public.all_types",
        "dbserver1.public.transactions",
    ]
    .iter()
    .map(|t| {
        broker
            .progress("sf-e2e", t)
            .iter()
            .map(|p| p.high)
            .sum::<i64>()
    })
    .sum();
    assert_eq!(stored[0][0].as_deref(), Some(total.to_string().as_str()));
    assert!(
        broker.read_all("floe.dlq").is_empty(),
        "nothing is dead-lettered"
    );
}

mod literals {
    use super::*;
    use floe::batch::Batch;
    use floe::change::{Column, ColumnType, Op, RowChange, SourcePosition, TableSchema, Value};
    use floe::sink::snowflake::SnowflakeSink;
    use floe::sink::Sink;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// A table name that needs quoting too.
    const TABLE: &str = "Lit'eral \"Table\"";

    /// Strings built from the pieces that end or bend literals, mixed with anything.
    fn hostile_string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("'".to_string()),
            Just("''".to_string()),
            Just("\\".to_string()),
            Just("\\'".to_string()),
            Just("$$".to_string()),
            Just("\0".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\t".to_string()),
            Just("\"".to_string()),
            Just("\\u0000".to_string()),
            Just("🦀𝄞".to_string()),
            Just("');--".to_string()),
            any::<String>(),
        ];
        prop::collection::vec(piece, 0..8).prop_map(|parts| parts.concat())
    }

    /// A NUMBER(38,9) in its canonical text: no leading zeros, nine fraction digits.
    fn decimal() -> impl Strategy<Value = String> {
        (any::<bool>(), "[0-9]{1,29}", "[0-9]{9}").prop_map(|(negative, int, frac)| {
            let int = int.trim_start_matches('0');
            let int = if int.is_empty() { "0" } else { int };
            let zero = int == "0" && frac.bytes().all(|b| b == b'0');
            format!("{}{int}.{frac}", if negative && !zero { "-" } else { "" })
        })
    }

    fn schema() -> Arc<TableSchema> {
        let column = |name: &str, ty| Column {
            name: name.into(),
            ty,
        };
        Arc::new(TableSchema {
            columns: vec![
                column("id", ColumnType::Int64),
                column("Text 'Value'", ColumnType::Text),
                column(
                    "amount",
                    ColumnType::Decimal {
                        precision: Some(38),
                        scale: 9,
                    },
                ),
            ],
            key: vec![0],
        })
    }

    /// Arbitrary strings and decimals, loaded by the sink through the real crate into a
    /// real server and read back, come back unchanged. A small statement limit makes
    /// most batches stage in several statements.
    #[test]
    fn strings_and_decimals_round_trip_unchanged() {
        let fakesnow = Fakesnow::start("sf-literals");
        let config = floe::config::SnowflakeConfig {
            max_statement_bytes: 400,
            ..fakesnow.config()
        };
        let sink = SnowflakeSink::open(&config, false).expect("open sink");
        // proptest's body is a `Fn`: the session and the id counter live in a cell.
        let state = std::cell::RefCell::new((sink, fakesnow.client(), 0i64));
        let schema = schema();
        let topic: Arc<str> = Arc::from("literals");
        let config = ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config, |(values in prop::collection::vec((hostile_string(), decimal()), 1..10))| {
            let mut state = state.borrow_mut();
            let (sink, reader, next_id) = &mut *state;
            let first = *next_id;
            let mut batch = Batch::default();
            for (text, amount) in &values {
                let change = RowChange {
                    table: Arc::from(TABLE),
                    op: Op::Insert,
                    schema: schema.clone(),
                    values: vec![
                        Value::Int(*next_id),
                        Value::Text(text.clone()),
                        Value::Decimal(amount.clone()),
                    ],
                    source: SourcePosition::default(),
                };
                batch.advance(&topic, 0, *next_id);
                batch.add_row(change, &topic, 0, *next_id);
                *next_id += 1;
            }
            sink.apply(&batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let rows = reader
                .query_text(&format!(
                    "SELECT \"Text 'Value'\", TO_VARCHAR(\"amount\") FROM \"Lit'eral \"\"Table\"\"\" \
                     WHERE \"id\" >= {first} ORDER BY \"id\""
                ))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected: Vec<Vec<Option<String>>> = values
                .iter()
                .map(|(t, a)| vec![Some(t.clone()), Some(a.clone())])
                .collect();
            prop_assert_eq!(rows, expected);
        });
    }
}

/// A source column widened mid-stream (int → bigint, numeric(10,2) → numeric(14,4))
/// widens the Snowflake column, so no value is rounded or truncated, and a
/// rebuild that a crash interrupted is finished by the next sink.
#[test]
fn widened_source_columns_widen_the_snowflake_columns() {
    use floe::batch::Batch;
    use floe::change::{Column, ColumnType, Op, RowChange, SourcePosition, TableSchema, Value};
    use floe::sink::snowflake::SnowflakeSink;
    use floe::sink::Sink;
    use std::sync::Arc;

    let fakesnow = Fakesnow::start("sf-widen");
    let mut sink = SnowflakeSink::open(&fakesnow.config(), false).expect("open sink");
    let topic: Arc<str> = Arc::from("widen");
    let decimal = |p, s| ColumnType::Decimal {
        precision: Some(p),
        scale: s,
    };
    let mut offset = 0;
    let mut load =
        |sink: &mut SnowflakeSink, id: i64, n: (ColumnType, Value), d: (ColumnType, Value)| {
            let schema = Arc::new(TableSchema {
                columns: vec![
                    Column {
                        name: "id".into(),
                        ty: ColumnType::Int64,
                    },
                    Column {
                        name: "n".into(),
                        ty: n.0,
                    },
                    Column {
                        name: "d".into(),
                        ty: d.0,
                    },
                ],
                key: vec![0],
            });
            let mut batch = Batch::default();
            batch.advance(&topic, 0, offset);
            batch.add_row(
                RowChange {
                    table: Arc::from("widen"),
                    op: Op::Insert,
                    schema,
                    values: vec![Value::Int(id), n.1, d.1],
                    source: SourcePosition::default(),
                },
                &topic,
                0,
                offset,
            );
            offset += 1;
            sink.apply(&batch)
        };
    load(
        &mut sink,
        1,
        (ColumnType::Int32, Value::Int(7)),
        (decimal(10, 2), Value::Decimal("1.25".into())),
    )
    .expect("first load");
    load(
        &mut sink,
        2,
        (ColumnType::Int64, Value::Int(7_000_000_000)),
        (decimal(14, 4), Value::Decimal("12345.6789".into())),
    )
    .expect("widened load");
    // Where no type holds both, the column keeps its type and a value that does not
    // convert to it is refused.
    let refused = load(
        &mut sink,
        3,
        (ColumnType::Text, Value::Text("seven".into())),
        (decimal(14, 4), Value::Decimal("0.0001".into())),
    );
    assert!(
        matches!(&refused, Err(floe::sink::SinkError::Refused(_))),
        "{refused:?}"
    );
    let reader = fakesnow.client();
    let rows = |reader: &mut floe::sink::snowflake::Client| {
        reader
            .query_text("SELECT TO_VARCHAR(\"id\"), \"n\", TO_VARCHAR(\"d\") FROM \"widen\" ORDER BY \"id\"")
            .expect("read back")
    };
    let mut reader = reader;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows(&mut reader),
        vec![
            vec![s("1"), s("7"), s("1.2500")],
            vec![s("2"), s("7000000000"), s("12345.6789")],
        ]
    );
    // A crash between dropping a rebuilt column and renaming its copy: the next sink
    // finishes the rebuild, and the values are there under the column's name.
    reader
        .execute("ALTER TABLE \"widen\" RENAME COLUMN \"d\" TO \"d__floe_new\"")
        .expect("simulate an interrupted rebuild");
    drop(sink);
    let mut sink = SnowflakeSink::open(&fakesnow.config(), false).expect("open sink");
    load(
        &mut sink,
        4,
        (ColumnType::Int64, Value::Int(4)),
        (decimal(14, 4), Value::Decimal("4.0000".into())),
    )
    .expect("load after the interrupted rebuild");
    assert_eq!(rows(&mut reader).len(), 3);
    assert_eq!(rows(&mut reader)[1][2], s("12345.6789"));
}

/// A config with two sinks: DuckDB takes `transactions`, Snowflake takes `all_types`.
fn two_sink_config(
    dir: &std::path::Path,
    fakesnow: &Fakesnow,
    broker: &Broker,
    group: &str,
) -> std::path::PathBuf {
    let config = dir.join("floe.toml");
    let text = format!(
        r#"[kafka]
brokers = "{brokers}"
topics = ["dbserver1.public.transactions", "dbserver1.public.all_types"]
group = "{group}"
assignment = "all"

[sink]
kind = "duckdb"
[sink.duckdb]
path = "{db}"

[sinks.warehouse]
kind = "snowflake"
topics = ["dbserver1.public.all_types"]
[sinks.warehouse.snowflake]
account = "{account}"
user = "floe"
database = "FLOE"
password_file = "{password}"
ca_file = "{ca}"
resolve = "127.0.0.1:{port}"
request_timeout_ms = 5000

[batch]
max_rows = 500
max_age_ms = 100

[runtime]
stats_interval_ms = 500

[resilience]
retry_initial_ms = 50
retry_max_ms = 300
breaker_failures = 3
breaker_cooldown_ms = 500
"#,
        brokers = broker.addr,
        db = dir.join("floe.duckdb").display(),
        account = floe_e2e::fakesnow::ACCOUNT,
        password = fakesnow.dir.join("password").display(),
        ca = fakesnow.dir.join("ca.pem").display(),
        port = fakesnow.port,
    );
    std::fs::write(&config, text).expect("write config");
    config
}

/// Snowflake goes down mid-run: its breaker opens and its partitions pause while the
/// DuckDB-routed table keeps loading; when it is back, the breaker closes and loading
/// resumes where it stopped. Both tables equal their models; nothing is dead-lettered.
#[test]
fn a_snowflake_outage_pauses_its_partitions_and_loses_nothing() {
    let broker = Broker::start("sf-outage");
    let mut fakesnow = Fakesnow::start("sf-outage");
    let dir = scratch_dir("sf-outage");
    let (tx_topic, types_topic) = (
        "dbserver1.public.transactions",
        "dbserver1.public.all_types",
    );
    broker.create_topic(tx_topic, 2);
    broker.create_topic(types_topic, 2);
    let mut tx = Workload::new(Profile::Transactions, 300, 6000, 51);
    let mut types = Workload::new(Profile::AllTypes, 200, 3000, 52);
    broker.produce(tx_topic, &mut tx, 3000);
    broker.produce(types_topic, &mut types, 1500);

    let config = two_sink_config(&dir, &fakesnow, &broker, "sf-outage");
    let mut floe = Floe::start_with_config(&config, &[], dir.join("floe.log"));
    broker.wait_fully_committed("sf-outage", types_topic, LOAD_TIMEOUT);

    fakesnow.kill();
    broker.produce(types_topic, &mut types, 1500);
    wait_for(
        "the Snowflake breaker to open and pause",
        LOAD_TIMEOUT,
        || {
            let log = floe.log_text();
            (log.contains("circuit breaker open") && log.contains("partitions paused"))
                .then_some(())
        },
    );
    let held = broker.committed_total("sf-outage", types_topic);
    // The DuckDB lane keeps flowing while Snowflake is down.
    broker.produce(tx_topic, &mut tx, 3000);
    broker.wait_fully_committed("sf-outage", tx_topic, LOAD_TIMEOUT);
    assert_eq!(
        broker.committed_total("sf-outage", types_topic),
        held,
        "no offset of the paused sink moves while it is down"
    );
    let log = floe.log_text();
    assert!(
        log.contains("breakers=kafka:closed,dlq:closed,sink:closed,sink.warehouse:open"),
        "{log}"
    );

    fakesnow.restart();
    broker.wait_fully_committed("sf-outage", types_topic, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    let log = floe.log_text();
    assert!(
        log.contains("circuit breaker closed") && log.contains("partitions resumed"),
        "{log}"
    );

    assert_same_rows(&fakesnow.all_types_rows(), &types.expected());
    assert_same_rows(
        &query_text(&dir.join("floe.duckdb"), tx.check_query()),
        &tx.expected(),
    );
    assert!(
        broker.read_all("floe.dlq").is_empty(),
        "nothing is dead-lettered"
    );
}

/// A value Snowflake refuses for its column reaches the DLQ alone, with its original
/// bytes and Snowflake's reason; the rest of its batch loads.
#[test]
fn a_value_snowflake_refuses_is_dead_lettered_alone() {
    let broker = Broker::start("sf-refused");
    let fakesnow = Fakesnow::start("sf-refused");
    let dir = scratch_dir("sf-refused");
    let topic = "dbserver1.public.things";
    broker.create_topic(topic, 1);
    let records = produce_things_with_one_refused(&broker, topic);
    let mut floe = Floe::start(
        &floe_env(&broker, &fakesnow, topic, "sf-refused"),
        dir.join("floe.log"),
    );
    broker.wait_fully_committed("sf-refused", topic, LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );

    let reason = assert_only_the_refused_thing_is_dead_lettered(&broker, &records);
    assert!(
        reason.contains("not a number"),
        "the reason names the value: {reason}"
    );
    let loaded = fakesnow
        .query("SELECT TO_VARCHAR(COUNT(*)), TO_VARCHAR(SUM(\"x\")::NUMBER(38,0)) FROM \"things\"");
    assert_eq!(loaded[0][0].as_deref(), Some("199"));
    assert_eq!(
        loaded[0][1].as_deref(),
        Some((10 * (200 * 201 / 2 - 150)).to_string().as_str())
    );
}

mod guards {
    use super::*;
    use floe::batch::Batch;
    use floe::change::{Column, ColumnType, Op, RowChange, SourcePosition, TableSchema, Value};
    use floe::sink::snowflake::SnowflakeSink;
    use floe::sink::Sink;
    use std::sync::Arc;

    fn change(op: Op, id: i64, name: &str, lsn: i64) -> RowChange {
        let schema = Arc::new(TableSchema {
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int64,
                },
                Column {
                    name: "Name".into(),
                    ty: ColumnType::Text,
                },
            ],
            key: vec![0],
        });
        RowChange {
            table: Arc::from("people"),
            op,
            schema,
            values: vec![Value::Int(id), Value::Text(name.into())],
            source: SourcePosition {
                lsn: Some(lsn),
                ..SourcePosition::default()
            },
        }
    }

    fn batch(changes: Vec<RowChange>, first_offset: i64) -> Batch {
        let topic: Arc<str> = Arc::from("people");
        let mut batch = Batch::default();
        for (i, c) in changes.into_iter().enumerate() {
            let offset = first_offset + i as i64;
            batch.advance(&topic, 0, offset);
            batch.add_row(c, &topic, 0, offset);
        }
        batch
    }

    /// With `soft_delete`, a delete marks the row; a replay of older changes moves no row
    /// backwards (neither resurrecting the deleted one nor undoing an update); the
    /// offsets never go back either.
    #[test]
    fn soft_deletes_mark_rows_and_replays_never_move_backwards() {
        let fakesnow = Fakesnow::start("sf-guards");
        let mut sink = SnowflakeSink::open(&fakesnow.config(), true).expect("open sink");
        let first = batch(
            vec![
                change(Op::Insert, 1, "ada", 10),
                change(Op::Insert, 2, "bob", 11),
            ],
            0,
        );
        sink.apply(&first).expect("first");
        let second = batch(
            vec![
                change(Op::Update, 1, "ada lovelace", 20),
                change(Op::Delete, 2, "bob", 21),
            ],
            2,
        );
        sink.apply(&second).expect("second");
        sink.apply(&first).expect("replay");
        let rows = fakesnow.query(
            "SELECT TO_VARCHAR(\"id\"), \"Name\", TO_VARCHAR(_FLOE_DELETED), _FLOE_OP \
             FROM \"people\" ORDER BY \"id\"",
        );
        let text = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert_eq!(
            rows,
            vec![
                text(&["1", "ada lovelace", "false", "u"]),
                text(&["2", "bob", "true", "d"]),
            ]
        );
        assert_eq!(
            sink.stored_offsets().expect("offsets"),
            vec![("people".to_string(), 0, 4)]
        );
    }
}
