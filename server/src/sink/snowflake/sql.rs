//! Snowflake types, literals and statements.
//!
//! The client sends SQL text without bind parameters, so every value reaches Snowflake
//! inside a literal. One rule keeps that safe: a batch is rendered as a JSON document
//! (serde_json escapes every control character) and the document is embedded in one
//! single-quoted literal where `\` and `'` are escaped — so no value can end the literal.
//! Values travel as JSON strings and are typed in SQL, which keeps decimals and
//! timestamps exact. The document never contains `$` (it is written `\u0024`).

use serde_json::{Map, Value as Json};

use crate::batch::TableBatch;
use crate::change::{format_date, format_time, Column, ColumnType, Op, Value};

/// Metadata columns of every target table (unquoted, so Snowflake upper-cases them).
pub const METADATA: &[(&str, &str)] = &[
    ("_FLOE_OP", "VARCHAR"),
    ("_FLOE_LSN", "NUMBER(19,0)"),
    ("_FLOE_SOURCE_TS", "TIMESTAMP_TZ"),
    ("_FLOE_LOADED_AT", "TIMESTAMP_TZ"),
    ("_FLOE_PARTITION", "NUMBER(10,0)"),
    ("_FLOE_OFFSET", "NUMBER(19,0)"),
];

pub use crate::sql_text::{quote_ident, snowflake_string_literal as string_literal};

pub fn target_type(ty: &ColumnType) -> String {
    use ColumnType as T;
    match ty {
        T::Boolean => "BOOLEAN".into(),
        T::Int16 => "NUMBER(5,0)".into(),
        T::Int32 => "NUMBER(10,0)".into(),
        T::Int64 => "NUMBER(19,0)".into(),
        T::Float32 | T::Float64 => "FLOAT".into(),
        T::Decimal { precision, scale } => match precision {
            Some(p) if *p <= 38 && *scale <= *p => format!("NUMBER({p},{scale})"),
            None if *scale <= 38 => format!("NUMBER(38,{scale})"),
            // Wider than Snowflake's NUMBER: kept exact as text.
            _ => "VARCHAR".into(),
        },
        T::VariableDecimal | T::Text | T::Uuid => "VARCHAR".into(),
        T::Bytes => "BINARY".into(),
        T::Date => "DATE".into(),
        T::Time => "TIME(6)".into(),
        T::Timestamp => "TIMESTAMP_NTZ(6)".into(),
        T::TimestampTz => "TIMESTAMP_TZ(6)".into(),
        T::Json => "VARIANT".into(),
        T::List(_) => "ARRAY".into(),
    }
}

/// The floe type of a Snowflake column as `information_schema.columns` describes it
/// (`data_type`, `numeric_precision`, `numeric_scale`); `None` for a type floe does not
/// widen (VARIANT, ARRAY, a user's own).
pub fn held_type(
    data_type: &str,
    precision: Option<u32>,
    scale: Option<u32>,
) -> Option<ColumnType> {
    use ColumnType as T;
    Some(match data_type {
        "NUMBER" => T::Decimal {
            precision: Some(precision?),
            scale: scale?,
        },
        "FLOAT" => T::Float64,
        "TEXT" | "VARCHAR" => T::Text,
        "BOOLEAN" => T::Boolean,
        "BINARY" => T::Bytes,
        "DATE" => T::Date,
        "TIME" => T::Time,
        "TIMESTAMP_NTZ" => T::Timestamp,
        "TIMESTAMP_TZ" => T::TimestampTz,
        _ => return None,
    })
}

/// The suffix of the name a column is rebuilt under before it replaces the original.
pub const REBUILD_SUFFIX: &str = "__floe_new";

/// Statements that widen `column` of `table` from `held` to `wider` without losing a value.
/// Snowflake alters a type in place only to raise a NUMBER's precision at the same scale;
/// any other change rebuilds the column: a new column, a copy, the old one dropped and the
/// new one renamed. Each is DDL that commits on its own, so `ensure_table` finishes an
/// interrupted rebuild before anything else.
pub fn widen_column(
    table: &str,
    column: &str,
    held: &ColumnType,
    wider: &ColumnType,
) -> Vec<String> {
    let t = quote_ident(table);
    let c = quote_ident(column);
    let target = target_type(wider);
    let same_scale_number = matches!(
        (held, wider),
        (ColumnType::Decimal { scale: a, .. }, ColumnType::Decimal { scale: b, precision: Some(_) })
            if a == b && target.starts_with("NUMBER")
    );
    if same_scale_number {
        return vec![format!(
            "ALTER TABLE {t} ALTER COLUMN {c} SET DATA TYPE {target}"
        )];
    }
    let new = quote_ident(&format!("{column}{REBUILD_SUFFIX}"));
    let copy = match wider {
        ColumnType::Text => format!("TO_VARCHAR({c})"),
        _ => format!("{c}::{target}"),
    };
    vec![
        format!("ALTER TABLE {t} ADD COLUMN {new} {target}"),
        format!("UPDATE {t} SET {new} = {copy}"),
        format!("ALTER TABLE {t} DROP COLUMN {c}"),
        format!("ALTER TABLE {t} RENAME COLUMN {new} TO {c}"),
    ]
}

