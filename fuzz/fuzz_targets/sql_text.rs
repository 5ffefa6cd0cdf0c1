//! Identifier and literal rendering, parsed back (`make fuzz`); see
//! `floe_fuzz::check_sql_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| floe_fuzz::check_sql_text(input));
