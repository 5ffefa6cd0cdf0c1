use std::sync::Arc;

use super::*;
use crate::change::{Column, ColumnType, Op, RowChange, SourcePosition, TableSchema, Value};
use crate::sink::Sink;

fn temp_db(name: &str) -> DuckDbConfig {
    let dir = std::env::temp_dir().join(format!("floe-sink-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    DuckDbConfig {
        path: dir.join("t.duckdb"),
        ..DuckDbConfig::default()
    }
}

fn schema(extra: bool) -> Arc<TableSchema> {
    let mut columns = vec![
        Column {
            name: "id".into(),
            ty: ColumnType::Int64,
        },
        Column {
            name: "Amount".into(),
            ty: ColumnType::Decimal {
                precision: Some(12),
                scale: 2,
            },
        },
        Column {
            name: "bio \"quoted\"".into(),
            ty: ColumnType::Text,
        },
        Column {
            name: "at".into(),
            ty: ColumnType::TimestampTz,
        },
    ];
    if extra {
        columns.push(Column {
            name: "tags".into(),
            ty: ColumnType::List(Box::new(ColumnType::Text)),
        });
    }
    Arc::new(TableSchema {
        columns,
        key: vec![0],
    })
}

fn change(table: &str, op: Op, id: i64, amount: &str, bio: Value, lsn: i64) -> RowChange {
    RowChange {
        table: table.into(),
        op,
        schema: schema(false),
        values: vec![
            Value::Int(id),
            Value::Decimal(amount.into()),
            bio,
            Value::TimestampTz(1_700_000_000_123_456),
        ],
        source: SourcePosition {
            lsn: Some(lsn),
            tx_id: None,
            ts_ms: Some(1_700_000_000_000),
            snapshot: false,
        },
    }
}

fn batch(changes: Vec<RowChange>, first_offset: i64) -> Batch {
    let mut b = Batch::default();
    let topic: Arc<str> = "topic".into();
    for (i, c) in changes.into_iter().enumerate() {
        let offset = first_offset + i as i64;
        b.advance(&topic, 0, offset);
        b.add_row(c, &topic, 0, offset);
    }
    b
}

fn rows(sink: &DuckDbSink, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut stmt = sink.conn.prepare(sql).unwrap();
    let mut out = Vec::new();
    let mut q = stmt.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let n = r.as_ref().column_count();
        out.push(
            (0..n)
                .map(|i| r.get::<_, Option<String>>(i).unwrap())
                .collect(),
        );
    }
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

const SELECT: &str = "SELECT CAST(id AS VARCHAR), CAST(\"Amount\" AS VARCHAR), \"bio \"\"quoted\"\"\", _floe_op FROM t ORDER BY id";

#[test]
fn merges_inserts_updates_deletes_with_offsets() {
    let mut sink = DuckDbSink::open(&temp_db("merge"), false).unwrap();
    let b = batch(
        vec![
            change("t", Op::Insert, 1, "10.50", Value::Text("a".into()), 10),
            change("t", Op::Insert, 2, "-0.01", Value::Text("it's".into()), 11),
            change("t", Op::Insert, 3, "3.00", Value::Null, 12),
        ],
        0,
    );
    let counts = sink.apply(&b).unwrap();
    assert_eq!(counts.upserts, 3);
    let b = batch(
        vec![
            change("t", Op::Update, 1, "11.00", Value::Text("b".into()), 20),
            change("t", Op::Delete, 2, "0", Value::Null, 21),
        ],
        3,
    );
    sink.apply(&b).unwrap();
    assert_eq!(
        rows(&sink, SELECT),
        vec![
            vec![s("1"), s("11.00"), s("b"), s("u")],
            vec![s("3"), s("3.00"), None, s("c")]
        ]
    );
    assert_eq!(
        sink.stored_offsets().unwrap(),
        vec![("topic".to_string(), 0, 5)]
    );
    assert_eq!(
        sink.offset_reader().unwrap().stored_offsets().unwrap(),
        vec![("topic".to_string(), 0, 5)]
    );
}

#[test]
fn a_replay_never_moves_a_row_backwards() {
    let mut sink = DuckDbSink::open(&temp_db("backwards"), false).unwrap();
    sink.apply(&batch(
        vec![change(
            "t",
            Op::Insert,
            1,
            "2.00",
            Value::Text("new".into()),
            50,
        )],
        10,
    ))
    .unwrap();
    // An older change (lower LSN) arriving later, e.g. replayed from an earlier offset.
    sink.apply(&batch(
        vec![change(
            "t",
            Op::Update,
            1,
            "1.00",
            Value::Text("old".into()),
            40,
        )],
        3,
    ))
    .unwrap();
    sink.apply(&batch(
        vec![change("t", Op::Delete, 1, "0", Value::Null, 45)],
        4,
    ))
    .unwrap();
    assert_eq!(
        rows(&sink, SELECT),
        vec![vec![s("1"), s("2.00"), s("new"), s("c")]]
    );
    // The stored offset never moves back either.
    assert_eq!(
        sink.stored_offsets().unwrap(),
        vec![("topic".to_string(), 0, 11)]
    );
}

#[test]
fn toast_placeholder_keeps_the_stored_value_or_writes_null() {
    let mut sink = DuckDbSink::open(&temp_db("toast"), false).unwrap();
    sink.apply(&batch(
        vec![change(
            "t",
            Op::Insert,
            1,
            "1.00",
            Value::Text("long bio".into()),
            1,
        )],
        0,
    ))
    .unwrap();
    let counts = sink
        .apply(&batch(
            vec![
                change("t", Op::Update, 1, "2.00", Value::Unavailable, 2),
                change("t", Op::Update, 9, "9.00", Value::Unavailable, 3),
            ],
            1,
        ))
        .unwrap();
    assert_eq!(counts.toast_missing, 1);
    assert_eq!(
        rows(&sink, SELECT),
        vec![
            vec![s("1"), s("2.00"), s("long bio"), s("u")],
            vec![s("9"), s("9.00"), None, s("u")]
        ]
    );
    let placeholder = rows(
        &sink,
        "SELECT count(*)::VARCHAR FROM t WHERE \"bio \"\"quoted\"\"\" LIKE '%debezium%'",
    );
    assert_eq!(placeholder, vec![vec![s("0")]]);
}

#[test]
fn soft_delete_marks_rows() {
    let mut sink = DuckDbSink::open(&temp_db("soft"), true).unwrap();
    sink.apply(&batch(
        vec![change("t", Op::Insert, 1, "1.00", Value::Null, 1)],
        0,
    ))
    .unwrap();
    sink.apply(&batch(
        vec![change("t", Op::Delete, 1, "0", Value::Null, 2)],
        1,
    ))
    .unwrap();
    assert_eq!(
        rows(&sink, "SELECT CAST(id AS VARCHAR), CAST(\"Amount\" AS VARCHAR), _floe_op, CAST(_floe_deleted AS VARCHAR) FROM t"),
        vec![vec![s("1"), s("1.00"), s("d"), s("true")]]
    );
    sink.apply(&batch(
        vec![change("t", Op::Insert, 1, "5.00", Value::Null, 3)],
        2,
    ))
    .unwrap();
    assert_eq!(
        rows(&sink, "SELECT CAST(_floe_deleted AS VARCHAR) FROM t"),
        vec![vec![s("false")]]
    );
}

#[test]
fn truncate_empties_the_table_before_later_rows() {
    let mut sink = DuckDbSink::open(&temp_db("truncate"), false).unwrap();
    sink.apply(&batch(
        vec![change("t", Op::Insert, 1, "1.00", Value::Null, 1)],
        0,
    ))
    .unwrap();
    let mut b = batch(vec![], 0);
    b.truncate("t", "t".into());
    let topic: Arc<str> = "topic".into();
    b.advance(&topic, 0, 1);
    b.advance(&topic, 0, 2);
    b.add_row(
        change("t", Op::Insert, 7, "7.00", Value::Null, 9),
        &topic,
        0,
        2,
    );
    assert_eq!(sink.apply(&b).unwrap().truncates, 1);
    assert_eq!(
        rows(&sink, "SELECT CAST(id AS VARCHAR) FROM t"),
        vec![vec![s("7")]]
    );
}

#[test]
fn later_columns_are_added() {
    let mut sink = DuckDbSink::open(&temp_db("alter"), false).unwrap();
    sink.apply(&batch(
        vec![change("t", Op::Insert, 1, "1.00", Value::Null, 1)],
        0,
    ))
    .unwrap();
    let mut c = change("t", Op::Insert, 2, "2.00", Value::Null, 2);
    c.schema = schema(true);
    c.values.push(Value::List(vec![
        Value::Text("a\"b".into()),
        Value::Text("c".into()),
    ]));
    sink.apply(&batch(vec![c], 1)).unwrap();
    assert_eq!(
        rows(
            &sink,
            "SELECT CAST(id AS VARCHAR), array_to_string(tags, '|') FROM t ORDER BY id"
        ),
        vec![vec![s("1"), None], vec![s("2"), s("a\"b|c")]]
    );
}

#[test]
fn a_failed_batch_changes_nothing() {
    let mut sink = DuckDbSink::open(&temp_db("rollback"), false).unwrap();
    sink.apply(&batch(
        vec![change("t", Op::Insert, 1, "1.00", Value::Null, 1)],
        0,
    ))
    .unwrap();
    let bad = batch(
        vec![
            change("t", Op::Update, 1, "5.00", Value::Null, 2),
            change("t", Op::Insert, 2, "not a number", Value::Null, 3),
        ],
        1,
    );
    let err = sink.apply(&bad).unwrap_err();
    assert_eq!(err.category(), "sink_permanent", "{err}");
    assert_eq!(
        rows(&sink, SELECT),
        vec![vec![s("1"), s("1.00"), None, s("c")]]
    );
    assert_eq!(
        sink.stored_offsets().unwrap(),
        vec![("topic".to_string(), 0, 1)]
    );
    // The sink is usable afterwards.
    sink.apply(&batch(
        vec![change("t", Op::Update, 1, "6.00", Value::Null, 4)],
        3,
    ))
    .unwrap();
    assert_eq!(rows(&sink, SELECT)[0][1], s("6.00"));
}

#[test]
fn timestamps_are_utc_instants() {
    let mut sink = DuckDbSink::open(&temp_db("tz"), false).unwrap();
    sink.apply(&batch(
        vec![change("t", Op::Insert, 1, "1.00", Value::Null, 1)],
        0,
    ))
    .unwrap();
    assert_eq!(
        rows(&sink, "SELECT CAST(epoch_us(\"at\") AS VARCHAR), CAST(epoch_ms(_floe_source_ts) AS VARCHAR) FROM t"),
        vec![vec![s("1700000000123456"), s("1700000000000")]]
    );
}

#[test]
fn check_reports_a_refused_row_and_changes_nothing() {
    let mut sink = DuckDbSink::open(&temp_db("check"), false).unwrap();
    let good = batch(vec![change("t", Op::Insert, 1, "1.00", Value::Null, 10)], 0);
    assert!(sink.check("t", &good.tables["t"]).is_ok());
    assert!(
        sink.table_columns("t").unwrap().is_none(),
        "the check is rolled back"
    );
    sink.apply(&good).unwrap();
    // 10^12 does not fit the DECIMAL(12,2) the table was created with.
    let bad = batch(
        vec![
            change("t", Op::Update, 1, "2.00", Value::Null, 11),
            change("t", Op::Insert, 2, "1000000000000.00", Value::Null, 12),
        ],
        1,
    );
    let err = sink.check("t", &bad.tables["t"]).unwrap_err();
    assert!(matches!(err, SinkError::Refused(_)), "{err}");
    let only_good = TableBatch::part_of(&bad.tables["t"], &bad.tables["t"].pending[..1]);
    assert!(sink.check("t", &only_good).is_ok());
    assert_eq!(
        rows(&sink, "SELECT CAST(\"Amount\" AS VARCHAR) FROM t"),
        vec![vec![Some("1.00".to_string())]],
        "checks never change the table"
    );
}

#[test]
fn after_a_refused_batch_the_culprit_alone_is_refused() {
    let mut sink = DuckDbSink::open(&temp_db("refused"), false).unwrap();
    let schema_with_x = |ty: ColumnType| {
        Arc::new(TableSchema {
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int64,
                },
                Column {
                    name: "x".into(),
                    ty,
                },
            ],
            key: vec![0],
        })
    };
    // A boolean cannot join an integer column (a text one could: the column would widen).
    let bool_schema = schema_with_x(ColumnType::Boolean);
    let int_schema = schema_with_x(ColumnType::Int64);
    let row = |id: i64, schema: &Arc<TableSchema>, x: Value| RowChange {
        table: "things".into(),
        op: Op::Insert,
        schema: schema.clone(),
        values: vec![Value::Int(id), x],
        source: SourcePosition::default(),
    };
    let b = batch(
        vec![
            row(1, &int_schema, Value::Int(10)),
            row(2, &bool_schema, Value::Bool(true)),
            row(3, &int_schema, Value::Int(30)),
        ],
        0,
    );
    let err = sink.apply(&b).unwrap_err();
    assert!(matches!(err, SinkError::Refused(_)), "{err}");
    let whole = &b.tables["things"];
    let check = |sink: &mut DuckDbSink, i: usize| {
        sink.check("things", &TableBatch::part_of(whole, &whole.pending[i..=i]))
    };
    assert!(check(&mut sink, 0).is_ok());
    assert!(matches!(check(&mut sink, 1), Err(SinkError::Refused(_))));
    assert!(check(&mut sink, 2).is_ok());
}

