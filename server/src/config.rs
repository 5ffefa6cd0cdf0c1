//! floe's configuration: one typed tree, read from TOML, with environment overrides.
//!
//! Every key has a default (see `floe.example.toml` and the README). Unknown keys are
//! errors. Each setting can be overridden by the environment variable listed in
//! [`ENV_OVERRIDES`]; secrets belong there, never in the file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    /// The default sink: it loads every topic no entry of `sinks` claims.
    pub sink: SinkConfig,
    /// More sinks, by name, each loading the topics it lists.
    pub sinks: BTreeMap<String, SinkConfig>,
    pub batch: BatchConfig,
    pub resilience: ResilienceConfig,
    pub runtime: RuntimeConfig,
    pub dlq: DlqConfig,
    pub wasm: WasmConfig,
    pub admin: AdminConfig,
    pub telemetry: TelemetryConfig,
    /// Per-table routes: validator, target table, key columns and sandbox limits.
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topics carrying Debezium change events.
    pub topics: Vec<String>,
    /// Consumer group; floe commits applied offsets here so that lag tools see progress.
    pub group: String,
    pub assignment: Assignment,
    /// Extra librdkafka properties (for example TLS or SASL settings).
    pub properties: BTreeMap<String, String>,
    /// A message value larger than this is dead-lettered (category `decode`) rather than
    /// decoded, so that one huge record cannot exhaust memory.
    pub max_value_bytes: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topics: Vec::new(),
            group: "floe".into(),
            assignment: Assignment::Group,
            properties: BTreeMap::new(),
            max_value_bytes: crate::debezium::DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// How this process obtains partitions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// Kafka's consumer-group protocol: several floe processes share the partitions.
    Group,
    /// This process reads every partition of its topics; a restart resumes at once.
    All,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub kind: SinkKind,
    /// Mark deleted rows with `_floe_deleted = true` instead of removing them.
    pub soft_delete: bool,
    /// What a source TRUNCATE does to the target table.
    pub truncate: TruncateMode,
    /// Only in `[sinks.NAME]`: the topics this sink loads.
    pub topics: Vec<String>,
    pub duckdb: DuckDbConfig,
    pub snowflake: SnowflakeConfig,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            kind: SinkKind::Duckdb,
            soft_delete: false,
            truncate: TruncateMode::Apply,
            topics: Vec::new(),
            duckdb: DuckDbConfig::default(),
            snowflake: SnowflakeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Duckdb,
    Snowflake,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TruncateMode {
    Apply,
    Ignore,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DuckDbConfig {
    pub path: PathBuf,
    /// floe checkpoints the file (folds the write-ahead log into it) after a load's commit
    /// once the log has grown this large, so that no load waits for a checkpoint inside
    /// its commit. DuckDB's own checkpoint stays as a far-off backstop.
    pub checkpoint_wal_mib: u64,
}

impl Default for DuckDbConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("floe.duckdb"),
            checkpoint_wal_mib: 64,
        }
    }
}

/// A Snowflake account. Secrets are read from the environment or a file, never from here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnowflakeConfig {
    /// Account identifier, e.g. `myorg-myaccount` (the host is `{account}.snowflakecomputing.com`).
    pub account: String,
    pub user: String,
    pub role: Option<String>,
    pub warehouse: Option<String>,
    pub database: String,
    pub schema: String,
    pub auth: SnowflakeAuth,
    /// Environment variable holding the password (`auth = "password"`).
    pub password_env: String,
    /// …or a file holding it (read at start; trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the PEM private key (`auth = "key_pair"`).
    pub private_key_env: String,
    /// …or a PEM file holding it.
    pub private_key_file: Option<PathBuf>,
    /// An extra CA certificate (PEM) to trust, e.g. a TLS-inspecting proxy's.
    pub ca_file: Option<PathBuf>,
    /// Connect to this `host:port` instead of resolving the account host (private
    /// endpoints, proxies, an emulator); TLS still verifies the account host name.
    pub resolve: Option<String>,
    /// A staging statement larger than this is split; Snowflake caps statement text.
    pub max_statement_bytes: usize,
    /// Timeout of one request to Snowflake.
    pub request_timeout_ms: u64,
}

