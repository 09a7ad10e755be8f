//! Timeouts mean what they say: waiting for response headers is bounded by the stall timeout,
//! not the connect timeout, so a server that accepts and never answers is a stalled one.

use rangefetch_testserver::{Fault, FaultRule, FileSpec};

use crate::support::{Expect, MIB, Scenario};

#[test]
fn a_server_that_never_answers_is_a_stall_of_the_stall_timeout() {
    let run = Scenario::new(FileSpec::new("/img.bin", MIB, 350))
        .faults(vec![FaultRule::always(Fault::DelayHeaders {
            duration: None,
        })])
        .args(&[
            "--stall-timeout",
            "1",
            "--connect-timeout",
            "60",
            "--retries",
            "1",
        ])
        .expect(Expect::failure(1).stderr_has("no response within 1 s"));
    // Two probes (one retry), each given up after the stall timeout: the connect timeout
    // never held a request.
    assert_eq!(
        run.served.as_ref().map(|served| served.requests.len()),
        Some(2),
        "\n{}",
        run.describe()
    );
}

/// A cache filling a slice for another client holds the answer back: with a first-byte
/// timeout longer than the hold, the request waits for it instead of being dropped and
/// retried at the stall timeout; without one, it is retried (and still completes).
#[test]
fn a_first_byte_timeout_waits_out_a_cache_that_is_filling() {
    use rangefetch_testserver::When;
    let hold = || {
        vec![FaultRule::new(
            When::Nth(1),
            Fault::DelayHeaders {
                duration: Some(std::time::Duration::from_secs(4)),
            },
        )]
    };
    let retries = |run: &crate::support::Ran| -> u64 {
        run.stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .and_then(|done| done["retries"].as_u64())
            .unwrap_or(u64::MAX)
    };
    let args = [
        "-c",
        "1",
        "--chunk-size",
        "256KiB",
        "--stall-timeout",
        "2",
        "--json",
    ];
    let waited = Scenario::new(FileSpec::new("/img.bin", MIB, 351))
        .faults(hold())
        .args(&args)
        .args(&["--first-byte-timeout", "30"])
        .expect(Expect::success_of_file().json());
    assert_eq!(
        retries(&waited),
        0,
        "the held request was retried\n{}",
        waited.describe()
    );
    let dropped = Scenario::new(FileSpec::new("/img.bin", MIB, 351))
        .faults(hold())
        .args(&args)
        .expect(Expect::success_of_file().json());
    assert!(
        retries(&dropped) >= 1,
        "the held request was not dropped\n{}",
        dropped.describe()
    );
}
