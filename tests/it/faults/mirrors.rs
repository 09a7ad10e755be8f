//! Mirrors: two that both serve, ranges that follow the faster one, a mirror of another size
//! or one that starts answering `404` dropped, half of them dying mid-download, and all of
//! them failing.

use std::time::Duration;

use rangefetch_testserver::{
    Fault, FaultRule, FaultScript, FileSpec, RequestLog, TestServer, When,
};

use super::served_bytes;
use crate::support::{Expect, KIB, MIB, Scenario, settled_body_bytes, start_server};

/// The requests `server` saw from index `from` on.
fn requests_since(server: &TestServer, from: usize) -> Vec<RequestLog> {
    server.requests()[from..].to_vec()
}

#[test]
fn two_mirrors_both_serve() {
    let size = 16 * MIB;
    let file = FileSpec::new("/img.bin", size, 124);
    let mirror = TestServer::serve(file.clone());
    let run = Scenario::new(file)
        .args(&[&mirror.url("/img.bin"), "--chunk-size", "1MiB"])
        .expect(Expect::success_of_file().ranged());
    let from_primary = served_bytes(&run);
    let from_mirror = settled_body_bytes(&mirror);
    assert!(
        from_primary > 0 && from_mirror > 0,
        "primary sent {from_primary}, mirror {from_mirror} bytes: both should serve\n{}",
        run.describe()
    );
    assert!(
        (size..=size + MIB).contains(&(from_primary + from_mirror)),
        "primary {from_primary} + mirror {from_mirror} bytes for a file of {size}\n{}",
        run.describe()
    );
    assert!(
        mirror
            .requests()
            .iter()
            .skip(1)
            .all(|request| request.if_range.is_some() && request.range.is_some()),
        "a range request to the mirror without Range and If-Range: {:#?}",
        mirror.requests()
    );
}

#[test]
fn ranges_follow_the_faster_mirror() {
    let size = 16 * MIB;
    let file = FileSpec::new("/img.bin", size, 125);
    let fast = TestServer::serve(file.clone());
    let run = Scenario::new(file)
        .faults(vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 256 * KIB,
        })])
        .args(&[&fast.url("/img.bin"), "--chunk-size", "1MiB"])
        .expect(Expect::success_of_file());
    let from_slow = served_bytes(&run);
    let from_fast = settled_body_bytes(&fast);
    assert!(
        from_fast > 4 * from_slow,
        "the fast mirror sent {from_fast} bytes, the slow one {from_slow}\n{}",
        run.describe()
    );
    assert!(
        run.elapsed < Duration::from_secs(20),
        "16 MiB took {:?} with a fast mirror available\n{}",
        run.elapsed,
        run.describe()
    );
}

