//! The normalized change event that every stage after decoding sees.

use std::sync::Arc;

/// A typed column value. Exact decimals are kept as text; temporal values are integers in
/// UTC so that no stage ever consults the local time zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Exact decimal text such as `-12.50`; never converted through a float.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since the epoch, a wall-clock time without zone.
    Timestamp(i64),
    /// Microseconds since the epoch, an instant (UTC).
    TimestampTz(i64),
    /// A JSON document as text.
    Json(String),
    Uuid(String),
    List(Vec<Value>),
    /// Debezium's TOAST placeholder: the source did not send this column because it did not
    /// change. The sink keeps the value the target row already holds.
    Unavailable,
}

/// The warehouse-independent type of a column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Boolean,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// Fixed-scale decimal; `precision` is absent when the source did not say.
    Decimal {
        precision: Option<u32>,
        scale: u32,
    },
    /// A decimal whose scale varies per value (PostgreSQL NUMERIC without a typmod).
    VariableDecimal,
    Text,
    Bytes,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Json,
    Uuid,
    List(Box<ColumnType>),
}

impl ColumnType {
    /// The narrowest type that holds every value of both `self` and `other` exactly — what a
    /// column becomes when the source widens it (`int` → `bigint`, `numeric(10,2)` →
    /// `numeric(14,4)`) — or `None` when no such type exists or floe does not widen to it.
    pub fn widen(&self, other: &ColumnType) -> Option<ColumnType> {
        use ColumnType as T;
        if self == other {
            return Some(self.clone());
        }
        let int_digits = |t: &T| match t {
            T::Int16 => Some(5),
            T::Int32 => Some(10),
            T::Int64 => Some(19),
            _ => None,
        };
        Some(match (self, other) {
            (a, b) if int_digits(a).is_some() && int_digits(b).is_some() => {
                if int_digits(a) >= int_digits(b) {
                    a.clone()
                } else {
                    b.clone()
                }
            }
            (T::Float32 | T::Float64, T::Float32 | T::Float64) => T::Float64,
            (T::Int16 | T::Int32, T::Float64) | (T::Float64, T::Int16 | T::Int32) => T::Float64,
            (
                T::Decimal {
                    precision: p1,
                    scale: s1,
                },
                T::Decimal {
                    precision: p2,
                    scale: s2,
                },
            ) => {
                let scale = *s1.max(s2);
                let precision = match (p1, p2) {
                    (Some(p1), Some(p2)) => {
                        Some(p1.saturating_sub(*s1).max(p2.saturating_sub(*s2)) + scale)
                    }
                    _ => None,
                };
                T::Decimal { precision, scale }
            }
            (T::Decimal { precision, scale }, i) | (i, T::Decimal { precision, scale })
                if int_digits(i).is_some() =>
            {
                let digits = int_digits(i).unwrap_or(19);
                T::Decimal {
                    precision: precision.map(|p| p.saturating_sub(*scale).max(digits) + scale),
                    scale: *scale,
                }
            }
            (T::VariableDecimal, T::Decimal { .. } | T::Int16 | T::Int32 | T::Int64)
            | (T::Decimal { .. } | T::Int16 | T::Int32 | T::Int64, T::VariableDecimal) => {
                T::VariableDecimal
            }
            (T::List(a), T::List(b)) => T::List(Box::new(a.widen(b)?)),
            // Not to text: without a schema a number column that meets a string is far
            // more often a bad record than an ALTER, and must not turn the column to text.
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// Columns of one table as one event describes them, plus which of them form the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableSchema {
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary-key columns, in key order.
    pub key: Vec<usize>,
}

impl TableSchema {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// A row read by the connector's initial snapshot; loaded like an insert.
    Read,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// Where a change came from in the source database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourcePosition {
    pub lsn: Option<i64>,
    pub tx_id: Option<i64>,
    /// Source commit time, milliseconds since the epoch.
    pub ts_ms: Option<i64>,
    pub snapshot: bool,
}

/// Where a message sits in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaPosition {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// One row change, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub table: Arc<str>,
    pub op: Op,
    pub schema: Arc<TableSchema>,
    /// Positional values matching `schema.columns`. For a delete only the key columns
    /// are meaningful; the others are `Null`.
    pub values: Vec<Value>,
    pub source: SourcePosition,
}

impl RowChange {
    /// A text form of the key that is equal for equal keys; used to deduplicate a batch.
    pub fn key_repr(&self) -> String {
        let mut out = String::new();
        for &i in &self.schema.key {
            if let Some(v) = self.values.get(i) {
                out.push_str(&format!("{v:?}"));
            }
            out.push('\u{1f}');
        }
        out
    }
}

/// What one Kafka message means to the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Row(RowChange),
    /// `op=t`: the table was truncated at the source.
    Truncate {
        table: Arc<str>,
    },
    /// A message that carries nothing to load (tombstone, logical-decoding message,
    /// transaction BEGIN/END); its offset is still committed.
    Skip(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Tombstone,
    LogicalMessage,
    TransactionMarker,
}

/// A decoded message with its Kafka position.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kafka: KafkaPosition,
    pub event: Event,
}

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Value {
    /// The value as SQL-castable text (timestamps in UTC, ISO order). Lists and JSON
    /// come out as JSON text.
    pub fn to_text(&self) -> String {
        match self {
            Value::Null | Value::Unavailable => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Decimal(s) | Value::Text(s) | Value::Json(s) | Value::Uuid(s) => s.clone(),
            Value::Bytes(b) => b.iter().map(|x| format!("\\x{x:02X}")).collect(),
            Value::Date(d) => format_date(*d),
            Value::Time(t) => format_time(*t),
            Value::Timestamp(t) => format_timestamp(*t),
            Value::TimestampTz(t) => format!("{}+00", format_timestamp(*t)),
            Value::List(items) => {
                let parts: Vec<String> = items.iter().map(Value::to_json).collect();
                format!("[{}]", parts.join(","))
            }
        }
    }

    /// The value as a JSON element: numbers and booleans bare, everything else a string.
    pub fn to_json(&self) -> String {
        match self {
            Value::Null | Value::Unavailable => "null".into(),
            Value::Bool(_) | Value::Int(_) | Value::Json(_) | Value::List(_) => self.to_text(),
            Value::Float(f) if f.is_finite() => self.to_text(),
            other => serde_json::Value::String(other.to_text()).to_string(),
        }
    }
}

pub fn format_date(days: i32) -> String {
    match days {
        crate::debezium::DATE_INFINITY => return "infinity".into(),
        crate::debezium::DATE_NEG_INFINITY => return "-infinity".into(),
        _ => {}
    }
    chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "infinity".into())
}

