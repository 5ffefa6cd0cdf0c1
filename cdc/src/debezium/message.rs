//! The message layer: envelope or bare payload, op, source block, key.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;

use crate::change::{
    Column, ColumnType, Event, Op, RowChange, SkipReason, SourcePosition, TableSchema, Value,
};

use super::schema::ColumnDecoder;
use super::{values, DecodeError, Decoder};

/// A JSON object whose members keep their order and stay unparsed.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'a> Members<'a> {
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

/// The `source` block. Field shapes vary across Debezium versions, so numbers are read
/// leniently (number or string) and every field is optional.
#[derive(Deserialize, Default)]
struct Source {
    #[serde(default)]
    lsn: Option<serde_json::Value>,
    #[serde(default, rename = "txId")]
    tx_id: Option<serde_json::Value>,
    #[serde(default)]
    ts_ms: Option<serde_json::Value>,
    #[serde(default)]
    ts_us: Option<serde_json::Value>,
    #[serde(default)]
    ts_usec: Option<serde_json::Value>,
    #[serde(default)]
    ts_ns: Option<serde_json::Value>,
    #[serde(default)]
    snapshot: Option<serde_json::Value>,
    #[serde(default)]
    sequence: Option<serde_json::Value>,
    #[serde(default)]
    table: Option<String>,
}

fn as_i64(v: &Option<serde_json::Value>) -> Option<i64> {
    match v.as_ref()? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Source {
    fn position(&self) -> SourcePosition {
        let ts_ms = as_i64(&self.ts_ms)
            .or_else(|| as_i64(&self.ts_us).map(|us| us / 1000))
            .or_else(|| as_i64(&self.ts_usec).map(|us| us / 1000))
            .or_else(|| as_i64(&self.ts_ns).map(|ns| ns / 1_000_000));
        let snapshot = match &self.snapshot {
            Some(serde_json::Value::Bool(b)) => *b,
            // "true", "first", "last", "incremental", … mean a snapshot; "false" does not.
            Some(serde_json::Value::String(s)) => !s.is_empty() && s != "false",
            _ => false,
        };
        SourcePosition {
            lsn: as_i64(&self.lsn).or_else(|| self.sequence_lsn()),
            tx_id: as_i64(&self.tx_id),
            ts_ms,
            snapshot,
        }
    }

    /// `sequence` is a stringified array `["<last committed LSN>", "<current LSN>"]`.
    fn sequence_lsn(&self) -> Option<i64> {
        let text = self.sequence.as_ref()?.as_str()?;
        let parts: Vec<Option<String>> = serde_json::from_str(text).ok()?;
        parts.last()?.as_deref()?.parse().ok()
    }
}

/// Splits `{"schema": …, "payload": …}` from a bare payload. Returns (schema, payload);
/// a `None` payload is a tombstone.
fn unwrap_envelope(bytes: &[u8]) -> Result<(Option<&str>, Option<&RawValue>), DecodeError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| DecodeError::Json(format!("not UTF-8 ({e})")))?;
    // One pass over the text when it is an object (the schema alone is most of an
    // enveloped message, and scanning it dominated decoding).
    let members: Members = match serde_json::from_str(text) {
        Ok(members) => members,
        Err(e) => {
            let whole: &RawValue =
                serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
            return Err(if whole.get().starts_with('{') {
                DecodeError::Json(e.to_string())
            } else {
                DecodeError::NotAnEvent(format!(
                    "expected a JSON object, found {}",
                    kind_of(whole.get())
                ))
            });
        }
    };
    let (schema, payload) = match (members.get("schema"), members.get("payload")) {
        (Some(_), None) => {
            return Err(DecodeError::NotAnEvent(
                "the envelope has a \"schema\" but no \"payload\"".into(),
            ))
        }
        (Some(schema), Some(payload)) if members.0.len() == 2 => (schema, payload),
        _ => {
            let whole: &RawValue =
                serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
            return Ok((None, Some(whole)));
        }
    };
    let present = |r: &&RawValue| r.get() != "null";
    Ok((
        Some(schema).filter(present).map(RawValue::get),
        Some(payload).filter(present),
    ))
}