#[test]
fn mirror_of_another_size_is_dropped_with_a_warning() {
    let size = 4 * MIB;
    let other = TestServer::serve(FileSpec::new("/img.bin", size + 1, 126));
    let run = Scenario::new(FileSpec::new("/img.bin", size, 126))
        .args(&[&other.url("/img.bin"), "--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size)
                .ranged()
                .covers(size)
                .stderr_has("dropping mirror"),
        );
    assert!(
        run.stderr.contains(&other.url("/img.bin")),
        "the warning does not name the dropped mirror\n{}",
        run.describe()
    );
    assert_eq!(
        other.requests().len(),
        1,
        "a mirror of another size must see its probe only: {:#?}",
        other.requests()
    );
    // Its probe asks for two bytes (`bytes=0-1`, see probe::SMALL_PROBE_LEN).
    assert!(settled_body_bytes(&other) <= 2);
}

#[test]
fn mirror_that_starts_answering_404_is_dropped() {
    let size = 8 * MIB;
    let file = FileSpec::new("/img.bin", size, 127);
    let gone = start_server(
        vec![file.clone()],
        vec![FaultRule::new(
            When::AfterN(1),
            Fault::Status {
                code: 404,
                retry_after: None,
            },
        )],
    );
    let run = Scenario::new(file)
        .args(&[&gone.url("/img.bin"), "--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size - MIB..=size)
                .ranged()
                .stderr_has("dropping mirror"),
        );
    let after_probe = requests_since(&gone, 1);
    assert!(
        !after_probe.is_empty() && after_probe.iter().all(|request| request.status == 404),
        "the scenario needs the mirror to have answered 404: {after_probe:#?}"
    );
    // Connections already on their way to the mirror may each hit it once; none comes back.
    assert!(
        after_probe.len() <= 8,
        "{} requests reached a mirror after its first 404\n{}",
        after_probe.len(),
        run.describe()
    );
}

#[test]
fn killing_half_the_mirrors_mid_download_still_completes() {
    let size = 32 * MIB;
    let file = FileSpec::new("/img.bin", size, 128);
    let expected = file.sha256_hex();
    let throttled = || {
        start_server(
            vec![file.clone()],
            vec![FaultRule::always(Fault::Throttle {
                bytes_per_sec: 2 * MIB,
            })],
        )
    };
    let primary = throttled();
    let survivor = throttled();
    let failing = throttled();
    let killed = throttled();
    let mirrors = [
        survivor.url("/img.bin"),
        failing.url("/img.bin"),
        killed.url("/img.bin"),
    ];
    let mut running = Scenario::on(&primary, "/img.bin")
        .args(&mirrors.each_ref().map(String::as_str))
        .args(&["--chunk-size", "1MiB", "--sha256", &expected])
        .spawn();
    let total_served = || {
        [&primary, &survivor, &failing, &killed]
            .iter()
            .map(|server| server.body_bytes_sent())
            .sum::<u64>()
    };
    running.wait_until("4 MiB served", Duration::from_secs(30), || {
        total_served() >= 4 * MIB
    });
    // One mirror dies outright (connections reset, then refused), one answers 503 forever.
    let from_killed = killed.body_bytes_sent();
    drop(killed);
    let failing_from = failing.requests().len();
    failing.set_faults(FaultScript::new(vec![FaultRule::always(Fault::Status {
        code: 503,
        retry_after: None,
    })]));
    let run = running.expect(Expect::success(&expected).stderr_has("dropping mirror"));
    // Responses already streaming when the script changed run to their end.
    let from_failing = settled_body_bytes(&failing);
    let from_survivors = served_bytes(&run) + settled_body_bytes(&survivor);
    assert!(
        from_survivors > 0,
        "the surviving mirrors sent nothing\n{}",
        run.describe()
    );
    // The killed server's count is read just before it dies, so a few bytes it sent in its
    // last moments may be missing from the sum.
    let total = from_survivors + from_killed + from_failing;
    assert!(
        (size - MIB..=size + size / 2).contains(&total),
        "{total} bytes served for a file of {size}\n{}",
        run.describe()
    );
    // A mirror that keeps failing is dropped: after --retries (5) failures, and a few
    // requests already on their way, nothing more reaches it.
    let after_kill = requests_since(&failing, failing_from);
    let refused = after_kill
        .iter()
        .filter(|request| request.status == 503)
        .count();
    assert!(
        refused <= 6 + 8,
        "{refused} requests reached a mirror answering 503 forever\n{}",
        run.describe()
    );
}

#[test]
fn every_mirror_failing_exits_1() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 129);
    let unavailable = vec![FaultRule::new(
        When::AfterN(1),
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    )];
    let mirror = start_server(vec![file.clone()], unavailable.clone());
    let run = Scenario::new(file)
        .faults(unavailable)
        .args(&[&mirror.url("/img.bin"), "--chunk-size", "1MiB"])
        .args(&["--retries", "2"])
        .expect(Expect::failure(1).stderr_has("503"));
    assert!(
        mirror.requests().len() > 1,
        "the scenario needs the mirror to have been tried: {:#?}",
        mirror.requests()
    );
    assert!(
        run.elapsed < Duration::from_secs(30),
        "giving up took {:?}\n{}",
        run.elapsed,
        run.describe()
    );
}
