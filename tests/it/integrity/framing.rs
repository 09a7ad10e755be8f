//! Framing: a `Content-Length` that disagrees with `Content-Range`, or duplicated framing
//! headers that disagree, get the response refused before a byte is written (and the range
//! asked again from its first byte); recoverable oddities are recovered — an unknown total at
//! the probe, a `206` that runs past the range, `BYTES` in upper case, an unsolicited `304`.

use rangefetch_testserver::{Fault, FaultRule, FileSpec, When};

use crate::faults::asked_from;
use crate::support::{Expect, MIB, Scenario};

fn file() -> FileSpec {
    FileSpec::new("/img.bin", 4 * MIB, 330)
}

/// The run against `faults` on the range at 1 MiB (once), with 1 MiB chunks.
fn at_one_mib(fault: Fault) -> Scenario<'static> {
    Scenario::new(file())
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            fault,
        )])
        .args(&["--chunk-size", "1MiB"])
}

#[test]
fn a_content_length_longer_than_the_range_is_refused_before_writing() {
    let run = at_one_mib(Fault::LongerBody { extra: 1000 }).expect(Expect::success_of_file());
    assert_eq!(
        asked_from(&run, MIB).len(),
        2,
        "the lying response was not refused and the range asked again from its start\n{}",
        run.describe()
    );
}

#[test]
fn two_content_ranges_that_disagree_are_refused() {
    let run = at_one_mib(Fault::AppendHeader {
        name: "Content-Range".into(),
        value: format!("bytes 0-{}/{}", MIB - 1, 4 * MIB),
    })
    .expect(Expect::success_of_file());
    assert_eq!(asked_from(&run, MIB).len(), 2, "\n{}", run.describe());
}

#[test]
fn a_206_running_past_the_range_is_used_up_to_the_range_end() {
    let run = at_one_mib(Fault::RangeToEnd).expect(Expect::success_of_file());
    assert_eq!(
        asked_from(&run, MIB).len(),
        1,
        "a 206 that sends more than asked was refused instead of used\n{}",
        run.describe()
    );
}

#[test]
fn an_unsolicited_304_is_retried() {
    let run = at_one_mib(Fault::NotModified).expect(Expect::success_of_file());
    assert_eq!(asked_from(&run, MIB).len(), 2, "\n{}", run.describe());
}

#[test]
fn an_upper_case_range_unit_is_understood() {
    Scenario::new(file())
        .faults(vec![FaultRule::always(Fault::UppercaseUnit)])
        .args(&["--chunk-size", "1MiB"])
        .expect(Expect::success_of_file().ranged());
}

#[test]
fn a_probe_of_unknown_total_falls_back_to_one_stream() {
    Scenario::new(file())
        .faults(vec![FaultRule::always(Fault::UnknownTotal)])
        .args(&["--chunk-size", "1MiB"])
        .expect(Expect::success_of_file().stderr_has("one stream"));
}
