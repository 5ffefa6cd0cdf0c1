//! The Kafka source: consumer set-up, partition assignment and seeking to the offsets the
//! sink has applied.

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::KafkaConfig;
use crate::resilience::Breaker;
use crate::sink::{OffsetReader, StoredOffsets};
use crate::telemetry::Stats;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka: topic {0:?} does not exist (create it, or check kafka.topics)")]
    MissingTopic(String),
    #[error("kafka: cannot read the sink's stored offsets: {0}")]
    Offsets(String),
    #[error("kafka: record {topic}/{partition}@{offset} could not be read again")]
    Refetch {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// librdkafka callbacks: seek to the sink's offsets on assignment, record revocations,
/// and keep the lag figure current.
pub struct SourceContext {
    offsets: Box<dyn OffsetReader>,
    stats: Arc<Stats>,
    /// Fed by librdkafka's error callback (brokers down, transport failures).
    breaker: Arc<Breaker>,
    revoked: Mutex<Vec<(String, i32)>>,
}

impl SourceContext {
    /// Partitions taken away since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.breaker.record_failure();
        self.stats.error("kafka");
        tracing::warn!(category = "kafka", %error, reason, breaker = self.breaker.state().as_str(), "Kafka client error");
    }

    fn stats(&self, statistics: Statistics) {
        let lags = statistics
            .topics
            .iter()
            .flat_map(|(topic, t)| t.partitions.values().map(move |p| (topic, p)))
            .filter(|(_, p)| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|(topic, p)| ((topic.clone(), p.partition), p.consumer_lag))
            .collect();
        self.stats.set_partition_lag(lags);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                match self.offsets.stored_offsets() {
                    Ok(stored) => set_start_offsets(tpl, &stored),
                    // The group's committed offsets never run ahead of the sink.
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read stored offsets; resuming from the group's")
                    }
                }
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let gone: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = gone.len(), "partitions revoked");
                if let Ok(mut r) = self.revoked.lock() {
                    r.extend(gone);
                }
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(error = %e, "offset commit to the consumer group failed");
        }
    }
}

/// Sets each partition's start to the sink's stored next offset, or the beginning when
/// the sink has never applied anything from it.
fn set_start_offsets(tpl: &mut TopicPartitionList, stored: &StoredOffsets) {
    let by_partition: HashMap<(&str, i32), i64> = stored
        .iter()
        .map(|(t, p, o)| ((t.as_str(), *p), *o))
        .collect();
    let partitions: Vec<(String, i32)> = tpl
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    for (topic, partition) in partitions {
        let offset = by_partition
            .get(&(topic.as_str(), partition))
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        let _ = tpl.set_partition_offset(&topic, partition, offset);
    }
}

pub type Source = StreamConsumer<SourceContext>;

/// The largest fetch of one partition (and of one request): records up to this size are
/// read whatever the broker's handling of oversized batches.
pub const LARGEST_FETCH_BYTES: &str = "67108864";

pub fn connect(
    config: &KafkaConfig,
    offsets: Box<dyn OffsetReader>,
    stats: Arc<Stats>,
    stats_interval_ms: u64,
    breaker: Arc<Breaker>,
) -> Result<Source, SourceError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        // Offsets are committed by floe only after the sink applied them.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // A broker that does not hand out a batch larger than the fetch size (Kafka does,
        // tansu does not) would stall the partition on one large record: fetch up to 64 MiB.
        .set("max.partition.fetch.bytes", LARGEST_FETCH_BYTES)
        .set("fetch.max.bytes", LARGEST_FETCH_BYTES)
        .set(
            "statistics.interval.ms",
            stats_interval_ms.max(1000).to_string(),
        );
    for (k, v) in &config.properties {
        client.set(k, v);
    }
    let context = SourceContext {
        offsets,
        stats,
        breaker,
        revoked: Mutex::new(Vec::new()),
    };
    Ok(client.create_with_context(context)?)
}

/// A client that only asks the brokers for metadata: is the cluster reachable now?
pub struct BrokerProbe(rdkafka::consumer::BaseConsumer);

impl BrokerProbe {
    pub fn new(config: &KafkaConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let mut client = ClientConfig::new();
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        Ok(Self(
            client.set("bootstrap.servers", &config.brokers).create()?,
        ))
    }