impl Default for SnowflakeConfig {
    fn default() -> Self {
        Self {
            account: String::new(),
            user: String::new(),
            role: None,
            warehouse: None,
            database: String::new(),
            schema: "PUBLIC".into(),
            auth: SnowflakeAuth::Password,
            password_env: "FLOE_SNOWFLAKE_PASSWORD".into(),
            password_file: None,
            private_key_env: "FLOE_SNOWFLAKE_PRIVATE_KEY".into(),
            private_key_file: None,
            ca_file: None,
            resolve: None,
            max_statement_bytes: 1_000_000,
            request_timeout_ms: 120_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SnowflakeAuth {
    Password,
    KeyPair,
}

/// Retries and circuit breakers, shared by every external dependency (Kafka, each sink,
/// the DLQ producer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    /// First pause after a transient failure; doubled (with jitter) on each retry.
    pub retry_initial_ms: u64,
    /// Longest pause between two retries.
    pub retry_max_ms: u64,
    /// Consecutive failures that open a dependency's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before one probe (half-open).
    pub breaker_cooldown_ms: u64,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            retry_initial_ms: 200,
            retry_max_ms: 5_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A flush starts once a batch holds this many rows.
    pub max_rows: usize,
    /// …or once its oldest row has waited this long, even if no new message arrives.
    pub max_age_ms: u64,
    /// While the sink is busy a batch keeps growing (a large MERGE costs little more than
    /// a small one); at this many rows consumption pauses until the sink catches up.
    pub max_pending_rows: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 20_000,
            max_age_ms: 100,
            max_pending_rows: 500_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// On SIGTERM/SIGINT: stop fetching, flush and commit within this deadline.
    pub shutdown_timeout_ms: u64,
    /// Interval of the `consumed=… loaded=…` stats line; 0 turns it off.
    pub stats_interval_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout_ms: 30_000,
            stats_interval_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Kafka topic receiving records floe cannot load; created at start if missing.
    pub topic: String,
    /// How long a flush waits for the broker to acknowledge its dead letters.
    pub ack_timeout_ms: u64,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            topic: "floe.dlq".into(),
            ack_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WasmConfig {
    /// Compiled validators are kept here, keyed by content hash, so a restart does not
    /// recompile them.
    pub cache_dir: PathBuf,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("floe-wasm-cache"),
        }
    }
}

/// Trace export over OTLP. Where a key is unset, the standard `OTEL_*` variables apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector, e.g. `http://otel-collector:4317` (gRPC) or `…:4318` (HTTP). Empty:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`; with neither,
    /// no trace is exported (log lines still carry trace ids).
    pub otlp_endpoint: String,
    /// `grpc` or `http/protobuf`; unset: `OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Extra request headers. Not for secrets: those go in `OTEL_EXPORTER_OTLP_HEADERS`.
    pub otlp_headers: BTreeMap<String, String>,
    /// `service.name` of the exported spans, unless `OTEL_SERVICE_NAME` is set.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            otlp_protocol: None,
            otlp_headers: BTreeMap::new(),
            service_name: "floe".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// The admin API (tenants, keys, validator uploads).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `host:port` to serve on; empty: no admin API.
    pub listen: String,
    /// The compacted topic every node of a cluster shares the control plane through;
    /// empty: this process alone keeps it in `dir/state.json`.
    pub control_topic: String,
    /// The local copy of uploaded components (and `state.json` without a control topic).
    pub dir: PathBuf,
    /// Environment variable holding the operator key…
    pub operator_key_env: String,
    /// …or a file holding it. Without either, tenants cannot be created.
    pub operator_key_file: Option<PathBuf>,
    /// Largest component an upload may carry.
    pub max_component_mib: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            control_topic: "floe.control".into(),
            dir: PathBuf::from("floe-control"),
            operator_key_env: "FLOE_OPERATOR_KEY".into(),
            operator_key_file: None,
            max_component_mib: 16,
        }
    }
}

