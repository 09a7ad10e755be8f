//! Replays every input saved under `fuzz/regressions/<target>/` through the
//! property check its fuzz target runs, so a fuzz crash, once fixed, stays
//! fixed in a plain `cargo test` (and in CI, which runs no fuzzer for long).

use std::fs;
use std::path::{Path, PathBuf};

// The fuzz targets' own checks, compiled here too: one definition of each
// property, whichever way an input reaches it.
#[path = "../../../fuzz/src/lib.rs"]
mod checks;

/// The saved inputs of one target, sorted; none when the directory is absent.
fn saved_inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let Ok(read_dir) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<PathBuf> = read_dir
        .map(|entry| entry.expect("readable regressions directory").path())
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    inputs
}

fn replay(target: &str, check: fn(&[u8])) {
    for path in saved_inputs(target) {
        let data = fs::read(&path).expect("readable regression input");
        // Printed only when the check below panics, naming the input.
        eprintln!("replaying {}", path.display());
        check(&data);
    }
}

#[test]
fn content_range() {
    replay("content_range", checks::check_content_range);
}

#[test]
fn checksums() {
    replay("checksums", checks::check_checksums);
}

#[test]
fn file_name() {
    replay("file_name", checks::check_file_name);
}

#[test]
fn size() {
    replay("size", checks::check_size);
}

#[test]
fn headers() {
    replay("headers", checks::check_headers);
}

/// The checks themselves accept ordinary, well-formed inputs (a check that
/// rejected everything would make every replay above meaningless).
#[test]
fn checks_pass_on_well_formed_inputs() {
    checks::check_content_range(b"bytes 0-499/1234");
    checks::check_checksums(
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 *ubuntu.iso\n",
    );
    checks::check_file_name(b"https://example.com/dir/ubuntu.iso?x=1");
    checks::check_size(b"8MiB");
    checks::check_size(b"4096");
    checks::check_headers(b"W/\"abc\"");
    checks::check_headers(b"Sun, 06 Nov 1994 08:49:37 GMT");
    checks::check_headers(b"5, 5");
    checks::check_headers(b"attachment; filename*=UTF-8''x%20y.iso");
}

#[test]
fn journal() {
    replay("journal", checks::check_journal);
}
