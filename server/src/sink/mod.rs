//! Sinks: where batches are MERGE-loaded, together with the offsets they cover.

pub mod duckdb;
pub mod snowflake;

use crate::batch::{Batch, TableBatch};
use crate::change::{Column, ColumnType};
use crate::config::{SinkConfig, SinkKind};

/// Why a sink could not apply a batch. The category decides whether floe retries.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: the same batch may succeed later (lock, I/O, connection).
    #[error("sink_transient: {0}")]
    Transient(String),
    /// Retrying the same statement cannot succeed, whatever the rows (a bad statement, a
    /// missing privilege): progress stops until an operator fixes it.
    #[error("sink_permanent: {0}")]
    Permanent(String),
    /// The target refuses a value (a conversion, a range, a constraint): the rows that
    /// carry it can be set aside and the rest loaded.
    #[error("sink_permanent: the target refuses a value: {0}")]
    Refused(String),
}

impl SinkError {
    pub fn category(&self) -> &'static str {
        match self {
            SinkError::Transient(_) => "sink_transient",
            SinkError::Permanent(_) | SinkError::Refused(_) => "sink_permanent",
        }
    }
}

/// What one applied batch changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyCounts {
    /// Rows merged as inserts or updates.
    pub upserts: u64,
    pub deletes: u64,
    pub truncates: u64,
    /// TOAST placeholders for rows the target did not hold: written as NULL.
    pub toast_missing: u64,
}

/// Offsets a sink has applied: (topic, partition, next offset to consume).
pub type StoredOffsets = Vec<(String, i32, i64)>;

/// A warehouse target. `apply` is atomic: every table's MERGE and the batch's offsets
/// commit together or not at all, which is what makes the final table exactly-once.
pub trait Sink: Send {
    fn apply(&mut self, batch: &Batch) -> Result<ApplyCounts, SinkError>;

    /// Merges `rows` into `table` in a transaction that is always rolled back: whether
    /// the target would take them. Used to find the rows behind a permanent error.
    fn check(&mut self, table: &str, rows: &TableBatch) -> Result<(), SinkError>;

    /// Offsets stored by earlier `apply` calls.
    fn stored_offsets(&mut self) -> Result<StoredOffsets, SinkError>;

    /// Housekeeping after a successful `apply` has been reported, outside any load's
    /// commit (the next batch accumulates meanwhile).
    fn after_commit(&mut self) {}

    /// A handle that reads stored offsets from another thread (used on partition
    /// assignment, while `apply` may be running).
    fn offset_reader(&self) -> Result<Box<dyn OffsetReader>, SinkError>;
}

pub trait OffsetReader: Send + Sync {
    fn stored_offsets(&self) -> Result<StoredOffsets, SinkError>;
}

/// Opens the sink a configuration describes.
pub fn open(config: &SinkConfig) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match config.kind {
        SinkKind::Duckdb => Box::new(duckdb::DuckDbSink::open(
            &config.duckdb,
            config.soft_delete,
        )?),
        SinkKind::Snowflake => Box::new(snowflake::SnowflakeSink::open(
            &config.snowflake,
            config.soft_delete,
        )?),
    })
}

/// Opens the sink and reads its stored offsets: whether it can be used now.
pub fn probe(config: &SinkConfig) -> Result<(), SinkError> {
    open(config)?.offset_reader()?.stored_offsets().map(|_| ())
}

/// How a target column that holds `held` takes the change's column `c` (both sinks decide
/// alike; only the ALTER differs): the column to stage the batch as, and the wider type
/// the target column must become first, if any. Types the target spells alike need
/// nothing; types no type holds both keep the target's, and each value is cast to it, so
/// NULLs and values that convert load and the others are refused one by one.
pub(crate) fn fit_column(
    c: &Column,
    held: &ColumnType,
    target_type: impl Fn(&ColumnType) -> String,
) -> (Column, Option<ColumnType>) {
    let column = |ty: ColumnType| Column {
        name: c.name.clone(),
        ty,
    };
    if target_type(held) == target_type(&c.ty) {
        return (c.clone(), None);
    }
    match held.widen(&c.ty) {
        None => (column(held.clone()), None),
        Some(wider) => {
            let alter = (target_type(&wider) != target_type(held)).then(|| wider.clone());
            (column(wider), alter)
        }
    }
}