/// How the changes of one source table are validated and where they land.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The source table (`source.table` of the Debezium events).
    pub table: String,
    /// A validator component (`.wasm`, built for wasm32-wasip2).
    #[serde(default)]
    pub validator: Option<PathBuf>,
    /// The target table; default: the source table's name.
    #[serde(default)]
    pub target: Option<String>,
    /// Key columns of the target; default: the Debezium key.
    #[serde(default)]
    pub key: Option<Vec<String>>,
    #[serde(default)]
    pub limits: SandboxLimits,
    /// The validator's name in logs and DLQ headers (set for routes of the control plane;
    /// file routes are named after the file).
    #[serde(skip)]
    pub name: Option<String>,
    /// Where this route's dead letters go (a tenant's DLQ topic); default: `dlq.topic`.
    #[serde(skip)]
    pub dlq_topic: Option<String>,
    /// The tenant whose route this is (routes from the control plane).
    #[serde(skip)]
    pub tenant: Option<String>,
}

/// What one validator may use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// Linear memory; a grow beyond it traps (`transform_oom`).
    pub memory_mib: u64,
    /// Wall-clock time per call; beyond it the call is interrupted (`transform_timeout`).
    pub deadline_ms: u64,
    /// Largest accepted component file.
    pub max_component_mib: u64,
    /// Changes per guest call; larger batches are split.
    pub max_changes_per_call: usize,
    /// Optional instruction budget per call (wasmtime fuel), on top of the deadline: it
    /// bounds CPU exactly whatever the machine's load. Metering costs some speed for
    /// every validator of the process, so it is off unless a route sets it.
    pub fuel: Option<u64>,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            deadline_ms: 100,
            max_component_mib: 16,
            max_changes_per_call: 1000,
            fuel: None,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    List,
    Int,
    Bool,
}

/// Environment variable → setting. Every setting has one.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("FLOE_KAFKA_BROKERS", "kafka.brokers"),
    ("FLOE_KAFKA_TOPICS", "kafka.topics"),
    ("FLOE_KAFKA_GROUP", "kafka.group"),
    ("FLOE_KAFKA_ASSIGNMENT", "kafka.assignment"),
    ("FLOE_KAFKA_MAX_VALUE_BYTES", "kafka.max_value_bytes"),
    ("FLOE_SINK", "sink.kind"),
    ("FLOE_SINK_SOFT_DELETE", "sink.soft_delete"),
    ("FLOE_SINK_TRUNCATE", "sink.truncate"),
    ("FLOE_DUCKDB_PATH", "sink.duckdb.path"),
    (
        "FLOE_DUCKDB_CHECKPOINT_WAL_MIB",
        "sink.duckdb.checkpoint_wal_mib",
    ),
    ("FLOE_BATCH_MAX_ROWS", "batch.max_rows"),
    ("FLOE_BATCH_MAX_AGE_MS", "batch.max_age_ms"),
    ("FLOE_BATCH_MAX_PENDING_ROWS", "batch.max_pending_rows"),
    ("FLOE_SHUTDOWN_TIMEOUT_MS", "runtime.shutdown_timeout_ms"),
    ("FLOE_STATS_INTERVAL_MS", "runtime.stats_interval_ms"),
    ("FLOE_SNOWFLAKE_ACCOUNT", "sink.snowflake.account"),
    ("FLOE_SNOWFLAKE_USER", "sink.snowflake.user"),
    ("FLOE_SNOWFLAKE_ROLE", "sink.snowflake.role"),
    ("FLOE_SNOWFLAKE_WAREHOUSE", "sink.snowflake.warehouse"),
    ("FLOE_SNOWFLAKE_DATABASE", "sink.snowflake.database"),
    ("FLOE_SNOWFLAKE_SCHEMA", "sink.snowflake.schema"),
    ("FLOE_SNOWFLAKE_AUTH", "sink.snowflake.auth"),
    ("FLOE_SNOWFLAKE_CA_FILE", "sink.snowflake.ca_file"),
    ("FLOE_SNOWFLAKE_RESOLVE", "sink.snowflake.resolve"),
    ("FLOE_RETRY_INITIAL_MS", "resilience.retry_initial_ms"),
    ("FLOE_RETRY_MAX_MS", "resilience.retry_max_ms"),
    ("FLOE_BREAKER_FAILURES", "resilience.breaker_failures"),
    ("FLOE_BREAKER_COOLDOWN_MS", "resilience.breaker_cooldown_ms"),
    ("FLOE_DLQ_TOPIC", "dlq.topic"),
    ("FLOE_DLQ_ACK_TIMEOUT_MS", "dlq.ack_timeout_ms"),
    ("FLOE_WASM_CACHE_DIR", "wasm.cache_dir"),
    ("FLOE_ADMIN_LISTEN", "admin.listen"),
    ("FLOE_ADMIN_DIR", "admin.dir"),
    ("FLOE_ADMIN_CONTROL_TOPIC", "admin.control_topic"),
    ("FLOE_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("FLOE_OTLP_PROTOCOL", "telemetry.otlp_protocol"),
];

