use std::path::PathBuf;

use super::*;
use crate::change::{ColumnType, Event, Op, SkipReason, Value};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/debezium")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pos() -> KafkaPosition {
    KafkaPosition {
        topic: "t".into(),
        partition: 2,
        offset: 40,
    }
}

fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Event, DecodeError> {
    Decoder::new().decode(key, value, pos()).map(|c| c.event)
}

fn row(event: Event) -> crate::change::RowChange {
    match event {
        Event::Row(r) => r,
        other => panic!("expected a row, got {other:?}"),
    }
}

fn value_of<'a>(r: &'a crate::change::RowChange, column: &str) -> &'a Value {
    let i = r
        .schema
        .index_of(column)
        .unwrap_or_else(|| panic!("no column {column}"));
    &r.values[i]
}

const ID_KEY: &[u8] = br#"{"id": 1}"#;

#[test]
fn create_with_schema_envelope() {
    let r = row(decode(
        Some(ID_KEY),
        Some(&fixture("pg-docs-create-customers.value.with-schema.json")),
    )
    .unwrap());
    assert_eq!(r.op, Op::Insert);
    assert_eq!(&*r.table, "customers");
    assert_eq!(r.schema.columns.len(), 4);
    assert_eq!(r.schema.columns[0].ty, ColumnType::Int32);
    assert_eq!(r.schema.key, vec![0]);
    assert_eq!(value_of(&r, "id"), &Value::Int(1));
    assert_eq!(
        value_of(&r, "email"),
        &Value::Text("annek@noanswer.org".into())
    );
    assert_eq!(r.source.lsn, Some(24023128));
    assert_eq!(r.source.tx_id, Some(555));
    assert_eq!(r.source.ts_ms, Some(1559033904863));
    assert!(r.source.snapshot);
}

#[test]
fn create_payload_only_is_typed_by_json() {
    let r = row(decode(
        Some(ID_KEY),
        Some(&fixture("pg-docs-create-customers.value.payload-only.json")),
    )
    .unwrap());
    assert_eq!(r.op, Op::Insert);
    assert_eq!(r.schema.columns[0].ty, ColumnType::Int64);
    assert_eq!(r.schema.columns[1].name, "first_name");
    assert_eq!(value_of(&r, "first_name"), &Value::Text("Anne".into()));
}

