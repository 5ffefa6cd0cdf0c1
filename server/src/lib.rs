//! floe: real-time change data capture from Debezium on Kafka into a warehouse.
//!
//! Data flows one way: [`source`] → [`debezium`] → [`transform`] → [`batch`] → [`sink`] →
//! commit, wired together by [`pipeline`].

// The change model and the decoder live in `floe-cdc` (no I/O, cheap to fuzz); they keep
// their paths here.
pub use floe_cdc::{change, debezium, sql_text};

pub mod admin;
pub mod batch;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod dlq;
pub mod generate;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod resilience;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod transform;
