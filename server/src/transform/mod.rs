//! Per-table transforms between decode and batch: routing (target table, key columns)
//! and validators running as sandboxed WebAssembly components.
//!
//! A validator sees one call per batch of one table's changes and answers one verdict
//! per change. When a call fails (trap, timeout, out of memory, or an answer that breaks
//! the world's contract) the batch is split in halves and retried until the culprit
//! changes are found; they go to the dead-letter queue and the rest load.

pub mod convert;
pub mod host;

#[allow(clippy::all)]
mod wit {
    wasmtime::component::bindgen!({ path: "../wit", world: "validator" });
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::change::{RowChange, TableSchema};
use crate::config::RouteConfig;
use crate::dlq::{Category, Origin};
pub use host::{FailureKind, GuestFailure, LoadError, Runtime, Validator};
use wit::floe::transform::types as w;

/// Failed guest calls allowed while isolating the culprits of one batch. Each can cost a
/// full deadline; past the budget the still-unresolved changes are dead-lettered as they
/// are, so a guest failing on everything delays its table by seconds, not hours.
const ISOLATION_BUDGET: u32 = 32;

/// What happened to one change.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Load this change (possibly mapped).
    Accept(RowChange),
    /// Commit past it without loading.
    Skip,
    /// The validator refused it; `code` is stable, `message` explains.
    Reject { code: String, message: String },
    /// No verdict could be had for it: the change goes to the DLQ under `category`.
    Failed { category: Category, reason: String },
}

/// A verdict applied to a change without copying it: the change moves into its outcome
/// only once every call of the batch is done.
enum Decision {
    Keep,
    Mapped(Arc<TableSchema>, Vec<crate::change::Value>),
    Done(Outcome),
}

/// A change waiting for its table's validator, with the record it came from.
#[derive(Debug)]
pub struct Staged {
    pub change: RowChange,
    pub origin: Origin,
}

/// How one source table is validated and where it lands.
pub struct Route {
    pub target: Option<Arc<str>>,
    /// The DLQ topic of the route's tenant, if it has one.
    pub dlq_topic: Option<Arc<str>>,
    pub tenant: Option<Arc<str>>,
    key: Option<Vec<String>>,
    pub validator: Option<Arc<Validator>>,
    max_changes_per_call: usize,
    /// The last input schema re-keyed for `key`, and its re-keyed form.
    rekeyed: Mutex<Option<(Arc<TableSchema>, Arc<TableSchema>)>>,
}

/// Every configured route, by source table.
#[derive(Default)]
pub struct Routes {
    by_table: HashMap<String, Route>,
}

impl Routes {
    /// Loads every route's validator; any that cannot be loaded is an error naming it.
    pub fn load(configs: &[RouteConfig], runtime: Option<&Runtime>) -> Result<Self, RouteError> {
        let mut by_table = HashMap::new();
        for config in configs {
            let validator = match (&config.validator, runtime) {
                (Some(path), Some(runtime)) => {
                    let name = config.name.clone().unwrap_or_else(|| {
                        path.file_stem().map_or_else(
                            || config.table.clone(),
                            |s| s.to_string_lossy().into_owned(),
                        )
                    });
                    let v = runtime
                        .load_file(&name, path, &config.limits)
                        .map_err(|source| RouteError::Validator {
                            table: config.table.clone(),
                            path: path.display().to_string(),
                            source,
                        })?;
                    tracing::info!(table = %config.table, validator = %v.name, hash = %v.hash, "validator loaded");
                    Some(Arc::new(v))
                }
                _ => None,
            };
            let route = Route {
                target: config.target.as_deref().map(Arc::from),
                dlq_topic: config.dlq_topic.as_deref().map(Arc::from),
                tenant: config.tenant.as_deref().map(Arc::from),
                key: config.key.clone(),
                validator,
                max_changes_per_call: config.limits.max_changes_per_call.max(1),
                rekeyed: Mutex::new(None),
            };
            if by_table.insert(config.table.clone(), route).is_some() {
                return Err(RouteError::Duplicate(config.table.clone()));
            }
        }
        Ok(Self { by_table })
    }

