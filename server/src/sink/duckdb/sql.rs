//! DuckDB types and statements. Values travel through the Appender into a staging table
//! in a few wire types (BIGINT, DOUBLE, BOOLEAN, BLOB, VARCHAR) and are converted to the
//! target type inside the MERGE, so decimals stay exact text until DuckDB parses them.

use crate::change::ColumnType;

pub use crate::sql_text::quote_ident;

/// The target column type.
pub fn target_type(ty: &ColumnType) -> String {
    use ColumnType as T;
    match ty {
        T::Boolean => "BOOLEAN".into(),
        T::Int16 => "SMALLINT".into(),
        T::Int32 => "INTEGER".into(),
        T::Int64 => "BIGINT".into(),
        T::Float32 => "FLOAT".into(),
        T::Float64 => "DOUBLE".into(),
        T::Decimal { precision, scale } => match precision {
            Some(p) if *p <= 38 && *scale <= *p => format!("DECIMAL({p},{scale})"),
            None if *scale <= 38 => format!("DECIMAL(38,{scale})"),
            // Wider than DuckDB's DECIMAL: kept exact as text.
            _ => "VARCHAR".into(),
        },
        // Each value has its own scale; text is the only exact fixed type.
        T::VariableDecimal => "VARCHAR".into(),
        T::Text => "VARCHAR".into(),
        T::Bytes => "BLOB".into(),
        T::Date => "DATE".into(),
        T::Time => "TIME".into(),
        T::Timestamp => "TIMESTAMP".into(),
        T::TimestampTz => "TIMESTAMPTZ".into(),
        T::Json => "JSON".into(),
        T::Uuid => "UUID".into(),
        T::List(item) => format!("{}[]", target_type(item)),
    }
}

/// The floe type of a DuckDB column type as `information_schema` spells it: the inverse
/// of [`target_type`] (VARCHAR reads as text).
pub fn column_type(duckdb: &str) -> Option<ColumnType> {
    use ColumnType as T;
    if let Some(item) = duckdb.strip_suffix("[]") {
        return column_type(item).map(|t| T::List(Box::new(t)));
    }
    if let Some(params) = duckdb
        .strip_prefix("DECIMAL(")
        .and_then(|p| p.strip_suffix(')'))
    {
        let (p, s) = params.split_once(',')?;
        return Some(T::Decimal {
            precision: Some(p.trim().parse().ok()?),
            scale: s.trim().parse().ok()?,
        });
    }
    Some(match duckdb {
        "BOOLEAN" => T::Boolean,
        "SMALLINT" => T::Int16,
        "INTEGER" => T::Int32,
        "BIGINT" => T::Int64,
        "FLOAT" => T::Float32,
        "DOUBLE" => T::Float64,
        "VARCHAR" => T::Text,
        "BLOB" => T::Bytes,
        "DATE" => T::Date,
        "TIME" => T::Time,
        "TIMESTAMP" => T::Timestamp,
        "TIMESTAMP WITH TIME ZONE" => T::TimestampTz,
        "JSON" => T::Json,
        "UUID" => T::Uuid,
        _ => return None,
    })
}

/// How a column travels through the staging table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Bool,
    Int,
    Float,
    Blob,
    Text,
}

pub fn stage_of(ty: &ColumnType) -> Stage {
    use ColumnType as T;
    match ty {
        T::Boolean => Stage::Bool,
        T::Int16 | T::Int32 | T::Int64 | T::Date | T::Time | T::Timestamp | T::TimestampTz => {
            Stage::Int
        }
        T::Float32 | T::Float64 => Stage::Float,
        T::Bytes => Stage::Blob,
        _ => Stage::Text,
    }
}

pub fn stage_type(stage: Stage) -> &'static str {
    match stage {
        Stage::Bool => "BOOLEAN",
        Stage::Int => "BIGINT",
        Stage::Float => "DOUBLE",
        Stage::Blob => "BLOB",
        Stage::Text => "VARCHAR",
    }
}

/// Microseconds since the epoch as a TIMESTAMP; PostgreSQL's ±infinity (which
/// `make_timestamp` refuses) as DuckDB's.
fn timestamp(expr: &str) -> String {
    use crate::debezium::{TS_INFINITY, TS_NEG_INFINITY};
    format!(
        "CASE {expr} WHEN {TS_INFINITY} THEN 'infinity'::TIMESTAMP \
         WHEN {TS_NEG_INFINITY} THEN '-infinity'::TIMESTAMP ELSE make_timestamp({expr}) END"
    )
}

/// SQL turning a staged value `expr` into the target type.
pub fn convert(expr: &str, ty: &ColumnType) -> String {
    use ColumnType as T;
    match ty {
        T::Date => {
            use crate::debezium::{DATE_INFINITY, DATE_NEG_INFINITY};
            format!(
                "CASE {expr} WHEN {DATE_INFINITY} THEN 'infinity'::DATE \
                 WHEN {DATE_NEG_INFINITY} THEN '-infinity'::DATE \
                 ELSE (DATE '1970-01-01' + CAST({expr} AS INTEGER)) END"
            )
        }
        // PostgreSQL's 24:00:00 is a time of its own; adding a day's micros wraps to 00:00.
        T::Time => format!(
            "CASE WHEN {expr} = {} THEN TIME '24:00:00' ELSE (TIME '00:00:00' + to_microseconds({expr})) END",
            crate::change::MICROS_PER_DAY
        ),
        T::Timestamp => timestamp(expr),
        T::TimestampTz => format!("CAST({} AS TIMESTAMPTZ)", timestamp(expr)),
        T::List(_) => format!("CAST(CAST({expr} AS JSON) AS {})", target_type(ty)),
        T::Bytes | T::Boolean | T::Int64 | T::Float64 => expr.to_string(),
        _ => format!("CAST({expr} AS {})", target_type(ty)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_cannot_be_escaped_from() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn decimal_types() {
        let d = |p, s| ColumnType::Decimal {
            precision: p,
            scale: s,
        };
        assert_eq!(target_type(&d(Some(10), 2)), "DECIMAL(10,2)");
        assert_eq!(target_type(&d(None, 4)), "DECIMAL(38,4)");
        assert_eq!(target_type(&d(Some(60), 4)), "VARCHAR");
        assert_eq!(
            target_type(&ColumnType::List(Box::new(ColumnType::Int32))),
            "INTEGER[]"
        );
    }
}
