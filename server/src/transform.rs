//! Per-table transforms between decode and batch.
//!
//! This is where a table's validator runs. Until a table has one, every change is
//! accepted unchanged.

use crate::change::RowChange;

/// What a transform decided about one change.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Load this change (possibly mapped).
    Accept(RowChange),
    /// Commit past it without loading.
    Skip,
    /// Refuse it; `code` is stable, `message` explains.
    Reject { code: String, message: String },
}

/// The transform stage. Pass-through: every change is accepted as decoded.
#[derive(Debug, Default, Clone)]
pub struct Transform;

impl Transform {
    pub fn apply(&self, change: RowChange) -> Verdict {
        Verdict::Accept(change)
    }
}
