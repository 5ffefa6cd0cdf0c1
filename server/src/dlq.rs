//! The dead-letter queue: a Kafka topic receiving, unchanged, every record floe could not
//! load, with headers saying why and where it came from.
//!
//! A flush's dead letters are acknowledged by the broker before the flush's offsets are
//! stored; if the DLQ cannot be written, the flush is retried and nothing is committed.

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::KafkaConfig;

/// The largest dead letter floe writes: a record of any size the source topic can hold,
/// with its headers. DLQ topics floe creates accept as much (`max.message.bytes`).
pub const DLQ_MAX_MESSAGE_BYTES: &str = "104857600";

/// Why a record is in the DLQ; a metric label and the `floe.category` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Not a Debezium event floe can decode.
    Decode,
    /// Refused by its validator, or not loadable under its route.
    Validation,
    TransformTrap,
    TransformTimeout,
    TransformOom,
    /// The validator answered against the world's contract.
    TransformContract,
    /// The sink refused it and retrying cannot help.
    SinkPermanent,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Decode,
        Category::Validation,
        Category::TransformTrap,
        Category::TransformTimeout,
        Category::TransformOom,
        Category::TransformContract,
        Category::SinkPermanent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Decode => "decode",
            Category::Validation => "validation",
            Category::TransformTrap => "transform_trap",
            Category::TransformTimeout => "transform_timeout",
            Category::TransformOom => "transform_oom",
            Category::TransformContract => "transform_contract",
            Category::SinkPermanent => "sink_permanent",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// The Kafka record a change came from, kept so a dead letter can carry it unchanged.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// A record on its way to the DLQ.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub origin: Origin,
    pub category: Category,
    pub reason: String,
    /// The validator's rejection code.
    pub code: Option<String>,
    pub table: Option<Arc<str>>,
    /// Validator name and content hash.
    pub validator: Option<(Arc<str>, Arc<str>)>,
    /// The DLQ topic of the tenant whose route the record took; default: floe's.
    pub destination: Option<Arc<str>>,
}

/// Header names, shared with `floe dlq replay`.
pub mod header {
    pub const CATEGORY: &str = "floe.category";
    pub const REASON: &str = "floe.reason";
    pub const CODE: &str = "floe.code";
    pub const TABLE: &str = "floe.table";
    pub const SOURCE_TOPIC: &str = "floe.source.topic";
    pub const SOURCE_PARTITION: &str = "floe.source.partition";
    pub const SOURCE_OFFSET: &str = "floe.source.offset";
    pub const VALIDATOR: &str = "floe.validator";
    pub const VALIDATOR_HASH: &str = "floe.validator.hash";
    pub const TIME: &str = "floe.time";
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot create the DLQ producer: {0}")]
    Connect(rdkafka::error::KafkaError),
    #[error("DLQ topic {topic}: {count} dead letter(s) not acknowledged: {error}")]
    Deliver {
        topic: String,
        count: usize,
        error: String,
    },
}

impl DlqError {
    pub fn category(&self) -> &'static str {
        "dlq"
    }
}

pub struct DlqWriter {
    producer: FutureProducer,
    topic: String,
    ack_timeout: Duration,
    runtime: tokio::runtime::Handle,
}

impl DlqWriter {
    pub fn connect(
        kafka: &KafkaConfig,
        topic: &str,
        ack_timeout: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, DlqError> {
        let mut config = ClientConfig::new();
        for (k, v) in &kafka.properties {
            config.set(k, v);
        }
        let producer = config
            .set("bootstrap.servers", &kafka.brokers)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.max.bytes", DLQ_MAX_MESSAGE_BYTES)
            .create()
            .map_err(DlqError::Connect)?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            ack_timeout,
            runtime,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every letter and waits until the broker has acknowledged all of them.
    /// Call it from a thread that is not one of the async runtime's workers.
    pub fn send_all(&self, letters: &[DeadLetter]) -> Result<(), DlqError> {
        if letters.is_empty() {
            return Ok(());
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let failure = |error: String| DlqError::Deliver {
            topic: self.topic.clone(),
            count: letters.len(),
            error,
        };
        let mut pending = Vec::with_capacity(letters.len());
        for letter in letters {
            let headers = headers_of(letter, now_ms);
            let topic = letter.destination.as_deref().unwrap_or(&self.topic);
            let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                .headers(headers)
                .timestamp(now_ms);
            if let Some(k) = &letter.origin.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &letter.origin.value {
                record = record.payload(v.as_slice());
            }
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| failure(e.to_string()))?;
            pending.push(delivery);
        }
        self.producer.poll(Duration::ZERO);
        let timeout = self.ack_timeout;
        self.runtime.block_on(async {
            for delivery in pending {
                match tokio::time::timeout(timeout, delivery).await {
                    Ok(Ok(Ok(_))) => {}
                    Ok(Ok(Err((e, _)))) => return Err(failure(e.to_string())),
                    Ok(Err(_)) => return Err(failure("delivery cancelled".into())),
                    Err(_) => {
                        return Err(failure(format!("no acknowledgement within {timeout:?}")))
                    }
                }
            }
            Ok(())
        })
    }
}

fn headers_of(letter: &DeadLetter, now_ms: i64) -> OwnedHeaders {
    let partition = letter.origin.partition.to_string();
    let offset = letter.origin.offset.to_string();
    let time = now_ms.to_string();
    let mut pairs: Vec<(&str, &str)> = vec![
        (header::CATEGORY, letter.category.as_str()),
        (header::REASON, &letter.reason),
        (header::SOURCE_TOPIC, &letter.origin.topic),
        (header::SOURCE_PARTITION, &partition),
        (header::SOURCE_OFFSET, &offset),
        (header::TIME, &time),
    ];
    if let Some(code) = &letter.code {
        pairs.push((header::CODE, code));
    }
    if let Some(table) = &letter.table {
        pairs.push((header::TABLE, table));
    }
    if let Some((name, hash)) = &letter.validator {
        pairs.push((header::VALIDATOR, name));
        pairs.push((header::VALIDATOR_HASH, hash));
    }
    pairs
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}
