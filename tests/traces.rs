//! Traces as a user follows them: one span tree per batch, exported over OTLP (HTTP and
//! gRPC) into a receiver that decodes the protobuf, continuing a producer's `traceparent`;
//! log lines carrying the batch's trace id; and loading unhindered by a dead collector.

use std::collections::BTreeSet;
use std::time::Duration;

use floe_e2e::otlp::{Received, Receiver};
use floe_e2e::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const OPERATOR: &str = "operator-key-traces";
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
const TOPIC: &str = "dbserver1.public.transactions";
/// The producer's trace, as an instrumented service would write it into the header.
const PRODUCER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";
const LATER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

/// Produces `events` transactions; the first carries `first_header` as its `traceparent`,
/// the last `last_header`.
fn produce_with_traceparents(broker: &Broker, events: u64, first_header: &str, last_header: &str) {
    let producer: BaseProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("producer");
    let mut workload =
        Workload::new(Profile::Transactions, 20, events, 11).with_invalid_percent(10);
    let records: Vec<_> = (0..events).flat_map(|_| workload.next_records()).collect();
    let last = records.len() - 1;
    for (i, record) in records.iter().enumerate() {
        let mut message: BaseRecord<'_, str, str> = BaseRecord::to(TOPIC).key(&record.key);
        if let Some(value) = &record.value {
            message = message.payload(value);
        }
        let header = match i {
            0 => Some(first_header),
            i if i == last => Some(last_header),
            _ => None,
        };
        if let Some(value) = header {
            let headers = OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(value),
            });
            message = message.headers(headers);
        }
        producer.send(message).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn one<'a>(spans: &'a [Received], what: &str, f: impl Fn(&Received) -> bool) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "exactly one {what} among {spans:#?}");
    found[0]
}

fn children<'a>(spans: &'a [Received], parent: &Received, name: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.span.name == name && s.parent_id() == parent.span_id())
        .collect()
}

