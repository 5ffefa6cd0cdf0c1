//! The Debezium decoder on arbitrary bytes (`make fuzz`); see `floe_fuzz::check_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| floe_fuzz::check_decode(input));
