//! Wires the stages: source → decode → transform → batch → sink → commit.
//!
//! The consume/decode/batch loop runs on the async runtime; the sink applies batches on
//! its own thread, so decoding the next batch overlaps the MERGE of the previous one.
//! While the sink is busy the pending batch keeps growing, which is how batch size adapts
//! to load: a MERGE has a high fixed cost per statement, so fewer, larger ones win.

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tokio_mpsc;

mod load;

use crate::batch::Batch;
use crate::change::{Event, KafkaPosition};
use crate::config::{Assignment, Config, TruncateMode};
use crate::debezium::Decoder;
use crate::dlq::{Category, DeadLetter, DlqError, DlqWriter, Origin};
use crate::sink::{ApplyCounts, SinkError};
use crate::source::{self, Source, SourceError};
use crate::telemetry::Stats;
use crate::transform::{LoadError, RouteError, Routes, Staged};
use load::{absorb, LoadStage};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("shutdown did not finish within {0:?}; uncommitted work is replayed on restart")]
    ShutdownTimeout(Duration),
    #[error("the sink thread stopped unexpectedly")]
    SinkGone,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Wasm(#[from] LoadError),
    #[error(transparent)]
    Dlq(#[from] DlqError),
}

/// The outcome of one flush, reported by the sink thread.
struct Flushed {
    offsets: BTreeMap<(Arc<str>, i32), i64>,
    counts: ApplyCounts,
}

/// Runs until `shutdown` resolves, then stops fetching, flushes, commits and returns.
pub async fn run(
    config: Config,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PipelineError> {
    let mut sink = crate::sink::open(&config.sink)?;
    let stored = sink.stored_offsets()?;
    // The runtime outlives the routes: its ticker drives the validators' deadlines.
    let wasm_runtime = Routes::runtime_for(&config.routes, &config.wasm.cache_dir)?;
    let routes = Arc::new(Routes::load(&config.routes, wasm_runtime.as_ref())?);
    let kafka = &config.kafka;
    if let Err(e) =
        source::create_topic(&kafka.brokers, &kafka.properties, &config.dlq.topic, 1).await
    {
        tracing::warn!(topic = %config.dlq.topic, error = %e, "cannot create the DLQ topic; it must exist before a record is dead-lettered");
    }
    let dlq = DlqWriter::connect(
        &config.kafka,
        &config.dlq.topic,
        Duration::from_millis(config.dlq.ack_timeout_ms),
        tokio::runtime::Handle::current(),
    )?;
    let source = source::connect(
        &config.kafka,
        sink.offset_reader()?,
        stats.clone(),
        config.runtime.stats_interval_ms,
    )?;
    match config.kafka.assignment {
        Assignment::All => {
            let n = source::assign_all(&source, &config.kafka.topics, &stored)?;
            tracing::info!(partitions = n, "reading every partition (assignment = all)");
        }
        Assignment::Group => {
            let topics: Vec<&str> = config.kafka.topics.iter().map(String::as_str).collect();
            source.subscribe(&topics).map_err(SourceError::from)?;
            tracing::info!(group = %config.kafka.group, "joined consumer group");
        }
    }

    let (to_sink, sink_inbox) = mpsc::sync_channel::<Batch>(1);
    let (sink_done, mut flushed) = tokio_mpsc::unbounded_channel::<Flushed>();
    let stop_retrying = Arc::new(AtomicBool::new(false));
    let sink_thread = {
        let stats = stats.clone();
        let stop = stop_retrying.clone();
        let load = LoadStage {
            routes: routes.clone(),
            dlq,
            stats,
            stop,
            retry: Duration::from_millis(config.resilience.retry_initial_ms),
            kafka: config.kafka.clone(),
        };
        std::thread::Builder::new()
            .name("floe-sink".into())
            .spawn(move || load.run(sink.as_mut(), sink_inbox, sink_done))
            .map_err(|_| PipelineError::SinkGone)?
    };

    let mut state = Loop {
        config: &config,
        stats: &stats,
        source: &source,
        decoder: Decoder::new(),
        routes: &routes,
        batch: Batch::default(),
        in_flight: false,
        topics: config
            .kafka
            .topics
            .iter()
            .map(|t| Arc::from(t.as_str()))
            .collect(),
    };
    let result = state.consume(&to_sink, &mut flushed, shutdown).await;
    let result = match result {
        Ok(()) => {
            let deadline = Duration::from_millis(config.runtime.shutdown_timeout_ms);
            match tokio::time::timeout(deadline, state.drain(&to_sink, &mut flushed)).await {
                Ok(r) => r,
                Err(_) => Err(PipelineError::ShutdownTimeout(deadline)),
            }
        }
        Err(e) => Err(e),
    };
    stop_retrying.store(true, Ordering::Relaxed);
    drop(to_sink);
    let _ = tokio::task::spawn_blocking(move || sink_thread.join()).await;
    drop(wasm_runtime);
    tracing::info!("{}", stats.line());
    result
}

struct Loop<'a> {
    config: &'a Config,
    stats: &'a Stats,
    source: &'a Source,
    decoder: Decoder,
    routes: &'a Routes,
    batch: Batch,
    in_flight: bool,
    topics: Vec<Arc<str>>,
}

impl Loop<'_> {
    async fn consume(
        &mut self,
        to_sink: &mpsc::SyncSender<Batch>,
        flushed: &mut tokio_mpsc::UnboundedReceiver<Flushed>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), PipelineError> {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.config.batch.max_age_ms / 4).clamp(10, 250),
        ));
        let stats_every = self.config.runtime.stats_interval_ms;
        let mut last_stats = Instant::now();
        loop {
            let accepting = self.batch.row_events < self.config.batch.max_pending_rows;
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested: stop fetching, flush, commit");
                    return Ok(());
                }
                done = flushed.recv() => {
                    let done = done.ok_or(PipelineError::SinkGone)?;
                    self.on_flushed(done, CommitMode::Async);
                }
                message = self.source.recv(), if accepting => match message {
                    Ok(m) => self.on_message(&m),
                    Err(e) => tracing::warn!(error = %e, category = "kafka", "consume error"),
                },
                _ = tick.tick() => {}
            }
            self.drop_revoked();
            if !self.in_flight && self.due() {
                self.hand_off(to_sink)?;
            }
            if stats_every > 0 && last_stats.elapsed() >= Duration::from_millis(stats_every) {
                last_stats = Instant::now();
                tracing::info!(target: "floe::stats", "{}", self.stats.line());
            }
        }
    }

    /// After shutdown: wait for the batch in flight, flush what is held, commit.
    async fn drain(
        &mut self,
        to_sink: &mpsc::SyncSender<Batch>,
        flushed: &mut tokio_mpsc::UnboundedReceiver<Flushed>,
    ) -> Result<(), PipelineError> {
        loop {
            if self.in_flight {
                let done = flushed.recv().await.ok_or(PipelineError::SinkGone)?;
                self.on_flushed(done, CommitMode::Sync);
                continue;
            }
            if self.batch.is_empty() {
                return Ok(());
            }
            self.hand_off(to_sink)?;
        }
    }

    fn due(&self) -> bool {
        !self.batch.is_empty()
            && (self.batch.row_events >= self.config.batch.max_rows
                || self.batch.age_ms() >= u128::from(self.config.batch.max_age_ms))
    }

    fn hand_off(&mut self, to_sink: &mpsc::SyncSender<Batch>) -> Result<(), PipelineError> {
        let batch = std::mem::take(&mut self.batch);
        to_sink.send(batch).map_err(|_| PipelineError::SinkGone)?;
        self.in_flight = true;
        Ok(())
    }

    fn on_flushed(&mut self, done: Flushed, mode: CommitMode) {
        self.in_flight = false;
        let c = done.counts;
        Stats::add(&self.stats.loaded, c.upserts + c.deletes);
        Stats::add(&self.stats.toast_missing, c.toast_missing);
        Stats::add(&self.stats.flushes, 1);
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &done.offsets {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        // Progress for lag tools; the sink's own offsets are what floe resumes from.
        if tpl.count() > 0 {
            if let Err(e) = self.source.commit(&tpl, mode) {
                tracing::debug!(error = %e, "commit to the consumer group failed");
            }
        }
    }

    fn on_message(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        Stats::add(&self.stats.consumed, 1);
        let topic = match self.topics.iter().find(|t| t.as_ref() == m.topic()) {
            Some(t) => t.clone(),
            None => Arc::from(m.topic()),
        };
        let position = KafkaPosition {
            topic: topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
        };
        self.batch.advance(&topic, m.partition(), m.offset());
        let origin = || Origin {
            topic: topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
        };
        let change = match self.decoder.decode(m.key(), m.payload(), position) {
            Ok(c) => c,
            Err(e) => {
                Stats::add(&self.stats.decode_errors, 1);
                tracing::warn!(
                    category = "decode",
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    reason = %e,
                    "cannot decode message; sent to the DLQ"
                );
                self.batch.dead_letters.push(DeadLetter {
                    origin: origin(),
                    category: Category::Decode,
                    reason: e.to_string(),
                    code: None,
                    table: None,
                    validator: None,
                });
                return;
            }
        };
        Stats::add(&self.stats.decoded, 1);
        match change.event {
            Event::Row(row) => match self.routes.get(&row.table) {
                None => self.batch.add_row(row, &topic, m.partition(), m.offset()),
                Some(route) if route.validator.is_some() => {
                    let staged = Staged {
                        change: row,
                        origin: origin(),
                    };
                    self.batch.stage(staged.change.table.clone(), staged);
                }
                Some(route) => {
                    let table = row.table.clone();
                    let outcome = route.accepted(row);
                    absorb(&mut self.batch, self.stats, outcome, origin(), table, None);
                }
            },
            Event::Truncate { table } => match self.config.sink.truncate {
                TruncateMode::Apply => {
                    let target = self
                        .routes
                        .get(&table)
                        .and_then(|r| r.target.clone())
                        .unwrap_or_else(|| table.clone());
                    self.batch.truncate(&table, target);
                }
                TruncateMode::Ignore => Stats::add(&self.stats.skipped, 1),
            },
            Event::Skip(_) => Stats::add(&self.stats.skipped, 1),
        }
    }

    /// Rows of partitions this process no longer owns are dropped unapplied: the new
    /// owner resumes from the sink's offsets and applies them itself.
    fn drop_revoked(&mut self) {
        let revoked = self.source.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        let gone = |topic: &str, partition: i32| {
            revoked.iter().any(|(t, p)| t == topic && *p == partition)
        };
        self.batch.offsets.retain(|(t, p), _| !gone(t, *p));
        for table in self.batch.tables.values_mut() {
            table.retain(|row| !gone(&row.topic, row.partition));
        }
        for staged in self.batch.staged.values_mut() {
            staged.retain(|s| !gone(&s.origin.topic, s.origin.partition));
        }
        self.batch
            .dead_letters
            .retain(|d| !gone(&d.origin.topic, d.origin.partition));
    }
}
