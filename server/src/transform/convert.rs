//! Conversions between floe's change model and the WIT types validators see.

use std::sync::Arc;

use super::wit::floe::transform::types as w;
use crate::change::{Column, ColumnType, Op, RowChange, TableSchema, Value};

pub fn columns_to_wit(columns: &[Column]) -> Vec<w::Column> {
    columns
        .iter()
        .map(|c| {
            let (ty, is_list) = match &c.ty {
                ColumnType::List(inner) => (data_type_to_wit(inner), true),
                other => (data_type_to_wit(other), false),
            };
            w::Column {
                name: c.name.clone(),
                ty,
                is_list,
            }
        })
        .collect()
}

fn data_type_to_wit(ty: &ColumnType) -> w::DataType {
    use w::DataType as D;
    match ty {
        ColumnType::Boolean => D::Boolean,
        ColumnType::Int16 => D::Int16,
        ColumnType::Int32 => D::Int32,
        ColumnType::Int64 => D::Int64,
        ColumnType::Float32 => D::Float32,
        ColumnType::Float64 => D::Float64,
        ColumnType::Decimal { precision, scale } => D::Decimal(w::DecimalSpec {
            precision: *precision,
            scale: *scale,
        }),
        ColumnType::VariableDecimal => D::VariableDecimal,
        ColumnType::Text => D::Text,
        ColumnType::Bytes => D::Bytes,
        ColumnType::Date => D::Date,
        ColumnType::Time => D::Time,
        ColumnType::Timestamp => D::Timestamp,
        ColumnType::TimestampTz => D::TimestampTz,
        ColumnType::Json => D::Json,
        ColumnType::Uuid => D::Uuid,
        // Nested lists travel as JSON text.
        ColumnType::List(_) => D::Json,
    }
}

pub fn columns_from_wit(columns: &[w::Column]) -> Vec<Column> {
    columns
        .iter()
        .map(|c| {
            let ty = data_type_from_wit(&c.ty);
            Column {
                name: c.name.clone(),
                ty: if c.is_list {
                    ColumnType::List(Box::new(ty))
                } else {
                    ty
                },
            }
        })
        .collect()
}

fn data_type_from_wit(ty: &w::DataType) -> ColumnType {
    use w::DataType as D;
    match ty {
        D::Boolean => ColumnType::Boolean,
        D::Int16 => ColumnType::Int16,
        D::Int32 => ColumnType::Int32,
        D::Int64 => ColumnType::Int64,
        D::Float32 => ColumnType::Float32,
        D::Float64 => ColumnType::Float64,
        D::Decimal(d) => ColumnType::Decimal {
            precision: d.precision,
            scale: d.scale,
        },
        D::VariableDecimal => ColumnType::VariableDecimal,
        D::Text => ColumnType::Text,
        D::Bytes => ColumnType::Bytes,
        D::Date => ColumnType::Date,
        D::Time => ColumnType::Time,
        D::Timestamp => ColumnType::Timestamp,
        D::TimestampTz => ColumnType::TimestampTz,
        D::Json => ColumnType::Json,
        D::Uuid => ColumnType::Uuid,
    }
}

pub fn value_to_wit(value: &Value) -> w::Value {
    use w::Value as V;
    match value {
        Value::Null => V::Null,
        Value::Unavailable => V::Unavailable,
        Value::Bool(b) => V::Boolean(*b),
        Value::Int(i) => V::Int(*i),
        Value::Float(f) => V::Float(*f),
        Value::Decimal(s) => V::Decimal(s.clone()),
        Value::Text(s) => V::Text(s.clone()),
        Value::Bytes(b) => V::Bytes(b.clone()),
        Value::Date(d) => V::DateDays(*d),
        Value::Time(t) => V::TimeMicros(*t),
        Value::Timestamp(t) => V::TimestampMicros(*t),
        Value::TimestampTz(t) => V::TimestampTzMicros(*t),
        Value::Json(s) => V::Json(s.clone()),
        Value::Uuid(s) => V::Uuid(s.clone()),
        Value::List(items) => V::List(items.iter().map(element_to_wit).collect()),
    }
}

