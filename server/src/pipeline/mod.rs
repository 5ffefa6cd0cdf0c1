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

mod lanes;
mod load;
mod restart;
mod routes;

pub use restart::run_with_tenant_sinks;

use crate::batch::Batch;
use crate::change::{Event, KafkaPosition};
use crate::config::{Assignment, Config, TruncateMode};
use crate::control::ControlPlane;
use crate::debezium::Decoder;
use crate::dlq::{Category, DeadLetter, DlqError, DlqWriter, Origin};
use crate::resilience::{Backoff, Breaker};
use crate::sink::{ApplyCounts, OffsetReader, SinkError};
use crate::source::{self, Source, SourceError};
use crate::telemetry::trace::offsets_text;
use crate::telemetry::Stats;
use crate::transform::{LoadError, RouteError, Routes, Runtime, SharedRoutes, Staged};
use lanes::{Lane, LaneOffsets};
use load::{absorb, LoadStage};
use routes::{create_dlq_topic, create_route_dlq_topics, follow_control_plane};

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

/// The outcome of one flush, reported by a sink thread.
struct Flushed {
    lane: usize,
    offsets: BTreeMap<(Arc<str>, i32), i64>,
    counts: ApplyCounts,
    /// The batch's root span: its commit is the last child.
    trace: tracing::Span,
}

