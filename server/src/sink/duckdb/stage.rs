//! Staging a table batch through DuckDB's Appender into a temporary table.

use duckdb::types::{ToSql, ToSqlOutput, ValueRef};
use duckdb::Connection;

use crate::batch::TableBatch;
use crate::change::{Column, Op, Value};
use crate::sink::SinkError;

use super::sql::{quote_ident, stage_of, stage_type, Stage};

pub struct Staged {
    pub upserts: u64,
    pub deletes: u64,
    /// Indexes of columns that hold a TOAST placeholder (marked `,i,` in `_floe_toast`) or
    /// are absent from the change (marked `;i;`) in at least one staged row.
    pub toast_columns: Vec<usize>,
}

const META_COLUMNS: &str = "_floe_op VARCHAR, _floe_lsn BIGINT, _floe_source_ts BIGINT, \
     _floe_partition INTEGER, _floe_offset BIGINT, _floe_toast VARCHAR";

/// One staged cell, borrowed from the change where its form allows.
enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    Owned(String),
    Blob(&'a [u8]),
}

impl ToSql for Cell<'_> {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Cell::Null => ValueRef::Null,
            Cell::Bool(b) => ValueRef::Boolean(*b),
            Cell::Int(i) => ValueRef::BigInt(*i),
            Cell::Float(f) => ValueRef::Double(*f),
            Cell::Text(s) => ValueRef::Text(s.as_bytes()),
            Cell::Owned(s) => ValueRef::Text(s.as_bytes()),
            Cell::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn cell(value: &Value, stage: Stage) -> Cell<'_> {
    match (value, stage) {
        (Value::Null | Value::Unavailable, _) => Cell::Null,
        (Value::Bool(b), Stage::Bool) => Cell::Bool(*b),
        (Value::Int(i), Stage::Int) => Cell::Int(*i),
        (Value::Date(d), Stage::Int) => Cell::Int(i64::from(*d)),
        (Value::Time(t) | Value::Timestamp(t) | Value::TimestampTz(t), Stage::Int) => Cell::Int(*t),
        (Value::Float(f), Stage::Float) => Cell::Float(*f),
        (Value::Int(i), Stage::Float) => Cell::Float(*i as f64),
        (Value::Bytes(b), Stage::Blob) => Cell::Blob(b),
        (Value::Text(s) | Value::Decimal(s) | Value::Json(s) | Value::Uuid(s), _) => Cell::Text(s),
        // A value whose kind differs from the column's (a schemaless column that changed
        // type) travels as text and DuckDB casts it, or reports the conflict.
        (other, _) => Cell::Owned(other.to_text()),
    }
}

/// Why a row could not be staged, naming the column whose value its staging type refuses.
fn refusal(e: &duckdb::Error, columns: &[Column], stages: &[Stage], cells: &[Cell]) -> String {
    let mismatch = columns
        .iter()
        .zip(stages)
        .zip(cells)
        .find_map(|((c, s), cell)| {
            let text = match cell {
                Cell::Text(t) => *t,
                Cell::Owned(t) => t.as_str(),
                _ => return None,
            };
            matches!(s, Stage::Int | Stage::Float | Stage::Bool).then(|| (c, s, text))
        });
    match mismatch {
        Some((c, s, text)) => {
            let shown: String = text.chars().take(64).collect();
            format!(
                "column {:?} cannot take the value {shown:?}: it is staged as {} ({e})",
                c.name,
                stage_type(*s)
            )
        }
        None => format!("cannot stage a row: {e}"),
    }
}

pub fn stage_rows(
    conn: &Connection,
    stage_table: &str,
    columns: &[Column],
    batch: &TableBatch,
) -> Result<Staged, SinkError> {
    let stages: Vec<Stage> = columns.iter().map(|c| stage_of(&c.ty)).collect();
    let defs: Vec<String> = columns
        .iter()
        .zip(&stages)
        .map(|(c, s)| format!("{} {}", quote_ident(&c.name), stage_type(*s)))
        .collect();
    let mut ddl = format!("CREATE OR REPLACE TEMP TABLE {stage_table} ({META_COLUMNS}");
    for d in &defs {
        ddl.push_str(", ");
        ddl.push_str(d);
    }
    ddl.push(')');
    conn.execute_batch(&ddl)
        .map_err(|e| SinkError::Permanent(format!("cannot create staging table: {e}")))?;

    let mut staged = Staged {
        upserts: 0,
        deletes: 0,
        toast_columns: Vec::new(),
    };
    let mut appender = conn
        .appender_to_catalog_and_db(stage_table, "temp", "main")
        .map_err(|e| SinkError::Transient(format!("cannot open appender: {e}")))?;
    // Map each row's schema positions onto the batch's union of columns once per schema.
    let mut positions: Vec<Option<usize>> = Vec::new();
    let mut last_schema = std::ptr::null();
    let mut cells: Vec<Cell> = Vec::with_capacity(columns.len() + 6);
    for row in &batch.pending {
        let change = &row.change;
        if !std::ptr::eq(last_schema, std::sync::Arc::as_ptr(&change.schema)) {
            last_schema = std::sync::Arc::as_ptr(&change.schema);
            positions = columns
                .iter()
                .map(|c| change.schema.index_of(&c.name))
                .collect();
        }
        let mut toast = String::new();
        cells.clear();
        cells.push(Cell::Text(change.op.code()));
        cells.push(change.source.lsn.map_or(Cell::Null, Cell::Int));
        cells.push(change.source.ts_ms.map_or(Cell::Null, Cell::Int));
        cells.push(Cell::Int(i64::from(row.partition)));
        cells.push(Cell::Int(row.offset));
        cells.push(Cell::Null); // _floe_toast, filled below
        for (i, pos) in positions.iter().enumerate() {
            // A column the change does not carry (dropped at the source, or generated and
            // not streamed) is left as the target holds it, like a TOAST placeholder.
            let (value, mark) = match pos {
                Some(p) => (&change.values[*p], ','),
                None => (&Value::Unavailable, ';'),
            };
            if *value == Value::Unavailable {
                toast.push_str(&format!("{mark}{i}{mark}"));
                if !staged.toast_columns.contains(&i) {
                    staged.toast_columns.push(i);
                }
            }
            cells.push(cell(value, stages[i]));
        }
        if !toast.is_empty() {
            cells[5] = Cell::Owned(toast);
        }
        appender
            .append_row(duckdb::appender_params_from_iter(cells.iter()))
            .map_err(|e| SinkError::Refused(refusal(&e, columns, &stages, &cells[6..])))?;
        match change.op {
            Op::Delete => staged.deletes += 1,
            _ => staged.upserts += 1,
        }
    }
    appender
        .flush()
        .map_err(|e| SinkError::Refused(format!("cannot stage rows: {e}")))?;
    Ok(staged)
}