fn element_to_wit(value: &Value) -> w::Element {
    use w::Element as E;
    match value {
        Value::Null | Value::Unavailable => E::Null,
        Value::Bool(b) => E::Boolean(*b),
        Value::Int(i) => E::Int(*i),
        Value::Float(f) => E::Float(*f),
        Value::Decimal(s) => E::Decimal(s.clone()),
        Value::Text(s) => E::Text(s.clone()),
        Value::Bytes(b) => E::Bytes(b.clone()),
        Value::Date(d) => E::DateDays(*d),
        Value::Time(t) => E::TimeMicros(*t),
        Value::Timestamp(t) => E::TimestampMicros(*t),
        Value::TimestampTz(t) => E::TimestampTzMicros(*t),
        Value::Json(s) => E::Json(s.clone()),
        Value::Uuid(s) => E::Uuid(s.clone()),
        Value::List(_) => E::Json(value.to_text()),
    }
}

pub fn value_from_wit(value: w::Value) -> Value {
    use w::Value as V;
    match value {
        V::Null => Value::Null,
        V::Unavailable => Value::Unavailable,
        V::Boolean(b) => Value::Bool(b),
        V::Int(i) => Value::Int(i),
        V::Float(f) => Value::Float(f),
        V::Decimal(s) => Value::Decimal(s),
        V::Text(s) => Value::Text(s),
        V::Bytes(b) => Value::Bytes(b),
        V::DateDays(d) => Value::Date(d),
        V::TimeMicros(t) => Value::Time(t),
        V::TimestampMicros(t) => Value::Timestamp(t),
        V::TimestampTzMicros(t) => Value::TimestampTz(t),
        V::Json(s) => Value::Json(s),
        V::Uuid(s) => Value::Uuid(s),
        V::List(items) => Value::List(items.into_iter().map(element_from_wit).collect()),
    }
}

fn element_from_wit(element: w::Element) -> Value {
    use w::Element as E;
    match element {
        E::Null => Value::Null,
        E::Boolean(b) => Value::Bool(b),
        E::Int(i) => Value::Int(i),
        E::Float(f) => Value::Float(f),
        E::Decimal(s) => Value::Decimal(s),
        E::Text(s) => Value::Text(s),
        E::Bytes(b) => Value::Bytes(b),
        E::DateDays(d) => Value::Date(d),
        E::TimeMicros(t) => Value::Time(t),
        E::TimestampMicros(t) => Value::Timestamp(t),
        E::TimestampTzMicros(t) => Value::TimestampTz(t),
        E::Json(s) => Value::Json(s),
        E::Uuid(s) => Value::Uuid(s),
    }
}

pub fn change_to_wit(change: &RowChange, partition: i32, offset: i64) -> w::Change {
    let row: Vec<w::Value> = change.values.iter().map(value_to_wit).collect();
    let (before, after) = match change.op {
        Op::Delete => (Some(row), None),
        _ => (None, Some(row)),
    };
    w::Change {
        op: match change.op {
            Op::Insert => w::Op::Insert,
            Op::Update => w::Op::Update,
            Op::Delete => w::Op::Delete,
            Op::Read => w::Op::Read,
        },
        before,
        after,
        source: w::SourcePosition {
            lsn: change.source.lsn,
            tx_id: change.source.tx_id,
            ts_ms: change.source.ts_ms,
            snapshot: change.source.snapshot,
            kafka_partition: partition,
            kafka_offset: offset,
        },
    }
}

/// Whether a mapped value can be stored in a column of type `ty`; a guest that declares
/// one type and sends another would otherwise fail the sink for the whole batch.
pub fn fits(value: &Value, ty: &ColumnType) -> bool {
    use ColumnType as T;
    match (value, ty) {
        (Value::Null | Value::Unavailable, _) => true,
        (Value::Bool(_), T::Boolean) => true,
        (Value::Int(i), T::Int16) => i16::try_from(*i).is_ok(),
        (Value::Int(i), T::Int32) => i32::try_from(*i).is_ok(),
        (Value::Int(_), T::Int64) => true,
        (Value::Float(_), T::Float32 | T::Float64) => true,
        (Value::Decimal(d), T::Decimal { .. } | T::VariableDecimal) => is_decimal(d),
        (Value::Text(_), T::Text) => true,
        (Value::Bytes(_), T::Bytes) => true,
        (Value::Date(_), T::Date) => true,
        (Value::Time(_), T::Time) => true,
        (Value::Timestamp(_), T::Timestamp) => true,
        (Value::TimestampTz(_), T::TimestampTz) => true,
        (Value::Json(j), T::Json) => serde_json::from_str::<serde::de::IgnoredAny>(j).is_ok(),
        (Value::Uuid(_), T::Uuid) => true,
        (Value::List(items), T::List(inner)) => items.iter().all(|v| fits(v, inner)),
        // Nested lists travel as JSON text.
        (Value::Json(_), T::List(_)) => true,
        _ => false,
    }
}

fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// The schema of mapped rows: the guest's columns, keyed by the route's key columns.
pub fn mapped_schema(columns: Vec<Column>, key: &[String]) -> Result<Arc<TableSchema>, String> {
    let key = key
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|c| &c.name == k)
                .ok_or_else(|| format!("mapped columns lack the key column {k:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].iter().any(|o| o.name == c.name) {
            return Err(format!("mapped columns name {:?} twice", c.name));
        }
    }
    Ok(Arc::new(TableSchema { columns, key }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_survives_the_trip_to_the_guest_and_back() {
        let values = vec![
            Value::Null,
            Value::Unavailable,
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Float(-0.5),
            Value::Decimal("-12345678901234567890.123456789".into()),
            Value::Text("it's \"quoted\" 🦀".into()),
            Value::Bytes(vec![0, 255, 10]),
            Value::Date(-719_162),
            Value::Time(86_399_999_999),
            Value::Timestamp(i64::MAX),
            Value::TimestampTz(-1),
            Value::Json("{\"a\":[1,2]}".into()),
            Value::Uuid("123e4567-e89b-12d3-a456-426614174000".into()),
            Value::List(vec![Value::Int(1), Value::Null, Value::Text("x".into())]),
        ];
        for v in values {
            assert_eq!(value_from_wit(value_to_wit(&v)), v);
        }
    }

    #[test]
    fn every_column_type_survives_the_trip() {
        let types = [
            ColumnType::Boolean,
            ColumnType::Int16,
            ColumnType::Int32,
            ColumnType::Int64,
            ColumnType::Float32,
            ColumnType::Float64,
            ColumnType::Decimal {
                precision: Some(10),
                scale: 2,
            },
            ColumnType::Decimal {
                precision: None,
                scale: 0,
            },
            ColumnType::VariableDecimal,
            ColumnType::Text,
            ColumnType::Bytes,
            ColumnType::Date,
            ColumnType::Time,
            ColumnType::Timestamp,
            ColumnType::TimestampTz,
            ColumnType::Json,
            ColumnType::Uuid,
            ColumnType::List(Box::new(ColumnType::Int32)),
        ];
        let columns: Vec<Column> = types
            .iter()
            .enumerate()
            .map(|(i, ty)| Column {
                name: format!("c{i}"),
                ty: ty.clone(),
            })
            .collect();
        assert_eq!(columns_from_wit(&columns_to_wit(&columns)), columns);
    }

    #[test]
    fn mapped_values_must_fit_their_columns() {
        assert!(fits(
            &Value::Decimal("-12.50".into()),
            &ColumnType::VariableDecimal
        ));
        assert!(!fits(
            &Value::Decimal("12e3".into()),
            &ColumnType::VariableDecimal
        ));
        assert!(!fits(
            &Value::Decimal("1.2.3".into()),
            &ColumnType::VariableDecimal
        ));
        assert!(!fits(&Value::Text("x".into()), &ColumnType::Int64));
        assert!(!fits(&Value::Int(70_000), &ColumnType::Int16));
        assert!(fits(&Value::Null, &ColumnType::Int16));
        assert!(!fits(&Value::Json("{".into()), &ColumnType::Json));
        let ints = ColumnType::List(Box::new(ColumnType::Int32));
        assert!(fits(&Value::List(vec![Value::Int(1), Value::Null]), &ints));
        assert!(!fits(&Value::List(vec![Value::Text("1".into())]), &ints));
    }

    #[test]
    fn mapped_columns_must_carry_the_key_once() {
        let col = |n: &str| Column {
            name: n.into(),
            ty: ColumnType::Text,
        };
        let s = mapped_schema(vec![col("a"), col("id")], &["id".into()]).unwrap();
        assert_eq!(s.key, vec![1]);
        let e = mapped_schema(vec![col("a")], &["id".into()]).unwrap_err();
        assert!(e.contains("lack the key column \"id\""), "{e}");
        let e = mapped_schema(vec![col("id"), col("id")], &["id".into()]).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }
}