/// The text of a message's envelope schema.
pub(super) enum SchemaText<'t> {
    /// Byte for byte the previous message's (the decoder keeps it).
    Last,
    Text(&'t str),
}

/// A message's schema and payload, parsed.
type Parts<'t> = (Option<SchemaText<'t>>, Option<Payload<'t>>);

/// The general path: any envelope or bare payload, every error named.
fn parse_parts(bytes: &[u8]) -> Result<Parts<'_>, DecodeError> {
    let (schema, payload) = unwrap_envelope(bytes)?;
    let schema = schema.map(SchemaText::Text);
    let payload = match payload {
        Some(raw) => Some(
            serde_json::from_str(raw.get()).map_err(|e| DecodeError::NotAnEvent(e.to_string()))?,
        ),
        None => None,
    };
    Ok((schema, payload))
}

/// The compact envelope Kafka Connect writes, `{"schema":S,"payload":P}`, whose `S` is
/// byte for byte the schema of the previous message: the payload is found by comparing
/// bytes instead of scanning the schema as JSON (most of a message, and most of the cost
/// of decoding it), and only the bytes after `S` are checked as UTF-8 and JSON. A JSON
/// value ends where its text ends, so an equal prefix is the same value. Parsing `P` as a
/// payload checks that it is one whole JSON object; any other text, or a payload that
/// does not parse, is `None` and takes the general path, which gives the same answer.
fn split_known_schema<'t>(bytes: &'t [u8], known: &str) -> Option<Parts<'t>> {
    const OPEN: &[u8] = br#"{"schema":"#;
    let rest = bytes.strip_prefix(OPEN)?.strip_prefix(known.as_bytes())?;
    let rest = std::str::from_utf8(rest).ok()?;
    let payload = rest
        .strip_prefix(r#","payload":"#)?
        .trim_end()
        .strip_suffix('}')?
        .trim_end();
    if payload == "null" {
        return Some((Some(SchemaText::Last), None));
    }
    if !payload.starts_with('{') {
        return None;
    }
    let payload: Payload = serde_json::from_str(payload).ok()?;
    Some((Some(SchemaText::Last), Some(payload)))
}

fn kind_of(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't') | Some(b'f') => "a boolean",
        _ => "a number",
    }
}