/// SQL typing the staged JSON field `field` (a string, or absent for NULL) as `ty`.
fn typed(field: &str, ty: &ColumnType) -> String {
    use ColumnType as T;
    let text = format!("{field}::VARCHAR");
    match ty {
        T::Boolean => format!("{field}::BOOLEAN"),
        T::Bytes => format!("TO_BINARY({text}, 'HEX')"),
        T::Timestamp => format!("TO_TIMESTAMP_NTZ({text}::NUMBER(38,0), 6)"),
        T::TimestampTz => format!("TO_TIMESTAMP_TZ({text}::NUMBER(38,0), 6)"),
        T::Json => format!("PARSE_JSON({text})"),
        T::List(_) => format!("PARSE_JSON({text})::ARRAY"),
        other => match target_type(other).as_str() {
            "VARCHAR" => text,
            target => format!("{text}::{target}"),
        },
    }
}

/// A value as its staged JSON element; `None` for NULL (the field is left out).
fn staged_value(value: &Value) -> Option<Json> {
    Some(match value {
        Value::Null | Value::Unavailable => return None,
        Value::Bool(b) => Json::Bool(*b),
        Value::Bytes(b) => Json::String(b.iter().map(|x| format!("{x:02X}")).collect()),
        Value::Date(d) => Json::String(format_date(*d)),
        Value::Time(t) => Json::String(format_time(*t)),
        Value::Timestamp(t) | Value::TimestampTz(t) => Json::String(t.to_string()),
        Value::Int(i) => Json::String(i.to_string()),
        Value::Float(f) => Json::String(f.to_string()),
        Value::List(_) => Json::String(value.to_text()),
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) | Value::Uuid(s) => {
            Json::String(s.clone())
        }
    })
}

/// The staged rows of a table batch, as JSON documents of at most `max_bytes` each
/// (a single row larger than that is still sent alone).
pub struct StagedRows {
    pub documents: Vec<String>,
    pub upserts: u64,
    pub deletes: u64,
    pub toast_columns: Vec<usize>,
}

pub fn stage_rows(columns: &[Column], batch: &TableBatch, max_bytes: usize) -> StagedRows {
    let mut staged = StagedRows {
        documents: Vec::new(),
        upserts: 0,
        deletes: 0,
        toast_columns: Vec::new(),
    };
    let mut document = String::from("[");
    for row in &batch.pending {
        let change = &row.change;
        let mut object = Map::new();
        object.insert("op".into(), Json::String(change.op.code().into()));
        if let Some(lsn) = change.source.lsn {
            object.insert("lsn".into(), Json::String(lsn.to_string()));
        }
        if let Some(ts) = change.source.ts_ms {
            object.insert("ts".into(), Json::String(ts.to_string()));
        }
        object.insert("p".into(), Json::String(row.partition.to_string()));
        object.insert("o".into(), Json::String(row.offset.to_string()));
        let mut toast = String::new();
        for (i, column) in columns.iter().enumerate() {
            // A column the change does not carry (dropped at the source, or generated and
            // not streamed) is left as the target holds it, like a TOAST placeholder.
            let (value, mark) = match change.schema.index_of(&column.name) {
                Some(p) => (&change.values[p], ','),
                None => (&Value::Unavailable, ';'),
            };
            if *value == Value::Unavailable {
                toast.push_str(&format!("{mark}{i}{mark}"));
                if !staged.toast_columns.contains(&i) {
                    staged.toast_columns.push(i);
                }
            }
            if let Some(v) = staged_value(value) {
                object.insert(i.to_string(), v);
            }
        }
        if !toast.is_empty() {
            object.insert("toast".into(), Json::String(toast));
        }
        match change.op {
            Op::Delete => staged.deletes += 1,
            _ => staged.upserts += 1,
        }
        // `$` only occurs inside JSON strings, where its escape means the same; without it
        // the statement never holds `$$` or a `$name` a session-variable pass could expand.
        let element = Json::Object(object).to_string().replace('$', "\\u0024");
        if document.len() > 1 && document.len() + element.len() + 1 > max_bytes {
            document.push(']');
            staged
                .documents
                .push(std::mem::replace(&mut document, String::from("[")));
        }
        if document.len() > 1 {
            document.push(',');
        }
        document.push_str(&element);
    }
    if document.len() > 1 || staged.documents.is_empty() {
        document.push(']');
        staged.documents.push(document);
    }
    staged
}

