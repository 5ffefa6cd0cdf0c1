//! Two floe processes in one consumer group: they share the control plane through its
//! Kafka topic and load one Snowflake account (the emulator).

use floe_e2e::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const OPERATOR: &str = "operator-secret";
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
const TOPIC: &str = "dbserver1.public.transactions";
const GROUP: &str = "cluster";

/// One node: group member, admin API on `addr`, its own local component cache.
fn start_node(broker: &Broker, fakesnow: &Fakesnow, dir: &Path, name: &str, addr: &str) -> Floe {
    let node_dir = dir.join(name);
    std::fs::create_dir_all(&node_dir).expect("node dir");
    // A dead member's partitions move after the session timeout: short, so the test is.
    let config = node_dir.join("floe.toml");
    std::fs::write(
        &config,
        "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
    )
    .expect("config");
    let mut env = vec![
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", TOPIC.to_string()),
        ("FLOE_KAFKA_GROUP", GROUP.to_string()),
        ("FLOE_KAFKA_ASSIGNMENT", "group".to_string()),
        ("FLOE_BATCH_MAX_AGE_MS", "200".to_string()),
        ("FLOE_RETRY_INITIAL_MS", "100".to_string()),
        ("FLOE_RETRY_MAX_MS", "500".to_string()),
        ("FLOE_ADMIN_LISTEN", addr.to_string()),
        (
            "FLOE_ADMIN_DIR",
            node_dir.join("control").display().to_string(),
        ),
        (
            "FLOE_WASM_CACHE_DIR",
            node_dir.join("wasm-cache").display().to_string(),
        ),
        ("FLOE_OPERATOR_KEY", OPERATOR.to_string()),
    ];
    env.extend(fakesnow.floe_env());
    let floe = Floe::start_with_config(&config, &env, node_dir.join("floe.log"));
    wait_for("the admin API", Duration::from_secs(60), || {
        http(addr, "GET", "/healthz", &[], b"").ok()
    });
    floe
}

fn stat(addr: &str, name: &str) -> u64 {
    let (_, stats) = api(addr, "GET", "/v1/stats", OPERATOR, "", b"");
    stats[name].as_u64().unwrap_or(0)
}

/// Partitions split between the nodes; a validator uploaded through one is in force on
/// both; a node killed mid-load loses nothing: its partitions resume from the offsets
/// stored in the warehouse, on a node that learnt the tenants from the topic alone.
#[test]
fn two_nodes_share_the_control_plane_and_the_partitions() {
    let broker = Broker::start("cluster");
    let fakesnow = Fakesnow::start("cluster");
    let dir = scratch_dir("cluster");
    broker.create_topic(TOPIC, 4);
    let (addr_a, addr_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut a = start_node(&broker, &fakesnow, &dir, "a", &addr_a);
    // A leads the group: the member the test kills is B, as tansu 0.6 does not elect a
    // new leader when the leader of a formed group dies (Kafka does).
    wait_for("node A to lead the group", Duration::from_secs(60), || {
        a.log_text()
            .contains("partitions assigned partitions=4")
            .then_some(())
    });
    let mut b = start_node(&broker, &fakesnow, &dir, "b", &addr_b);

    // Everything through node A.
    let key = create_tenant(&addr_a, OPERATOR, "acme");
    let validator = "/v1/tenants/acme/validators/orders";
    let wasm = std::fs::read(guest("transactions-validator")).expect("guest");
    route_through_validator(&addr_a, &key, "acme", "orders", wasm, "transactions");
    // Node B knows the tenant's key, the version and the route, and runs the validator.
    let (status, seen) = api(&addr_b, "GET", validator, &key, "", b"");
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["active"], Value::from(1), "{seen}");
    for node in [&a, &b] {
        wait_for(
            "each node to load the route with the validator",
            Duration::from_secs(30),
            || {
                node.log_text()
                    .lines()
                    .any(|l| l.contains("routes loaded") && l.contains("acme/orders@v1"))
                    .then_some(())
            },
        );
    }

    let mut tx = Workload::new(Profile::Transactions, 400, 8000, 77).with_invalid_percent(10);
    broker.produce(TOPIC, &mut tx, 4000);
    broker.wait_fully_committed(GROUP, TOPIC, LOAD_TIMEOUT);
    for addr in [&addr_a, &addr_b] {
        assert!(stat(addr, "consumed") > 0, "{addr} got no partition");
        assert!(
            stat(addr, "rejected") > 0,
            "{addr} did not run the validator"
        );
    }

    // B dies mid-load. Once its session expires tansu 0.6 makes A rejoin but keeps the
    // old assignments (a formed group's SyncGroup ignores the leader's new one), so B's
    // partitions wait for a member to join: a fresh node C, as an orchestrator would start
    // one. (With Kafka the group hands them to A after `session.timeout.ms` alone.) C
    // replays the control plane from the topic, the component included, into an empty
    // directory.
    let assignments = || a.log_text().matches("partitions assigned").count();
    let before = assignments();
    broker.produce(TOPIC, &mut tx, 4000);
    b.kill9();
    wait_for("B's session to expire", Duration::from_secs(60), || {
        (assignments() > before).then_some(())
    });
    let addr_c = format!("127.0.0.1:{}", free_port());
    let mut c = start_node(&broker, &fakesnow, &dir, "c", &addr_c);
    let (status, seen) = api(&addr_c, "GET", validator, &key, "", b"");
    assert_eq!((status, &seen["active"]), (200, &Value::from(1)), "{seen}");
    broker.wait_fully_committed(GROUP, TOPIC, LOAD_TIMEOUT);
    assert!(
        c.log_text().contains("validator=acme/orders@v1"),
        "C runs the validator it replayed"
    );
    for node in [&mut a, &mut c] {
        assert_eq!(
            node.terminate(Duration::from_secs(30)),
            0,
            "{}",
            node.log_text()
        );
    }

    assert_same_rows(&fakesnow.query(TRANSACTIONS_QUERY), &tx.expected());
    let dlq = broker.read_all("floe.dlq.acme");
    assert!(!dlq.is_empty());
    let mut partitions: Vec<&str> = dlq
        .iter()
        .map(|l| {
            assert_eq!(l.header("floe.validator"), "acme/orders@v1", "{l:?}");
            l.header("floe.source.partition")
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    assert_eq!(partitions.len(), 4, "letters from every partition");
    assert!(broker.read_all("floe.dlq").is_empty());
}
