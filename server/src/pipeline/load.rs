//! The load stage, one thread per sink: validates a batch's staged changes, writes its
//! dead letters, applies it to the sink (setting aside rows the sink refuses, retrying the
//! rest with backoff behind the sink's breaker), and reports the flush. Guest code runs
//! here, never on the async runtime's workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tokio_mpsc;

use super::Flushed;
use crate::batch::{Batch, PendingRow, TableBatch};
use crate::config::KafkaConfig;
use crate::dlq::{Category, DeadLetter, DlqWriter, Origin};
use crate::resilience::{Backoff, Breaker};
use crate::sink::{Sink, SinkError};
use crate::source::{self, SourceError};
use crate::telemetry::trace::transform_span;
use crate::telemetry::{Stats, TableStats};
use crate::transform::{Outcome, SharedRoutes};

/// Puts one change's outcome into the batch: a row to load, a skip, or a dead letter.
pub(super) fn absorb(
    batch: &mut Batch,
    stats: &Stats,
    outcome: Outcome,
    origin: Origin,
    table: Arc<str>,
    validator: Option<(Arc<str>, Arc<str>)>,
    destination: Option<Arc<str>>,
) {
    let (category, reason, code) = match outcome {
        Outcome::Accept(row) => {
            batch.add_row(row, &origin.topic, origin.partition, origin.offset);
            return;
        }
        Outcome::Skip => {
            Stats::add(&stats.skipped, 1);
            return;
        }
        Outcome::Reject { code, message } => {
            Stats::add(&stats.rejected, 1);
            (Category::Validation, message, Some(code))
        }
        Outcome::Failed { category, reason } => {
            if category != Category::Validation {
                Stats::add(&stats.guest_failures, 1);
            }
            (category, reason, None)
        }
    };
    stats.error(category.as_str());
    batch.dead_letters.push(DeadLetter {
        origin,
        category,
        reason,
        code,
        table: Some(table),
        validator,
        destination,
    });
}

pub(super) struct LoadStage {
    /// Which sink (lane) of the pipeline this stage loads.
    pub lane: usize,
    pub routes: Arc<SharedRoutes>,
    pub dlq: DlqWriter,
    pub stats: Arc<Stats>,
    pub stop: Arc<AtomicBool>,
    pub backoff: Backoff,
    pub sink_breaker: Arc<Breaker>,
    pub dlq_breaker: Arc<Breaker>,
    /// To read refused rows' original records again for their dead letters.
    pub kafka: KafkaConfig,
}

/// The rows among `rows` that the sink refuses on their own, each with the sink's reason.
fn find_refused(
    sink: &mut dyn Sink,
    table: &Arc<str>,
    whole: &TableBatch,
    rows: &[PendingRow],
    out: &mut Vec<(Arc<str>, PendingRow, String)>,
) {
    match sink.check(table, &TableBatch::part_of(whole, rows)) {
        Err(SinkError::Refused(reason)) if rows.len() == 1 => {
            out.push((table.clone(), rows[0].clone(), reason));
        }
        Err(SinkError::Refused(_)) => {
            let (left, right) = rows.split_at(rows.len() / 2);
            find_refused(sink, table, whole, left, out);
            find_refused(sink, table, whole, right, out);
        }
        // Accepted, or a failure that is not this row's fault.
        Ok(()) | Err(SinkError::Transient(_) | SinkError::Permanent(_)) => {}
    }
}

impl LoadStage {
    pub fn run(
        mut self,
        sink: &mut dyn Sink,
        inbox: mpsc::Receiver<Batch>,
        done: tokio_mpsc::UnboundedSender<Flushed>,
    ) {
        while let Ok(mut batch) = inbox.recv() {
            let started = Instant::now();
            // Log lines of this batch carry its trace id.
            let trace = batch.trace.root();
            let _entered = trace.enter();
            self.validate_staged(&mut batch);
            loop {
                if !self.send_dead_letters(&mut batch) {
                    return;
                }
                let error = match sink.apply(&batch) {
                    Ok(counts) => {
                        self.sink_breaker.record_success();
                        self.backoff.reset();
                        tracing::debug!(
                            rows = batch.rows(),
                            messages = batch.messages,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "batch applied"
                        );
                        self.count_loaded(&batch);
                        self.observe_applied(&batch, started);
                        let _ = done.send(Flushed {
                            lane: self.lane,
                            offsets: batch.offsets.clone(),
                            counts,
                            trace: trace.clone(),
                        });
                        // The rows are visible and reported; the next batch grows meanwhile.
                        sink.after_commit();
                        break;
                    }
                    Err(e) => e,
                };
                Stats::add(&self.stats.sink_errors, 1);
                self.stats.error(error.category());
                if let SinkError::Refused(_) = error {
                    match self.set_aside_refused_rows(sink, &mut batch) {
                        Ok(0) => {}
                        // Their dead letters go out first, then the rest is applied.
                        Ok(_) => continue,
                        Err(e) => tracing::error!(error = %e, "cannot isolate the refused rows"),
                    }
                }
                // The target cannot take this batch now: the breaker counts it, and while
                // it is open the pipeline holds this sink's partitions.
                self.sink_breaker.record_failure();
                tracing::error!(category = error.category(), %error, breaker = self.sink_breaker.state().as_str(), "sink failed; retrying the same batch");
                let breaker = self.sink_breaker.clone();
                if self.pause(&breaker) {
                    return;
                }
            }
        }
    }