fn number(span: &Received, key: &str) -> u64 {
    span.attr(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} of {} is not a number: {span:#?}", span.span.name))
}

#[test]
fn a_batch_is_one_span_tree_that_continues_the_producers_trace() {
    let receiver = Receiver::http();
    let broker = Broker::start("traces-http");
    let dir = scratch_dir("traces-http");
    broker.create_topic(TOPIC, 1);
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [
        ("FLOE_OTLP_ENDPOINT", receiver.endpoint.clone()),
        ("FLOE_OTLP_PROTOCOL", "http/protobuf".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ("FLOE_LOG_FORMAT", "json".to_string()),
        ("FLOE_LOG", "info,floe::pipeline::load=debug".to_string()),
    ];
    let mut floe = start_floe_with_admin_and(&broker, &dir, TOPIC, "traces", &addr, OPERATOR, &env);
    let key = create_tenant(&addr, OPERATOR, "acme");
    let wasm = std::fs::read(guest("transactions-validator")).expect("guest");
    route_through_validator(&addr, &key, "acme", "orders", wasm, "transactions");
    wait_for("the route", Duration::from_secs(30), || {
        floe.log_text().contains("acme/orders@v1").then_some(())
    });
    let later = traceparent(LATER_TRACE, "b7ad6b7169203331");
    produce_with_traceparents(
        &broker,
        300,
        &traceparent(PRODUCER_TRACE, PRODUCER_SPAN),
        &later,
    );
    broker.produce_raw(
        TOPIC,
        &[(Some("{\"id\":1}"), Some(b"{not json".as_slice()))],
    );
    broker.wait_fully_committed("traces", TOPIC, LOAD_TIMEOUT);

    // The producer's trace ends in a commit: the whole tree has been exported.
    let spans = wait_for(
        "the producer's trace to reach the commit",
        LOAD_TIMEOUT,
        || {
            let spans = receiver.spans();
            spans
                .iter()
                .any(|s| s.span.name == "commit" && s.trace_id() == PRODUCER_TRACE)
                .then_some(spans)
        },
    );
    let traced: Vec<Received> = spans
        .iter()
        .filter(|s| s.trace_id() == PRODUCER_TRACE)
        .cloned()
        .collect();
    let batch = one(&traced, "batch span", |s| s.span.name == "batch");
    assert_eq!(
        batch.parent_id(),
        PRODUCER_SPAN,
        "the batch continues the producer's span"
    );
    assert_eq!(batch.service, "floe");
    assert_eq!(batch.attr("messaging.system").as_deref(), Some("kafka"));
    assert_eq!(
        batch.attr("messaging.consumer.group.name").as_deref(),
        Some("traces")
    );
    assert_eq!(batch.attr("floe.sink").as_deref(), Some("sink"));

    let consume = one(&traced, "consume span", |s| s.span.name == "consume");
    assert_eq!(consume.parent_id(), batch.span_id());
    let messages = number(consume, "messaging.batch.message_count");
    assert!(messages >= 1);
    assert_eq!(
        consume.attr("messaging.destination.name").as_deref(),
        Some(TOPIC)
    );
    assert!(consume
        .attr("floe.offsets")
        .unwrap_or_default()
        .starts_with(&format!("{TOPIC}/0=")));
    let decode = one(&traced, "decode span", |s| s.span.name == "decode");
    assert_eq!(decode.parent_id(), consume.span_id());
    assert_eq!(
        number(decode, "floe.decoded") + number(decode, "floe.decode_errors"),
        messages
    );

    let transform = children(&traced, batch, "transform");
    assert_eq!(transform.len(), 1, "one validated table: {traced:#?}");
    let transform = transform[0];
    assert_eq!(
        transform.attr("floe.validator").as_deref(),
        Some("acme/orders@v1")
    );
    assert_eq!(transform.attr("floe.tenant").as_deref(), Some("acme"));
    assert_eq!(
        transform.attr("floe.table").as_deref(),
        Some("transactions")
    );
    let verdicts = number(transform, "floe.accepted")
        + number(transform, "floe.rejected")
        + number(transform, "floe.failed");
    assert_eq!(verdicts, number(transform, "floe.records_in"));

    let merge = children(&traced, batch, "merge");
    assert_eq!(merge.len(), 1, "one target table: {traced:#?}");
    assert_eq!(merge[0].attr("db.system.name").as_deref(), Some("duckdb"));
    assert_eq!(merge[0].attr("floe.table").as_deref(), Some("transactions"));
    let rows = ["inserted", "updated", "deleted"]
        .iter()
        .map(|op| number(merge[0], &format!("floe.rows_{op}")))
        .sum::<u64>();
    assert!(rows >= 1);
    let commit = children(&traced, batch, "commit");
    assert_eq!(commit.len(), 1);
    assert_eq!(commit[0].attr("floe.offsets"), consume.attr("floe.offsets"));

    // The last message's producer trace is continued too: as the parent of its batch, or
    // as a link from the batch it joined.
    let later_continued = spans.iter().any(|s| {
        s.span.name == "batch"
            && (s.trace_id() == LATER_TRACE
                || s.span
                    .links
                    .iter()
                    .any(|l| otlp::hex(&l.trace_id) == LATER_TRACE))
    });
    assert!(
        later_continued,
        "the later traceparent is a parent or a link"
    );

    // Every change went through exactly one transform span: their verdicts add up to
    // what floe counted.
    let stats = api(&addr, "GET", "/v1/stats", OPERATOR, "application/json", b"").1;
    let table = &stats["tables"]["transactions"];
    let sum = |key: &str| -> u64 {
        spans
            .iter()
            .filter(|s| s.span.name == "transform")
            .map(|s| number(s, key))
            .sum()
    };
    wait_for("every transform span", LOAD_TIMEOUT, || {
        (sum("floe.accepted") == table["accepted"].as_u64().unwrap_or(u64::MAX)).then_some(())
    });
    assert_eq!(Some(sum("floe.rejected")), table["rejected"].as_u64());

    // Log lines of a batch carry its trace id.
    let batch_traces: BTreeSet<String> = spans
        .iter()
        .filter(|s| s.span.name == "batch")
        .map(Received::trace_id)
        .collect();
    let logged: Vec<serde_json::Value> = floe
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| {
            let message = l["fields"]["message"].as_str().unwrap_or_default();
            message == "batch applied" || message.starts_with("cannot decode message")
        })
        .collect();
    let decode_errors = logged
        .iter()
        .filter(|l| l["fields"]["category"] == "decode")
        .count();
    assert_eq!(decode_errors, 1, "one undecodable message: {logged:#?}");
    for line in &logged {
        let trace = line["span"]["trace_id"].as_str().unwrap_or_default();
        assert!(
            batch_traces.contains(trace),
            "{line} names no exported batch"
        );
    }
    assert!(logged
        .iter()
        .any(|l| l["span"]["trace_id"] == PRODUCER_TRACE));
    assert_eq!(floe.terminate(Duration::from_secs(30)), 0, "a clean stop");
}

#[test]
fn spans_go_over_grpc_under_the_service_name_of_the_environment() {
    let receiver = Receiver::grpc();
    let broker = Broker::start("traces-grpc");
    let dir = scratch_dir("traces-grpc");
    broker.create_topic(TOPIC, 1);
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
        ("OTEL_SERVICE_NAME", "floe-east".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ];
    let mut floe =
        start_floe_with_admin_and(&broker, &dir, TOPIC, "traces-grpc", &addr, OPERATOR, &env);
    let mut workload = Workload::new(Profile::Transactions, 20, 200, 3);
    broker.produce(TOPIC, &mut workload, 200);
    broker.wait_fully_committed("traces-grpc", TOPIC, LOAD_TIMEOUT);
    let spans = wait_for("a merge span over gRPC", LOAD_TIMEOUT, || {
        let spans = receiver.spans();
        spans
            .iter()
            .any(|s| s.span.name == "commit")
            .then_some(spans)
    });
    let merge = spans
        .iter()
        .find(|s| s.span.name == "merge")
        .expect("merge span");
    assert_eq!(merge.service, "floe-east");
    assert_eq!(merge.attr("floe.table").as_deref(), Some("transactions"));
    let batch = spans
        .iter()
        .find(|s| s.span.span_id == merge.span.parent_span_id)
        .expect("the merge's batch span");
    assert_eq!(batch.span.name, "batch");
    assert!(
        batch.span.parent_span_id.is_empty(),
        "no producer trace: a root span"
    );
    assert_eq!(floe.terminate(Duration::from_secs(30)), 0, "a clean stop");
}

/// A collector that accepts connections and never answers is the worst case for an
/// exporter: every export waits for its timeout. Loading goes on at its own pace.
#[test]
fn a_collector_that_never_answers_does_not_hold_up_loading() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("address"));
    let broker = Broker::start("traces-silent");
    let dir = scratch_dir("traces-silent");
    broker.create_topic(TOPIC, 2);
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [
        ("FLOE_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_string()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64".to_string()),
    ];
    let mut floe =
        start_floe_with_admin_and(&broker, &dir, TOPIC, "traces-silent", &addr, OPERATOR, &env);
    let mut workload = Workload::new(Profile::Transactions, 500, 20_000, 9);
    for _ in 0..10 {
        broker.produce(TOPIC, &mut workload, 2_000);
    }
    broker.wait_fully_committed("traces-silent", TOPIC, LOAD_TIMEOUT);
    let stats = api(&addr, "GET", "/v1/stats", OPERATOR, "application/json", b"").1;
    assert!(stats["flushes"].as_u64() > Some(1), "{stats}");
    assert_eq!(floe.terminate(Duration::from_secs(30)), 0, "a clean stop");
    let rows = query_text(
        &dir.join("floe.duckdb"),
        "SELECT count(*)::VARCHAR FROM transactions",
    );
    let expected = workload.expected().len().to_string();
    assert_eq!(rows[0][0].as_deref(), Some(expected.as_str()));
}
