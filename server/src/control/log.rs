//! The control plane as a compacted Kafka topic, the way Kafka Connect keeps its
//! configuration: every node replays the topic when it starts and then follows it, so a
//! change made through any node is in force on all of them. One partition orders all
//! changes; no other coordination is needed.
//!
//! Records:
//! - `state`: `{"based_on": R, "state": …}`, the whole state as derived from the state
//!   record accepted at offset R. A record is accepted only when it is based on the latest
//!   accepted one — a compare-and-set decided by log order, so every node accepts the same
//!   records. The node whose change lost a race makes it again on the winner's state.
//!   Compaction keeps the latest `state`, so a replay may start from a record whose base
//!   is gone: it is taken as it is, and should it be a loser whose writer died, the
//!   winners' next change (derived from a state between its base and itself) replaces it.
//! - `component/{hash}/{i}/{n}`: chunk `i` of `n` of a component, written before the state
//!   that names it. Never rewritten, so compaction keeps every chunk.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{ControlError, Shared, State, Versioned};
use crate::config::KafkaConfig;

/// How often a change that keeps losing races is tried before the caller is told.
pub(super) const MAX_ATTEMPTS: usize = 5;
const STATE_KEY: &str = "state";
const COMPONENT_PREFIX: &str = "component/";
/// Below the brokers' default 1 MB message limit.
const CHUNK_BYTES: usize = 256 * 1024;
const WAIT: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct StateRecord {
    based_on: i64,
    state: State,
}

/// The next offset the follower will apply.
#[derive(Default)]
struct Progress {
    next: Mutex<i64>,
    moved: Condvar,
}

impl Progress {
    fn advance(&self, next: i64) {
        if let Ok(mut n) = self.next.lock() {
            *n = next;
        }
        self.moved.notify_all();
    }

    /// Waits until every record before `offset` is applied.
    fn wait_until(&self, offset: i64) -> Result<(), ControlError> {
        let deadline = Instant::now() + WAIT;
        let mut next = self.next.lock().map_err(|_| log_error("progress lock"))?;
        while *next < offset {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ControlError::Log(format!(
                    "the control-plane topic was not read up to offset {offset} within {WAIT:?}"
                )));
            }
            next = self
                .moved
                .wait_timeout(next, left)
                .map_err(|_| log_error("progress lock"))?
                .0;
        }
        Ok(())
    }
}

fn log_error(what: impl std::fmt::Display) -> ControlError {
    ControlError::Log(what.to_string())
}

/// Hands each delivery report to the thread waiting for it.
struct Delivery;

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<mpsc::Sender<Result<i64, String>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiter: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(message) => Ok(message.offset()),
            Err((e, _)) => Err(e.to_string()),
        };
        let _ = waiter.send(outcome);
    }
}

pub(super) struct ControlLog {
    topic: String,
    producer: rdkafka::producer::BaseProducer<Delivery>,
    /// Asks the broker how far the topic goes.
    watermarks: BaseConsumer,
    progress: Arc<Progress>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    follower: Option<std::thread::JoinHandle<()>>,
}

fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    config.set("bootstrap.servers", &kafka.brokers);
    config
}

