//! The Snowflake sink: each flush stages every table's rows as JSON into a temporary
//! table, then runs one MERGE per table and the offsets update in one transaction.
//!
//! Snowflake commits an open transaction before any DDL, so tables, added columns and
//! staging tables are created first; the transaction holds DML only.

mod client;
pub mod sql;

use crate::telemetry::trace::merge_span;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::batch::{Batch, TableBatch};
use crate::change::{Column, ColumnType};
use crate::config::SnowflakeConfig;

use super::{ApplyCounts, OffsetReader, Sink, SinkError, StoredOffsets};
pub use client::{Client, TextRows};
use sql::{quote_ident, string_literal, target_type};

const OFFSETS_TABLE: &str = "_FLOE_OFFSETS";

pub struct SnowflakeSink {
    client: Client,
    soft_delete: bool,
    max_statement_bytes: usize,
    /// Known columns of each target table (quoted identifiers: names compare exactly).
    tables: HashMap<String, Vec<HeldColumn>>,
    /// Staging tables are `{stage_prefix}_{n}`.
    stage_prefix: String,
}

/// A column of a target table, with its type where floe can widen it.
#[derive(Clone)]
struct HeldColumn {
    name: String,
    ty: Option<ColumnType>,
}

/// A table's rows, staged and ready to MERGE.
struct Prepared {
    stage: String,
    columns: Vec<Column>,
    key: Vec<String>,
    toast_columns: Vec<usize>,
    counts: ApplyCounts,
}