#[test]
fn checkpoints_after_a_commit_once_the_log_has_grown() {
    let config = DuckDbConfig {
        checkpoint_wal_mib: 1,
        ..temp_db("checkpoint")
    };
    let mut sink = DuckDbSink::open(&config, false).unwrap();
    let bio = "x".repeat(1000);
    let mut loaded = 0;
    loop {
        let changes = (loaded..loaded + 100)
            .map(|id| change("t", Op::Insert, id, "1.00", Value::Text(bio.clone()), id))
            .collect();
        sink.apply(&batch(changes, loaded)).unwrap();
        loaded += 100;
        let before = sink.wal_bytes();
        if before >= 1 << 20 {
            break;
        }
        // Below the size, a commit leaves the log alone.
        sink.after_commit();
        assert_eq!(sink.wal_bytes(), before);
        assert!(loaded < 50_000, "the log never reached 1 MiB");
    }
    sink.after_commit();
    assert!(sink.wal_bytes() < 1 << 10, "the log was not checkpointed");
    drop(sink);
    let sink = DuckDbSink::open(&config, false).unwrap();
    assert_eq!(
        rows(&sink, "SELECT CAST(count(*) AS VARCHAR) FROM t"),
        vec![vec![Some(loaded.to_string())]]
    );
}

/// A one-column-plus-key change of table `t` whose column `v` has type `ty`.
fn typed_change(id: i64, name: &str, ty: ColumnType, value: Value, lsn: i64) -> RowChange {
    RowChange {
        table: "t".into(),
        op: Op::Insert,
        schema: Arc::new(TableSchema {
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int64,
                },
                Column {
                    name: name.into(),
                    ty,
                },
            ],
            key: vec![0],
        }),
        values: vec![Value::Int(id), value],
        source: SourcePosition {
            lsn: Some(lsn),
            ..SourcePosition::default()
        },
    }
}