/// `SELECT` typing one staged document into the staging table's columns.
pub fn stage_select(columns: &[Column], document: &str) -> String {
    let mut exprs = vec![
        "f.value:\"op\"::VARCHAR AS _FLOE_OP".to_string(),
        "f.value:\"lsn\"::VARCHAR::NUMBER(19,0) AS _FLOE_LSN".to_string(),
        "TO_TIMESTAMP_TZ(f.value:\"ts\"::VARCHAR::NUMBER(19,0), 3) AS _FLOE_SOURCE_TS".to_string(),
        "f.value:\"p\"::VARCHAR::NUMBER(10,0) AS _FLOE_PARTITION".to_string(),
        "f.value:\"o\"::VARCHAR::NUMBER(19,0) AS _FLOE_OFFSET".to_string(),
        "f.value:\"toast\"::VARCHAR AS _FLOE_TOAST".to_string(),
    ];
    for (i, c) in columns.iter().enumerate() {
        exprs.push(format!(
            "{} AS {}",
            typed(&format!("f.value:\"{i}\""), &c.ty),
            quote_ident(&c.name)
        ));
    }
    format!(
        "SELECT {} FROM TABLE(FLATTEN(INPUT => PARSE_JSON({}))) f",
        exprs.join(", "),
        string_literal(document)
    )
}

pub fn create_table(table: &str, columns: &[Column], soft_delete: bool) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), target_type(&c.ty)))
        .collect();
    defs.extend(METADATA.iter().map(|(n, t)| format!("{n} {t}")));
    if soft_delete {
        defs.push("_FLOE_DELETED BOOLEAN NOT NULL DEFAULT FALSE".into());
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        quote_ident(table),
        defs.join(", ")
    )
}

/// Fills the staged TOAST placeholders with the values the target already holds (a row
/// the target lacks keeps NULL), so the MERGE copies plain staged columns.
pub fn fill_toast(
    target: &str,
    stage: &str,
    columns: &[Column],
    key: &[String],
    toast_columns: &[usize],
) -> Vec<String> {
    toast_columns
        .iter()
        .filter_map(|&i| columns.get(i).map(|c| (i, c)))
        .map(|(i, c)| {
            format!(
                "UPDATE {stage} AS s SET {col} = t.{col} FROM {} AS t \
                 WHERE {} AND (CONTAINS(s._FLOE_TOAST, ',{i},') OR CONTAINS(s._FLOE_TOAST, ';{i};'))",
                quote_ident(target),
                key_match(key),
                col = quote_ident(&c.name),
            )
        })
        .collect()
}

/// The MERGE of a staged table into its target.
pub fn merge(
    target: &str,
    stage: &str,
    columns: &[Column],
    key: &[String],
    soft_delete: bool,
) -> String {
    let on = key_match(key);
    // A change is applied only when it is not older than the row's stored position:
    // a replay never moves a row backwards.
    let newer = "(COALESCE(s._FLOE_LSN, -1) > COALESCE(t._FLOE_LSN, -1) \
         OR (COALESCE(s._FLOE_LSN, -1) = COALESCE(t._FLOE_LSN, -1) \
             AND (s._FLOE_PARTITION <> t._FLOE_PARTITION OR s._FLOE_OFFSET >= t._FLOE_OFFSET)))";
    let metadata: Vec<(&str, &str)> = vec![
        ("_FLOE_OP", "s._FLOE_OP"),
        ("_FLOE_LSN", "s._FLOE_LSN"),
        ("_FLOE_SOURCE_TS", "s._FLOE_SOURCE_TS"),
        ("_FLOE_LOADED_AT", "CURRENT_TIMESTAMP()"),
        ("_FLOE_PARTITION", "s._FLOE_PARTITION"),
        ("_FLOE_OFFSET", "s._FLOE_OFFSET"),
    ];
    let mut sets: Vec<String> = columns
        .iter()
        .map(|c| format!("{0} = s.{0}", quote_ident(&c.name)))
        .collect();
    sets.extend(metadata.iter().map(|(n, e)| format!("{n} = {e}")));
    let mut names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    names.extend(metadata.iter().map(|(n, _)| n.to_string()));
    let mut values: Vec<String> = columns
        .iter()
        .map(|c| format!("s.{}", quote_ident(&c.name)))
        .collect();
    values.extend(metadata.iter().map(|(_, e)| e.to_string()));
    let delete = if soft_delete {
        let mut marks: Vec<String> = metadata.iter().map(|(n, e)| format!("{n} = {e}")).collect();
        marks.push("_FLOE_DELETED = TRUE".into());
        format!("UPDATE SET {}", marks.join(", "))
    } else {
        "DELETE".into()
    };
    // As in DuckDB: a deleted key the target never held becomes a deleted row.
    let insert_when = if soft_delete {
        sets.push("_FLOE_DELETED = FALSE".into());
        names.push("_FLOE_DELETED".into());
        values.push("(s._FLOE_OP = 'd')".into());
        ""
    } else {
        "AND s._FLOE_OP <> 'd' "
    };
    format!(
        "MERGE INTO {} AS t USING {stage} AS s ON ({on}) \
         WHEN MATCHED AND s._FLOE_OP = 'd' AND {newer} THEN {delete} \
         WHEN MATCHED AND s._FLOE_OP <> 'd' AND {newer} THEN UPDATE SET {} \
         WHEN NOT MATCHED {insert_when}THEN INSERT ({}) VALUES ({})",
        quote_ident(target),
        sets.join(", "),
        names.join(", "),
        values.join(", "),
    )
}

