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