    /// Blocks up to `timeout` for a metadata answer.
    pub fn check(&self, timeout: Duration) -> Result<(), rdkafka::error::KafkaError> {
        self.0.fetch_metadata(None, timeout).map(|_| ())
    }

    /// The partition ids of `topic`, or `None` when the cluster does not know it.
    pub fn partitions(&self, topic: &str) -> Result<Option<Vec<i32>>, rdkafka::error::KafkaError> {
        topic_partitions(&self.0, topic)
    }

    /// Those of `topics` the cluster does not know.
    pub fn missing(&self, topics: &[String]) -> Result<Vec<String>, rdkafka::error::KafkaError> {
        let mut out = Vec::new();
        for topic in topics {
            if self.partitions(topic)?.is_none() {
                out.push(topic.clone());
            }
        }
        Ok(out)
    }
}

/// The partition ids of `topic`, or `None` when the broker does not know the topic.
pub fn topic_partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
) -> Result<Option<Vec<i32>>, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect()))
}

/// `assignment = "all"`: take every partition of the topics, starting at the sink's
/// offsets. No group membership, so a restarted process resumes at once.
pub fn assign_all(
    source: &Source,
    topics: &[String],
    stored: &StoredOffsets,
) -> Result<usize, SourceError> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let partitions = topic_partitions(source, topic)?
            .ok_or_else(|| SourceError::MissingTopic(topic.clone()))?;
        for p in partitions {
            tpl.add_partition(topic, p);
        }
    }
    set_start_offsets(&mut tpl, stored);
    source.assign(&tpl)?;
    Ok(tpl.count())
}

/// One partition's progress: what the group committed against the high watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: i32,
    pub committed: Option<i64>,
    pub high: i64,
}

impl PartitionProgress {
    /// Messages not yet committed; never negative (a broker may report a high watermark
    /// behind the last offset, tansu's memory storage does).
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(0)).max(0)
    }
}

/// Committed offsets of `group` against the high watermarks of `topic`, as lag tools see them.
pub fn group_progress(
    brokers: &str,
    group: &str,
    topic: &str,
) -> Result<Vec<PartitionProgress>, SourceError> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let partitions = topic_partitions(&consumer, topic)?
        .ok_or_else(|| SourceError::MissingTopic(topic.to_string()))?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut out = Vec::with_capacity(partitions.len());
    for p in partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let committed = committed
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        out.push(PartitionProgress {
            partition: p,
            committed,
            high,
        });
    }
    Ok(out)
}

/// Creates `topic` with `partitions` partitions; an existing topic is left as it is.
pub async fn create_topic(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
) -> Result<(), rdkafka::error::KafkaError> {
    create_topic_with(brokers, properties, topic, partitions, &[]).await
}

/// Creates `topic` with topic-level settings (e.g. `cleanup.policy=compact`); an
/// existing topic is left as it is.
pub async fn create_topic_with(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) -> Result<(), rdkafka::error::KafkaError> {
    create_topics_with(brokers, properties, &[topic], partitions, settings).await
}

/// Creates `topics` in one request (existing ones are left alone): a tenant per topic
/// means a hundred topics at start, which one at a time took seconds.
pub async fn create_topics_with(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topics: &[&str],
    partitions: i32,
    settings: &[(&str, &str)],
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    if topics.is_empty() {
        return Ok(());
    }
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(k, v);
    }
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        config.set("bootstrap.servers", brokers).create()?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|topic| {
            settings.iter().fold(
                NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
                |t, (name, value)| t.set(name, value),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// A record's bytes as they are in the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Key and value of one record, read again from the broker: a dead letter carries the
/// original bytes even for changes whose bytes were not kept (rows a sink refuses).
pub fn fetch_record(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<RawRecord, SourceError> {
    use rdkafka::message::Message;
    let mut client = ClientConfig::new();
    for (k, v) in &config.properties {
        client.set(k, v);
    }
    let consumer: BaseConsumer = client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", format!("{}-refetch", config.group))
        .set("enable.auto.commit", "false")
        .set("max.partition.fetch.bytes", LARGEST_FETCH_BYTES)
        .set("fetch.max.bytes", LARGEST_FETCH_BYTES)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = message?;
        if m.offset() == offset {
            return Ok(RawRecord {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
            });
        }
        if m.offset() > offset {
            break;
        }
    }
    Err(SourceError::Refetch {
        topic: topic.to_string(),
        partition,
        offset,
    })
}
