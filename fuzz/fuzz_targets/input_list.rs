//! Fuzz target `input_list`: the property lives in `rangefetch_fuzz::check_input_list`,
//! shared with the regression replay in `crates/core/tests/fuzz_regressions.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rangefetch_fuzz::check_input_list(data));