impl ControlLog {
    /// Creates the topic when missing, replays it into `shared` and keeps following it.
    pub(super) async fn open(
        kafka: &KafkaConfig,
        topic: &str,
        shared: Arc<Shared>,
    ) -> Result<Self, ControlError> {
        crate::source::create_topic_with(
            &kafka.brokers,
            &kafka.properties,
            topic,
            1,
            &[("cleanup.policy", "compact")],
        )
        .await
        .map_err(|e| log_error(format!("cannot create topic {topic:?}: {e}")))?;
        shared.install(Versioned {
            revision: -1,
            state: State::default(),
        });
        let config = client_config(kafka);
        // A plain assignment: the group id is required by the client, never joined.
        let follower: BaseConsumer = config
            .clone()
            .set("group.id", "floe-control")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(log_error)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(log_error)?;
        follower.assign(&tpl).map_err(log_error)?;
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, progress, stop) = (shared.clone(), progress.clone(), stop.clone());
            std::thread::Builder::new()
                .name("floe-control".into())
                .spawn(move || follow(follower, &shared, &progress, &stop))
                .map_err(log_error)?
        };
        let log = Self {
            topic: topic.to_string(),
            producer: config.create_with_context(Delivery).map_err(log_error)?,
            watermarks: config.create().map_err(log_error)?,
            progress,
            shared,
            stop,
            follower: Some(thread),
        };
        blocking(|| log.catch_up())?;
        tracing::info!(%topic, revision = log.shared.revision(), "control plane replayed");
        Ok(log)
    }

    /// Waits until every record written before now is applied.
    pub(super) fn catch_up(&self) -> Result<(), ControlError> {
        blocking(|| {
            let (_, high) = self
                .watermarks
                .fetch_watermarks(&self.topic, 0, Duration::from_secs(10))
                .map_err(|e| log_error(format!("topic {:?}: {e}", self.topic)))?;
            self.progress.wait_until(high)
        })
    }

    /// Appends a state derived from the one accepted at `based_on`; true when the log
    /// accepted it, false when another node's change came first.
    pub(super) fn append_state(&self, based_on: i64, state: &State) -> Result<bool, ControlError> {
        let record = serde_json::to_vec(&StateRecord {
            based_on,
            state: state.clone(),
        })
        .map_err(|e| ControlError::Storage(e.to_string()))?;
        blocking(|| {
            let offset = self.send(STATE_KEY, &record)?;
            self.progress.wait_until(offset + 1)?;
            Ok(self.shared.revision() == offset)
        })
    }

    /// Appends a component in chunks that fit in a Kafka message.
    pub(super) fn append_component(&self, hash: &str, bytes: &[u8]) -> Result<(), ControlError> {
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
        let keys: Vec<String> = (0..chunks.len())
            .map(|i| format!("{COMPONENT_PREFIX}{hash}/{i}/{}", chunks.len()))
            .collect();
        let records: Vec<(&str, &[u8])> = keys.iter().map(String::as_str).zip(chunks).collect();
        blocking(|| self.send_all(&records).map(|_| ()))
    }

    /// Produces one record and waits for the broker's acknowledgement; its offset.
    fn send(&self, key: &str, payload: &[u8]) -> Result<i64, ControlError> {
        let offsets = self.send_all(&[(key, payload)])?;
        offsets
            .first()
            .copied()
            .ok_or_else(|| log_error("no acknowledgement from the broker"))
    }

    /// Produces every record before waiting for any acknowledgement (a component's chunks
    /// go out in one round trip, not one each); their offsets, in order.
    fn send_all(&self, records: &[(&str, &[u8])]) -> Result<Vec<i64>, ControlError> {
        let mut pending = Vec::with_capacity(records.len());
        for (key, payload) in records {
            let (done, outcome) = mpsc::channel();
            self.producer
                .send(
                    BaseRecord::with_opaque_to(&self.topic, Box::new(done))
                        .partition(0)
                        .key(*key)
                        .payload(*payload),
                )
                .map_err(|(e, _)| log_error(e))?;
            pending.push(outcome);
        }
        let deadline = Instant::now() + WAIT;
        let mut offsets = Vec::with_capacity(pending.len());
        for outcome in &pending {
            loop {
                match outcome.try_recv() {
                    Ok(result) => {
                        offsets.push(result.map_err(log_error)?);
                        break;
                    }
                    Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                        self.producer.poll(Duration::from_millis(20));
                    }
                    Err(_) => return Err(log_error("no acknowledgement from the broker")),
                }
            }
        }
        Ok(offsets)
    }
}

impl Drop for ControlLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.follower.take() {
            let _ = thread.join();
        }
    }
}

/// Runs on its own thread: applies every record of the topic, in order.
fn follow(consumer: BaseConsumer, shared: &Shared, progress: &Progress, stop: &AtomicBool) {
    let mut pieces: HashMap<String, BTreeMap<usize, Vec<u8>>> = HashMap::new();
    let mut snapshot_base = None;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let key = message
                    .key()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let payload = message.payload().unwrap_or_default();
                if key == STATE_KEY {
                    apply_state(shared, &mut snapshot_base, message.offset(), payload);
                } else if let Some(chunk) = key.strip_prefix(COMPONENT_PREFIX) {
                    apply_chunk(shared, &mut pieces, chunk, payload);
                }
                progress.advance(message.offset() + 1);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "cannot read the control-plane topic"),
            None => {}
        }
    }
}

/// `snapshot_base`: while the state is the first record read (compaction may have removed
/// what came before it), the offset that record was derived from.
fn apply_state(shared: &Shared, snapshot_base: &mut Option<i64>, offset: i64, payload: &[u8]) {
    let record: StateRecord = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(offset, error = %e, "unreadable control-plane state record skipped");
            return;
        }
    };
    let current = shared.revision();
    let accepted = if current < 0 {
        // A compacted topic starts at its latest state, whatever it was derived from.
        *snapshot_base = Some(record.based_on);
        true
    } else if record.based_on == current {
        *snapshot_base = None;
        true
    } else if snapshot_base.is_some_and(|base| base < record.based_on && record.based_on < current)
    {
        // The snapshot was a losing change whose winner compaction removed: no accepted
        // record lies between a winner and its base, so only the winners' chain derives
        // from a state there.
        *snapshot_base = None;
        true
    } else {
        false
    };
    // Anything else lost a race.
    if accepted {
        shared.install(Versioned {
            revision: offset,
            state: record.state,
        });
    } else {
        tracing::debug!(
            offset,
            based_on = record.based_on,
            current,
            "concurrent control-plane change not applied"
        );
    }
}