#[test]
fn a_truncate_and_an_added_column_in_one_flush_commit() {
    let mut sink = DuckDbSink::open(&temp_db("truncate-alter"), false).unwrap();
    sink.apply(&batch(
        vec![change("t", Op::Insert, 1, "1.00", Value::Null, 1)],
        0,
    ))
    .unwrap();
    // A reload: the table is truncated, then a row arrives with a column added meanwhile.
    let mut b = batch(vec![], 0);
    b.truncate("t", "t".into());
    let topic: Arc<str> = "topic".into();
    b.advance(&topic, 0, 1);
    let mut c = change("t", Op::Insert, 2, "2.00", Value::Null, 2);
    c.schema = schema(true);
    c.values.push(Value::List(vec![Value::Text("x".into())]));
    b.advance(&topic, 0, 2);
    b.add_row(c, &topic, 0, 2);
    assert_eq!(sink.apply(&b).unwrap().truncates, 1);
    assert_eq!(
        rows(
            &sink,
            "SELECT CAST(id AS VARCHAR), array_to_string(tags, '|') FROM t"
        ),
        vec![vec![s("2"), s("x")]]
    );
}

#[test]
fn a_widened_source_column_widens_the_target_column() {
    let mut sink = DuckDbSink::open(&temp_db("widen"), false).unwrap();
    let decimal = |p, s| ColumnType::Decimal {
        precision: Some(p),
        scale: s,
    };
    sink.apply(&batch(
        vec![
            typed_change(1, "n", ColumnType::Int32, Value::Int(7), 1),
            typed_change(2, "d", decimal(10, 2), Value::Decimal("1.25".into()), 2),
        ],
        0,
    ))
    .unwrap();
    // int → bigint and numeric(10,2) → numeric(14,4) at the source, old and new rows mixed.
    sink.apply(&batch(
        vec![
            typed_change(3, "n", ColumnType::Int64, Value::Int(1 << 40), 3),
            typed_change(
                4,
                "d",
                decimal(14, 4),
                Value::Decimal("12345.6789".into()),
                4,
            ),
            typed_change(5, "n", ColumnType::Int32, Value::Int(5), 5),
        ],
        2,
    ))
    .unwrap();
    assert_eq!(
        rows(
            &sink,
            "SELECT id::VARCHAR, n::VARCHAR, d::VARCHAR, typeof(n), typeof(d) FROM t ORDER BY id"
        ),
        vec![
            vec![s("1"), s("7"), None, s("BIGINT"), s("DECIMAL(14,4)")],
            vec![s("2"), None, s("1.2500"), s("BIGINT"), s("DECIMAL(14,4)")],
            vec![
                s("3"),
                s("1099511627776"),
                None,
                s("BIGINT"),
                s("DECIMAL(14,4)")
            ],
            vec![
                s("4"),
                None,
                s("12345.6789"),
                s("BIGINT"),
                s("DECIMAL(14,4)")
            ],
            vec![s("5"), s("5"), None, s("BIGINT"), s("DECIMAL(14,4)")],
        ]
    );
    // Where no type holds both, the column keeps its type: a NULL loads, a value that
    // does not convert is refused.
    sink.apply(&batch(
        vec![typed_change(6, "n", ColumnType::Text, Value::Null, 6)],
        5,
    ))
    .unwrap();
    let err = sink
        .apply(&batch(
            vec![typed_change(
                7,
                "n",
                ColumnType::Text,
                Value::Text("seven".into()),
                7,
            )],
            6,
        ))
        .unwrap_err();
    assert!(matches!(&err, SinkError::Refused(_)), "{err:?}");
    assert_eq!(
        rows(&sink, "SELECT typeof(n) FROM t WHERE id = 6"),
        vec![vec![s("BIGINT")]]
    );
}

