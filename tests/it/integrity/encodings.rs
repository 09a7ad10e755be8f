//! What is published is the file's bytes, never an encoded representation: a body gzip-encoded
//! though identity was asked for is decoded from one stream (the hash is of the decoded
//! bytes), encoded ranges are never written, and a coding the engine cannot decode is a clear
//! error with no output.

use rangefetch_testserver::{Fault, FaultRule, FileSpec};

use crate::faults::gets;
use crate::support::{Expect, MIB, Scenario};

fn file() -> FileSpec {
    FileSpec::new("/img.bin", 2 * MIB, 320)
}

#[test]
fn a_file_gzip_encoded_by_force_is_decoded_not_published_encoded() {
    // Apache's `force-gzip`: every answer a 200 with the whole file gzipped.
    Scenario::new(file())
        .faults(vec![
            FaultRule::always(Fault::IgnoreRange),
            FaultRule::always(Fault::Gzip),
        ])
        .expect(Expect::success_of_file().stderr_has("gzip-encoded"));
}

#[test]
fn gzip_encoded_ranges_are_never_written() {
    let run = Scenario::new(file())
        .faults(vec![FaultRule::always(Fault::Gzip)])
        .args(&["--chunk-size", "256KiB"])
        .expect(Expect::success_of_file());
    // One encoded range (the probe), then the whole file as one decoded stream.
    let requests = gets(&run);
    assert!(
        requests
            .iter()
            .skip(1)
            .all(|request| request.range.is_none()),
        "an encoded range was asked for after the probe\n{}",
        run.describe()
    );
}

#[test]
fn a_transfer_coding_other_than_chunked_is_decoded() {
    Scenario::new(file())
        .faults(vec![
            FaultRule::always(Fault::IgnoreRange),
            FaultRule::always(Fault::TransferGzip),
        ])
        .expect(Expect::success_of_file());
}

#[test]
fn a_coding_that_cannot_be_decoded_is_a_clear_error() {
    Scenario::new(file())
        .faults(vec![
            FaultRule::always(Fault::IgnoreRange),
            FaultRule::always(Fault::SetHeader {
                name: "Content-Encoding".into(),
                value: "br".into(),
            }),
        ])
        .expect(Expect::failure(1).stderr_has("cannot decode br"));
}
