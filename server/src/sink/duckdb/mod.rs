//! The embedded default sink: a DuckDB file, loaded with one MERGE per table per flush.

mod sql;
mod stage;

use crate::telemetry::trace::merge_span;
use duckdb::Connection;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use crate::batch::{Batch, TableBatch};
use crate::change::Column;
use crate::config::DuckDbConfig;

use super::{ApplyCounts, OffsetReader, Sink, SinkError, StoredOffsets};
use sql::{column_type, convert, quote_ident, target_type};

const OFFSETS_TABLE: &str = "_floe_offsets";
const STAGE_TABLE: &str = "_floe_stage";

/// Metadata columns every target table carries, with their types.
const METADATA: &[(&str, &str)] = &[
    ("_floe_op", "VARCHAR"),
    ("_floe_lsn", "BIGINT"),
    ("_floe_source_ts", "TIMESTAMPTZ"),
    ("_floe_loaded_at", "TIMESTAMPTZ"),
    ("_floe_partition", "INTEGER"),
    ("_floe_offset", "BIGINT"),
];

pub struct DuckDbSink {
    conn: Connection,
    soft_delete: bool,
    /// Known columns of each target table with their DuckDB types (lower-cased names are
    /// not assumed: DuckDB matches identifiers case-insensitively, so lookups compare that
    /// way too).
    tables: HashMap<String, Vec<(String, String)>>,
    /// The file's write-ahead log, and the size at which floe checkpoints it.
    wal: PathBuf,
    checkpoint_wal_bytes: u64,
}

fn transient(e: duckdb::Error) -> SinkError {
    SinkError::Transient(e.to_string())
}

/// DuckDB names its error classes: values it cannot take, statements it cannot run, and
/// the rest (I/O, locks), which a retry may fix.
fn classify(e: duckdb::Error) -> SinkError {
    let text = e.to_string();
    let has = |classes: &[&str]| classes.iter().any(|p| text.contains(p));
    if has(&[
        "Conversion Error",
        "Invalid Input Error",
        "Constraint Error",
        "Out of Range Error",
    ]) {
        SinkError::Refused(text)
    } else if has(&["Binder Error", "Parser Error", "Catalog Error"]) {
        SinkError::Permanent(text)
    } else {
        SinkError::Transient(text)
    }
}

impl DuckDbSink {
    pub fn open(config: &DuckDbConfig, soft_delete: bool) -> Result<Self, SinkError> {
        let path = &config.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                SinkError::Permanent(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| {
            SinkError::Permanent(format!("cannot open DuckDB file {}: {e}", path.display()))
        })?;
        // Instants are stored and shown in UTC whatever the host's zone (needs ICU; without
        // it DuckDB already works in UTC).
        let _ = conn.execute_batch("SET TimeZone = 'UTC'");
        // A checkpoint of a large table takes hundreds of milliseconds whatever the log's
        // size; DuckDB would take it inside a commit, floe takes it after one. DuckDB's
        // own trigger stays as a backstop, far off: it counts an UPDATE's log at several
        // times its bytes on disk.
        let wal_mib = config.checkpoint_wal_mib.max(1);
        conn.execute_batch(&format!(
            "SET checkpoint_threshold = '{}MiB'",
            wal_mib.saturating_mul(16)
        ))
        .map_err(classify)?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (
                topic VARCHAR NOT NULL,
                \"partition\" INTEGER NOT NULL,
                next_offset BIGINT NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (topic, \"partition\"))"
        ))
        .map_err(classify)?;
        let mut wal = path.clone().into_os_string();
        wal.push(".wal");
        Ok(Self {
            conn,
            soft_delete,
            tables: HashMap::new(),
            wal: PathBuf::from(wal),
            checkpoint_wal_bytes: wal_mib << 20,
        })
    }

    /// The write-ahead log's size on disk (0 when DuckDB has none open).
    fn wal_bytes(&self) -> u64 {
        std::fs::metadata(&self.wal).map_or(0, |m| m.len())
    }

    fn table_columns(&mut self, table: &str) -> Result<Option<Vec<(String, String)>>, SinkError> {
        if let Some(cols) = self.tables.get(table) {
            return Ok(Some(cols.clone()));
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT column_name, data_type FROM information_schema.columns
                 WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            )
            .map_err(transient)?;
        let cols: Vec<(String, String)> = stmt
            .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(transient)?
            .collect::<Result<_, _>>()
            .map_err(transient)?;
        if cols.is_empty() {
            return Ok(None);
        }
        self.tables.insert(table.to_string(), cols.clone());
        Ok(Some(cols))
    }

