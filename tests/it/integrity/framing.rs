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

/// Proxies and caches the test server stands in for (dfdaemon, a filling cache, a proxy that
/// drops `If-Range`): each is detected, and no wrong byte is published.
mod proxies {
    use rangefetch_testserver::{Fault, FaultRule, FileSpec, When};

    use super::file;
    use crate::faults::gets;
    use crate::support::{Expect, MIB, Scenario};

    #[test]
    fn a_200_with_a_content_range_and_a_partial_body_is_not_taken_for_the_file() {
        // A P2P proxy's bug: a ranged request answered 200, with the range's bytes only. Taken
        // at its word (a 200 of that length), it would publish the first chunk as the file.
        let run = Scenario::new(file())
            .faults(vec![FaultRule::always(Fault::OkWithContentRange)])
            .args(&["--chunk-size", "1MiB"])
            .expect(Expect::success_of_file().stderr_has("mangle"));
        assert!(
            gets(&run)
                .iter()
                .skip(1)
                .all(|request| request.range.is_none()),
            "after the mangled probe, the file is asked for whole\n{}",
            run.describe()
        );
    }

    #[test]
    fn a_cache_whose_first_byte_comes_late_is_waited_for_not_retried() {
        // A cache filling its copy answers the first request two seconds late; the stall
        // timeout (20 s by default) covers that, so nothing is asked twice.
        let run = Scenario::new(file())
            .faults(vec![FaultRule::new(
                When::Nth(0),
                Fault::DelayHeaders {
                    duration: Some(std::time::Duration::from_secs(2)),
                },
            )])
            .args(&["--chunk-size", "1MiB"])
            .expect(Expect::success_of_file().served(4 * MIB..=4 * MIB));
        assert_eq!(gets(&run).len(), 4, "\n{}", run.describe());
    }

    #[test]
    fn a_proxy_that_drops_if_range_cannot_splice_a_changed_file() {
        // The file changes mid-download behind a proxy that drops If-Range: the 206s that
        // follow are of the new version, and only their ETag says so.
        let old = file();
        let new = FileSpec::new("/img.bin", old.size, 331);
        Scenario::new(old)
            .faults(vec![
                FaultRule::always(Fault::ChangeContent {
                    after_bytes_served: 2 * MIB,
                    new_seed: 331,
                    new_etag: "\"v2\"".into(),
                }),
                FaultRule::always(Fault::IgnoreIfRange),
            ])
            .args(&["--chunk-size", "1MiB", "-c", "1"])
            .expect(Expect::success(&new.sha256_hex()).stderr_has("changed"));
    }
}
