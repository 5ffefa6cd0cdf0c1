//! The `floe` command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

use crate::generate::Profile;

#[derive(Debug, Parser)]
#[command(
    name = "floe",
    version,
    about = "Debezium change events from Kafka, MERGE-loaded into a warehouse"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FLOE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tenants, through the admin API.
    Tenant {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Validators and their versions, through the admin API.
    Validator {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: ValidatorCommand,
    },
    /// Routes, through the admin API.
    Route {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// A running floe's figures as JSON (`GET /v1/stats`: counters, errors by category,
    /// breakers, lag per partition, per table and tenant), with the operator key.
    Stats {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Reach each dependency of a configuration (brokers, topics, sinks) and say, for
    /// each, OK or what failed; exits non-zero when one failed.
    Check {
        /// TOML configuration file; without it, defaults and FLOE_* variables apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the pipeline until SIGTERM/SIGINT.
    Run {
        /// TOML configuration file; without it, defaults and FLOE_* variables apply.
        #[arg(long, short, env = "FLOE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write a generated Debezium change stream to a topic.
    Generate {
        #[arg(long, default_value = "127.0.0.1:9092", env = "FLOE_KAFKA_BROKERS")]
        brokers: String,
        #[arg(long, default_value = "dbserver1.public.transactions")]
        topic: String,
        #[arg(long, value_enum, default_value = "transactions")]
        profile: Profile,
        /// Number of changes (a delete also writes its tombstone).
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Size of the key space.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Events per second; 0 sends as fast as the broker takes them.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Partitions of the topic when floe creates it.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Percent of `transactions` updates that break the example validator's rules.
        #[arg(long, default_value_t = 0)]
        invalid_percent: u32,
        /// Stamp `updated_at` and the source time with the wall clock (latency runs).
        #[arg(long)]
        wall_clock: bool,
    },
    /// Show a consumer group's committed offsets against the topic's high watermarks.
    Progress {
        #[arg(long, default_value = "127.0.0.1:9092", env = "FLOE_KAFKA_BROKERS")]
        brokers: String,
        #[arg(long, default_value = "floe", env = "FLOE_KAFKA_GROUP")]
        group: String,
        #[arg(long)]
        topic: String,
        /// Wait up to this many seconds until the group has caught up; exit 1 if it has not.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Work with the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Run a read-only SQL query against a DuckDB file floe is not running on.
    Query {
        #[arg(long, env = "FLOE_DUCKDB_PATH", default_value = "floe.duckdb")]
        duckdb: PathBuf,
        sql: String,
    },
}

/// Where the admin API is and who calls it.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Base URL of floe's admin API.
    #[arg(
        long,
        env = "FLOE_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api: String,
    /// API key: a tenant's, or the operator's.
    #[arg(long, env = "FLOE_API_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (operator key); prints its first API key, shown once.
    Create { name: String },
    /// List tenants (operator key).
    List,
    /// Delete a tenant (operator key).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ValidatorCommand {
    /// Upload a component as the next version (not yet active).
    Upload {
        tenant: String,
        name: String,
        file: PathBuf,
    },
    /// A tenant's validators, their versions and the active one.
    List { tenant: String },
    /// Make a version active; the running pipeline switches without a restart.
    Activate {
        tenant: String,
        name: String,
        version: u32,
    },
    /// Make the previously active version active again.
    Rollback { tenant: String, name: String },
    /// Run sample messages (a JSON array of {"key", "value"}) through a version.
    DryRun {
        tenant: String,
        name: String,
        messages: PathBuf,
        #[arg(long)]
        version: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Route a source table of the tenant through a validator.
    Set {
        tenant: String,
        table: String,
        #[arg(long)]
        validator: Option<String>,
        /// Target table; default: the source table's name.
        #[arg(long)]
        target: Option<String>,
        /// Key columns, comma-separated; default: the Debezium key. (Not `--key`: that
        /// is the API key, accepted by every subcommand.)
        #[arg(long, value_delimiter = ',')]
        key_columns: Option<Vec<String>>,
    },
    /// A tenant's routes.
    List { tenant: String },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Send dead letters back through the pipeline with the validators configured now:
    /// those that would load are written back to their source topic, the rest stay.
    Replay {
        /// The configuration of the running pipeline (brokers, DLQ topic, routes).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this category (decode, validation, transform_trap, …).
        #[arg(long)]
        category: Option<String>,
        /// Only records of this source table.
        #[arg(long)]
        table: Option<String>,
        /// A tenant's dead letters (its topic `{dlq.topic}.{tenant}`), validated again with
        /// the active versions of its validators from the control plane.
        #[arg(long)]
        tenant: Option<String>,
        /// First DLQ offset to consider.
        #[arg(long)]
        from_offset: Option<i64>,
        /// Last DLQ offset to consider (inclusive).
        #[arg(long)]
        to_offset: Option<i64>,
        /// Report what would happen without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
}
