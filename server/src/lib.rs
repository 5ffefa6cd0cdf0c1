//! floe: real-time change data capture from Debezium on Kafka into a warehouse.
//!
//! Data flows one way: [`source`] → [`debezium`] → [`transform`] → [`batch`] → [`sink`] →
//! commit, wired together by [`pipeline`].

pub mod admin;
pub mod batch;
pub mod change;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod debezium;
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
