//! Slow and stalled connections: a connection that stalls forever is dropped and its range
//! resumed, a dribbling one has its range taken over, and a per-connection cap is beaten by
//! more connections.

use std::time::Duration;

use rangefetch_testserver::{
    Fault, FaultRule, FaultScript, FileSpec, RequestLog, TestServer, When,
};

use super::{asked, asked_from, gets};
use crate::support::{Expect, KIB, MIB, Ran, Run, Scenario, start_server};

#[test]
fn connection_stalled_forever_is_dropped_and_its_range_retried() {
    let size = 16 * MIB;
    let stalled_after = 100_000;
    let file = FileSpec::new("/img.bin", size, 105);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    let get = || {
        Scenario::on(&server, "/img.bin").args(&["--chunk-size", "1MiB", "--stall-timeout", "3"])
    };

    let fault_free = get().expect(Expect::success(&expected).served(size..=size));

    server.set_faults(FaultScript::new(vec![FaultRule::new(
        When::RangeStartsAt(MIB).times(1),
        Fault::Stall {
            after_bytes: stalled_after,
            duration: None,
        },
    )]));
    let run = get().expect(
        Expect::success(&expected)
            .served(size..=size)
            .ranged()
            .covers(size),
    );
    let bound = fault_free.elapsed + Duration::from_secs(3 + 5);
    assert!(
        run.elapsed < bound,
        "a stall of one connection cost {:?} (fault-free: {:?}, bound {bound:?})\n{}",
        run.elapsed,
        fault_free.elapsed,
        run.describe()
    );
    // Whether the stall timeout or a take-over by an idle connection rescued it, the rest of
    // the range is asked for from where the stalled body stopped.
    let rest = asked_from(&run, MIB + stalled_after);
    assert_eq!(
        rest.len(),
        1,
        "the stalled range was not resumed at byte {}\n{}",
        MIB + stalled_after,
        run.describe()
    );
    assert_eq!(asked(rest[0]), Some((MIB + stalled_after, Some(2 * MIB))));
}

#[test]
fn dribbling_connection_has_its_range_taken_over() {
    // 1 MiB at 32 KiB/s would take 32 s; an idle connection takes the rest over after ~2 s.
    let size = 8 * MIB;
    // The dribbling response may have pushed a little past the point of the take-over.
    let run = Scenario::new(FileSpec::new("/img.bin", size, 106))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(3 * MIB).times(1),
            Fault::Throttle {
                bytes_per_sec: 32 * KIB,
            },
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size + 256 * KIB)
                .ranged()
                .covers(size),
        );
    assert!(
        run.elapsed < Duration::from_secs(12),
        "the slow range was not taken over: the run took {:?}\n{}",
        run.elapsed,
        run.describe()
    );
    let taken_over: Vec<&RequestLog> = gets(&run)
        .into_iter()
        .filter(|request| {
            asked(request).is_some_and(|(first, end)| {
                first > 3 * MIB && first < 4 * MIB && end == Some(4 * MIB)
            })
        })
        .collect();
    assert_eq!(
        taken_over.len(),
        1,
        "expected one request for the rest of the slow range\n{}",
        run.describe()
    );
}

/// Runs `-c connections --json` against a server that throttles every connection.
fn throttled_run(server: &TestServer, connections: &str, expected: &str, size: u64) -> Ran {
    Scenario::on(server, "/img.bin")
        .args(&["--chunk-size", "1MiB", "-c", connections, "--json"])
        .args(&["--sha256", expected])
        .expect(
            Expect::success(expected)
                .json()
                .verified(true)
                .served(size..=size)
                .ranged()
                .covers(size),
        )
}

/// How many connections carried file bytes.
fn busy_connections(run: &Run) -> usize {
    let mut ids: Vec<u64> = gets(run)
        .iter()
        .filter(|request| request.body_bytes > 0)
        .map(|request| request.connection_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

#[test]
fn throttled_connections_are_multiplied() {
    let size = 8 * MIB;
    let file = FileSpec::new("/img.bin", size, 107);
    let expected = file.sha256_hex();
    let server = start_server(
        vec![file],
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 2 * MIB,
        })],
    );
    let one = throttled_run(&server, "1", &expected, size);
    let eight = throttled_run(&server, "8", &expected, size);
    assert_eq!(
        one.json_summary()["connections"].as_u64(),
        Some(1),
        "\n{}",
        one.describe()
    );
    let peak = eight.json_summary()["connections"].as_u64().unwrap_or(0);
    assert!(
        (2..=8).contains(&peak),
        "-c 8 on a per-connection-capped link peaked at {peak} connections\n{}",
        eight.describe()
    );
    assert!(
        busy_connections(&eight) >= 2,
        "-c 8 carried the file on one connection\n{}",
        eight.describe()
    );
    assert!(
        eight.elapsed < one.elapsed,
        "-c 8 ({:?}) was not faster than -c 1 ({:?}) on a 2 MiB/s-per-connection link",
        eight.elapsed,
        one.elapsed
    );
}
