//! Micro-batches: the changes held between two flushes, deduplicated per table and key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::change::{Column, Op, RowChange, Value};
use crate::dlq::DeadLetter;
use crate::telemetry::trace::BatchTrace;
use crate::transform::Staged;

/// The last change of one key within a batch, with the Kafka position it came from.
#[derive(Debug, Clone)]
pub struct PendingRow {
    pub change: RowChange,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// The changes of one table, one per key.
#[derive(Debug, Default)]
pub struct TableBatch {
    rows: HashMap<String, usize>,
    pub pending: Vec<PendingRow>,
    /// Columns of the batch this one was cut from: a part must create or extend the
    /// target exactly as the whole would.
    columns_of_whole: Option<Vec<Column>>,
}

impl TableBatch {
    /// Every column any row of the batch carries, in order of first appearance.
    pub fn columns(&self) -> Vec<Column> {
        if let Some(columns) = &self.columns_of_whole {
            return columns.clone();
        }
        let mut out: Vec<Column> = Vec::new();
        let mut last_schema: Option<*const crate::change::TableSchema> = None;
        for row in &self.pending {
            let schema = &row.change.schema;
            // Rows of one topic share their schema Arc; skip the scan when unchanged.
            if last_schema == Some(Arc::as_ptr(schema)) {
                continue;
            }
            last_schema = Some(Arc::as_ptr(schema));
            for column in &schema.columns {
                match out.iter_mut().find(|c| c.name == column.name) {
                    // A type the source altered mid-batch: the sink holds both as the wider
                    // one, or refuses the rows when none holds both.
                    Some(seen) => {
                        if let Some(wider) = seen.ty.widen(&column.ty) {
                            seen.ty = wider;
                        }
                    }
                    None => out.push(column.clone()),
                }
            }
        }
        out
    }