pub(super) fn decode_event(
    decoder: &mut Decoder,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Event, DecodeError> {
    let value = match value {
        None | Some([]) => return Ok(Event::Skip(SkipReason::Tombstone)),
        Some(v) => v,
    };
    if value.len() > decoder.max_value_bytes {
        return Err(DecodeError::TooLarge {
            bytes: value.len(),
            limit: decoder.max_value_bytes,
        });
    }
    let known = decoder.last_schema.as_ref().map(|(text, _)| &**text);
    let (schema, payload) = match known.and_then(|known| split_known_schema(value, known)) {
        Some(parts) => parts,
        None => parse_parts(value)?,
    };
    let Some(payload) = payload else {
        return Ok(Event::Skip(SkipReason::Tombstone));
    };
    let Some(op) = payload.op.as_deref() else {
        if matches!(payload.status.as_deref(), Some("BEGIN") | Some("END")) {
            return Ok(Event::Skip(SkipReason::TransactionMarker));
        }
        return Err(DecodeError::NotAnEvent(
            "payload has no \"op\" field".into(),
        ));
    };
    let op = match op {
        "c" => Op::Insert,
        "u" => Op::Update,
        "d" => Op::Delete,
        "r" => Op::Read,
        "m" => return Ok(Event::Skip(SkipReason::LogicalMessage)),
        "t" => {
            return Ok(Event::Truncate {
                table: table_name(payload.source.as_ref())?,
            })
        }
        other => return Err(DecodeError::UnknownOp(other.to_string())),
    };
    let table = table_name(payload.source.as_ref())?;
    let source = payload
        .source
        .as_ref()
        .map(Source::position)
        .unwrap_or_default();
    let image = match op {
        Op::Delete => payload.before,
        _ => Some(payload.after.ok_or_else(|| {
            DecodeError::NotAnEvent(format!("op {:?} has no \"after\" row", op.code()))
        })?),
    };
    let key = decode_key(key)?;
    let key_names: Vec<&str> = key.0.iter().map(|(k, _)| k.as_ref()).collect();
    let (decoders, schema) = match schema {
        Some(raw) => {
            let (decoders, schema) = decoder.schema_for(raw, &key_names)?;
            (Some(decoders), schema)
        }
        None => (
            None,
            Arc::new(TableSchema {
                columns: vec![],
                key: vec![],
            }),
        ),
    };
    let (schema, mut values) = match (&decoders, image) {
        (Some(decoders), Some(image)) => (schema, typed_row(decoders, image)?),
        (Some(decoders), None) => (schema, vec![Value::Null; decoders.len()]),
        (None, image) => schemaless_row(image, &key, &key_names)?,
    };
    fill_key_from_message(
        &schema,
        decoders.as_deref().map(|v| v.as_slice()),
        &key,
        &mut values,
    )?;
    Ok(Event::Row(RowChange {
        table,
        op,
        schema,
        values,
        source,
    }))
}

fn table_name(source: Option<&Source>) -> Result<Arc<str>, DecodeError> {
    match source.and_then(|s| s.table.as_deref()) {
        Some(t) if is_reserved(t, RESERVED_TABLE_PREFIX) => Err(DecodeError::Schema(format!(
            "table name {t:?} is reserved: floe's own tables begin with {RESERVED_TABLE_PREFIX}"
        ))),
        Some(t) if !t.is_empty() => Ok(Arc::from(t)),
        _ => Err(DecodeError::NotAnEvent(
            "source block names no table (source.table)".into(),
        )),
    }
}

fn decode_key(key: Option<&[u8]>) -> Result<Members<'_>, DecodeError> {
    let bytes = match key {
        None | Some([]) => {
            return Err(DecodeError::Key(
                "message has no key; floe needs the primary key to MERGE (is the table missing a primary key or REPLICA IDENTITY?)".into(),
            ))
        }
        Some(k) => k,
    };
    let (_, payload) = unwrap_envelope(bytes).map_err(|e| DecodeError::Key(e.to_string()))?;
    let payload = payload.ok_or_else(|| DecodeError::Key("key payload is null".into()))?;
    let members: Members = serde_json::from_str(payload.get())
        .map_err(|_| DecodeError::Key(format!("key is not a JSON object: {}", payload.get())))?;
    if members.0.is_empty() {
        return Err(DecodeError::Key("key has no columns".into()));
    }
    Ok(members)
}

/// Names floe gives its own tables (`_floe_offsets`) and metadata columns (`_floe_op`):
/// a source name like them would collide inside the target.
const RESERVED_TABLE_PREFIX: &str = "_floe";
const RESERVED_COLUMN_PREFIX: &str = "_floe_";