impl SnowflakeSink {
    pub fn open(config: &SnowflakeConfig, soft_delete: bool) -> Result<Self, SinkError> {
        let mut client = Client::new(config)?;
        client.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (
                TOPIC VARCHAR NOT NULL,
                KAFKA_PARTITION NUMBER(10,0) NOT NULL,
                NEXT_OFFSET NUMBER(19,0) NOT NULL,
                UPDATED_AT TIMESTAMP_TZ,
                PRIMARY KEY (TOPIC, KAFKA_PARTITION))"
        ))?;
        Ok(Self {
            client,
            soft_delete,
            max_statement_bytes: config.max_statement_bytes,
            tables: HashMap::new(),
            // Temporary tables are private to a session in Snowflake; a name of its own
            // keeps the sessions of a cluster apart where they are not (the emulator).
            stage_prefix: format!("_FLOE_STAGE_{:08X}", rand::random::<u32>()),
        })
    }

    fn table_columns(&mut self, table: &str) -> Result<Option<Vec<HeldColumn>>, SinkError> {
        if let Some(cols) = self.tables.get(table) {
            return Ok(Some(cols.clone()));
        }
        let cols: Vec<HeldColumn> = self
            .client
            .query_text(&format!(
                "SELECT column_name, data_type, TO_VARCHAR(numeric_precision),
                        TO_VARCHAR(numeric_scale)
                 FROM information_schema.columns
                 WHERE table_schema = CURRENT_SCHEMA() AND table_name = {}
                 ORDER BY ordinal_position",
                string_literal(table)
            ))?
            .into_iter()
            .filter_map(|r| match r.as_slice() {
                [Some(name), data_type, precision, scale] => {
                    let number = |n: &Option<String>| n.as_deref().and_then(|n| n.parse().ok());
                    Some(HeldColumn {
                        name: name.clone(),
                        ty: data_type
                            .as_deref()
                            .and_then(|t| sql::held_type(t, number(precision), number(scale))),
                    })
                }
                _ => None,
            })
            .collect();
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
        let Some(mut existing) = self.table_columns(table)? else {
            self.client
                .execute(&sql::create_table(table, columns, self.soft_delete))?;
            tracing::info!(table, columns = columns.len(), "created target table");
            self.tables.remove(table);
            return Ok(columns.to_vec());
        };
        if self.finish_rebuilds(table, &existing)? {
            self.tables.remove(table);
            existing = self.table_columns(table)?.unwrap_or_default();
        }
        let mut held = Vec::with_capacity(columns.len());
        for c in columns {
            match existing.iter().find(|e| e.name == c.name) {
                Some(e) => held.push(self.widen(table, c, e)?),
                None => {
                    self.client.execute(&format!(
                        "ALTER TABLE {} ADD COLUMN {} {}",
                        quote_ident(table),
                        quote_ident(&c.name),
                        target_type(&c.ty)
                    ))?;
                    tracing::info!(table, column = %c.name, "added column");
                    held.push(c.clone());
                }
            }
        }
        self.tables.remove(table);
        Ok(held)
    }

    /// The column `c` as the target holds it, after widening the target's column when the
    /// change carries a wider type.
    fn widen(&mut self, table: &str, c: &Column, held: &HeldColumn) -> Result<Column, SinkError> {
        let Some(held_ty) = &held.ty else {
            return Ok(c.clone());
        };
        let (column, alter) = super::fit_column(c, held_ty, target_type);
        if let Some(wider) = alter {
            for statement in sql::widen_column(table, &c.name, held_ty, &wider) {
                self.client.execute(&statement)?;
            }
            tracing::info!(table, column = %c.name, from = %target_type(held_ty),
                to = %target_type(&wider), "widened column");
        }
        Ok(column)
    }

    /// Completes a column rebuild a crash interrupted: the new column replaces the old
    /// one if the old one is gone, and is dropped (the rebuild runs again) if not.
    fn finish_rebuilds(&mut self, table: &str, existing: &[HeldColumn]) -> Result<bool, SinkError> {
        let mut changed = false;
        for e in existing {
            let Some(original) = e.name.strip_suffix(sql::REBUILD_SUFFIX) else {
                continue;
            };
            let statement = if existing.iter().any(|o| o.name == original) {
                format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    quote_ident(table),
                    quote_ident(&e.name)
                )
            } else {
                format!(
                    "ALTER TABLE {} RENAME COLUMN {} TO {}",
                    quote_ident(table),
                    quote_ident(&e.name),
                    quote_ident(original)
                )
            };
            self.client.execute(&statement)?;
            tracing::warn!(
                table,
                column = original,
                "finished an interrupted column rebuild"
            );
            changed = true;
        }
        Ok(changed)
    }

    /// Creates or extends the target and fills a staging table with the rows (DDL: runs
    /// before the transaction).
    fn prepare(
        &mut self,
        index: usize,
        table: &str,
        rows: &TableBatch,
    ) -> Result<Prepared, SinkError> {
        let columns = self.ensure_table(table, &rows.columns())?;
        let stage = format!("{}_{index}", self.stage_prefix);
        let staged = sql::stage_rows(&columns, rows, self.max_statement_bytes);
        for (n, document) in staged.documents.iter().enumerate() {
            let select = sql::stage_select(&columns, document);
            let statement = if n == 0 {
                format!("CREATE OR REPLACE TEMPORARY TABLE {stage} AS {select}")
            } else {
                format!("INSERT INTO {stage} {select}")
            };
            self.client.execute(&statement)?;
        }
        Ok(Prepared {
            stage,
            key: rows.key_columns(),
            columns,
            toast_columns: staged.toast_columns,
            counts: ApplyCounts {
                upserts: staged.upserts,
                deletes: staged.deletes,
                ..ApplyCounts::default()
            },
        })
    }

    fn merge(&mut self, table: &str, p: &Prepared) -> Result<ApplyCounts, SinkError> {
        let mut counts = p.counts;
        if !p.toast_columns.is_empty() {
            let rows = self.client.query_text(&format!(
                "SELECT TO_VARCHAR(COUNT(*)) FROM {} s
                 WHERE CONTAINS(s._FLOE_TOAST, ',') AND s._FLOE_OP <> 'd'
                   AND NOT EXISTS (SELECT 1 FROM {} t WHERE {})",
                p.stage,
                quote_ident(table),
                sql::key_match(&p.key)
            ))?;
            counts.toast_missing = rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if counts.toast_missing > 0 {
                tracing::warn!(
                    table,
                    rows = counts.toast_missing,
                    "TOAST placeholder for rows the target does not hold; written as NULL"
                );
            }
        }
        for fill in sql::fill_toast(table, &p.stage, &p.columns, &p.key, &p.toast_columns) {
            self.client.execute(&fill)?;
        }
        self.client.execute(&sql::merge(
            table,
            &p.stage,
            &p.columns,
            &p.key,
            self.soft_delete,
        ))?;
        Ok(counts)
    }

    fn store_offsets(&mut self, batch: &Batch) -> Result<(), SinkError> {
        if batch.offsets.is_empty() {
            return Ok(());
        }
        let source = batch
            .offsets
            .iter()
            .map(|((topic, partition), next)| {
                format!(
                    "SELECT {} AS TOPIC, {partition} AS KAFKA_PARTITION, {next} AS NEXT_OFFSET",
                    string_literal(topic)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        self.client.execute(&format!(
            "MERGE INTO {OFFSETS_TABLE} AS o USING ({source}) AS s
             ON o.TOPIC = s.TOPIC AND o.KAFKA_PARTITION = s.KAFKA_PARTITION
             WHEN MATCHED THEN UPDATE SET
               NEXT_OFFSET = GREATEST(o.NEXT_OFFSET, s.NEXT_OFFSET), UPDATED_AT = CURRENT_TIMESTAMP()
             WHEN NOT MATCHED THEN INSERT (TOPIC, KAFKA_PARTITION, NEXT_OFFSET, UPDATED_AT)
               VALUES (s.TOPIC, s.KAFKA_PARTITION, s.NEXT_OFFSET, CURRENT_TIMESTAMP())"
        ))
    }

    /// Runs `work` between BEGIN and COMMIT (or always ROLLBACK when `keep` is false).
    fn in_transaction<T>(
        &mut self,
        keep: bool,
        work: impl FnOnce(&mut Self) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        self.client.execute("BEGIN TRANSACTION")?;
        let result = work(self);
        let end = if keep && result.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        match (result, self.client.execute(end)) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
        }
    }
}

impl Sink for SnowflakeSink {
    fn apply(&mut self, batch: &Batch) -> Result<ApplyCounts, SinkError> {
        let result = self.apply_batch(batch);
        if result.is_err() {
            // The target may have changed under a failed statement: read columns again.
            self.tables.clear();
        }
        result
    }

    fn check(&mut self, table: &str, rows: &TableBatch) -> Result<(), SinkError> {
        let prepared = self.prepare(0, table, rows)?;
        self.in_transaction(false, |sink| sink.merge(table, &prepared).map(|_| ()))
    }

    fn stored_offsets(&mut self) -> Result<StoredOffsets, SinkError> {
        read_offsets(&mut self.client)
    }

    fn offset_reader(&self) -> Result<Box<dyn OffsetReader>, SinkError> {
        Ok(Box::new(SnowflakeOffsetReader(Mutex::new(
            self.client.another()?,
        ))))
    }
}

impl SnowflakeSink {
    /// Creates tables and stages every table's rows, then applies the truncates, MERGEs
    /// and offsets in one transaction.
    fn apply_batch(&mut self, batch: &Batch) -> Result<ApplyCounts, SinkError> {
        let mut prepared = Vec::new();
        for (index, (table, rows)) in batch.tables.iter().enumerate() {
            prepared.push((table, rows, self.prepare(index, table, rows)?));
        }
        let mut truncated = Vec::new();
        for table in &batch.truncates {
            if self.table_columns(table)?.is_some() {
                truncated.push(table);
            }
        }
        self.in_transaction(true, |sink| {
            let mut total = ApplyCounts::default();
            for table in &truncated {
                sink.client
                    .execute(&format!("DELETE FROM {}", quote_ident(table)))?;
                total.truncates += 1;
            }
            for (table, rows, p) in &prepared {
                let _span = merge_span("snowflake", table, rows).entered();
                let c = sink.merge(table, p)?;
                total.upserts += c.upserts;
                total.deletes += c.deletes;
                total.toast_missing += c.toast_missing;
            }
            sink.store_offsets(batch)?;
            Ok(total)
        })
    }
}

impl Drop for SnowflakeSink {
    fn drop(&mut self) {
        self.client.close();
    }
}

fn read_offsets(client: &mut Client) -> Result<StoredOffsets, SinkError> {
    let rows = client.query_text(&format!(
        "SELECT TOPIC, TO_VARCHAR(KAFKA_PARTITION), TO_VARCHAR(NEXT_OFFSET) FROM {OFFSETS_TABLE} ORDER BY 1, 2"
    ))?;
    rows.into_iter()
        .map(|r| match r.as_slice() {
            [Some(topic), Some(partition), Some(next)] => match (partition.parse(), next.parse()) {
                (Ok(p), Ok(n)) => Ok((topic.clone(), p, n)),
                _ => Err(SinkError::Permanent(format!(
                    "{OFFSETS_TABLE} holds a row that is not an offset: {r:?}"
                ))),
            },
            _ => Err(SinkError::Permanent(format!(
                "{OFFSETS_TABLE} holds a row that is not an offset: {r:?}"
            ))),
        })
        .collect()
}

struct SnowflakeOffsetReader(Mutex<Client>);

impl OffsetReader for SnowflakeOffsetReader {
    fn stored_offsets(&self) -> Result<StoredOffsets, SinkError> {
        let mut client = self
            .0
            .lock()
            .map_err(|_| SinkError::Transient("offset reader lock poisoned".into()))?;
        read_offsets(&mut client)
    }
}