pub fn key_match(key: &[String]) -> String {
    key.iter()
        .map(|k| format!("t.{0} = s.{0}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_identifiers_cannot_be_escaped_from() {
        assert_eq!(string_literal("it's"), "'it''s'");
        assert_eq!(string_literal("C:\\temp"), "'C:\\\\temp'");
        assert_eq!(string_literal("a\\'b"), "'a\\\\''b'");
        assert_eq!(string_literal("nul\0"), "'nul\\0'");
        assert_eq!(quote_ident("Mixed\"Case"), "\"Mixed\"\"Case\"");
    }

    #[test]
    fn widening_alters_in_place_only_what_snowflake_allows() {
        let number = |p, s| ColumnType::Decimal {
            precision: Some(p),
            scale: s,
        };
        // int → bigint: a precision raise at scale 0.
        assert_eq!(
            widen_column("t", "n", &number(10, 0), &number(19, 0)),
            vec!["ALTER TABLE \"t\" ALTER COLUMN \"n\" SET DATA TYPE NUMBER(19,0)"]
        );
        // A scale change, NUMBER → VARCHAR and NUMBER → FLOAT are rebuilt, never altered.
        for wider in [number(14, 4), ColumnType::Text, ColumnType::Float64] {
            let statements = widen_column("t", "n", &number(10, 2), &wider);
            assert_eq!(statements.len(), 4, "{wider:?}");
            assert!(
                statements.iter().all(|s| !s.contains("SET DATA TYPE")),
                "{statements:?}"
            );
            assert!(statements[3].ends_with("RENAME COLUMN \"n__floe_new\" TO \"n\""));
        }
        assert_eq!(held_type("NUMBER", Some(10), Some(2)), Some(number(10, 2)));
        assert_eq!(held_type("TEXT", None, None), Some(ColumnType::Text));
        assert_eq!(held_type("VARIANT", None, None), None);
    }

    #[test]
    fn types_follow_the_source() {
        let d = |p, s| ColumnType::Decimal {
            precision: p,
            scale: s,
        };
        assert_eq!(target_type(&d(Some(10), 2)), "NUMBER(10,2)");
        assert_eq!(target_type(&d(None, 4)), "NUMBER(38,4)");
        assert_eq!(target_type(&d(Some(60), 4)), "VARCHAR");
        assert_eq!(target_type(&ColumnType::TimestampTz), "TIMESTAMP_TZ(6)");
        assert_eq!(target_type(&ColumnType::Json), "VARIANT");
        assert_eq!(
            target_type(&ColumnType::List(Box::new(ColumnType::Int32))),
            "ARRAY"
        );
    }

    #[test]
    fn staged_documents_split_at_the_limit_and_never_hold_a_dollar() {
        use crate::batch::Batch;
        use crate::change::{RowChange, SourcePosition, TableSchema};
        use std::sync::Arc;
        let schema = Arc::new(TableSchema {
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int64,
                },
                Column {
                    name: "note".into(),
                    ty: ColumnType::Text,
                },
            ],
            key: vec![0],
        });
        let topic: Arc<str> = Arc::from("t");
        let mut batch = Batch::default();
        for id in 0..50 {
            let change = RowChange {
                table: Arc::from("t"),
                op: Op::Insert,
                schema: schema.clone(),
                values: vec![Value::Int(id), Value::Text(format!("$${id}$ 'x' \\"))],
                source: SourcePosition::default(),
            };
            batch.add_row(change, &topic, 0, id);
        }
        let table = &batch.tables["t"];
        let staged = stage_rows(&table.columns(), table, 300);
        assert!(staged.documents.len() > 5, "{}", staged.documents.len());
        assert!(staged.documents.iter().all(|d| d.len() <= 300));
        assert!(staged.documents.iter().all(|d| !d.contains('$')));
        let rows: usize = staged
            .documents
            .iter()
            .map(|d| serde_json::from_str::<Vec<Json>>(d).map_or(0, |v| v.len()))
            .sum();
        assert_eq!(rows, 50, "every row is in exactly one document");
        assert_eq!(staged.upserts, 50);
    }
}
