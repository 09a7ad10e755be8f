//! Error statuses: a `503` or `429` with `Retry-After` (seconds or a date) is waited out, and
//! a permanent status for one range ends the run at once.

use std::time::{Duration, SystemTime};

use rangefetch_testserver::{Fault, FaultRule, FileSpec, When};

use super::{asked_from, http_date};
use crate::support::{Expect, MIB, Scenario};

#[test]
fn status_503_with_retry_after_seconds_is_honoured() {
    let size = 4 * MIB;
    let run = Scenario::new(FileSpec::new("/img.bin", size, 108))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::Status {
                code: 503,
                retry_after: Some("1".to_owned()),
            },
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size)
                .ranged()
                .covers(size),
        );
    let at_one_mib: Vec<u16> = asked_from(&run, MIB)
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(at_one_mib, [503, 206], "\n{}", run.describe());
    // The log has no timestamps; a fault-free run of 4 MiB takes a fraction of a second, and
    // the first backoff is at most 250 ms, so a run of at least 1 s waited for Retry-After.
    assert!(
        run.elapsed >= Duration::from_secs(1),
        "the retry did not wait for Retry-After: 1 (run took {:?})\n{}",
        run.elapsed,
        run.describe()
    );
}

#[test]
fn status_429_with_retry_after_date_is_honoured() {
    let size = 4 * MIB;
    let retry_at = http_date(SystemTime::now() + Duration::from_secs(3));
    let run = Scenario::new(FileSpec::new("/img.bin", size, 109))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::Status {
                code: 429,
                retry_after: Some(retry_at.clone()),
            },
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size)
                .ranged()
                .covers(size),
        );
    let at_one_mib: Vec<u16> = asked_from(&run, MIB)
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(at_one_mib, [429, 206], "\n{}", run.describe());
    // The date is 3 s ahead (to the second) when the script is built, so at least ~2 s remain
    // when the 429 arrives.
    assert!(
        run.elapsed >= Duration::from_millis(1500),
        "the retry did not wait for Retry-After: {retry_at} (run took {:?})\n{}",
        run.elapsed,
        run.describe()
    );
    assert!(
        run.elapsed < Duration::from_secs(15),
        "waited far past the Retry-After date: {:?}\n{}",
        run.elapsed,
        run.describe()
    );
}

/// A permanent status for one range mid-download: exit 1 at once, the range asked once.
fn permanent_status_on_a_range(code: u16) {
    let size = 4 * MIB;
    let run = Scenario::new(FileSpec::new("/img.bin", size, 111))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(2 * MIB),
            Fault::Status {
                code,
                retry_after: None,
            },
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::failure(1)
                .served(0..=size)
                .stderr_has(&code.to_string()),
        );
    let at_two_mib: Vec<u16> = asked_from(&run, 2 * MIB)
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(
        at_two_mib,
        [code],
        "a {code} is permanent: the range must be asked for once\n{}",
        run.describe()
    );
    assert!(
        run.elapsed < Duration::from_secs(5),
        "a {code} is permanent, yet the run took {:?}\n{}",
        run.elapsed,
        run.describe()
    );
}

#[test]
fn status_416_for_a_range_exits_1() {
    permanent_status_on_a_range(416);
}

#[test]
fn status_410_for_a_range_exits_1() {
    permanent_status_on_a_range(410);
}

#[test]
fn status_403_for_a_range_without_redirect_exits_1() {
    // No redirect was followed, so there is nothing to re-resolve: the 403 is final.
    permanent_status_on_a_range(403);
}