    /// Sends the batch's dead letters and waits for the DLQ to acknowledge them; they are
    /// then dropped from the batch so a sink retry does not send them again. False when
    /// shutdown interrupts the retries.
    fn send_dead_letters(&mut self, batch: &mut Batch) -> bool {
        let _span = (!batch.dead_letters.is_empty()).then(|| {
            tracing::info_span!("dlq", "floe.dead_letters" = batch.dead_letters.len() as u64)
                .entered()
        });
        while !batch.dead_letters.is_empty() {
            match self.dlq.send_all(&batch.dead_letters) {
                Ok(()) => {
                    self.dlq_breaker.record_success();
                    Stats::add(&self.stats.dead_lettered, batch.dead_letters.len() as u64);
                    batch.dead_letters.clear();
                }
                Err(e) => {
                    self.dlq_breaker.record_failure();
                    self.stats.error(e.category());
                    tracing::error!(category = e.category(), error = %e, "cannot write the DLQ; not committing until it can");
                    let breaker = self.dlq_breaker.clone();
                    if self.pause(&breaker) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// After a permanent sink error: finds the rows the target refuses (splitting each
    /// refusing table's rows in halves, checked in rolled-back transactions), moves them
    /// from the batch to its dead letters with their original bytes, and returns how many.
    fn set_aside_refused_rows(
        &self,
        sink: &mut dyn Sink,
        batch: &mut Batch,
    ) -> Result<usize, SourceError> {
        let routes = self.routes.current();
        let mut refused = Vec::new();
        for (table, rows) in &batch.tables {
            if let Err(SinkError::Refused(_)) = sink.check(table, rows) {
                find_refused(sink, table, rows, &rows.pending, &mut refused);
            }
        }
        for (table, row, reason) in &refused {
            let record = source::fetch_record(&self.kafka, &row.topic, row.partition, row.offset)?;
            tracing::warn!(table = %table, topic = %row.topic, partition = row.partition, offset = row.offset, %reason, "row refused by the sink; dead-lettered");
            batch.dead_letters.push(DeadLetter {
                origin: Origin {
                    topic: row.topic.clone(),
                    partition: row.partition,
                    offset: row.offset,
                    key: record.key,
                    value: record.value,
                },
                category: Category::SinkPermanent,
                destination: routes.dlq_topic_of_target(table),
                reason: reason.clone(),
                code: None,
                table: Some(table.clone()),
                validator: None,
            });
            if let Some(rows) = batch.tables.get_mut(table) {
                rows.retain(|r| {
                    !(r.partition == row.partition
                        && r.offset == row.offset
                        && r.topic == row.topic)
                });
            }
        }
        // A table whose every row was refused has nothing left to create or MERGE.
        batch.tables.retain(|_, rows| !rows.pending.is_empty());
        Ok(refused.len())
    }

    /// Waits before a retry (backoff, or the breaker's cool-down while it is open), in
    /// short steps so that shutdown is not delayed; true when shutdown asks to give up.
    fn pause(&mut self, breaker: &Breaker) -> bool {
        let wait = breaker.delay(self.backoff.next_delay());
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return true;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        self.stop.load(Ordering::Relaxed)
    }

    fn observe_applied(&self, batch: &Batch, started: Instant) {
        let timings = &self.stats.timings;
        timings
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        timings.batch_rows.observe(batch.rows() as f64);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let source_times = batch.tables.values().flat_map(|t| &t.pending);
        for ts in source_times.filter_map(|row| row.change.source.ts_ms) {
            let lag_ms = (now_ms - ts).max(0);
            timings.end_to_end_seconds.observe(lag_ms as f64 / 1000.0);
        }
    }

    fn count_loaded(&self, batch: &Batch) {
        let routes = self.routes.current();
        for (target, rows) in &batch.tables {
            let tenant = routes.of_target(target).and_then(|r| r.tenant.as_deref());
            self.stats
                .count_table(target, tenant, |t| t.loaded += rows.pending.len() as u64);
        }
    }

    fn validate_staged(&self, batch: &mut Batch) {
        let routes = self.routes.current();
        for (table, staged) in std::mem::take(&mut batch.staged) {
            let route = routes.get(&table);
            let Some((route, validator)) = route.and_then(|r| Some((r, r.validator.as_ref()?)))
            else {
                // Staged only for validated tables; load as-is rather than lose them.
                for s in staged {
                    let o = s.origin;
                    batch.add_row(s.change, &o.topic, o.partition, o.offset);
                }
                continue;
            };
            let tag = Some((validator.name.clone(), validator.hash.clone()));
            let mut verdicts = TableStats::default();
            let span = transform_span(
                &table,
                route.tenant.as_deref(),
                &validator.name,
                staged.len(),
            );
            let started = Instant::now();
            let outcomes = span.in_scope(|| route.validate(validator, staged));
            self.stats
                .timings
                .validator_seconds
                .observe(started.elapsed().as_secs_f64());
            for (origin, outcome) in outcomes {
                match &outcome {
                    Outcome::Accept(_) => verdicts.accepted += 1,
                    Outcome::Reject { .. } => verdicts.rejected += 1,
                    Outcome::Failed { .. } => verdicts.failed += 1,
                    Outcome::Skip => {}
                }
                absorb(
                    batch,
                    &self.stats,
                    outcome,
                    origin,
                    table.clone(),
                    tag.clone(),
                    route.dlq_topic.clone(),
                );
            }
            span.record("floe.accepted", verdicts.accepted);
            span.record("floe.rejected", verdicts.rejected);
            span.record("floe.failed", verdicts.failed);
            self.stats
                .count_table(&table, route.tenant.as_deref(), |t| {
                    t.validator = Some(validator.name.to_string());
                    t.accepted += verdicts.accepted;
                    t.rejected += verdicts.rejected;
                    t.failed += verdicts.failed;
                });
        }
    }
}