fn kind_of(path: &str) -> Kind {
    match path {
        "kafka.topics" => Kind::List,
        "sink.soft_delete" => Kind::Bool,
        "dlq.ack_timeout_ms" | "kafka.max_value_bytes" | "sink.duckdb.checkpoint_wal_mib" => {
            Kind::Int
        }
        p if p.starts_with("batch.")
            || p.starts_with("runtime.")
            || p.starts_with("resilience.") =>
        {
            Kind::Int
        }
        _ => Kind::Text,
    }
}

impl Config {
    /// Reads `path` (if given) and applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let name = path.map_or_else(|| "<defaults>".to_string(), |p| p.display().to_string());
        Self::from_toml(&name, &text, |var| std::env::var(var).ok())
    }

    /// Parses TOML text and applies overrides looked up through `env`.
    pub fn from_toml(
        name: &str,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        for (var, path) in ENV_OVERRIDES {
            if let Some(raw) = env(var) {
                set_path(&mut table, path, env_value(var, kind_of(path), &raw)?);
            }
        }
        let config: Config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: name.to_string(),
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// This configuration with the tenants' own sinks added: each takes its topics (which
    /// it adds to `kafka.topics`) from the default sink.
    pub fn with_tenant_sinks(
        &self,
        tenant_sinks: &BTreeMap<String, SinkConfig>,
    ) -> Result<Config, ConfigError> {
        let mut config = self.clone();
        for (name, sink) in tenant_sinks {
            if config.sinks.contains_key(name) {
                return Err(ConfigError::Invalid {
                    key: "sinks",
                    message: format!("sink {name:?} is configured and also a tenant's"),
                });
            }
            for topic in &sink.topics {
                if !config.kafka.topics.contains(topic) {
                    config.kafka.topics.push(topic.clone());
                }
            }
            config.sinks.insert(name.clone(), sink.clone());
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.kafka.topics.is_empty() {
            return invalid(
                "kafka.topics",
                "no topics to consume (set kafka.topics or FLOE_KAFKA_TOPICS)",
            );
        }
        if self.kafka.topics.iter().any(|t| t.trim().is_empty()) {
            return invalid("kafka.topics", "a topic name is empty");
        }
        if self.kafka.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must name at least one broker");
        }
        if self.batch.max_rows == 0 {
            return invalid("batch.max_rows", "must be at least 1");
        }
        if self.batch.max_pending_rows < self.batch.max_rows {
            return invalid("batch.max_pending_rows", "must be at least batch.max_rows");
        }
        if !self.sink.topics.is_empty() {
            return invalid(
                "sink.topics",
                "the default sink takes every unclaimed topic; list topics under [sinks.NAME]",
            );
        }
        for (name, sink) in &self.sinks {
            if sink.topics.is_empty() {
                return invalid("sinks", &format!("sink {name:?} lists no topics"));
            }
            if let Some(t) = sink.topics.iter().find(|t| !self.kafka.topics.contains(t)) {
                return invalid(
                    "sinks",
                    &format!("sink {name:?} lists topic {t:?}, which is not in kafka.topics"),
                );
            }
        }
        let mut claimed = std::collections::BTreeSet::new();
        for t in self.sinks.values().flat_map(|s| &s.topics) {
            if !claimed.insert(t) {
                return invalid("sinks", &format!("topic {t:?} is listed by two sinks"));
            }
        }
        for sink in std::iter::once(&self.sink).chain(self.sinks.values()) {
            if sink.kind == SinkKind::Snowflake {
                let sf = &sink.snowflake;
                if sf.account.is_empty() || sf.user.is_empty() || sf.database.is_empty() {
                    return invalid(
                        "sink.snowflake",
                        "account, user and database are required for a Snowflake sink",
                    );
                }
            }
        }
        if self.resilience.breaker_failures == 0 {
            return invalid("resilience.breaker_failures", "must be at least 1");
        }
        Ok(())
    }
}

