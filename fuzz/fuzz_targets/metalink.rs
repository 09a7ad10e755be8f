//! Fuzz target `metalink`: Metalink 4 and 3 documents and `Link:
//! rel=duplicate` header values; the property lives in
//! `rangefetch_fuzz::check_metalink`, shared with the regression replay in
//! `crates/core/tests/fuzz_regressions.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rangefetch_fuzz::check_metalink(data));