    /// Creates the table from the batch's columns, or adds the columns it lacks and widens
    /// those whose type the source widened. Returns the batch's columns typed as the
    /// target now holds them.
    fn ensure_table(&mut self, table: &str, columns: &[Column]) -> Result<Vec<Column>, SinkError> {
        let ident = quote_ident(table);
        match self.table_columns(table)? {
            None => {
                let mut defs: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{} {}", quote_ident(&c.name), target_type(&c.ty)))
                    .collect();
                defs.extend(METADATA.iter().map(|(n, t)| format!("{n} {t}")));
                if self.soft_delete {
                    defs.push("_floe_deleted BOOLEAN NOT NULL DEFAULT false".into());
                }
                self.conn
                    .execute_batch(&format!(
                        "CREATE TABLE IF NOT EXISTS {ident} ({})",
                        defs.join(", ")
                    ))
                    .map_err(classify)?;
                tracing::info!(table, columns = columns.len(), "created target table");
                Ok(columns.to_vec())
            }
            Some(existing) => {
                let mut held = Vec::with_capacity(columns.len());
                for c in columns {
                    if let Some((_, held_type)) = existing
                        .iter()
                        .find(|(e, _)| e.eq_ignore_ascii_case(&c.name))
                    {
                        held.push(self.widen_column(table, c, held_type)?);
                        continue;
                    }
                    self.conn
                        .execute_batch(&format!(
                            "ALTER TABLE {ident} ADD COLUMN {} {}",
                            quote_ident(&c.name),
                            target_type(&c.ty)
                        ))
                        .map_err(classify)?;
                    tracing::info!(table, column = %c.name, "added column");
                    // Read again on the next batch.
                    self.tables.remove(table);
                    held.push(c.clone());
                }
                Ok(held)
            }
        }
    }

    /// The column `c` as the target holds it, after widening the target's column when the
    /// change carries a wider type.
    fn widen_column(
        &mut self,
        table: &str,
        c: &Column,
        held_type: &str,
    ) -> Result<Column, SinkError> {
        // A type floe did not create (a user's own ALTER) is left to DuckDB's casts.
        let Some(held) = column_type(held_type) else {
            return Ok(c.clone());
        };
        let (column, alter) = super::fit_column(c, &held, target_type);
        if let Some(wider) = alter {
            let wider_type = target_type(&wider);
            self.conn
                .execute_batch(&format!(
                    "ALTER TABLE {} ALTER COLUMN {} TYPE {wider_type}",
                    quote_ident(table),
                    quote_ident(&c.name)
                ))
                .map_err(classify)?;
            tracing::info!(table, column = %c.name, from = held_type, to = %wider_type, "widened column");
            self.tables.remove(table);
        }
        Ok(column)
    }

