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
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
}
