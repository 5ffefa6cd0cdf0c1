//! `floe dlq replay`: sends dead letters back through the pipeline.
//!
//! Matching DLQ records are decoded and run through the validators configured now. Those
//! that would now load are written back, unchanged, to their source topic, where the
//! running pipeline loads them; the others stay in the DLQ and are reported. Sink offsets
//! and the never-move-backwards guard keep a replayed change from overwriting a newer
//! one (with hard deletes, a replayed change to a key deleted since re-creates the row:
//! use `soft_delete` where that matters).

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::change::{Event, KafkaPosition};
use crate::config::Config;
use crate::debezium::Decoder;
use crate::dlq::{header, Category, Origin};
use crate::transform::{Outcome, Routes, Staged};

/// Which dead letters to replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub category: Option<Category>,
    pub table: Option<String>,
    /// Inclusive range of DLQ offsets.
    pub from_offset: Option<i64>,
    pub to_offset: Option<i64>,
}

/// What a replay did, by outcome.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub examined: u64,
    pub matched: u64,
    /// Written back to their source topic.
    pub resent: u64,
    /// Still refused, by rejection code or failure category.
    pub still_failing: BTreeMap<String, u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "examined={} matched={} resent={} still_failing={}",
            self.examined,
            self.matched,
            self.resent,
            self.still_failing.values().sum::<u64>()
        )?;
        for (why, n) in &self.still_failing {
            write!(f, " {why}={n}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("DLQ topic {0} does not exist")]
    MissingTopic(String),
    #[error("reading the DLQ stopped short of its end within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Route(#[from] crate::transform::RouteError),
    #[error(transparent)]
    Wasm(#[from] crate::transform::LoadError),
}

struct Letter {
    origin: Origin,
    dlq_offset: i64,
}

pub fn replay(config: &Config, filter: &Filter, dry_run: bool) -> Result<Report, ReplayError> {
    let runtime = Routes::runtime_for(&config.routes, &config.wasm.cache_dir)?;
    let routes = Routes::load(&config.routes, runtime.as_ref())?;
    let mut report = Report::default();
    let letters = read_dlq(config, filter, &mut report)?;
    let mut decoder = Decoder::new();
    let mut resend: Vec<Letter> = Vec::new();
    let mut staged: BTreeMap<Arc<str>, Vec<(Staged, i64)>> = BTreeMap::new();
    for letter in letters {
        let o = &letter.origin;
        let position = KafkaPosition {
            topic: o.topic.clone(),
            partition: o.partition,
            offset: o.offset,
        };
        match decoder.decode(o.key.as_deref(), o.value.as_deref(), position) {
            Err(_) => *report.still_failing.entry("decode".into()).or_default() += 1,
            Ok(change) => match change.event {
                Event::Row(row) if routes.validator(&row.table).is_some() => {
                    let dlq_offset = letter.dlq_offset;
                    staged.entry(row.table.clone()).or_default().push((
                        Staged {
                            change: row,
                            origin: letter.origin,
                        },
                        dlq_offset,
                    ));
                }
                _ => resend.push(letter),
            },
        }
    }
    for (table, items) in staged {
        let (items, dlq_offsets): (Vec<Staged>, Vec<i64>) = items.into_iter().unzip();
        let (Some(route), Some(validator)) = (routes.get(&table), routes.validator(&table)) else {
            continue;
        };
        let outcomes = route.validate(validator, items);
        for ((origin, outcome), dlq_offset) in outcomes.into_iter().zip(dlq_offsets) {
            match outcome {
                Outcome::Accept(_) | Outcome::Skip => resend.push(Letter { origin, dlq_offset }),
                Outcome::Reject { code, .. } => {
                    *report
                        .still_failing
                        .entry(format!("rejected:{code}"))
                        .or_default() += 1
                }
                Outcome::Failed { category, .. } => {
                    *report
                        .still_failing
                        .entry(category.as_str().into())
                        .or_default() += 1
                }
            }
        }
    }
    if !dry_run {
        write_back(config, &resend)?;
    }
    report.resent = resend.len() as u64;
    Ok(report)
}

fn header_text<'a>(
    headers: Option<&'a rdkafka::message::BorrowedHeaders>,
    name: &str,
) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

fn read_dlq(
    config: &Config,
    filter: &Filter,
    report: &mut Report,
) -> Result<Vec<Letter>, ReplayError> {
    let topic = &config.dlq.topic;
    let mut client = ClientConfig::new();
    for (k, v) in &config.kafka.properties {
        client.set(k, v);
    }
    let consumer: BaseConsumer = client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", format!("{}-dlq-replay", config.kafka.group))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let timeout = Duration::from_secs(10);
    let partitions = crate::source::topic_partitions(&consumer, topic)?
        .ok_or_else(|| ReplayError::MissingTopic(topic.clone()))?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let start = low.max(filter.from_offset.unwrap_or(low));
        let end = high.min(filter.to_offset.map_or(high, |t| t + 1));
        if start < end {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            remaining.insert(p, end);
        }
    }
    consumer.assign(&tpl)?;
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(ReplayError::Timeout(Duration::from_secs(120)));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = message?;
        let Some(&end) = remaining.get(&m.partition()) else {
            continue;
        };
        if m.offset() >= end {
            remaining.remove(&m.partition());
            continue;
        }
        if m.offset() + 1 >= end {
            remaining.remove(&m.partition());
        }
        report.examined += 1;
        let headers = m.headers();
        let category = header_text(headers, header::CATEGORY).and_then(Category::parse);
        let table = header_text(headers, header::TABLE);
        let source = (
            header_text(headers, header::SOURCE_TOPIC),
            header_text(headers, header::SOURCE_PARTITION).and_then(|p| p.parse().ok()),
            header_text(headers, header::SOURCE_OFFSET).and_then(|o| o.parse().ok()),
        );
        let wanted = filter.category.is_none_or(|c| category == Some(c))
            && filter.table.as_deref().is_none_or(|t| table == Some(t));
        let (Some(source_topic), Some(partition), Some(offset)) = source else {
            tracing::warn!(
                dlq_offset = m.offset(),
                "dead letter without source headers; left alone"
            );
            continue;
        };
        if wanted {
            report.matched += 1;
            letters.push(Letter {
                origin: Origin {
                    topic: Arc::from(source_topic),
                    partition,
                    offset,
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                },
                dlq_offset: m.offset(),
            });
        }
    }
    Ok(letters)
}

/// Writes records back to their source topic and partition, so that per-key order in the
/// source partition holds for them too.
fn write_back(config: &Config, letters: &[Letter]) -> Result<(), ReplayError> {
    if letters.is_empty() {
        return Ok(());
    }
    let mut client = ClientConfig::new();
    for (k, v) in &config.kafka.properties {
        client.set(k, v);
    }
    let producer: BaseProducer = client
        .set("bootstrap.servers", &config.kafka.brokers)
        .create()?;
    for letter in letters {
        let o = &letter.origin;
        let from = format!("{}/{}", config.dlq.topic, letter.dlq_offset);
        let headers = OwnedHeaders::new().insert(Header {
            key: "floe.replayed-from",
            value: Some(from.as_bytes()),
        });
        let mut record = BaseRecord::<[u8], [u8]>::to(&o.topic)
            .partition(o.partition)
            .headers(headers);
        if let Some(k) = &o.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &o.value {
            record = record.payload(v.as_slice());
        }
        producer.send(record).map_err(|(e, _)| e)?;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}