    /// The WebAssembly runtime the routes need, if any route has a validator.
    pub fn runtime_for(
        configs: &[RouteConfig],
        cache_dir: &std::path::Path,
    ) -> Result<Option<Runtime>, LoadError> {
        if !configs.iter().any(|c| c.validator.is_some()) {
            return Ok(None);
        }
        let metered = configs.iter().any(|c| c.limits.fuel.is_some());
        Runtime::new(cache_dir, metered).map(Some)
    }

    pub fn get(&self, table: &str) -> Option<&Route> {
        self.by_table.get(table)
    }

    /// The route that loads into `target`.
    pub fn of_target(&self, target: &str) -> Option<&Route> {
        self.by_table
            .iter()
            .find(|(source, r)| r.target.as_deref().unwrap_or(source.as_str()) == target)
            .map(|(_, r)| r)
    }

    /// The DLQ topic of the route that loads into `target`, if it has its own.
    pub fn dlq_topic_of_target(&self, target: &str) -> Option<Arc<str>> {
        self.of_target(target).and_then(|r| r.dlq_topic.clone())
    }

    /// The validator of `table`, if it has one.
    pub fn validator(&self, table: &str) -> Option<&Arc<Validator>> {
        self.get(table).and_then(|r| r.validator.as_ref())
    }
}

/// The routes in force, replaced whole when the control plane changes; a batch keeps the
/// snapshot it started with, so it finishes on the validator versions it began with.
#[derive(Default)]
pub struct SharedRoutes(std::sync::RwLock<Arc<Routes>>);

impl SharedRoutes {
    pub fn new(routes: Routes) -> Self {
        Self(std::sync::RwLock::new(Arc::new(routes)))
    }

    pub fn current(&self) -> Arc<Routes> {
        match self.0.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, routes: Routes) {
        let routes = Arc::new(routes);
        match self.0.write() {
            Ok(mut r) => *r = routes,
            Err(poisoned) => *poisoned.into_inner() = routes,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route for table {table}: validator {path}: {source}")]
    Validator {
        table: String,
        path: String,
        source: LoadError,
    },
    #[error("table {0} has more than one route")]
    Duplicate(String),
}

impl From<FailureKind> for Category {
    fn from(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Trap => Category::TransformTrap,
            FailureKind::Timeout => Category::TransformTimeout,
            FailureKind::OutOfMemory => Category::TransformOom,
            FailureKind::Contract => Category::TransformContract,
        }
    }
}

impl Route {
    /// Renames to the target table and applies the route's key columns.
    pub fn retarget(&self, mut change: RowChange) -> Result<RowChange, String> {
        if let Some(target) = &self.target {
            change.table = target.clone();
        }
        if let Some(key) = &self.key {
            change.schema = self.rekey(&change.schema, key)?;
        }
        Ok(change)
    }

    fn rekey(&self, schema: &Arc<TableSchema>, key: &[String]) -> Result<Arc<TableSchema>, String> {
        let mut cache = self.rekeyed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((input, output)) = cache.as_ref() {
            if Arc::ptr_eq(input, schema) {
                return Ok(output.clone());
            }
        }
        let output = convert::mapped_schema(schema.columns.clone(), key)?;
        *cache = Some((schema.clone(), output.clone()));
        Ok(output)
    }

    /// Runs the validator over `staged` (all of one table, in source order): each change
    /// with its outcome, in the same order.
    pub fn validate(&self, validator: &Validator, staged: Vec<Staged>) -> Vec<(Origin, Outcome)> {
        let mut decisions = Vec::with_capacity(staged.len());
        let mut budget = ISOLATION_BUDGET;
        // One call carries one column list, so a schema change starts a new call.
        for group in staged.chunk_by(|a, b| Arc::ptr_eq(&a.change.schema, &b.change.schema)) {
            for chunk in group.chunks(self.max_changes_per_call) {
                self.isolate(validator, chunk, &mut budget, &mut decisions);
            }
        }
        staged
            .into_iter()
            .zip(decisions)
            .map(|(s, decision)| {
                let outcome = match decision {
                    Decision::Keep => self.accepted(s.change),
                    Decision::Mapped(schema, values) => {
                        let mut change = s.change;
                        change.schema = schema;
                        change.values = values;
                        if let Some(target) = &self.target {
                            change.table = target.clone();
                        }
                        Outcome::Accept(change)
                    }
                    Decision::Done(outcome) => outcome,
                };
                (s.origin, outcome)
            })
            .collect()
    }

