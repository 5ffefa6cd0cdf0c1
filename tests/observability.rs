//! What operators watch: `/metrics` scraped by a real Prometheus server.

use floe_e2e::*;
use std::time::Duration;

const OPERATOR: &str = "operator-secret";
const LOAD_TIMEOUT: Duration = Duration::from_secs(240);

/// Prometheus scrapes `/metrics` with the operator key; its queries return what floe
/// did: per tenant and table verdicts equal to the dead letters, rows loaded, the
/// validator version in force, every breaker closed.
#[test]
fn prometheus_scrapes_what_floe_did() {
    let broker = Broker::start("obs-prom");
    let dir = scratch_dir("obs-prom");
    let topic = "dbserver1.public.transactions";
    broker.create_topic(topic, 2);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut floe = start_floe_with_admin(&broker, &dir, topic, "obs-prom", &addr, OPERATOR);
    let key = create_tenant(&addr, OPERATOR, "acme");
    let wasm = std::fs::read(guest("transactions-validator")).expect("guest");
    route_through_validator(&addr, &key, "acme", "orders", wasm, "transactions");
    wait_for("the route", Duration::from_secs(30), || {
        floe.log_text().contains("acme/orders@v1").then_some(())
    });
    let mut tx = Workload::new(Profile::Transactions, 200, 3000, 5).with_invalid_percent(10);
    broker.produce(topic, &mut tx, 3000);
    broker.wait_fully_committed("obs-prom", topic, LOAD_TIMEOUT);
    let dead_letters = broker.read_all("floe.dlq.acme").len() as f64;
    assert!(dead_letters > 0.0);

    let prometheus = Prometheus::start("obs-prom", &addr, OPERATOR);
    let rejected =
        "floe_table_changes_total{tenant=\"acme\",table=\"transactions\",verdict=\"rejected\"}";
    wait_for("Prometheus to scrape floe", Duration::from_secs(60), || {
        (prometheus.value(rejected) == Some(dead_letters)).then_some(())
    });
    assert_eq!(prometheus.target(), ("up".to_string(), String::new()));
    let loaded =
        prometheus.value("floe_table_rows_loaded_total{tenant=\"acme\",table=\"transactions\"}");
    assert_eq!(loaded, prometheus.value("floe_rows_loaded_total"));
    assert!(loaded > Some(0.0));
    assert_eq!(
        prometheus.value("floe_validator_version{validator=\"acme/orders@v1\"}"),
        Some(1.0)
    );
    assert_eq!(
        prometheus.value("sum(floe_breaker_state{state=\"closed\"})"),
        prometheus.value("count(floe_breaker_state{state=\"closed\"})"),
        "every breaker closed"
    );
    let messages: i64 = broker
        .progress("obs-prom", topic)
        .iter()
        .map(|p| p.high)
        .sum();
    assert_eq!(
        prometheus.value("floe_messages_consumed_total"),
        Some(messages as f64)
    );
    assert_eq!(prometheus.value("floe_pipeline_running"), Some(1.0));
    assert_eq!(
        prometheus.value("floe_end_to_end_seconds_count"),
        prometheus.value("floe_rows_loaded_total"),
        "one lag observation per row loaded"
    );
    assert_eq!(
        prometheus.value("floe_flush_duration_seconds_count"),
        prometheus.value("floe_flushes_total")
    );
    assert!(prometheus.value("floe_validator_duration_seconds_count") > Some(0.0));
    assert_eq!(
        prometheus.value("sum(floe_rows_merged_total)"),
        prometheus.value("floe_rows_loaded_total"),
        "upserts and deletes add up to the rows loaded"
    );
    assert!(prometheus.value("floe_rows_merged_total{op=\"delete\"}") > Some(0.0));
    // Every partition read has its own lag, all of it caught up.
    let partition_lag = format!("floe_consumer_partition_lag_messages{{topic=\"{topic}\"}}");
    wait_for("the lag of each partition", Duration::from_secs(60), || {
        (prometheus.value(&format!("count({partition_lag})")) == Some(2.0)).then_some(())
    });
    assert_eq!(
        prometheus.value(&format!("sum({partition_lag})")),
        Some(0.0)
    );

    // `floe stats` gives the same figures as JSON.
    let (status, out, err) = floe_command(
        &["stats"],
        &[
            ("FLOE_API", format!("http://{addr}")),
            ("FLOE_API_KEY", OPERATOR.to_string()),
        ],
    );
    assert_eq!(status, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).expect("floe stats prints JSON");
    assert_eq!(stats["consumed"].as_i64(), Some(messages));
    let partitions = stats["lag_by_partition"]
        .as_object()
        .expect("lag by partition");
    assert_eq!(partitions.len(), 2, "{stats}");
    assert!(partitions.contains_key(&format!("{topic}/0")), "{stats}");

    // The shipped dashboards ask only for series floe exports, in queries Prometheus takes.
    let exposition = metrics_text(&addr, OPERATOR);
    let exported: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let queries = dashboard_queries();
    assert!(queries.len() >= 8, "{queries:?}");
    for query in &queries {
        for name in metric_names(query) {
            assert!(
                exported.contains(name.as_str()),
                "{query}: floe exports no {name}"
            );
        }
        let answer = prometheus.query(query);
        assert_eq!(answer["status"], "success", "{query}: {answer}");
    }
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
}