#[test]
fn times_and_timestamps_keep_postgresqls_whole_range() {
    let mut sink = DuckDbSink::open(&temp_db("ranges"), false).unwrap();
    sink.apply(&batch(
        vec![
            typed_change(1, "tm", ColumnType::Time, Value::Time(86_400_000_000), 1),
            typed_change(2, "tm", ColumnType::Time, Value::Time(0), 2),
            // About 250 BC, and 10000-01-01, in microseconds from the epoch.
            typed_change(
                3,
                "ts",
                ColumnType::Timestamp,
                Value::Timestamp(-70_000_000_000_000_000),
                3,
            ),
            typed_change(
                4,
                "ts",
                ColumnType::Timestamp,
                Value::Timestamp(253_402_300_800_000_000),
                4,
            ),
        ],
        0,
    ))
    .unwrap();
    let got = rows(
        &sink,
        "SELECT id::VARCHAR, tm::VARCHAR, year(ts)::VARCHAR FROM t ORDER BY id",
    );
    assert_eq!(got[0][1], s("24:00:00"));
    assert_eq!(got[1][1], s("00:00:00"));
    assert!(
        got[2][2].as_deref().is_some_and(|y| y.starts_with('-')),
        "{got:?}"
    );
    assert_eq!(got[3][2], s("10000"));
}