/// Collects a component's chunks; the whole component is stored once its hash checks.
fn apply_chunk(
    shared: &Shared,
    pieces: &mut HashMap<String, BTreeMap<usize, Vec<u8>>>,
    key: &str,
    payload: &[u8],
) {
    let parts: Vec<&str> = key.split('/').collect();
    let [hash, index, count] = parts.as_slice() else {
        tracing::error!(key, "malformed component chunk key skipped");
        return;
    };
    let (Ok(index), Ok(count)) = (index.parse::<usize>(), count.parse::<usize>()) else {
        tracing::error!(key, "malformed component chunk key skipped");
        return;
    };
    if shared.component_path(hash).exists() {
        return;
    }
    let chunks = pieces.entry(hash.to_string()).or_default();
    chunks.insert(index, payload.to_vec());
    if chunks.len() < count {
        return;
    }
    let Some(chunks) = pieces.remove(*hash) else {
        return;
    };
    let bytes: Vec<u8> = chunks.into_values().flatten().collect();
    if hex::encode(Sha256::digest(&bytes)) != *hash {
        tracing::error!(%hash, "component chunks do not match their hash; not stored");
        return;
    }
    if let Err(e) = shared.store_component(hash, &bytes) {
        tracing::error!(%hash, error = %e, "cannot store a component from the control-plane topic");
    }
}

/// Runs `f`, which waits on the broker, without stalling the async workers around it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Tenant;

    fn shared(dir: &std::path::Path) -> Shared {
        let shared = Shared {
            current: std::sync::RwLock::new(Versioned {
                revision: -1,
                state: State::default(),
            }),
            generation: tokio::sync::watch::Sender::new(0),
            components: dir.to_path_buf(),
        };
        std::fs::create_dir_all(dir).unwrap();
        shared
    }

    fn record(based_on: i64, tenant: &str) -> Vec<u8> {
        let mut state = State::default();
        state.tenants.insert(tenant.into(), Tenant::default());
        serde_json::to_vec(&StateRecord { based_on, state }).unwrap()
    }

    fn tenants(shared: &Shared) -> Vec<String> {
        shared.snapshot().state.tenants.into_keys().collect()
    }

    #[test]
    fn only_a_change_based_on_the_latest_state_is_applied() {
        let dir = std::env::temp_dir().join(format!("floe-log-state-{}", std::process::id()));
        let shared = shared(&dir);
        // A compacted topic starts at its latest state, whatever it was based on.
        let mut base = None;
        apply_state(&shared, &mut base, 7, &record(3, "a"));
        assert_eq!((shared.revision(), tenants(&shared)), (7, vec!["a".into()]));
        // Based on 3 as well (it lost to 7), or on something older: not applied.
        apply_state(&shared, &mut base, 8, &record(3, "x"));
        apply_state(&shared, &mut base, 9, &record(1, "x"));
        assert_eq!(shared.revision(), 7);
        apply_state(&shared, &mut base, 10, &record(7, "b"));
        // Based on 7 as well: it lost the race to offset 10, so no node applies it.
        apply_state(&shared, &mut base, 11, &record(7, "c"));
        assert_eq!(
            (shared.revision(), tenants(&shared)),
            (10, vec!["b".into()])
        );
        apply_state(&shared, &mut base, 12, b"not json");
        assert_eq!(shared.revision(), 10);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_node_that_starts_from_a_losing_change_joins_the_winners_next_change() {
        let dir = std::env::temp_dir().join(format!("floe-log-loser-{}", std::process::id()));
        let shared = shared(&dir);
        // History: winner at 5 (based on 2), loser at 6 (also based on 2), its writer
        // died; compaction kept only 6. The next winner, at 9, is based on 5.
        let mut base = None;
        apply_state(&shared, &mut base, 6, &record(2, "loser"));
        apply_state(&shared, &mut base, 9, &record(5, "winner"));
        assert_eq!(
            (shared.revision(), tenants(&shared)),
            (9, vec!["winner".into()])
        );
        // From then on the node follows the chain like every other.
        apply_state(&shared, &mut base, 10, &record(5, "late"));
        apply_state(&shared, &mut base, 11, &record(9, "next"));
        assert_eq!(
            (shared.revision(), tenants(&shared)),
            (11, vec!["next".into()])
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_component_is_stored_once_all_its_chunks_check_against_its_hash() {
        let dir = std::env::temp_dir().join(format!("floe-log-chunks-{}", std::process::id()));
        let shared = shared(&dir);
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let hash = hex::encode(Sha256::digest(&bytes));
        let mut pieces = HashMap::new();
        apply_chunk(&shared, &mut pieces, &format!("{hash}/1/2"), &bytes[600..]);
        assert!(!shared.component_path(&hash).exists());
        apply_chunk(&shared, &mut pieces, &format!("{hash}/0/2"), &bytes[..600]);
        assert_eq!(std::fs::read(shared.component_path(&hash)).unwrap(), bytes);

        let forged = "0".repeat(64);
        apply_chunk(&shared, &mut pieces, &format!("{forged}/0/1"), &bytes);
        assert!(!shared.component_path(&forged).exists());
        apply_chunk(&shared, &mut pieces, "no-count", &bytes);
        assert!(pieces.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
