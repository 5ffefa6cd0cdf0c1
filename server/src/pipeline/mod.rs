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
use crate::config::{Assignment, Config, KafkaConfig, RouteConfig, TruncateMode};
use crate::control::ControlPlane;
use crate::debezium::Decoder;
use crate::dlq::{Category, DeadLetter, DlqError, DlqWriter, Origin};
use crate::resilience::{Backoff, Breaker};
use crate::sink::{ApplyCounts, OffsetReader, SinkError, StoredOffsets};
use crate::source::{self, Source, SourceError};
use crate::telemetry::Stats;
use crate::transform::{LoadError, RouteError, Routes, Runtime, SharedRoutes, Staged};
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

/// The outcome of one flush, reported by a sink thread.
struct Flushed {
    lane: usize,
    offsets: BTreeMap<(Arc<str>, i32), i64>,
    counts: ApplyCounts,
}

/// One sink, the topics it loads, its batch and its breaker.
struct Lane {
    name: String,
    /// Topics this lane loads; empty for the default lane (every other topic).
    topics: Vec<String>,
    batch: Batch,
    in_flight: bool,
    to_sink: mpsc::SyncSender<Batch>,
    breaker: Arc<Breaker>,
    /// Whether this lane's partitions are paused right now.
    paused: bool,
    truncate: TruncateMode,
}

/// Offsets come from the sink that owns each topic.
struct LaneOffsets(Vec<(Vec<String>, Box<dyn OffsetReader>)>);

impl LaneOffsets {
    fn owns(topics: &[String], all: &[Vec<String>], topic: &str) -> bool {
        if topics.is_empty() {
            !all.iter().any(|t| t.iter().any(|t| t == topic))
        } else {
            topics.iter().any(|t| t == topic)
        }
    }
}

