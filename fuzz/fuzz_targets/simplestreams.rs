//! Fuzz target `simplestreams`: the property lives in
//! `rangefetch_fuzz::check_simplestreams`, shared with the regression replay
//! in `crates/core/tests/fuzz_regressions.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rangefetch_fuzz::check_simplestreams(data));