/// Runs until `shutdown` resolves, then stops fetching, flushes, commits and returns.
pub async fn run(
    config: Config,
    stats: Arc<Stats>,
    control: Option<Arc<ControlPlane>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PipelineError> {
    // The default sink first (lane 0), then the named ones.
    let mut sink_configs = vec![("sink".to_string(), config.sink.clone())];
    sink_configs.extend(
        config
            .sinks
            .iter()
            .map(|(n, c)| (format!("sink.{n}"), c.clone())),
    );
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for (name, sink_config) in &sink_configs {
        let sink = crate::sink::open(sink_config)?;
        readers.push((sink_config.topics.clone(), sink.offset_reader()?));
        sinks.push((name.clone(), sink_config.topics.clone(), sink));
    }
    let offsets = LaneOffsets(readers);
    let stored = offsets.stored_offsets()?;
    // The runtime outlives the routes: its ticker drives the validators' deadlines.
    let wasm_runtime = match Routes::runtime_for(&config.routes, &config.wasm.cache_dir)? {
        None if control.is_some() => Some(Runtime::new(&config.wasm.cache_dir, false)?),
        runtime => runtime,
    };
    let wasm_runtime = wasm_runtime.map(Arc::new);
    // Subscribed before the first load, so that no change is missed; the first routes
    // include the control plane's, so no routed table is ever read without its validator.
    let changes = control.as_ref().map(|c| c.subscribe());
    let all_routes = match &control {
        Some(control) => {
            routes::with_tenant_routes(&config.routes, control.route_configs(&config.dlq.topic))
        }
        None => config.routes.clone(),
    };
    create_route_dlq_topics(&config.kafka, &all_routes, &mut Default::default()).await;
    let routes = Arc::new(SharedRoutes::new(Routes::load(
        &all_routes,
        wasm_runtime.as_deref(),
    )?));
    let reloads = control.zip(changes).map(|(control, changes)| {
        tokio::spawn(follow_control_plane(
            control,
            changes,
            config.clone(),
            wasm_runtime.clone(),
            routes.clone(),
        ))
    });
    if let Err(e) = create_dlq_topic(&config.kafka, &config.dlq.topic).await {
        tracing::warn!(topic = %config.dlq.topic, error = %e, "cannot create the DLQ topic; it must exist before a record is dead-lettered");
    }
    let kafka_breaker = Breaker::new("kafka", &config.resilience);
    let dlq_breaker = Breaker::new("dlq", &config.resilience);
    stats.watch(kafka_breaker.clone());
    stats.watch(dlq_breaker.clone());
    let source = source::connect(
        &config.kafka,
        Box::new(offsets),
        stats.clone(),
        config.runtime.stats_interval_ms,
        kafka_breaker.clone(),
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

    let (sink_done, mut flushed) = tokio_mpsc::unbounded_channel::<Flushed>();
    let stop_retrying = Arc::new(AtomicBool::new(false));
    let mut lanes = Vec::new();
    let mut threads = Vec::new();
    for (index, (name, topics, mut sink)) in sinks.into_iter().enumerate() {
        let (to_sink, sink_inbox) = mpsc::sync_channel::<Batch>(1);
        let breaker = Breaker::new(name.clone(), &config.resilience);
        stats.watch(breaker.clone());
        let load = LoadStage {
            lane: index,
            routes: routes.clone(),
            dlq: DlqWriter::connect(
                &config.kafka,
                &config.dlq.topic,
                Duration::from_millis(config.dlq.ack_timeout_ms),
                tokio::runtime::Handle::current(),
            )?,
            stats: stats.clone(),
            stop: stop_retrying.clone(),
            backoff: Backoff::new(&config.resilience),
            sink_breaker: breaker.clone(),
            dlq_breaker: dlq_breaker.clone(),
            kafka: config.kafka.clone(),
        };
        let done = sink_done.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("floe-{name}"))
                .spawn(move || load.run(sink.as_mut(), sink_inbox, done))
                .map_err(|_| PipelineError::SinkGone)?,
        );
        lanes.push(Lane {
            name,
            topics,
            batch: Batch::default(),
            in_flight: false,
            to_sink,
            breaker,
            paused: false,
            truncate: sink_configs[index].1.truncate,
        });
    }
    drop(sink_done);

    let mut state = Loop {
        config: &config,
        stats: &stats,
        source: &source,
        decoder: Decoder::with_max_value_bytes(config.kafka.max_value_bytes),
        routes: &routes,
        kafka_breaker,
        broker_probe: Arc::new(
            crate::source::BrokerProbe::new(&config.kafka).map_err(SourceError::from)?,
        ),
        probing: Arc::new(AtomicBool::new(false)),
        lane_of_topic: config
            .kafka
            .topics
            .iter()
            .map(|t| {
                let lane = lanes.iter().position(|l| l.topics.contains(t)).unwrap_or(0);
                (Arc::from(t.as_str()), lane)
            })
            .collect(),
        lanes,
    };
    stats.running.store(true, Ordering::Relaxed);
    let result = state.consume(&mut flushed, shutdown).await;
    stats.running.store(false, Ordering::Relaxed);
    let result = match result {
        Ok(()) => {
            let deadline = Duration::from_millis(config.runtime.shutdown_timeout_ms);
            match tokio::time::timeout(deadline, state.drain(&mut flushed)).await {
                Ok(r) => r,
                Err(_) => Err(PipelineError::ShutdownTimeout(deadline)),
            }
        }
        Err(e) => Err(e),
    };
    stop_retrying.store(true, Ordering::Relaxed);
    drop(state);
    for thread in threads {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    drop(wasm_runtime);
    tracing::info!("{}", stats.line());
    result
}

/// At most this many records are handled per turn of the consume loop.
const RECORDS_PER_TURN: usize = 256;

/// The future's output if it is ready without waiting (dropping it is how
/// `StreamConsumer::recv` is cancelled).
fn ready_now<T>(future: impl Future<Output = T>) -> Option<T> {
    let future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.poll(&mut context) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

struct Loop<'a> {
    config: &'a Config,
    stats: &'a Stats,
    source: &'a Source,
    decoder: Decoder,
    routes: &'a SharedRoutes,
    kafka_breaker: Arc<Breaker>,
    broker_probe: Arc<crate::source::BrokerProbe>,
    /// A metadata probe of the Kafka cluster is under way.
    probing: Arc<AtomicBool>,
    /// Each configured topic (interned) and the lane that loads it.
    lane_of_topic: Vec<(Arc<str>, usize)>,
    lanes: Vec<Lane>,
}

impl Loop<'_> {
    async fn consume(
        &mut self,
        flushed: &mut tokio_mpsc::UnboundedReceiver<Flushed>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), PipelineError> {
        tokio::pin!(shutdown);
        // A batch is handed off at most a tenth of its age limit late.
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.config.batch.max_age_ms / 10).clamp(5, 100),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let stats_every = self.config.runtime.stats_interval_ms;
        let mut last_stats = Instant::now();
        loop {
            // With every lane full, stop reading; a single full lane is paused instead.
            let accepting = self.lanes.iter().any(|l| !self.full(l));
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
                message = self.source.recv(), if accepting => {
                    self.on_received(message);
                    // Records already fetched are taken in the same turn, so the checks
                    // below run once per turn rather than once per record.
                    for _ in 1..RECORDS_PER_TURN {
                        match ready_now(self.source.recv()) {
                            Some(message) => self.on_received(message),
                            None => break,
                        }
                    }
                }
                _ = tick.tick() => {}
            }
            self.probe_kafka();
            self.drop_revoked();
            self.pause_or_resume();
            for lane in 0..self.lanes.len() {
                if !self.lanes[lane].in_flight && self.due(&self.lanes[lane]) {
                    self.hand_off(lane)?;
                }
            }
            if stats_every > 0 && last_stats.elapsed() >= Duration::from_millis(stats_every) {
                last_stats = Instant::now();
                tracing::info!(target: "floe::stats", "{}", self.stats.line());
            }
        }
    }

    fn on_received(
        &mut self,
        message: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
    ) {
        match message {
            Ok(m) => {
                if self.kafka_breaker.is_tripped() {
                    self.kafka_breaker.record_success();
                }
                self.on_message(&m)
            }
            Err(e) => {
                self.kafka_breaker.record_failure();
                self.stats.error("kafka");
                tracing::warn!(error = %e, category = "kafka", "consume error")
            }
        }
    }

    /// An idle topic brings no message to close the Kafka breaker after an outage: once
    /// its cool-down has passed, a metadata request to the cluster is the probe.
    fn probe_kafka(&self) {
        let breaker = &self.kafka_breaker;
        if !breaker.is_tripped()
            || breaker.delay(Duration::ZERO) > Duration::ZERO
            || self.probing.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let (probe, breaker, probing) = (
            self.broker_probe.clone(),
            breaker.clone(),
            self.probing.clone(),
        );
        tokio::task::spawn_blocking(move || {
            match probe.check(Duration::from_secs(2)) {
                Ok(()) => breaker.record_success(),
                Err(_) => breaker.record_failure(),
            }
            probing.store(false, Ordering::Relaxed);
        });
    }

    /// After shutdown: wait for the batches in flight, flush what is held, commit.
    async fn drain(
        &mut self,
        flushed: &mut tokio_mpsc::UnboundedReceiver<Flushed>,
    ) -> Result<(), PipelineError> {
        loop {
            for lane in 0..self.lanes.len() {
                if !self.lanes[lane].in_flight && !self.lanes[lane].batch.is_empty() {
                    self.hand_off(lane)?;
                }
            }
            if self.lanes.iter().all(|l| !l.in_flight) {
                return Ok(());
            }
            let done = flushed.recv().await.ok_or(PipelineError::SinkGone)?;
            self.on_flushed(done, CommitMode::Sync);
        }
    }

    fn due(&self, lane: &Lane) -> bool {
        !lane.batch.is_empty()
            && (lane.batch.row_events >= self.config.batch.max_rows
                || lane.batch.age_ms() >= u128::from(self.config.batch.max_age_ms))
    }

    fn hand_off(&mut self, lane: usize) -> Result<(), PipelineError> {
        let lane = &mut self.lanes[lane];
        let mut batch = std::mem::take(&mut lane.batch);
        batch.trace.received(&batch.offsets);
        lane.to_sink
            .send(batch)
            .map_err(|_| PipelineError::SinkGone)?;
        lane.in_flight = true;
        Ok(())
    }

    fn on_flushed(&mut self, done: Flushed, mode: CommitMode) {
        if let Some(lane) = self.lanes.get_mut(done.lane) {
            lane.in_flight = false;
        }
        let c = done.counts;
        Stats::add(&self.stats.loaded, c.upserts + c.deletes);
        Stats::add(&self.stats.deleted, c.deletes);
        Stats::add(&self.stats.toast_missing, c.toast_missing);
        Stats::add(&self.stats.flushes, 1);
        let _commit = tracing::info_span!(
            parent: &done.trace,
            "commit",
            "messaging.system" = "kafka",
            "messaging.operation.type" = "settle",
            "messaging.consumer.group.name" = %self.config.kafka.group,
            "floe.offsets" = %offsets_text(&done.offsets),
        )
        .entered();
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
        let (topic, lane) = match self
            .lane_of_topic
            .iter()
            .find(|(t, _)| t.as_ref() == m.topic())
        {
            Some((t, lane)) => (t.clone(), *lane),
            None => (Arc::from(m.topic()), 0),
        };
        let Lane {
            name: sink,
            truncate,
            batch,
            ..
        } = &mut self.lanes[lane];
        let truncate = *truncate;
        batch
            .trace
            .on_message(m.headers(), sink, &self.config.kafka.group);
        let position = KafkaPosition {
            topic: topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
        };
        batch.advance(&topic, m.partition(), m.offset());
        let origin = || Origin {
            topic: topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
        };
        let decode_started = Instant::now();
        let decoded = self.decoder.decode(m.key(), m.payload(), position);
        batch
            .trace
            .decoded(decode_started.elapsed(), decoded.is_err());
        let change = match decoded {
            Ok(c) => c,
            Err(e) => {
                Stats::add(&self.stats.decode_errors, 1);
                self.stats.error(Category::Decode.as_str());
                tracing::warn!(
                    parent: &batch.trace.root(),
                    category = "decode",
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    reason = %e,
                    "cannot decode message; sent to the DLQ"
                );
                batch.dead_letters.push(DeadLetter {
                    origin: origin(),
                    category: Category::Decode,
                    reason: e.to_string(),
                    code: None,
                    table: None,
                    validator: None,
                    destination: None,
                });
                return;
            }
        };
        Stats::add(&self.stats.decoded, 1);
        match change.event {
            Event::Row(row) => match self.routes.current().get(&row.table) {
                None => batch.add_row(row, &topic, m.partition(), m.offset()),
                Some(route) if route.validator.is_some() => {
                    let staged = Staged {
                        change: row,
                        origin: origin(),
                    };
                    batch.stage(staged.change.table.clone(), staged);
                }
                Some(route) => {
                    let table = row.table.clone();
                    let outcome = route.accepted(row);
                    let destination = route.dlq_topic.clone();
                    absorb(
                        batch,
                        self.stats,
                        outcome,
                        origin(),
                        table,
                        None,
                        destination,
                    );
                }
            },
            Event::Truncate { table } => match truncate {
                TruncateMode::Apply => {
                    let target = self
                        .routes
                        .current()
                        .get(&table)
                        .and_then(|r| r.target.clone())
                        .unwrap_or_else(|| table.clone());
                    batch.truncate(&table, target);
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
        for batch in self.lanes.iter_mut().map(|l| &mut l.batch) {
            batch.offsets.retain(|(t, p), _| !gone(t, *p));
            for table in batch.tables.values_mut() {
                table.retain(|row| !gone(&row.topic, row.partition));
            }
            for staged in batch.staged.values_mut() {
                staged.retain(|s| !gone(&s.origin.topic, s.origin.partition));
            }
            batch
                .dead_letters
                .retain(|d| !gone(&d.origin.topic, d.origin.partition));
        }
    }
}
