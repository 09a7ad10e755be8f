//! What the matrix found, replayed against the test server where a real server cannot be
//! made to do it on demand: a first URL dead from the start with a good mirror after it, a
//! server that pushes back with 429 storms, and the small probes that must never ask for
//! `bytes=0-0` (busybox's misreading of it is in `busybox.rs`, against the real thing).

use std::time::Duration;

use rangefetch_testserver::{Fault, FaultRule, FileSpec, When};

use crate::faults::gets;
use crate::support::{Expect, MIB, Scenario, start_server, tempdir, with_suffix};

#[test]
fn a_first_url_that_answers_500_to_everything_hands_over_to_the_mirror() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 1401);
    let mirror = start_server(vec![file.clone()], vec![]);
    let run = Scenario::new(file)
        .faults(vec![FaultRule::always(Fault::Status {
            code: 500,
            retry_after: None,
        })])
        .args(&[
            &mirror.url("/img.bin"),
            "--chunk-size",
            "1MiB",
            "--retries",
            "2",
        ])
        .expect(Expect::success_of_file().served(0..=0));
    let mirror_bytes = mirror.body_bytes_sent();
    assert!(
        mirror_bytes >= size,
        "the mirror served {mirror_bytes} of {size} bytes\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains(&mirror.url("/img.bin")),
        "the hand-over to the mirror is said\n{}",
        run.describe()
    );
}

#[test]
fn a_429_storm_shrinks_the_pool_and_it_stays_shrunk() {
    // 48 chunks over connections throttled to 2 MiB/s each, so the pool grows to its ceiling
    // of 8; then every third request from the 12th to the 36th answers 429 with a Retry-After.
    // The pool must halve (down to one or two) and hold: the requests after the storm come
    // over at most two connections, where the pool of eight before it used at least five.
    let chunk = 256 * 1024;
    let size = 48 * chunk;
    let file = FileSpec::new("/img.bin", size, 1402);
    let server = start_server(
        vec![file.clone()],
        vec![
            FaultRule::always(Fault::Throttle {
                bytes_per_sec: 2 * MIB,
            }),
            FaultRule::new(
                When::AfterN(12).and(When::EveryNth(3)).times(8),
                Fault::Status {
                    code: 429,
                    retry_after: Some("1".into()),
                },
            ),
        ],
    );
    let run = Scenario::on(&server, "/img.bin")
        .args(&[
            "-c",
            "8",
            "--chunk-size",
            "256KiB",
            "--sha256",
            &file.sha256_hex(),
        ])
        .expect(Expect::success_of_file());
    let requests = gets(&run);
    let last_429 = requests
        .iter()
        .rposition(|request| request.status == 429)
        .unwrap_or_else(|| panic!("the storm never came\n{}", run.describe()));
    let storm_start = requests
        .iter()
        .position(|request| request.status == 429)
        .expect("a 429 was found above");
    let connections = |requests: &[&rangefetch_testserver::RequestLog]| {
        let mut ids: Vec<u64> = requests
            .iter()
            .map(|request| request.connection_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    let before = connections(&requests[..storm_start]);
    assert!(
        before >= 5,
        "the pool never grew before the storm ({before} connections)\n{}",
        run.describe()
    );
    // Workers already streaming when the pool shrank finish their chunk and close; the
    // ones after them are the pool as it stays.
    let settle = (last_429 + 8).min(requests.len());
    let after = &requests[settle..];
    assert!(
        after.len() >= 4,
        "too few requests after the storm to judge ({})\n{}",
        after.len(),
        run.describe()
    );
    assert!(
        connections(after) <= 2,
        "after the storm {} connections were still used\n{}",
        connections(after),
        run.describe()
    );
}

#[test]
fn a_resume_probe_asks_for_two_bytes_not_bytes_0_0() {
    let size = 16 * MIB;
    let file = FileSpec::new("/img.bin", size, 1403);
    let expected = file.sha256_hex();
    let server = start_server(
        vec![file],
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 2 * MIB,
        })],
    );
    let dir = tempdir();
    let get = || {
        Scenario::on(&server, "/img.bin").in_dir(dir.path()).args(&[
            "-c",
            "2",
            "--chunk-size",
            "1MiB",
            "--sha256",
            &expected,
        ])
    };
    let mut running = get().spawn();
    let state = with_suffix(running.out(), ".part.state");
    running.wait_until("resume journal", Duration::from_secs(30), || {
        state.is_file()
    });
    running.signal(libc::SIGINT);
    running.expect(
        Expect::failure(130)
            .hint()
            .part_kept(true)
            .stderr_has("to resume"),
    );
    server.set_faults(Default::default());
    let second = get().expect(Expect::success(&expected));
    let probe = gets(&second)[0];
    assert_eq!(
        probe.range.as_deref(),
        Some("bytes=0-1"),
        "the resume probe\n{}",
        second.describe()
    );
    assert!(
        gets(&second)
            .iter()
            .all(|request| request.range.as_deref() != Some("bytes=0-0")),
        "\n{}",
        second.describe()
    );
}
