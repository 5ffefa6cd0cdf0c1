//! The Docker stack, checked where no Docker engine runs: the compose file parses; every
//! service is built from a Dockerfile whose sources exist or runs a pinned image; every
//! mounted file, secret, volume and dependency exists; host ports do not collide; and the
//! services name each other as the stack names them — floe's configuration (which floe
//! itself must accept) reads exactly the topics the Debezium connector writes, and
//! Prometheus, the collector and Grafana reach services of the stack on ports they serve.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docker() -> PathBuf {
    repo().join("docker")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn compose() -> Value {
    yaml(&docker().join("compose.yaml"))
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service name").to_string(), v.clone()))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Value::Mapping(map) => map
            .keys()
            .filter_map(|k| k.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// `host:port` out of a URL or address.
fn host_port(address: &str) -> (String, u16) {
    let rest = address.split("://").last().unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{address} names no port"));
    (
        host.to_string(),
        port.parse().unwrap_or_else(|_| panic!("port of {address}")),
    )
}

#[test]
fn every_service_is_built_or_pinned_and_everything_it_mounts_exists() {
    let compose = compose();
    let services = services(&compose);
    let volumes: BTreeSet<String> = strings(&compose["volumes"]).into_iter().collect();
    let secrets = compose["secrets"].as_mapping().expect("secrets");
    let makefile = std::fs::read_to_string(repo().join("Makefile")).expect("Makefile");
    let mut host_ports = BTreeSet::new();
    for (name, service) in &services {
        match (service["image"].as_str(), service.get("build")) {
            (Some(image), None) => {
                let tag = image.rsplit('/').next().and_then(|i| i.split_once(':'));
                assert!(
                    tag.is_some_and(|(_, t)| t != "latest"),
                    "{name}: image {image} is not pinned to a version"
                );
            }
            (None, Some(build)) => {
                let context = docker().join(build["context"].as_str().expect("context"));
                let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
                assert!(dockerfile.is_file(), "{name}: no {}", dockerfile.display());
                dockerfile_sources_exist(&dockerfile, &context);
            }
            _ => panic!("{name}: needs exactly one of image and build"),
        }
        for mount in strings(&service["volumes"]) {
            let source = mount.split(':').next().unwrap_or_default();
            if source.starts_with('.') {
                let path = docker().join(source);
                assert!(
                    path.exists(),
                    "{name}: mounts {}, which does not exist",
                    path.display()
                );
            } else {
                assert!(
                    volumes.contains(source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        for secret in strings(&service["secrets"]) {
            let file = secrets
                .get(secret.as_str())
                .and_then(|s| s["file"].as_str())
                .unwrap_or_else(|| panic!("{name}: secret {secret} is not declared"));
            let from_repo = Path::new("docker").join(file.trim_start_matches("./"));
            assert!(
                makefile.contains(&from_repo.display().to_string()),
                "{name}: nothing creates {} (make docker-up should)",
                from_repo.display()
            );
        }
        for dependency in strings(&service["depends_on"]) {
            assert!(
                services.contains_key(&dependency),
                "{name} depends on unknown {dependency}"
            );
        }
        for port in strings(&service["ports"]) {
            let host = port.split(':').next().unwrap_or_default().to_string();
            assert!(
                host_ports.insert(host.clone()),
                "{name}: host port {host} published twice"
            );
        }
    }
    for wanted in [
        "postgres",
        "kafka",
        "connect",
        "floe",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
        "kafka-ui",
        "schema-registry",
    ] {
        assert!(services.contains_key(wanted), "the stack has no {wanted}");
    }
    let postgres = serde_yaml_ng::to_string(&services["postgres"]).expect("postgres");
    assert!(
        postgres.contains("wal_level=logical"),
        "Debezium needs logical decoding"
    );
}

/// Every `COPY` source of a Dockerfile (other than from a build stage) exists.
fn dockerfile_sources_exist(dockerfile: &Path, context: &Path) {
    let text = std::fs::read_to_string(dockerfile).expect("Dockerfile");
    let ignored = std::fs::read_to_string(context.join(".dockerignore")).unwrap_or_default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                context.join(source).exists(),
                "{line}: {source} does not exist"
            );
            assert!(
                !ignored.lines().any(|i| i == *source),
                "{line}: {source} is in .dockerignore"
            );
        }
    }
}

#[test]
fn the_services_name_each_other_as_the_stack_names_them() {
    let compose = compose();
    let services = services(&compose);
    let known = |host: &str, what: &str| {
        assert!(
            services.contains_key(host),
            "{what} names {host}, which is no service of the stack"
        );
    };

    // floe's configuration is one floe accepts, with no environment around it.
    let path = docker().join("floe/floe.toml");
    let text = std::fs::read_to_string(&path).expect("floe.toml");
    let config = floe::config::Config::from_toml("docker/floe/floe.toml", &text, |_| None)
        .unwrap_or_else(|e| panic!("floe refuses docker/floe/floe.toml: {e}"));
    let floe_service = serde_yaml_ng::to_string(&services["floe"]).expect("floe");
    assert!(
        floe_service.contains("/etc/floe/floe.toml"),
        "the floe service runs the mounted config"
    );
    for broker in config.kafka.brokers.split(',') {
        let (host, port) = host_port(broker);
        known(&host, "kafka.brokers");
        let kafka = serde_yaml_ng::to_string(&services[&host]).expect("kafka");
        assert!(
            kafka.contains(&format!("{host}:{port}")),
            "kafka does not advertise {broker}"
        );
    }
    let (collector, port) = host_port(&config.telemetry.otlp_endpoint);
    known(&collector, "telemetry.otlp_endpoint");
    let collector_config = yaml(&repo().join("otel/collector.yaml"));
    let grpc = collector_config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .expect("the collector's OTLP gRPC receiver");
    assert_eq!(
        host_port(grpc).1,
        port,
        "floe exports where the collector listens"
    );
    let admin_port = host_port(&config.admin.listen).1;

    // The topics floe reads are the ones the connector writes.
    let connector: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docker().join("debezium/shop-connector.json")).expect("connector"),
    )
    .expect("connector JSON");
    known(
        connector["database.hostname"].as_str().expect("hostname"),
        "the connector",
    );
    let prefix = connector["topic.prefix"].as_str().expect("topic.prefix");
    let written: BTreeSet<String> = connector["table.include.list"]
        .as_str()
        .expect("table.include.list")
        .split(',')
        .map(|table| format!("{prefix}.{table}"))
        .collect();
    let read: BTreeSet<String> = config.kafka.topics.iter().cloned().collect();
    assert_eq!(read, written, "floe reads the topics Debezium writes");
    let register = serde_yaml_ng::to_string(&services["connect-register"]).expect("register");
    assert!(register.contains("shop-connector.json") && register.contains("connect:8083"));

    // Prometheus scrapes floe's admin port and the collector's exporter.
    let prometheus = yaml(&repo().join("otel/prometheus.yml"));
    let mut scraped = BTreeMap::new();
    for job in prometheus["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        for target in strings(&job["static_configs"][0]["targets"]) {
            let (host, port) = host_port(&target);
            known(&host, "prometheus.yml");
            scraped.insert(host, port);
        }
    }
    assert_eq!(
        scraped.get("floe"),
        Some(&admin_port),
        "Prometheus scrapes floe's admin API"
    );
    let exporter = collector_config["exporters"]["prometheus"]["endpoint"]
        .as_str()
        .expect("exporter");
    assert_eq!(scraped.get(&collector), Some(&host_port(exporter).1));
    let jaeger = collector_config["exporters"]["otlp/jaeger"]["endpoint"]
        .as_str()
        .expect("jaeger");
    known(&host_port(jaeger).0, "the collector's Jaeger exporter");

    // Grafana's data sources are services of the stack.
    let sources = yaml(&repo().join("otel/grafana/provisioning/datasources/prometheus.yml"));
    for source in sources["datasources"].as_sequence().expect("datasources") {
        known(
            &host_port(source["url"].as_str().expect("url")).0,
            "a Grafana data source",
        );
    }
}

#[test]
fn make_help_lists_what_a_user_of_the_stack_runs() {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).expect("Makefile");
    for target in [
        "fmt",
        "lint",
        "coverage",
        "docker-up",
        "docker-down",
        "docker-logs",
        "health",
        "bench",
        "demo",
        "test",
    ] {
        assert!(
            makefile
                .lines()
                .any(|l| l.starts_with(&format!("{target}:")) && l.contains("## ")),
            "make help does not list {target}"
        );
    }
}