#[test]
fn update_and_snapshot_string_flags() {
    let r = row(decode(
        Some(br#"{"id":1005}"#),
        Some(&fixture(
            "pg-examples-kafka-ssl-create.value.payload-only.json",
        )),
    )
    .unwrap());
    assert!(!r.source.snapshot, "snapshot \"false\" as a string");
    assert_eq!(r.source.lsn, Some(34466480));
    let r = row(decode(
        Some(br#"{"id":1001}"#),
        Some(&fixture(
            "pg-examples-snapshot-read.value.payload-only.json",
        )),
    )
    .unwrap());
    assert_eq!(r.op, Op::Read);
    assert!(r.source.snapshot, "snapshot \"true\" as a string");
    let r = row(decode(
        Some(ID_KEY),
        Some(&fixture(
            "pg-docs-update-customers-replica-identity-default.value.payload-only.json",
        )),
    )
    .unwrap());
    assert_eq!(r.op, Op::Update);
    assert_eq!(
        value_of(&r, "first_name"),
        &Value::Text("Anne Marie".into())
    );
}

#[test]
fn delete_with_key_only_before_image() {
    let r = row(decode(
        Some(ID_KEY),
        Some(&fixture(
            "pg-docs-delete-customers-replica-identity-default.value.payload-only.json",
        )),
    )
    .unwrap());
    assert_eq!(r.op, Op::Delete);
    assert_eq!(value_of(&r, "id"), &Value::Int(1));
    assert_eq!(r.source.lsn, Some(46523128));
}

#[test]
fn toast_placeholder_is_unavailable() {
    let r = row(decode(
        Some(br#"{"id":1004}"#),
        Some(&fixture(
            "pg-blog-update-toast-unavailable-value.value.payload-only.json",
        )),
    )
    .unwrap());
    assert_eq!(value_of(&r, "biography"), &Value::Unavailable);
    assert_eq!(value_of(&r, "last_name"), &Value::Text("Kretchmar".into()));
}

#[test]
fn tombstones_messages_and_transaction_markers_are_skipped() {
    assert_eq!(
        decode(Some(ID_KEY), None).unwrap(),
        Event::Skip(SkipReason::Tombstone)
    );
    assert_eq!(
        decode(Some(ID_KEY), Some(b"")).unwrap(),
        Event::Skip(SkipReason::Tombstone)
    );
    assert_eq!(
        decode(
            Some(ID_KEY),
            Some(&fixture(
                "tombstone-legacy-jsonconverter-envelope.value.json"
            ))
        )
        .unwrap(),
        Event::Skip(SkipReason::Tombstone)
    );
    for f in [
        "pg-docs-message-transactional.value.payload-only.json",
        "pg-docs-message-event.value.payload-only.json",
    ] {
        assert_eq!(
            decode(
                Some(&fixture("pg-docs-message-event.key.payload-only.json")),
                Some(&fixture(f))
            )
            .unwrap(),
            Event::Skip(SkipReason::LogicalMessage),
            "{f}"
        );
    }
    for f in [
        "pg-docs-transaction-begin.json",
        "pg-docs-transaction-end.json",
    ] {
        assert_eq!(
            decode(None, Some(&fixture(f))).unwrap(),
            Event::Skip(SkipReason::TransactionMarker),
            "{f}"
        );
    }
}

#[test]
fn truncate_has_no_key() {
    let e = decode(
        None,
        Some(&fixture(
            "pg-docs-truncate-customers.value.payload-only.json",
        )),
    )
    .unwrap();
    assert_eq!(
        e,
        Event::Truncate {
            table: "customers".into()
        }
    );
}

#[test]
fn zoned_timestamp_and_uuid_json_payloads() {
    let r = row(decode(
        Some(ID_KEY),
        Some(&fixture(
            "pg-docs-create-zonedtimestamp-column.value.payload-only.json",
        )),
    )
    .unwrap());
    // Without a schema the value stays the JSON string it is.
    assert_eq!(
        value_of(&r, "created_at"),
        &Value::Text("2011-01-11T16:40:30.123456789+00:00".into())
    );
    let r = row(decode(
        Some(br#"{"id":"406c07f3-26f0-4eea-a50c-109940064b8f"}"#),
        Some(&fixture(
            "pg-docs-outbox-create-uuid-jsonb.value.payload-only.json",
        )),
    )
    .unwrap());
    assert_eq!(
        r.source.ts_ms,
        Some(1556890294448),
        "ts_usec of the 0.x source shape"
    );
    assert_eq!(value_of(&r, "timestamp"), &Value::Int(1556890294344));
}

#[test]
fn sqlserver_decimal_and_timestamp_with_schema_key() {
    let key = fixture("sqlserver-debezium-server-delete-decimal.key.with-schema.json");
    let r = row(decode(
        Some(&key),
        Some(&fixture(
            "sqlserver-debezium-server-delete-decimal.value.with-schema.json",
        )),
    )
    .unwrap());
    assert_eq!(r.op, Op::Delete);
    assert_eq!(value_of(&r, "empno"), &Value::Int(11));
    assert_eq!(value_of(&r, "sal"), &Value::Decimal("200000.0000".into()));
    assert_eq!(value_of(&r, "comm"), &Value::Decimal("10.0000".into()));
    assert_eq!(
        value_of(&r, "hiredate"),
        &Value::Timestamp(1_562_630_400_000_000)
    );
    let sal = &r.schema.columns[r.schema.index_of("sal").unwrap()];
    assert_eq!(
        sal.ty,
        ColumnType::Decimal {
            precision: Some(19),
            scale: 4
        }
    );
}

/// An enveloped event with one column of the given Connect schema and JSON value.
fn typed(field_schema: &str, value: &str) -> Result<Value, DecodeError> {
    let schema = format!(
        r#"{{"type":"struct","fields":[
            {{"type":"struct","optional":true,"field":"before","fields":[{{"type":"int64","optional":false,"field":"id"}},{field_schema}]}},
            {{"type":"struct","optional":true,"field":"after","fields":[{{"type":"int64","optional":false,"field":"id"}},{field_schema}]}},
            {{"type":"struct","optional":false,"field":"source","fields":[]}},
            {{"type":"string","optional":false,"field":"op"}}]}}"#
    );
    let msg = format!(
        r#"{{"schema":{schema},"payload":{{"before":null,"after":{{"id":1,"v":{value}}},"source":{{"table":"t","lsn":5}},"op":"c"}}}}"#
    );
    let r = row(decode(Some(ID_KEY), Some(msg.as_bytes()))?);
    Ok(r.values[1].clone())
}

fn field(t: &str, name: &str) -> String {
    format!(r#"{{"type":"{t}","optional":true,"name":"{name}","field":"v"}}"#)
}

#[test]
fn every_logical_type() {
    let dec = |scale: u32| {
        format!(
            r#"{{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","parameters":{{"scale":"{scale}","connect.decimal.precision":"10"}},"field":"v"}}"#
        )
    };
    // 0x3039 = 12345; 0xCFC7 = -12345 in two's complement.
    assert_eq!(
        typed(&dec(2), r#""MDk=""#).unwrap(),
        Value::Decimal("123.45".into())
    );
    assert_eq!(
        typed(&dec(2), r#""z8c=""#).unwrap(),
        Value::Decimal("-123.45".into())
    );
    assert_eq!(
        typed(&dec(4), r#""AQ==""#).unwrap(),
        Value::Decimal("0.0001".into())
    );
    assert_eq!(
        typed(&dec(0), r#""AA==""#).unwrap(),
        Value::Decimal("0".into())
    );
    // 17 significant digits would not survive f64.
    assert_eq!(
        typed(&dec(2), "12345678901234567.89").unwrap(),
        Value::Decimal("12345678901234567.89".into())
    );
    let vsd = r#"{"type":"struct","optional":true,"name":"io.debezium.data.VariableScaleDecimal","field":"v","fields":[{"type":"int32","field":"scale"},{"type":"bytes","field":"value"}]}"#;
    assert_eq!(
        typed(vsd, r#"{"scale":3,"value":"MDk="}"#).unwrap(),
        Value::Decimal("12.345".into())
    );
    assert_eq!(
        typed(&field("int32", "io.debezium.time.Date"), "19000").unwrap(),
        Value::Date(19000)
    );
    assert_eq!(
        typed(&field("int32", "io.debezium.time.Time"), "3723004").unwrap(),
        Value::Time(3_723_004_000)
    );
    assert_eq!(
        typed(&field("int64", "io.debezium.time.MicroTime"), "3723004005").unwrap(),
        Value::Time(3_723_004_005)
    );
    assert_eq!(
        typed(
            &field("int64", "io.debezium.time.Timestamp"),
            "1562630400123"
        )
        .unwrap(),
        Value::Timestamp(1_562_630_400_123_000)
    );
    assert_eq!(
        typed(
            &field("int64", "io.debezium.time.MicroTimestamp"),
            "1562630400123456"
        )
        .unwrap(),
        Value::Timestamp(1_562_630_400_123_456)
    );
    assert_eq!(
        typed(
            &field("int64", "io.debezium.time.MicroTimestamp"),
            "9223372036825200000"
        )
        .unwrap(),
        Value::Timestamp(i64::MAX)
    );
    // 16:40:30.123456789+02:00 is 14:40:30.123456 UTC; nanoseconds truncate to µs.
    assert_eq!(
        typed(
            &field("string", "io.debezium.time.ZonedTimestamp"),
            r#""2011-01-11T16:40:30.123456789+02:00""#
        )
        .unwrap(),
        Value::TimestampTz(1_294_756_830_123_456)
    );
    assert_eq!(
        typed(
            &field("string", "io.debezium.data.Json"),
            r#""{\"a\": [1]}""#
        )
        .unwrap(),
        Value::Json("{\"a\": [1]}".into())
    );
    assert_eq!(
        typed(
            &field("string", "io.debezium.data.Uuid"),
            r#""406c07f3-26f0-4eea-a50c-109940064b8f""#
        )
        .unwrap(),
        Value::Uuid("406c07f3-26f0-4eea-a50c-109940064b8f".into())
    );
    assert_eq!(
        typed(
            r#"{"type":"bytes","optional":true,"field":"v"}"#,
            r#""3q2+7w==""#
        )
        .unwrap(),
        Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])
    );
    let arr = r#"{"type":"array","optional":true,"field":"v","items":{"type":"int32"}}"#;
    assert_eq!(
        typed(arr, "[1,-2]").unwrap(),
        Value::List(vec![Value::Int(1), Value::Int(-2)])
    );
    let text_arr = r#"{"type":"array","optional":true,"field":"v","items":{"type":"string"}}"#;
    assert_eq!(
        typed(text_arr, r#"["__debezium_unavailable_value"]"#).unwrap(),
        Value::Unavailable
    );
    assert_eq!(
        typed(r#"{"type":"boolean","optional":true,"field":"v"}"#, "true").unwrap(),
        Value::Bool(true)
    );
    assert_eq!(
        typed(r#"{"type":"float64","optional":true,"field":"v"}"#, "1.5").unwrap(),
        Value::Float(1.5)
    );
    assert_eq!(
        typed(
            r#"{"type":"int64","optional":true,"field":"v"}"#,
            "1465584025523514964"
        )
        .unwrap(),
        Value::Int(1_465_584_025_523_514_964)
    );
    assert_eq!(
        typed(r#"{"type":"int64","optional":true,"field":"v"}"#, "null").unwrap(),
        Value::Null
    );
}

#[test]
fn bad_messages_name_the_problem() {
    let err = |value: &str| {
        decode(Some(ID_KEY), Some(value.as_bytes()))
            .unwrap_err()
            .to_string()
    };
    assert!(err("{\"op\":").contains("not valid JSON"));
    assert!(err("[1,2]").contains("an array"));
    let not_utf8 = decode(Some(ID_KEY), Some(b"{\"op\": \"\xff\"}"))
        .unwrap_err()
        .to_string();
    assert!(not_utf8.contains("not UTF-8"), "{not_utf8}");
    assert!(err("{\"op\":\"x\",\"source\":{\"table\":\"t\"}}").contains("unknown op \"x\""));
    assert!(err("{\"before\":null}").contains("no \"op\""));
    assert!(err("{\"op\":\"c\",\"after\":{\"id\":1}}").contains("source.table"));
    let bad_decimal = typed(
        r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"x"},"field":"v"}"#,
        r#""AQ==""#,
    )
    .unwrap_err()
    .to_string();
    assert!(bad_decimal.contains("scale"), "{bad_decimal}");
    let bad_date = typed(&field("int32", "io.debezium.time.Date"), r#""tomorrow""#)
        .unwrap_err()
        .to_string();
    assert!(
        bad_date.contains("\"v\"") && bad_date.contains("integer"),
        "{bad_date}"
    );
    let no_key = decode(
        None,
        Some(&fixture("pg-docs-create-customers.value.payload-only.json")),
    )
    .unwrap_err()
    .to_string();
    assert!(no_key.contains("no key"), "{no_key}");
}

#[test]
fn limits_and_contradictions_are_decode_errors() {
    let err = |key: &[u8], value: &str| {
        decode(Some(key), Some(value.as_bytes()))
            .unwrap_err()
            .to_string()
    };
    let note = |id: i64| {
        format!(
            r#"{{"before":null,"after":{{"id":{id},"note":"n"}},"op":"c","source":{{"table":"t"}}}}"#
        )
    };
    // The key names one row, the image another: loading it would overwrite the wrong row.
    let mismatch = err(br#"{"id": 2}"#, &note(1));
    assert!(mismatch.contains("does not match"), "{mismatch}");
    assert!(decode(Some(br#"{"id": 1}"#), Some(note(1).as_bytes())).is_ok());

    let schema_only = err(ID_KEY, r#"{"schema":{"type":"struct","fields":[]}}"#);
    assert!(schema_only.contains("no \"payload\""), "{schema_only}");

    let mut small = Decoder::with_max_value_bytes(64);
    let long = format!(
        r#"{{"before":null,"after":{{"id":1,"note":"{}"}},"op":"c","source":{{"table":"t"}}}}"#,
        "x".repeat(100)
    );
    let too_large = small
        .decode(Some(ID_KEY), Some(long.as_bytes()), pos())
        .unwrap_err();
    assert!(
        matches!(too_large, DecodeError::TooLarge { limit: 64, .. }),
        "{too_large}"
    );

    let columns: Vec<String> = (0..MAX_COLUMNS).map(|i| format!(r#""c{i}":1"#)).collect();
    let wide = format!(
        r#"{{"after":{{"id":1,{}}},"op":"c","source":{{"table":"t"}}}}"#,
        columns.join(",")
    );
    let wide = err(ID_KEY, &wide);
    assert!(wide.contains("1601 columns"), "{wide}");

    let huge_scale = typed(
        r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"1001"},"field":"v"}"#,
        r#""AQ==""#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        huge_scale.contains("scale 1001 is out of range"),
        "{huge_scale}"
    );
    let variable = typed(
        r#"{"type":"struct","optional":true,"name":"io.debezium.data.VariableScaleDecimal","field":"v"}"#,
        r#"{"scale":5000,"value":"AQ=="}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(variable.contains("out of range"), "{variable}");

    // Names no target table can have, whether the row is schemaless or typed.
    let row = |after: &str| format!(r#"{{"after":{{{after}}},"op":"c","source":{{"table":"t"}}}}"#);
    let repeated = err(ID_KEY, &row(r#""id":1,"id":2"#));
    assert!(
        repeated.contains(r#"column "id" appears twice"#),
        "{repeated}"
    );
    let empty = err(ID_KEY, &row(r#""id":1,"":2"#));
    assert!(empty.contains("empty name"), "{empty}");
    // Names one target column or floe's own names would take.
    let by_case = err(ID_KEY, &row(r#""id":1,"note":2,"NOTE":3"#));
    assert!(by_case.contains("differ only by case"), "{by_case}");
    let metadata = err(ID_KEY, &row(r#""id":1,"_FLOE_op":2"#));
    assert!(metadata.contains("reserved"), "{metadata}");
    let offsets = err(
        ID_KEY,
        r#"{"after":{"id":1},"op":"c","source":{"table":"_floe_offsets"}}"#,
    );
    assert!(offsets.contains("reserved"), "{offsets}");
    let typed_repeat = err(
        ID_KEY,
        r#"{"schema":{"type":"struct","fields":[{"type":"struct","field":"after","optional":true,"fields":[{"type":"int32","field":"id"},{"type":"int32","field":"id"}]}]},"payload":{"after":{"id":1},"op":"c","source":{"table":"t"}}}"#,
    );
    assert!(typed_repeat.contains("appears twice"), "{typed_repeat}");
}

#[test]
fn json_nesting_is_bounded() {
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(values::check_depth(&nested(values::MAX_JSON_DEPTH)).is_ok());
    let deep = values::check_depth(&nested(values::MAX_JSON_DEPTH + 1)).unwrap_err();
    assert!(deep.contains("nested deeper than 128"), "{deep}");
    // Brackets inside strings are text, not nesting.
    let quoted = format!(r#"["{}\"{}"]"#, "[".repeat(500), "{".repeat(500));
    assert!(values::check_depth(&quoted).is_ok());
}

/// A topic repeats one schema, and a warm decoder finds the payload by comparing the
/// schema's bytes with the previous message's: every variant around that shortcut (the
/// same schema with a broken, null, trailing or spaced payload, another schema) must
/// get the answer a fresh decoder gives.
#[test]
fn repeated_schema_shortcut_answers_as_a_fresh_decoder() {
    let schema = r#"{"type":"struct","fields":[{"type":"struct","optional":true,"field":"after","fields":[{"type":"int64","optional":false,"field":"id"},{"type":"string","optional":true,"field":"v"}]},{"type":"struct","optional":false,"field":"source","fields":[]},{"type":"string","optional":false,"field":"op"}]}"#;
    let other = schema.replace(r#""field":"v""#, r#""field":"w""#);
    let payload = r#"{"after":{"id":1,"v":"x"},"source":{"table":"t","lsn":5},"op":"c"}"#;
    let messages = [
        format!(r#"{{"schema":{schema},"payload":{payload}}}"#),
        format!(r#"{{"schema":{schema},"payload":{payload}}}"#),
        format!(r#"{{"schema":{schema},"payload":{payload}}}  "#),
        format!(r#"{{"schema":{schema},"payload":null}}"#),
        format!(r#"{{"schema":{schema},"payload":{payload}}}}}"#),
        format!(r#"{{"schema":{schema},"payload":{payload},"extra":1}}"#),
        format!(r#"{{"schema":{schema},"payload":{{"after":{{"id":1}}"#),
        format!(r#"{{"schema":{schema}, "payload":{payload}}}"#),
        format!(r#"{{"schema":{schema},"payload":{payload}}} x"#),
        format!(r#"{{"schema":{schema}x,"payload":{payload}}}"#),
        format!(
            r#"{{"schema":{other},"payload":{}}}"#,
            payload.replace(r#""v""#, r#""w""#)
        ),
        format!(r#"{{"schema":{schema},"payload":{payload}}}"#),
        format!(r#"{{"schema":{schema},"payload":{payload} }}"#),
        format!(r#"{{"schema":{schema},"payload":["c",null,{{"id":1}}]}}"#),
        format!(r#"{{"schema":{schema},"payload":{{"op":"c","op":"u"}}}}"#),
        format!(
            r#"{{"schema":{schema},"payload":{{"after":{{"id":1}},"source":{{"table":"t"}},"op":"z"}}}}"#
        ),
        format!(r#"{{"schema":{schema},"payload":{payload}}}"#),
    ];
    let refused = r#"{"type":"struct","fields":[{"type":"struct","field":"after","fields":[{"type":"nonsense","field":"id"}]}]}"#;
    let mut bytes: Vec<Vec<u8>> = messages.iter().map(|m| m.clone().into_bytes()).collect();
    // Not UTF-8 after a known schema.
    bytes.push(
        [
            format!(r#"{{"schema":{schema},"payload":"#).as_bytes(),
            b"\xff}",
        ]
        .concat(),
    );
    // A schema that is refused, repeated: refused again, not taken as known.
    for _ in 0..2 {
        bytes.push(format!(r#"{{"schema":{refused},"payload":{payload}}}"#).into_bytes());
    }
    let mut warm = Decoder::new();
    for message in &bytes {
        let fresh = Decoder::new().decode(Some(ID_KEY), Some(message), pos());
        let reused = warm.decode(Some(ID_KEY), Some(message), pos());
        let message = String::from_utf8_lossy(message);
        assert_eq!(
            format!("{:?}", fresh.map(|c| c.event)),
            format!("{:?}", reused.map(|c| c.event)),
            "{message}"
        );
    }
}

#[test]
fn json_converter_float_and_double_are_floats() {
    // Kafka Connect's JsonConverter spells FLOAT32/FLOAT64 "float"/"double".
    assert_eq!(
        typed(r#"{"type":"float","optional":true,"field":"v"}"#, "1.5").unwrap(),
        Value::Float(1.5)
    );
    assert_eq!(
        typed(
            r#"{"type":"double","optional":true,"field":"v"}"#,
            r#""NaN""#
        )
        .map(|v| matches!(v, Value::Float(f) if f.is_nan())),
        Ok(true)
    );
}

#[test]
fn an_unchanged_toasted_array_is_unavailable_in_every_element_type() {
    let bytes: Vec<String> = TOAST_PLACEHOLDER.bytes().map(|b| b.to_string()).collect();
    let as_ints = format!("[{}]", bytes.join(","));
    for item in ["int16", "int32", "int64", "double"] {
        let schema = format!(
            r#"{{"type":"array","optional":true,"field":"v","items":{{"type":"{item}","optional":true}}}}"#
        );
        assert_eq!(
            typed(&schema, &as_ints).unwrap(),
            Value::Unavailable,
            "{item}[]"
        );
    }
    // A real array of other numbers stays data.
    let schema = r#"{"type":"array","optional":true,"field":"v","items":{"type":"int32"}}"#;
    assert_eq!(
        typed(schema, "[95,95]").unwrap(),
        Value::List(vec![Value::Int(95), Value::Int(95)])
    );
    // Without a schema the same placeholder arrives as a JSON array.
    let infer = |json: &str| {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(json).unwrap();
        values::infer(&raw).1
    };
    assert_eq!(infer(&as_ints), Value::Unavailable);
    assert_eq!(
        infer(r#"["__debezium_unavailable_value"]"#),
        Value::Unavailable
    );
    assert_eq!(infer("[1,2]"), Value::Json("[1,2]".into()));
}

#[test]
fn times_and_timestamps_cover_postgresqls_range() {
    let micro_time = field("int64", "io.debezium.time.MicroTime");
    assert_eq!(
        typed(&micro_time, "86400000000").unwrap(),
        Value::Time(86_400_000_000),
        "24:00:00 is not midnight"
    );
    assert!(typed(&micro_time, "86400000001").is_err());
    let micro_ts = field("int64", "io.debezium.time.MicroTimestamp");
    // 4713-11-24 BC, PostgreSQL's first timestamp, and its rounding into year 10000.
    assert_eq!(
        typed(&micro_ts, "-210866803200000000").unwrap(),
        Value::Timestamp(-210_866_803_200_000_000)
    );
    assert_eq!(
        typed(&micro_ts, "253402300800000000").unwrap(),
        Value::Timestamp(253_402_300_800_000_000)
    );
    let zoned = field("string", "io.debezium.time.ZonedTimestamp");
    assert_eq!(
        typed(&zoned, r#""+10000-01-01T00:00:00Z""#).unwrap(),
        Value::TimestampTz(253_402_300_800_000_000)
    );
    assert!(typed(&zoned, r#""-4712-11-24T00:00:00Z""#).is_ok());
}

/// The records of one capture of the real connector (`tests/fixtures/debezium-real/`):
/// key and value bytes exactly as Kafka Connect's JsonConverter wrote them.
type RecordBytes = (Option<Vec<u8>>, Option<Vec<u8>>);

fn real_capture(name: &str) -> Vec<RecordBytes> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/debezium-real")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let bytes = |field: &str| record[field].as_str().map(|s| s.as_bytes().to_vec());
            (bytes("key"), bytes("value"))
        })
        .collect()
}

/// Every record of every capture decodes: no mode of the real connector is dead-lettered.
#[test]
fn every_real_connector_capture_decodes() {
    for table in ["all-types", "evolve"] {
        for mode in [
            "schemas.default",
            "schemaless",
            "decimal-string",
            "decimal-double",
            "time-connect",
            "binary-hex",
        ] {
            let name = format!("{table}.{mode}.jsonl");
            let mut decoder = Decoder::new();
            for (i, (key, value)) in real_capture(&name).iter().enumerate() {
                if let Err(e) = decoder.decode(key.as_deref(), value.as_deref(), pos()) {
                    panic!("{name} record {i}: {e}");
                }
            }
        }
    }
}

#[test]
fn real_connector_values_decode_exactly() {
    let rows: Vec<crate::change::RowChange> = real_capture("all-types.schemas.default.jsonl")
        .iter()
        .filter_map(|(k, v)| match decode(k.as_deref(), v.as_deref()).unwrap() {
            Event::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    let (snapshot, edges, infinities, update) = (&rows[0], &rows[1], &rows[2], &rows[4]);
    assert_eq!(snapshot.op, Op::Read);
    // "float" and "double" in the JsonConverter's schema.
    // PostgreSQL's real 3.14 and double 2.718281828459045, as the connector prints them.
    assert_eq!(
        value_of(snapshot, "f4"),
        &Value::Float("3.14".parse().unwrap())
    );
    assert_eq!(value_of(snapshot, "f8"), &Value::Float(std::f64::consts::E));
    assert!(matches!(value_of(edges, "f4"), Value::Float(f) if f.is_nan()));
    assert_eq!(value_of(edges, "f8"), &Value::Float(f64::NEG_INFINITY));
    assert_eq!(
        value_of(snapshot, "dec"),
        &Value::Decimal("12345678.91".into())
    );
    assert_eq!(
        value_of(snapshot, "num"),
        &Value::Decimal("3.14159265358979323846264338327950288".into())
    );
    assert_eq!(value_of(snapshot, "mny"), &Value::Decimal("1234.56".into()));
    assert_eq!(value_of(edges, "t"), &Value::Time(86_400_000_000));
    // 0044-03-15 BC and 0001-01-01 BC.
    assert_eq!(value_of(edges, "d"), &Value::Date(-735_160));
    assert_eq!(
        value_of(edges, "ts"),
        &Value::Timestamp(-62_167_219_200_000_000)
    );
    assert_eq!(value_of(edges, "tstz"), &Value::TimestampTz(TS_INFINITY));
    assert_eq!(value_of(infinities, "d"), &Value::Date(DATE_INFINITY));
    assert_eq!(
        value_of(infinities, "ts"),
        &Value::Timestamp(TS_NEG_INFINITY)
    );
    // The update left the TOASTed columns unchanged: text, int[] and text[] placeholders.
    assert_eq!(update.op, Op::Update);
    for column in ["big_text", "big_int_arr", "big_text_arr"] {
        assert_eq!(value_of(update, column), &Value::Unavailable, "{column}");
    }
    assert_eq!(value_of(update, "txt"), &Value::Text("updated".into()));
}

#[test]
fn real_connector_schemaless_toast_placeholders_are_unavailable() {
    let update = real_capture("all-types.schemaless.jsonl")
        .iter()
        .filter_map(|(k, v)| match decode(k.as_deref(), v.as_deref()).unwrap() {
            Event::Row(r) if r.op == Op::Update => Some(r),
            _ => None,
        })
        .next()
        .expect("the update");
    for column in ["big_text", "big_int_arr", "big_text_arr"] {
        assert_eq!(value_of(&update, column), &Value::Unavailable, "{column}");
    }
}