    fn merge_table(
        &mut self,
        table: &str,
        batch: &TableBatch,
        columns: &[Column],
    ) -> Result<ApplyCounts, SinkError> {
        let key = batch.key_columns();
        let staged = stage::stage_rows(&self.conn, STAGE_TABLE, columns, batch)?;
        let mut counts = ApplyCounts {
            upserts: staged.upserts,
            deletes: staged.deletes,
            ..ApplyCounts::default()
        };
        let target = quote_ident(table);
        // Staged keys are compared in the target's type (a DECIMAL key travels as text).
        let on = key
            .iter()
            .map(|k| {
                let ident = quote_ident(k);
                match columns.iter().find(|c| &c.name == k) {
                    Some(c) => format!("t.{ident} = {}", convert(&format!("s.{ident}"), &c.ty)),
                    None => format!("t.{ident} = s.{ident}"),
                }
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        if !staged.toast_columns.is_empty() {
            counts.toast_missing = self.count_toast_missing(&target, &on)?;
            if counts.toast_missing > 0 {
                tracing::warn!(
                    table,
                    rows = counts.toast_missing,
                    "TOAST placeholder for rows the target does not hold; written as NULL"
                );
            }
        }
        let statement = merge_statement(
            &target,
            &on,
            columns,
            &staged.toast_columns,
            self.soft_delete,
        );
        self.conn.execute_batch(&statement).map_err(classify)?;
        self.conn
            .execute_batch(&format!("DROP TABLE temp.main.{STAGE_TABLE}"))
            .map_err(transient)?;
        Ok(counts)
    }

    fn count_toast_missing(&self, target: &str, on: &str) -> Result<u64, SinkError> {
        let sql = format!(
            "SELECT count(*) FROM temp.main.{STAGE_TABLE} s
             WHERE contains(coalesce(s._floe_toast, ''), ',') AND s._floe_op <> 'd'
               AND NOT EXISTS (SELECT 1 FROM {target} t WHERE {on})"
        );
        self.conn
            .query_row(&sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(classify)
    }

    fn apply_in_transaction(&mut self, batch: &Batch) -> Result<ApplyCounts, SinkError> {
        let mut total = ApplyCounts::default();
        // Tables are altered before any is emptied: DuckDB refuses to commit an ALTER of
        // a table this transaction has already deleted from.
        let mut held = Vec::with_capacity(batch.tables.len());
        for (table, rows) in &batch.tables {
            held.push(self.ensure_table(table, &rows.columns())?);
        }
        for table in &batch.truncates {
            if self.table_columns(table)?.is_some() {
                self.conn
                    .execute_batch(&format!("DELETE FROM {}", quote_ident(table)))
                    .map_err(classify)?;
                total.truncates += 1;
            }
        }
        for ((table, rows), columns) in batch.tables.iter().zip(&held) {
            let _span = merge_span("duckdb", table, rows).entered();
            let c = self.merge_table(table, rows, columns)?;
            total.upserts += c.upserts;
            total.deletes += c.deletes;
            total.toast_missing += c.toast_missing;
        }
        // Planned once: a flush's fixed cost is what small, frequent batches pay for.
        let mut store_offset = self
            .conn
            .prepare_cached(&format!(
                "INSERT INTO {OFFSETS_TABLE} VALUES (?, ?, ?, now())
                 ON CONFLICT (topic, \"partition\") DO UPDATE SET
                   next_offset = greatest({OFFSETS_TABLE}.next_offset, excluded.next_offset),
                   updated_at = excluded.updated_at"
            ))
            .map_err(classify)?;
        for ((topic, partition), next) in &batch.offsets {
            store_offset
                .execute(duckdb::params![&**topic, partition, next])
                .map_err(classify)?;
        }
        Ok(total)
    }
}

fn merge_statement(
    target: &str,
    on: &str,
    columns: &[Column],
    toast_columns: &[usize],
    soft_delete: bool,
) -> String {
    // A change is applied only when it is not older than the row's stored position:
    // a replay never moves a row backwards.
    let newer = "(coalesce(s._floe_lsn, -1) > coalesce(t._floe_lsn, -1) \
         OR (coalesce(s._floe_lsn, -1) = coalesce(t._floe_lsn, -1) \
             AND (s._floe_partition <> t._floe_partition OR s._floe_offset >= t._floe_offset)))";
    let value = |i: usize, c: &Column, on_missing: &str| -> String {
        let staged = format!("s.{}", quote_ident(&c.name));
        let converted = convert(&staged, &c.ty);
        if toast_columns.contains(&i) {
            format!(
                "CASE WHEN contains(coalesce(s._floe_toast, ''), ',{i},') \
                 OR contains(coalesce(s._floe_toast, ''), ';{i};') THEN {on_missing} ELSE {converted} END"
            )
        } else {
            converted
        }
    };
    let metadata_names: Vec<&str> = METADATA.iter().map(|(n, _)| *n).collect();
    let metadata_exprs = [
        "s._floe_op",
        "s._floe_lsn",
        "CAST(make_timestamp(s._floe_source_ts * 1000) AS TIMESTAMPTZ)",
        "now()",
        "s._floe_partition",
        "s._floe_offset",
    ];
    let mut sets: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let current = format!("t.{}", quote_ident(&c.name));
            format!("{} = {}", quote_ident(&c.name), value(i, c, &current))
        })
        .collect();
    for (name, expr) in metadata_names.iter().zip(&metadata_exprs) {
        sets.push(format!("{name} = {expr}"));
    }
    let mut insert_names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    insert_names.extend(metadata_names.iter().map(|n| n.to_string()));
    let mut insert_values: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| value(i, c, "NULL"))
        .collect();
    insert_values.extend(metadata_exprs.iter().map(|e| e.to_string()));
    let delete = if soft_delete {
        sets_for_soft_delete(&metadata_names, &metadata_exprs)
    } else {
        "DELETE".to_string()
    };
    // With soft deletes a key the target never held is still inserted when deleted, as a
    // deleted row: it keeps the delete's position, so an older change replayed later
    // cannot bring the row back.
    let insert_when = if soft_delete {
        sets.push("_floe_deleted = false".into());
        insert_names.push("_floe_deleted".into());
        insert_values.push("s._floe_op = 'd'".into());
        ""
    } else {
        "AND s._floe_op <> 'd' "
    };
    format!(
        "MERGE INTO {target} AS t USING temp.main.{STAGE_TABLE} AS s ON ({on})
         WHEN MATCHED AND s._floe_op = 'd' AND {newer} THEN {delete}
         WHEN MATCHED AND s._floe_op <> 'd' AND {newer} THEN UPDATE SET {}
         WHEN NOT MATCHED {insert_when}THEN INSERT ({}) VALUES ({})",
        sets.join(", "),
        insert_names.join(", "),
        insert_values.join(", "),
    )
}

fn sets_for_soft_delete(names: &[&str], exprs: &[&str]) -> String {
    let mut sets: Vec<String> = names
        .iter()
        .zip(exprs)
        .map(|(n, e)| format!("{n} = {e}"))
        .collect();
    sets.push("_floe_deleted = true".into());
    format!("UPDATE SET {}", sets.join(", "))
}

impl Sink for DuckDbSink {
    fn apply(&mut self, batch: &Batch) -> Result<ApplyCounts, SinkError> {
        self.conn
            .execute_batch("BEGIN TRANSACTION")
            .map_err(transient)?;
        match self.apply_in_transaction(batch) {
            Ok(counts) => {
                if let Err(e) = self.conn.execute_batch("COMMIT") {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.tables.clear();
                    return Err(classify(e));
                }
                Ok(counts)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                // Columns added inside the rolled-back transaction are gone again.
                self.tables.clear();
                Err(e)
            }
        }
    }

