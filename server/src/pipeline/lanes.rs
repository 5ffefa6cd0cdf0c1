//! Lanes: one per sink, each with the topics it loads, its batch and its breaker; a lane
//! whose sink is down has its partitions paused.

use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::TopicPartitionList;
use std::sync::{mpsc, Arc};

use super::Loop;
use crate::batch::Batch;
use crate::config::TruncateMode;
use crate::resilience::Breaker;
use crate::sink::{OffsetReader, SinkError, StoredOffsets};

/// One sink, the topics it loads, its batch and its breaker.
pub(super) struct Lane {
    pub(super) name: String,
    /// Topics this lane loads; empty for the default lane (every other topic).
    pub(super) topics: Vec<String>,
    pub(super) batch: Batch,
    pub(super) in_flight: bool,
    pub(super) to_sink: mpsc::SyncSender<Batch>,
    pub(super) breaker: Arc<Breaker>,
    /// Whether this lane's partitions are paused right now.
    pub(super) paused: bool,
    pub(super) truncate: TruncateMode,
}

/// Offsets come from the sink that owns each topic.
pub(super) struct LaneOffsets(pub(super) Vec<(Vec<String>, Box<dyn OffsetReader>)>);

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

impl Loop<'_> {
    pub(super) fn full(&self, lane: &Lane) -> bool {
        lane.batch.row_events >= self.config.batch.max_pending_rows
    }

    /// A lane whose sink is down (breaker open), or whose batch is full while other lanes
    /// still take records, has its partitions paused: their records stay in Kafka, their
    /// offsets are held, and the other lanes keep flowing. Paused partitions are paused
    /// again on every pass, since a rebalance resumes what it assigns.
    pub(super) fn pause_or_resume(&mut self) {
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

    pub(super) fn lane_of(&self, topic: &str) -> usize {
        self.lane_of_topic
            .iter()
            .find(|(t, _)| t.as_ref() == topic)
            .map_or(0, |(_, lane)| *lane)
    }
}