fn is_reserved(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// Every name must be one a target table can have: PostgreSQL never sends an empty or a
/// repeated column name, and neither DuckDB nor Snowflake would create one. DuckDB's names
/// ignore case, so two that differ only by case (PostgreSQL's `id` and `"ID"`) would be one
/// column there; and floe's metadata columns are its own.
fn check_column_names(columns: &[Column]) -> Result<(), DecodeError> {
    let mut seen = std::collections::HashMap::with_capacity(columns.len());
    for column in columns {
        let name = column.name.as_str();
        if name.is_empty() {
            return Err(DecodeError::Schema("a column has an empty name".into()));
        }
        if is_reserved(name, RESERVED_COLUMN_PREFIX) {
            return Err(DecodeError::Schema(format!(
                "column name {name:?} is reserved: floe's metadata columns begin with {RESERVED_COLUMN_PREFIX}"
            )));
        }
        if let Some(other) = seen.insert(name.to_lowercase(), name) {
            return Err(DecodeError::Schema(if other == name {
                format!("column {name:?} appears twice")
            } else {
                format!("columns {other:?} and {name:?} differ only by case, which DuckDB cannot hold apart")
            }));
        }
    }
    Ok(())
}

pub(super) fn table_schema(
    columns: Vec<(String, ColumnType)>,
    key_names: &[&str],
) -> Result<Arc<TableSchema>, DecodeError> {
    let columns: Vec<Column> = columns
        .into_iter()
        .map(|(name, ty)| Column { name, ty })
        .collect();
    check_column_names(&columns)?;
    let key = key_names
        .iter()
        .map(|k| {
            columns.iter().position(|c| c.name == *k).ok_or_else(|| {
                DecodeError::Key(format!("key column {k:?} is not a column of the row"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(TableSchema { columns, key }))
}

fn typed_row(decoders: &[ColumnDecoder], image: &RawValue) -> Result<Vec<Value>, DecodeError> {
    let members: Members = serde_json::from_str(image.get())
        .map_err(|_| DecodeError::NotAnEvent("row image is not a JSON object".into()))?;
    let mut values = vec![Value::Null; decoders.len()];
    for (i, (name, raw)) in members.0.iter().enumerate() {
        // Payload members are almost always in schema order.
        let idx = match decoders.get(i) {
            Some(d) if d.name == *name => i,
            _ => decoders
                .iter()
                .position(|d| d.name == *name)
                .ok_or_else(|| {
                    DecodeError::Schema(format!("payload column {name:?} is not in the schema"))
                })?,
        };
        check_nesting(name, raw)?;
        values[idx] =
            values::decode(raw, &decoders[idx].wire).map_err(|reason| DecodeError::Column {
                column: name.to_string(),
                reason,
            })?;
    }
    Ok(values)
}

/// A column whose JSON nests too deep is refused before anything recurses through it;
/// checked once per column, nested arrays and structs included.
fn check_nesting(name: &str, raw: &RawValue) -> Result<(), DecodeError> {
    if raw.get().starts_with(['[', '{']) {
        values::check_depth(raw.get()).map_err(|reason| DecodeError::Column {
            column: name.to_string(),
            reason,
        })?;
    }
    Ok(())
}

fn schemaless_row(
    image: Option<&RawValue>,
    key: &Members,
    key_names: &[&str],
) -> Result<(Arc<TableSchema>, Vec<Value>), DecodeError> {
    let members = match image {
        Some(image) => serde_json::from_str::<Members>(image.get())
            .map_err(|_| DecodeError::NotAnEvent("row image is not a JSON object".into()))?,
        None => Members(Vec::new()),
    };
    super::check_column_count(members.0.len())?;
    let mut columns = Vec::with_capacity(members.0.len());
    let mut row = Vec::with_capacity(members.0.len());
    for (name, raw) in &members.0 {
        check_nesting(name, raw)?;
        let (ty, value) = values::infer(raw);
        columns.push((name.to_string(), ty.unwrap_or(ColumnType::Text)));
        row.push(value);
    }
    // A key-only delete image (or none) still names the key columns.
    for (name, raw) in &key.0 {
        if !columns.iter().any(|(c, _)| c == name) {
            let (ty, _) = values::infer(raw);
            columns.push((name.to_string(), ty.unwrap_or(ColumnType::Text)));
            row.push(Value::Null);
        }
    }
    Ok((table_schema(columns, key_names)?, row))
}

/// A key column the row image left out (a delete without a before-image) is taken from
/// the message key.
fn fill_key_from_message(
    schema: &TableSchema,
    decoders: Option<&[ColumnDecoder]>,
    key: &Members,
    values: &mut [Value],
) -> Result<(), DecodeError> {
    for &idx in &schema.key {
        let column = &schema.columns[idx];
        let Some(raw) = key.get(&column.name) else {
            continue;
        };
        let from_key = match decoders {
            Some(d) => values::decode(raw, &d[idx].wire).map_err(|reason| {
                DecodeError::Key(format!("key column {:?}: {reason}", column.name))
            })?,
            None => values::infer(raw).1,
        };
        if values[idx] == Value::Null {
            values[idx] = from_key;
        } else if values[idx] != from_key {
            // Loading it would MERGE one row under another row's key.
            return Err(DecodeError::Key(format!(
                "the message key's {:?} ({}) does not match the row's",
                column.name,
                raw.get()
            )));
        }
    }
    if schema
        .key
        .iter()
        .any(|&i| matches!(values[i], Value::Null | Value::Unavailable))
    {
        return Err(DecodeError::Key("a primary-key column is null".into()));
    }
    Ok(())
}