fn env_value(var: &'static str, kind: Kind, raw: &str) -> Result<toml::Value, ConfigError> {
    Ok(match kind {
        Kind::Text => toml::Value::String(raw.to_string()),
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        Kind::Int => toml::Value::Integer(raw.trim().parse().map_err(|_| ConfigError::Env {
            var,
            message: format!("expected a non-negative integer, got {raw:?}"),
        })?),
        Kind::Bool => toml::Value::Boolean(match raw.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(ConfigError::Env {
                    var,
                    message: format!("expected true or false, got {raw:?}"),
                })
            }
        }),
    })
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts = path.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_string(), value);
            return;
        }
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry.as_table_mut() {
            Some(t) => current = t,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_need_only_topics() {
        let c = Config::from_toml("t", "[kafka]\ntopics = [\"a\"]\n", no_env).unwrap();
        assert_eq!(c.kafka.assignment, Assignment::Group);
        assert_eq!(c.sink.duckdb.path, PathBuf::from("floe.duckdb"));
        assert_eq!(c.batch.max_rows, 20_000);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml(
            "floe.toml",
            "[kafka]\ntopics=[\"a\"]\nbrokerz = \"x\"\n",
            no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("brokerz"), "{err}");
        assert!(err.contains("floe.toml"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::from_toml(
            "f",
            "[kafka]\ntopics=[\"a\"]\n[batch]\nmax_rows = \"many\"\n",
            no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_rows"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let env = |var: &str| -> Option<String> {
            match var {
                "FLOE_KAFKA_BROKERS" => Some("k1:9092,k2:9092".into()),
                "FLOE_KAFKA_TOPICS" => Some("a, b,c".into()),
                "FLOE_KAFKA_GROUP" => Some("g".into()),
                "FLOE_KAFKA_ASSIGNMENT" => Some("all".into()),
                "FLOE_SINK" => Some("duckdb".into()),
                "FLOE_DUCKDB_PATH" => Some("/tmp/x.duckdb".into()),
                "FLOE_BATCH_MAX_ROWS" => Some("123".into()),
                "FLOE_BATCH_MAX_AGE_MS" => Some("7".into()),
                "FLOE_DUCKDB_CHECKPOINT_WAL_MIB" => Some("8".into()),
                _ => None,
            }
        };
        let c = Config::from_toml("f", "[kafka]\ntopics=[\"z\"]\n[batch]\nmax_rows = 5\n", env)
            .unwrap();
        assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(c.kafka.topics, vec!["a", "b", "c"]);
        assert_eq!(c.kafka.group, "g");
        assert_eq!(c.kafka.assignment, Assignment::All);
        assert_eq!(c.sink.kind, SinkKind::Duckdb);
        assert_eq!(c.sink.duckdb.path, PathBuf::from("/tmp/x.duckdb"));
        assert_eq!(c.batch.max_rows, 123);
        assert_eq!(c.batch.max_age_ms, 7);
        assert_eq!(c.sink.duckdb.checkpoint_wal_mib, 8);
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        let env = |var: &str| (var == "FLOE_BATCH_MAX_ROWS").then(|| "lots".to_string());
        let err = Config::from_toml("f", "[kafka]\ntopics=[\"a\"]\n", env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("FLOE_BATCH_MAX_ROWS"), "{err}");
        let env = |var: &str| (var == "FLOE_KAFKA_ASSIGNMENT").then(|| "some".to_string());
        let err = Config::from_toml("f", "[kafka]\ntopics=[\"a\"]\n", env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("assignment") || err.contains("some"), "{err}");
    }

    #[test]
    fn example_file_documents_the_defaults() {
        let text = include_str!("../../floe.example.toml");
        let parsed = Config::from_toml("floe.example.toml", text, no_env).unwrap();
        let mut defaults = Config::default();
        defaults.kafka.topics = vec!["dbserver1.public.transactions".into()];
        assert_eq!(parsed, defaults);
    }

    #[test]
    fn missing_topics_is_refused() {
        let err = Config::from_toml("f", "", no_env).unwrap_err().to_string();
        assert!(err.contains("kafka.topics"), "{err}");
    }

    #[test]
    fn routes_parse_with_limits_and_refuse_unknown_keys() {
        let text = "[kafka]\ntopics=[\"a\"]\n[[routes]]\ntable = \"transactions\"\n\
                    validator = \"v.wasm\"\nkey = [\"id\"]\n[routes.limits]\ndeadline_ms = 50\n";
        let c = Config::from_toml("f", text, no_env).unwrap();
        assert_eq!(c.routes.len(), 1);
        let r = &c.routes[0];
        assert_eq!(r.validator.as_deref(), Some(Path::new("v.wasm")));
        assert_eq!(r.key.as_deref(), Some(&["id".to_string()][..]));
        assert_eq!(r.limits.deadline_ms, 50);
        assert_eq!(r.limits.memory_mib, 64, "unset limits keep their defaults");

        let err = Config::from_toml("f", "[[routes]]\ntable = \"t\"\nvalidatr = \"x\"\n", no_env)
            .unwrap_err();
        assert!(err.to_string().contains("validatr"), "{err}");
        let err = Config::from_toml("f", "[[routes]]\nvalidator = \"x\"\n", no_env).unwrap_err();
        assert!(err.to_string().contains("table"), "{err}");
    }

    #[test]
    fn named_sinks_take_their_topics_and_are_checked() {
        let text =
            "[kafka]\ntopics=[\"a\", \"b\"]\n[sinks.wh]\nkind = \"snowflake\"\ntopics = [\"b\"]\n\
                    [sinks.wh.snowflake]\naccount = \"acme\"\nuser = \"u\"\ndatabase = \"D\"\n";
        let c = Config::from_toml("f", text, no_env).unwrap();
        assert_eq!(c.sinks["wh"].kind, SinkKind::Snowflake);
        assert_eq!(c.sinks["wh"].topics, vec!["b"]);
        assert_eq!(c.sinks["wh"].snowflake.schema, "PUBLIC");

        let unknown_topic = text.replace("topics = [\"b\"]", "topics = [\"c\"]");
        let err = Config::from_toml("f", &unknown_topic, no_env).unwrap_err();
        assert!(err.to_string().contains("\"c\""), "{err}");
        let no_account = text.replace("account = \"acme\"\n", "");
        let err = Config::from_toml("f", &no_account, no_env).unwrap_err();
        assert!(err.to_string().contains("account"), "{err}");
        let err = Config::from_toml(
            "f",
            "[kafka]\ntopics=[\"a\"]\n[sink]\ntopics=[\"a\"]\n",
            no_env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("sink.topics"), "{err}");
    }
}
