//! The load stage, on its own thread: validates a batch's staged changes, writes its dead
//! letters, applies it to the sink, and reports the flush. Guest code runs here, never on
//! the async runtime's workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tokio_mpsc;

use super::Flushed;
use crate::batch::Batch;
use crate::dlq::{Category, DeadLetter, DlqWriter, Origin};
use crate::sink::Sink;
use crate::telemetry::Stats;
use crate::transform::{Outcome, Routes};

/// Puts one change's outcome into the batch: a row to load, a skip, or a dead letter.
pub(super) fn absorb(
    batch: &mut Batch,
    stats: &Stats,
    outcome: Outcome,
    origin: Origin,
    table: Arc<str>,
    validator: Option<(Arc<str>, Arc<str>)>,
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
    batch.dead_letters.push(DeadLetter {
        origin,
        category,
        reason,
        code,
        table: Some(table),
        validator,
    });
}

pub(super) struct LoadStage {
    pub routes: Arc<Routes>,
    pub dlq: DlqWriter,
    pub stats: Arc<Stats>,
    pub stop: Arc<AtomicBool>,
    pub retry: Duration,
}

impl LoadStage {
    pub fn run(
        &self,
        sink: &mut dyn Sink,
        inbox: mpsc::Receiver<Batch>,
        done: tokio_mpsc::UnboundedSender<Flushed>,
    ) {
        while let Ok(mut batch) = inbox.recv() {
            let started = Instant::now();
            self.validate_staged(&mut batch);
            // Dead letters are acknowledged before the offsets that pass them are stored;
            // once acknowledged they are not sent again when the sink retries.
            while !batch.dead_letters.is_empty() {
                match self.dlq.send_all(&batch.dead_letters) {
                    Ok(()) => {
                        Stats::add(&self.stats.dead_lettered, batch.dead_letters.len() as u64);
                        batch.dead_letters.clear();
                    }
                    Err(e) => {
                        tracing::error!(category = e.category(), error = %e, "cannot write the DLQ; not committing until it can");
                        if self.pause() {
                            return;
                        }
                    }
                }
            }
            loop {
                match sink.apply(&batch) {
                    Ok(counts) => {
                        tracing::debug!(
                            rows = batch.rows(),
                            messages = batch.messages,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "batch applied"
                        );
                        let _ = done.send(Flushed {
                            offsets: batch.offsets.clone(),
                            counts,
                        });
                        break;
                    }
                    Err(e) => {
                        Stats::add(&self.stats.sink_errors, 1);
                        tracing::error!(category = e.category(), error = %e, "sink failed; retrying the same batch");
                        if self.pause() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Waits before a retry; true when shutdown asks to give up instead.
    fn pause(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(self.retry);
        false
    }

    fn validate_staged(&self, batch: &mut Batch) {
        for (table, staged) in std::mem::take(&mut batch.staged) {
            let route = self.routes.get(&table);
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
            for (origin, outcome) in route.validate(validator, staged) {
                absorb(
                    batch,
                    &self.stats,
                    outcome,
                    origin,
                    table.clone(),
                    tag.clone(),
                );
            }
        }
    }
}