    /// Key column names, taken from the newest row.
    pub fn key_columns(&self) -> Vec<String> {
        self.pending
            .last()
            .map(|r| {
                r.change
                    .schema
                    .key
                    .iter()
                    .map(|&i| r.change.schema.columns[i].name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A part of `whole`: exactly these of its rows, with its columns.
    pub fn part_of(whole: &TableBatch, rows: &[PendingRow]) -> Self {
        let mut table = Self {
            rows: HashMap::new(),
            pending: rows.to_vec(),
            columns_of_whole: Some(whole.columns()),
        };
        table.retain(|_| true);
        table
    }

    /// Keeps only the rows `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&PendingRow) -> bool) {
        self.pending.retain(|r| keep(r));
        self.rows = self
            .pending
            .iter()
            .enumerate()
            .map(|(i, r)| (r.change.key_repr(), i))
            .collect();
    }

    fn add(&mut self, change: RowChange, topic: &Arc<str>, partition: i32, offset: i64) {
        let key = change.key_repr();
        let row = PendingRow {
            change,
            topic: topic.clone(),
            partition,
            offset,
        };
        match self.rows.get(&key) {
            Some(&idx) => {
                let older = std::mem::replace(&mut self.pending[idx], row);
                fill_unavailable(&mut self.pending[idx].change, &older.change);
                carry_absent_columns(&mut self.pending[idx].change, &older.change);
            }
            None => {
                self.rows.insert(key, self.pending.len());
                self.pending.push(row);
            }
        }
    }
}

/// A TOASTed column in a newer change keeps the value an older change of the same batch
/// set, so that deduplication never loses an update the target has not seen.
fn fill_unavailable(newer: &mut RowChange, older: &RowChange) {
    if older.op == Op::Delete || !newer.values.contains(&Value::Unavailable) {
        return;
    }
    for (i, value) in newer.values.iter_mut().enumerate() {
        if *value != Value::Unavailable {
            continue;
        }
        let name = &newer.schema.columns[i].name;
        if let Some(j) = older.schema.index_of(name) {
            *value = older.values[j].clone();
        }
    }
}

/// A column an older change of the batch carried and the newer one lacks (dropped at the
/// source since, or generated and not streamed) keeps the older value: the target keeps
/// a column a change does not carry, and deduplication must not lose the older change's.
fn carry_absent_columns(newer: &mut RowChange, older: &RowChange) {
    if older.op == Op::Delete || Arc::ptr_eq(&newer.schema, &older.schema) {
        return;
    }
    let absent: Vec<usize> = (0..older.schema.columns.len())
        .filter(|&j| {
            newer
                .schema
                .index_of(&older.schema.columns[j].name)
                .is_none()
        })
        .collect();
    if absent.is_empty() {
        return;
    }
    let mut schema = (*newer.schema).clone();
    for j in absent {
        schema.columns.push(older.schema.columns[j].clone());
        newer.values.push(older.values[j].clone());
    }
    newer.schema = Arc::new(schema);
}

/// Everything one flush applies, in one sink transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub tables: BTreeMap<Arc<str>, TableBatch>,
    /// Tables truncated at the source; emptied before this batch's rows are merged.
    pub truncates: BTreeSet<Arc<str>>,
    /// Changes of validated tables, by source table in source order, not yet validated:
    /// a validator sees every change, so deduplication waits for its verdicts.
    pub staged: BTreeMap<Arc<str>, Vec<Staged>>,
    /// Records this batch sends to the DLQ; acknowledged before its offsets are stored.
    pub dead_letters: Vec<DeadLetter>,
    /// Per (topic, partition): the next offset to consume once this batch is applied.
    pub offsets: BTreeMap<(Arc<str>, i32), i64>,
    /// Messages this batch accounts for, loaded or skipped.
    pub messages: usize,
    /// Row changes added (before deduplication).
    pub row_events: usize,
    pub started: Option<Instant>,
    /// Its spans, opened by its first message.
    pub trace: BatchTrace,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Records that a message was handled, whatever it carried.
    pub fn advance(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
        self.started.get_or_insert_with(Instant::now);
        self.messages += 1;
        let next = self.offsets.entry((topic.clone(), partition)).or_insert(0);
        *next = (*next).max(offset + 1);
    }

    pub fn add_row(&mut self, change: RowChange, topic: &Arc<str>, partition: i32, offset: i64) {
        self.row_events += 1;
        self.tables
            .entry(change.table.clone())
            .or_default()
            .add(change, topic, partition, offset);
    }

    /// A change for the validator of `source_table`.
    pub fn stage(&mut self, source_table: Arc<str>, staged: Staged) {
        self.row_events += 1;
        self.staged.entry(source_table).or_default().push(staged);
    }

    /// Rows merged earlier in this batch are dropped: the truncate erases them anyway
    /// (so do changes staged before it, unvalidated).
    pub fn truncate(&mut self, source_table: &str, target: Arc<str>) {
        self.staged.remove(source_table);
        self.tables.remove(&target);
        self.truncates.insert(target);
    }

    /// Distinct rows across tables.
    pub fn rows(&self) -> usize {
        self.tables.values().map(|t| t.pending.len()).sum()
    }

    pub fn age_ms(&self) -> u128 {
        self.started.map_or(0, |s| s.elapsed().as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ColumnType, SourcePosition, TableSchema};

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int64,
                },
                Column {
                    name: "bio".into(),
                    ty: ColumnType::Text,
                },
                Column {
                    name: "n".into(),
                    ty: ColumnType::Int64,
                },
            ],
            key: vec![0],
        })
    }

    fn change(op: Op, id: i64, bio: Value, n: i64) -> RowChange {
        RowChange {
            table: "t".into(),
            op,
            schema: schema(),
            values: vec![Value::Int(id), bio, Value::Int(n)],
            source: SourcePosition::default(),
        }
    }

    #[test]
    fn last_change_per_key_wins() {
        let mut b = Batch::default();
        let topic: Arc<str> = "x".into();
        for (off, (op, id, n)) in [
            (Op::Insert, 1, 1),
            (Op::Update, 1, 2),
            (Op::Insert, 2, 9),
            (Op::Delete, 1, 0),
        ]
        .into_iter()
        .enumerate()
        {
            b.advance(&topic, 0, off as i64);
            b.add_row(change(op, id, Value::Null, n), &topic, 0, off as i64);
        }
        let t = &b.tables["t"];
        assert_eq!(t.pending.len(), 2);
        assert_eq!(t.pending[0].change.op, Op::Delete);
        assert_eq!(t.pending[0].offset, 3);
        assert_eq!(b.offsets[&(topic, 0)], 4);
        assert_eq!(b.row_events, 4);
    }

    #[test]
    fn delete_then_insert_ends_present() {
        let mut b = Batch::default();
        b.add_row(change(Op::Delete, 1, Value::Null, 0), &"x".into(), 0, 0);
        b.add_row(
            change(Op::Insert, 1, Value::Text("x".into()), 5),
            &"x".into(),
            0,
            1,
        );
        let row = &b.tables["t"].pending[0];
        assert_eq!(row.change.op, Op::Insert);
        assert_eq!(row.change.values[2], Value::Int(5));
    }

    #[test]
    fn toast_placeholder_takes_value_from_earlier_change_in_batch() {
        let mut b = Batch::default();
        b.add_row(
            change(Op::Update, 1, Value::Text("long".into()), 1),
            &"x".into(),
            0,
            0,
        );
        b.add_row(
            change(Op::Update, 1, Value::Unavailable, 2),
            &"x".into(),
            0,
            1,
        );
        let row = &b.tables["t"].pending[0];
        assert_eq!(row.change.values[1], Value::Text("long".into()));
        assert_eq!(row.change.values[2], Value::Int(2));
    }

    #[test]
    fn a_column_the_newer_change_lacks_keeps_the_older_changes_value() {
        let mut b = Batch::default();
        b.add_row(
            change(Op::Read, 1, Value::Text("generated".into()), 1),
            &"x".into(),
            0,
            0,
        );
        // The same row streamed later: the schema lacks `bio` (generated, not streamed).
        let mut later = change(Op::Update, 1, Value::Null, 2);
        later.schema = Arc::new(TableSchema {
            columns: vec![
                later.schema.columns[0].clone(),
                later.schema.columns[2].clone(),
            ],
            key: vec![0],
        });
        later.values = vec![Value::Int(1), Value::Int(2)];
        b.add_row(later, &"x".into(), 0, 1);
        let row = &b.tables["t"].pending[0].change;
        assert_eq!(row.op, Op::Update);
        let bio = row.schema.index_of("bio").expect("bio carried over");
        assert_eq!(row.values[bio], Value::Text("generated".into()));
        assert_eq!(
            row.values[row.schema.index_of("n").expect("n")],
            Value::Int(2)
        );
    }

    #[test]
    fn toast_after_delete_stays_unavailable() {
        let mut b = Batch::default();
        b.add_row(change(Op::Delete, 1, Value::Null, 0), &"x".into(), 0, 0);
        b.add_row(
            change(Op::Update, 1, Value::Unavailable, 2),
            &"x".into(),
            0,
            1,
        );
        assert_eq!(
            b.tables["t"].pending[0].change.values[1],
            Value::Unavailable
        );
    }

    #[test]
    fn truncate_drops_earlier_rows_of_that_table() {
        let mut b = Batch::default();
        b.add_row(change(Op::Insert, 1, Value::Null, 0), &"x".into(), 0, 0);
        b.truncate("t", "t".into());
        b.add_row(change(Op::Insert, 2, Value::Null, 0), &"x".into(), 0, 2);
        assert!(b.truncates.contains("t"));
        assert_eq!(b.tables["t"].pending.len(), 1);
        assert_eq!(b.tables["t"].pending[0].change.values[0], Value::Int(2));
    }
}