impl OffsetReader for LaneOffsets {
    fn stored_offsets(&self) -> Result<StoredOffsets, SinkError> {
        let all: Vec<Vec<String>> = self.0.iter().map(|(t, _)| t.clone()).collect();
        let mut out = Vec::new();
        for (topics, reader) in &self.0 {
            out.extend(
                reader
                    .stored_offsets()?
                    .into_iter()
                    .filter(|(t, _, _)| Self::owns(topics, &all, t)),
            );
        }
        Ok(out)
    }
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
    let mut all_routes = config.routes.clone();
    if let Some(control) = &control {
        all_routes.extend(control.route_configs(&config.dlq.topic));
    }
    create_dlq_topics(&config.kafka, &all_routes).await;
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
    let kafka = &config.kafka;
    if let Err(e) =
        source::create_topic(&kafka.brokers, &kafka.properties, &config.dlq.topic, 1).await
    {
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
        decoder: Decoder::new(),
        routes: &routes,
        kafka_breaker,
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

/// Keeps the routes in force equal to the configuration's plus the control plane's (with
/// each validator at its active version), loading them again after every change. Routes
/// that cannot be loaded are logged and the previous ones stay in force.
async fn follow_control_plane(
    control: Arc<ControlPlane>,
    mut changes: tokio::sync::watch::Receiver<u64>,
    config: Config,
    runtime: Option<Arc<Runtime>>,
    routes: Arc<SharedRoutes>,
) {
    while changes.changed().await.is_ok() {
        let mut all = config.routes.clone();
        all.extend(control.route_configs(&config.dlq.topic));
        create_dlq_topics(&config.kafka, &all).await;
        let runtime = runtime.clone();
        let loaded =
            tokio::task::spawn_blocking(move || Routes::load(&all, runtime.as_deref())).await;
        match loaded {
            Ok(Ok(next)) => {
                routes.replace(next);
                tracing::info!("routes loaded from the configuration and the control plane");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot load the control plane's routes; the previous routes stay")
            }
            Err(e) => tracing::error!(error = %e, "route loading stopped"),
        }
    }
}

/// Creates the tenants' DLQ topics the routes name (existing ones are left alone).
async fn create_dlq_topics(kafka: &KafkaConfig, routes: &[RouteConfig]) {
    let topics: std::collections::BTreeSet<&str> = routes
        .iter()
        .filter_map(|r| r.dlq_topic.as_deref())
        .collect();
    for topic in topics {
        if let Err(e) = source::create_topic(&kafka.brokers, &kafka.properties, topic, 1).await {
            tracing::warn!(%topic, error = %e, "cannot create a tenant's DLQ topic");
        }
    }
}

struct Loop<'a> {
    config: &'a Config,
    stats: &'a Stats,
    source: &'a Source,
    decoder: Decoder,
    routes: &'a SharedRoutes,
    kafka_breaker: Arc<Breaker>,
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
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.config.batch.max_age_ms / 4).clamp(10, 250),
        ));
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
                message = self.source.recv(), if accepting => match message {
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
                },
                _ = tick.tick() => {}
            }
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

    fn full(&self, lane: &Lane) -> bool {
        lane.batch.row_events >= self.config.batch.max_pending_rows
    }

    fn due(&self, lane: &Lane) -> bool {
        !lane.batch.is_empty()
            && (lane.batch.row_events >= self.config.batch.max_rows
                || lane.batch.age_ms() >= u128::from(self.config.batch.max_age_ms))
    }

    fn hand_off(&mut self, lane: usize) -> Result<(), PipelineError> {
        let lane = &mut self.lanes[lane];
        let batch = std::mem::take(&mut lane.batch);
        lane.to_sink
            .send(batch)
            .map_err(|_| PipelineError::SinkGone)?;
        lane.in_flight = true;
        Ok(())
    }

    /// A lane whose sink is down (breaker open), or whose batch is full while other lanes
    /// still take records, has its partitions paused: their records stay in Kafka, their
    /// offsets are held, and the other lanes keep flowing. Paused partitions are paused
    /// again on every pass, since a rebalance resumes what it assigns.
    fn pause_or_resume(&mut self) {
        let several = self.lanes.len() > 1;
        for index in 0..self.lanes.len() {
            let lane = &self.lanes[index];
            let hold = lane.breaker.is_tripped() || (several && self.full(lane));
            if !hold && !lane.paused {
                continue;
            }
            let partitions = self.partitions_of(index);
            if partitions.count() == 0 {
                continue;
            }
            let lane = &mut self.lanes[index];
            let result = if hold {
                self.source.pause(&partitions)
            } else {
                self.source.resume(&partitions)
            };
            match result {
                Ok(()) if hold != lane.paused => {
                    lane.paused = hold;
                    tracing::info!(sink = %lane.name, partitions = partitions.count(), "{}", if hold { "partitions paused" } else { "partitions resumed" });
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(sink = %lane.name, error = %e, "cannot pause or resume partitions")
                }
            }
        }
    }

    /// The partitions assigned to this process that feed `lane`.
    fn partitions_of(&self, lane: usize) -> TopicPartitionList {
        let mut out = TopicPartitionList::new();
        if let Ok(assigned) = self.source.assignment() {
            for e in assigned.elements() {
                if self.lane_of(e.topic()) == lane {
                    out.add_partition(e.topic(), e.partition());
                }
            }
        }
        out
    }

    fn lane_of(&self, topic: &str) -> usize {
        self.lane_of_topic
            .iter()
            .find(|(t, _)| t.as_ref() == topic)
            .map_or(0, |(_, lane)| *lane)
    }

    fn on_flushed(&mut self, done: Flushed, mode: CommitMode) {
        if let Some(lane) = self.lanes.get_mut(done.lane) {
            lane.in_flight = false;
        }
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
        let (topic, lane) = match self
            .lane_of_topic
            .iter()
            .find(|(t, _)| t.as_ref() == m.topic())
        {
            Some((t, lane)) => (t.clone(), *lane),
            None => (Arc::from(m.topic()), 0),
        };
        let truncate = self.lanes[lane].truncate;
        let batch = &mut self.lanes[lane].batch;
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
        let change = match self.decoder.decode(m.key(), m.payload(), position) {
            Ok(c) => c,
            Err(e) => {
                Stats::add(&self.stats.decode_errors, 1);
                self.stats.error(Category::Decode.as_str());
                tracing::warn!(
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