    fn check(&mut self, table: &str, rows: &TableBatch) -> Result<(), SinkError> {
        self.conn
            .execute_batch("BEGIN TRANSACTION")
            .map_err(transient)?;
        let result = self
            .ensure_table(table, &rows.columns())
            .and_then(|columns| self.merge_table(table, rows, &columns))
            .map(|_| ());
        let _ = self.conn.execute_batch("ROLLBACK");
        // Columns the check added are gone again.
        self.tables.clear();
        result
    }

    fn stored_offsets(&mut self) -> Result<StoredOffsets, SinkError> {
        read_offsets(&self.conn)
    }

    fn after_commit(&mut self) {
        let wal_bytes = self.wal_bytes();
        if wal_bytes < self.checkpoint_wal_bytes {
            return;
        }
        let started = Instant::now();
        // Fails while another connection (a `floe query`, the offset reader) is in a
        // transaction; the next commit tries again.
        match self.conn.execute_batch("CHECKPOINT") {
            Ok(()) => tracing::debug!(
                wal_bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "checkpointed"
            ),
            Err(e) => tracing::warn!(wal_bytes, error = %e, "checkpoint deferred"),
        }
    }

    fn offset_reader(&self) -> Result<Box<dyn OffsetReader>, SinkError> {
        let conn = self.conn.try_clone().map_err(transient)?;
        Ok(Box::new(DuckDbOffsetReader(Mutex::new(conn))))
    }
}

fn read_offsets(conn: &Connection) -> Result<StoredOffsets, SinkError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT topic, \"partition\", next_offset FROM {OFFSETS_TABLE} ORDER BY 1, 2"
        ))
        .map_err(transient)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(transient)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(transient)?;
    Ok(rows)
}

struct DuckDbOffsetReader(Mutex<Connection>);

impl OffsetReader for DuckDbOffsetReader {
    fn stored_offsets(&self) -> Result<StoredOffsets, SinkError> {
        let conn = self
            .0
            .lock()
            .map_err(|_| SinkError::Transient("offset reader lock poisoned".into()))?;
        read_offsets(&conn)
    }
}

#[cfg(test)]
mod tests;
