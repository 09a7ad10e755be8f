//! Fuzz target `digest`: the property lives in `rangefetch_fuzz::check_digest`,
//! shared with the regression replay in `crates/core/tests/fuzz_regressions.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rangefetch_fuzz::check_digest(data));