pub fn format_time(micros: i64) -> String {
    // 24:00:00 is a time of its own in PostgreSQL, not midnight.
    let m = if micros == MICROS_PER_DAY {
        micros
    } else {
        micros.rem_euclid(MICROS_PER_DAY)
    };
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        m / 3_600_000_000,
        (m / 60_000_000) % 60,
        (m / 1_000_000) % 60,
        m % 1_000_000
    )
}

pub fn format_timestamp(micros: i64) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        m if m == -i64::MAX => "-infinity".into(),
        m => chrono::DateTime::from_timestamp_micros(m)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
            .unwrap_or_else(|| "infinity".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnType as T;

    fn decimal(p: u32, s: u32) -> T {
        T::Decimal {
            precision: Some(p),
            scale: s,
        }
    }

    #[test]
    fn widening_follows_the_sources_alter_type() {
        assert_eq!(T::Int32.widen(&T::Int64), Some(T::Int64));
        assert_eq!(T::Int64.widen(&T::Int16), Some(T::Int64));
        assert_eq!(decimal(10, 2).widen(&decimal(14, 4)), Some(decimal(14, 4)));
        // 8 integer digits from the first, 4 decimals from the second.
        assert_eq!(decimal(10, 2).widen(&decimal(6, 4)), Some(decimal(12, 4)));
        assert_eq!(T::Int64.widen(&decimal(10, 2)), Some(decimal(21, 2)));
        assert_eq!(T::Text.widen(&T::Int32), None);
        assert_eq!(T::Float32.widen(&T::Float64), Some(T::Float64));
        assert_eq!(
            T::List(Box::new(T::Int32)).widen(&T::List(Box::new(T::Int64))),
            Some(T::List(Box::new(T::Int64)))
        );
        assert_eq!(T::Boolean.widen(&T::Date), None);
        assert_eq!(T::Int64.widen(&T::Float64), None, "not exact above 2^53");
    }
}