    fn isolate(&self, v: &Validator, chunk: &[Staged], budget: &mut u32, out: &mut Vec<Decision>) {
        match self.call(v, chunk) {
            Ok(decisions) => out.extend(decisions),
            Err(failure) if chunk.len() == 1 || *budget == 0 => {
                let reason = if chunk.len() == 1 {
                    failure.reason
                } else {
                    format!(
                        "{} (isolation stopped after {ISOLATION_BUDGET} failed calls; this change was not validated)",
                        failure.reason
                    )
                };
                tracing::warn!(validator = %v.name, changes = chunk.len(), category = Category::from(failure.kind).as_str(), %reason, "validator failed; dead-lettering");
                out.extend(chunk.iter().map(|_| {
                    Decision::Done(Outcome::Failed {
                        category: failure.kind.into(),
                        reason: reason.clone(),
                    })
                }));
            }
            Err(failure) => {
                *budget -= 1;
                tracing::debug!(validator = %v.name, changes = chunk.len(), reason = %failure.reason, "splitting failed batch");
                let (left, right) = chunk.split_at(chunk.len() / 2);
                self.isolate(v, left, budget, out);
                self.isolate(v, right, budget, out);
            }
        }
    }

    /// One guest call, checked against the world's contract.
    fn call(&self, v: &Validator, chunk: &[Staged]) -> Result<Vec<Decision>, GuestFailure> {
        let Some(first) = chunk.first() else {
            return Ok(Vec::new());
        };
        let schema = &first.change.schema;
        let batch = w::TableBatch {
            table: first.change.table.to_string(),
            columns: convert::columns_to_wit(&schema.columns),
            key: schema.key.iter().map(|&i| i as u32).collect(),
            changes: chunk
                .iter()
                .map(|s| convert::change_to_wit(&s.change, s.origin.partition, s.origin.offset))
                .collect(),
        };
        let result = v.call(&batch)?;
        let contract = |reason: String| GuestFailure {
            kind: FailureKind::Contract,
            reason: format!("validator {} broke its contract: {reason}", v.name),
        };
        if result.verdicts.len() != chunk.len() {
            return Err(contract(format!(
                "{} verdicts for {} changes",
                result.verdicts.len(),
                chunk.len()
            )));
        }
        let mapped_schema = match result.mapped_columns {
            Some(columns) => {
                let key = self.key.clone().unwrap_or_else(|| {
                    schema
                        .key
                        .iter()
                        .map(|&i| schema.columns[i].name.clone())
                        .collect()
                });
                Some(
                    convert::mapped_schema(convert::columns_from_wit(&columns), &key)
                        .map_err(contract)?,
                )
            }
            None => None,
        };
        let mut decisions = Vec::with_capacity(chunk.len());
        for verdict in result.verdicts {
            decisions.push(match verdict {
                w::Verdict::Accept => Decision::Keep,
                w::Verdict::Mapped(row) => {
                    let Some(schema) = &mapped_schema else {
                        return Err(contract("a mapped verdict without mapped-columns".into()));
                    };
                    if row.len() != schema.columns.len() {
                        return Err(contract(format!(
                            "a mapped row of {} values for {} mapped columns",
                            row.len(),
                            schema.columns.len()
                        )));
                    }
                    let values: Vec<_> = row.into_iter().map(convert::value_from_wit).collect();
                    if let Some((c, v)) = schema
                        .columns
                        .iter()
                        .zip(&values)
                        .find(|(c, v)| !convert::fits(v, &c.ty))
                    {
                        return Err(contract(format!(
                            "mapped column {:?} is declared {:?} but holds {v:?}",
                            c.name, c.ty
                        )));
                    }
                    Decision::Mapped(schema.clone(), values)
                }
                w::Verdict::Skip => Decision::Done(Outcome::Skip),
                w::Verdict::Reject(r) => Decision::Done(Outcome::Reject {
                    code: host::clip(r.code, 128),
                    message: host::clip(r.message, 4096),
                }),
            });
        }
        Ok(decisions)
    }

    /// An accepted change, re-targeted; a route whose key the change lacks sends it to
    /// the DLQ rather than loading it under the wrong key.
    pub fn accepted(&self, change: RowChange) -> Outcome {
        match self.retarget(change) {
            Ok(change) => Outcome::Accept(change),
            Err(reason) => Outcome::Failed {
                category: Category::Validation,
                reason,
            },
        }
    }
}
