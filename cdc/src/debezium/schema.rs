//! Kafka Connect schemas (the `schema` half of a JsonConverter envelope) turned into
//! floe column types.

use serde::Deserialize;
use std::collections::HashMap;

use crate::change::ColumnType;

use super::DecodeError;

/// One field of a Connect `struct` schema, as the JsonConverter writes it.
#[derive(Debug, Deserialize)]
pub(crate) struct FieldSchema {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub fields: Vec<FieldSchema>,
    #[serde(default)]
    pub items: Option<Box<FieldSchema>>,
    #[serde(default)]
    pub parameters: HashMap<String, String>,
}

/// How to read one column's JSON value: the warehouse type plus the wire encoding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Wire {
    Bool,
    Int,
    Float,
    Text,
    Bytes,
    /// Base64 unscaled two's-complement bytes, or a plain number/string in other modes.
    Decimal {
        scale: u32,
    },
    /// `{"scale": int, "value": base64}`.
    VariableDecimal,
    /// Days since the epoch.
    Date,
    /// Time of day in the given unit per microsecond (ms = 1000 µs, ns = 1/1000 µs).
    Time(Unit),
    Timestamp(Unit),
    ZonedTimestamp,
    Json,
    Uuid,
    /// A struct or map that has no dedicated type: loaded as JSON text.
    StructAsJson,
    List(Box<Wire>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Unit {
    Millis,
    Micros,
    Nanos,
}

/// A column of an enveloped event: its name, floe type and wire encoding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ColumnDecoder {
    pub name: String,
    pub ty: ColumnType,
    pub wire: Wire,
}

/// Maps a Connect field schema to floe's type and the way its JSON value is encoded.
pub(crate) fn column_decoder(field: &FieldSchema) -> Result<ColumnDecoder, DecodeError> {
    let name = field
        .field
        .clone()
        .ok_or_else(|| DecodeError::Schema("a struct field has no \"field\" name".into()))?;
    let (ty, wire) = type_of(field)?;
    Ok(ColumnDecoder { name, ty, wire })
}

fn type_of(field: &FieldSchema) -> Result<(ColumnType, Wire), DecodeError> {
    use ColumnType as T;
    if let Some(logical) = field.name.as_deref() {
        let by_name = match logical {
            "org.apache.kafka.connect.data.Decimal" => {
                let scale = parse_param(field, "scale")?.unwrap_or(0);
                super::values::check_scale(scale).map_err(|reason| {
                    DecodeError::Schema(format!(
                        "field {:?}: {reason}",
                        field.field.as_deref().unwrap_or("?")
                    ))
                })?;
                let precision = parse_param(field, "connect.decimal.precision")?;
                Some((T::Decimal { precision, scale }, Wire::Decimal { scale }))
            }
            "io.debezium.data.VariableScaleDecimal" => {
                Some((T::VariableDecimal, Wire::VariableDecimal))
            }
            "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
                Some((T::Date, Wire::Date))
            }
            "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => {
                Some((T::Time, Wire::Time(Unit::Millis)))
            }
            "io.debezium.time.MicroTime" => Some((T::Time, Wire::Time(Unit::Micros))),
            "io.debezium.time.NanoTime" => Some((T::Time, Wire::Time(Unit::Nanos))),
            "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
                Some((T::Timestamp, Wire::Timestamp(Unit::Millis)))
            }
            "io.debezium.time.MicroTimestamp" => {
                Some((T::Timestamp, Wire::Timestamp(Unit::Micros)))
            }
            "io.debezium.time.NanoTimestamp" => Some((T::Timestamp, Wire::Timestamp(Unit::Nanos))),
            "io.debezium.time.ZonedTimestamp" => Some((T::TimestampTz, Wire::ZonedTimestamp)),
            "io.debezium.data.Json" => Some((T::Json, Wire::Json)),
            "io.debezium.data.Uuid" => Some((T::Uuid, Wire::Uuid)),
            // Enum, Xml, ZonedTime, Interval (string mode), Ltree and friends are text.
            _ => None,
        };
        if let Some(found) = by_name {
            return Ok(found);
        }
    }
    Ok(match field.kind.as_str() {
        "boolean" => (T::Boolean, Wire::Bool),
        "int8" | "int16" => (T::Int16, Wire::Int),
        "int32" => (T::Int32, Wire::Int),
        "int64" => (T::Int64, Wire::Int),
        // Kafka Connect's JsonConverter writes FLOAT32 and FLOAT64 as "float" and "double".
        "float32" | "float" => (T::Float32, Wire::Float),
        "float64" | "double" => (T::Float64, Wire::Float),
        "string" => (T::Text, Wire::Text),
        "bytes" => (T::Bytes, Wire::Bytes),
        "array" => {
            let items = field.items.as_deref().ok_or_else(|| {
                DecodeError::Schema(format!(
                    "array field {:?} has no \"items\" schema",
                    field.field.as_deref().unwrap_or("?")
                ))
            })?;
            let (item_ty, item_wire) = type_of(items)?;
            (T::List(Box::new(item_ty)), Wire::List(Box::new(item_wire)))
        }
        "struct" | "map" => (T::Json, Wire::StructAsJson),
        other => {
            return Err(DecodeError::Schema(format!(
                "field {:?} has unknown Connect type {other:?}",
                field.field.as_deref().unwrap_or("?")
            )))
        }
    })
}

fn parse_param(field: &FieldSchema, key: &str) -> Result<Option<u32>, DecodeError> {
    match field.parameters.get(key) {
        None => Ok(None),
        Some(text) => text.trim().parse::<u32>().map(Some).map_err(|_| {
            DecodeError::Schema(format!(
                "field {:?}: parameter {key:?} is {text:?}, not a non-negative integer",
                field.field.as_deref().unwrap_or("?")
            ))
        }),
    }
}

/// The row columns of an envelope schema: the fields of its `after` (or `before`) struct.
pub(crate) fn row_columns(envelope: &FieldSchema) -> Result<Vec<ColumnDecoder>, DecodeError> {
    let row = envelope
        .fields
        .iter()
        .find(|f| f.field.as_deref() == Some("after"))
        .or_else(|| {
            envelope
                .fields
                .iter()
                .find(|f| f.field.as_deref() == Some("before"))
        })
        .ok_or_else(|| {
            DecodeError::Schema(
                "envelope schema has neither an \"after\" nor a \"before\" field".into(),
            )
        })?;
    super::check_column_count(row.fields.len())?;
    row.fields.iter().map(column_decoder).collect()
}
