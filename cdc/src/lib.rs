//! The part of floe that turns bytes into changes and changes into SQL text, kept apart
//! from I/O (Kafka, DuckDB, wasmtime) so that fuzzers build it in seconds.

pub mod change;
pub mod debezium;
pub mod sql_text;