/// `floe check` says, per dependency, OK or exactly what failed, and exits non-zero when
/// anything did.
#[test]
fn floe_check_names_each_dependency_and_what_failed() {
    let broker = Broker::start("obs-check");
    let dir = scratch_dir("obs-check");
    broker.create_topic("present", 1);
    broker.create_topic("floe.dlq", 1);
    let good = [
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", "present".to_string()),
        (
            "FLOE_DUCKDB_PATH",
            dir.join("floe.duckdb").display().to_string(),
        ),
    ];
    let receiver = floe_e2e::otlp::Receiver::grpc();
    let mut with_collector = good.to_vec();
    with_collector.push(("FLOE_OTLP_ENDPOINT", receiver.endpoint.clone()));
    let (status, out, err) = floe_command(&["check"], &with_collector);
    assert_eq!(status, 0, "{out}{err}");
    assert!(receiver.spans().iter().any(|s| s.span.name == "floe check"));
    for line in [
        format!("OK    trace export OTLP grpc {}", receiver.endpoint),
        format!("OK    kafka brokers {}", broker.addr),
        "OK    source topic present".to_string(),
        "OK    DLQ topic floe.dlq".to_string(),
        format!("OK    sink (duckdb {})", dir.join("floe.duckdb").display()),
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }

    // A file's path as a directory: no DuckDB file can be made there.
    let unwritable = dir.join("floe.duckdb").join("nested.duckdb");
    let bad = [
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", "present,absent".to_string()),
        ("FLOE_DUCKDB_PATH", unwritable.display().to_string()),
        (
            "FLOE_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        ),
        ("FLOE_OTLP_PROTOCOL", "http/protobuf".to_string()),
    ];
    let (status, out, err) = floe_command(&["check"], &bad);
    assert_ne!(status, 0, "{out}");
    assert!(err.contains("3 of 6 checks failed"), "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL  trace export OTLP http/protobuf http://127.0.0.1:")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL  source topic absent: missing")),
        "{out}"
    );
    let sink = format!("FAIL  sink (duckdb {}): ", unwritable.display());
    assert!(out.lines().any(|l| l.starts_with(&sink)), "{out}");

    let down = [
        ("FLOE_KAFKA_BROKERS", format!("127.0.0.1:{}", free_port())),
        ("FLOE_KAFKA_TOPICS", "present".to_string()),
        (
            "FLOE_DUCKDB_PATH",
            dir.join("floe.duckdb").display().to_string(),
        ),
    ];
    let (status, out, _) = floe_command(&["check"], &down);
    assert_ne!(status, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL  kafka brokers 127.0.0.1:")),
        "{out}"
    );
}

/// Every query of the Grafana dashboards under `otel/`.
fn dashboard_queries() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../otel/grafana/dashboards");
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        for panel in dashboard["panels"].as_array().expect("panels") {
            assert!(panel["title"].is_string(), "{panel}");
            for target in panel["targets"].as_array().expect("targets") {
                queries.push(target["expr"].as_str().expect("expr").to_string());
            }
        }
    }
    queries
}

/// The `floe_…` series names a query mentions.
fn metric_names(query: &str) -> Vec<String> {
    query
        .match_indices("floe_")
        .map(|(at, _)| {
            query[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}
