//! The span tree of one batch, following its data flow:
//!
//! ```text
//! batch ─┬─ consume ── decode
//!        ├─ transform      (one per validated table)
//!        ├─ dlq            (when the batch has dead letters)
//!        ├─ merge          (one per table)
//!        └─ commit
//! ```
//!
//! A W3C `traceparent` header on the batch's first message makes the batch a child of the
//! producer's trace; on the batch's other messages it becomes a link. Spans are opened
//! per batch and per table, never per message, so tracing costs the same at any rate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{BorrowedHeaders, Headers};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::batch::TableBatch;
use crate::change::Op;

/// Links recorded per batch at most (the SDK keeps 128 by default).
const MAX_LINKS: usize = 128;

/// The open spans of a batch that is still being read.
#[derive(Debug, Default)]
pub struct BatchTrace {
    root: Option<Span>,
    consume: Option<Span>,
    decode: Option<Span>,
    decode_time: Duration,
    decode_errors: u64,
    messages: u64,
    links: usize,
}

impl BatchTrace {
    /// Each message of the batch, before it is decoded: the first opens the batch's spans.
    pub fn on_message(&mut self, headers: Option<&BorrowedHeaders>, sink: &str, group: &str) {
        self.messages += 1;
        let producer = headers.and_then(producer_span);
        match &self.root {
            None => self.open(producer, sink, group),
            Some(root) => {
                if let Some(producer) = producer.filter(|_| self.links < MAX_LINKS) {
                    root.add_link(producer);
                    self.links += 1;
                }
            }
        }
    }

    fn open(&mut self, producer: Option<SpanContext>, sink: &str, group: &str) {
        // Only the sink and the trace id are fields, which every log line of the batch
        // shows; the conventions' attributes go to the span alone.
        let root = tracing::info_span!(
            "batch",
            "otel.kind" = "consumer",
            "floe.sink" = sink,
            trace_id = Empty,
        );
        root.set_attribute("messaging.system", "kafka");
        root.set_attribute("messaging.operation.type", "process");
        root.set_attribute("messaging.consumer.group.name", group.to_string());
        if let Some(producer) = producer {
            let parent = opentelemetry::Context::new().with_remote_span_context(producer);
            let _ = root.set_parent(parent);
        }
        let trace_id = root.context().span().span_context().trace_id();
        if trace_id != opentelemetry::trace::TraceId::INVALID {
            root.record("trace_id", tracing::field::display(trace_id));
        }
        let consume = tracing::info_span!(
            parent: &root,
            "consume",
            "otel.kind" = "consumer",
            "messaging.system" = "kafka",
            "messaging.operation.type" = "receive",
            "messaging.consumer.group.name" = group,
            "messaging.batch.message_count" = Empty,
            "messaging.destination.name" = Empty,
            "floe.offsets" = Empty,
        );
        self.decode = Some(tracing::info_span!(
            parent: &consume,
            "decode",
            "floe.decoded" = Empty,
            "floe.decode_errors" = Empty,
            "floe.decode_seconds" = Empty,
        ));
        self.consume = Some(consume);
        self.root = Some(root);
    }

    /// One message decoded (or not), and the time it took.
    pub fn decoded(&mut self, took: Duration, failed: bool) {
        self.decode_time += took;
        self.decode_errors += u64::from(failed);
    }

    /// The batch leaves the consume loop: ends its consume and decode spans. `offsets`
    /// are the next offsets to read per partition.
    pub fn received(&mut self, offsets: &BTreeMap<(Arc<str>, i32), i64>) {
        if let Some(decode) = self.decode.take() {
            decode.record("floe.decoded", self.messages - self.decode_errors);
            decode.record("floe.decode_errors", self.decode_errors);
            decode.record("floe.decode_seconds", self.decode_time.as_secs_f64());
        }
        if let Some(consume) = self.consume.take() {
            let mut topics: Vec<&str> = offsets.keys().map(|(t, _)| t.as_ref()).collect();
            topics.dedup();
            consume.record("messaging.batch.message_count", self.messages);
            consume.record("messaging.destination.name", topics.join(","));
            consume.record("floe.offsets", offsets_text(offsets));
        }
    }

    /// The batch's root span (a disabled span when the batch received no message).
    pub fn root(&self) -> Span {
        self.root.clone().unwrap_or_else(Span::none)
    }
}

/// `topic/partition=next_offset`, comma-separated: where the batch ends.
pub fn offsets_text(offsets: &BTreeMap<(Arc<str>, i32), i64>) -> String {
    let mut out = String::new();
    for ((topic, partition), next) in offsets {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{topic}/{partition}={next}");
    }
    out
}

/// A validator's run over one table's changes (entered while it runs).
pub fn transform_span(table: &str, tenant: Option<&str>, validator: &str, records: usize) -> Span {
    tracing::info_span!(
        "transform",
        "floe.table" = table,
        "floe.tenant" = tenant,
        "floe.validator" = validator,
        "floe.records_in" = records as u64,
        "floe.accepted" = Empty,
        "floe.rejected" = Empty,
        "floe.failed" = Empty,
    )
}

/// One table's MERGE in a sink (entered while it runs), with its rows by operation.
pub fn merge_span(db: &'static str, table: &str, rows: &TableBatch) -> Span {
    let (mut inserted, mut updated, mut deleted) = (0u64, 0u64, 0u64);
    for row in &rows.pending {
        match row.change.op {
            Op::Insert | Op::Read => inserted += 1,
            Op::Update => updated += 1,
            Op::Delete => deleted += 1,
        }
    }
    tracing::info_span!(
        "merge",
        "db.system.name" = db,
        "db.operation.name" = "MERGE",
        "db.collection.name" = table,
        "floe.table" = table,
        "floe.rows_inserted" = inserted,
        "floe.rows_updated" = updated,
        "floe.rows_deleted" = deleted,
    )
}

/// The W3C trace context a producer put in the message's headers.
fn producer_span(headers: &BorrowedHeaders) -> Option<SpanContext> {
    let context = TraceContextPropagator::new().extract(&KafkaHeaders(headers));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

struct KafkaHeaders<'a>(&'a BorrowedHeaders);

impl Extractor for KafkaHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_name_each_partition_and_its_next_offset() {
        let mut offsets = BTreeMap::new();
        offsets.insert((Arc::from("orders"), 1), 42);
        offsets.insert((Arc::from("orders"), 0), 7);
        assert_eq!(offsets_text(&offsets), "orders/0=7,orders/1=42");
    }
}
