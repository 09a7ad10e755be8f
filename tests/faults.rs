//! `rangefetch get` against the test server's fault script, one test per fault: resets, short
//! bodies, random cuts, stalls, throttling, error statuses with `Retry-After`, wrong headers, a
//! remote that changes mid-download, a CDN that mishandles `If-Range`, redirects that expire,
//! corrupted bytes, and mirrors that disagree or die. Each test asserts the output's SHA-256 and
//! what the server saw: how many bytes it sent and which ranges were asked for, so that a retry
//! that starts over from the chunk's first byte, or a file that mixes two versions, fails.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Expect, Run, check, run_against, settled_body_bytes, sha256_bytes, spawn, tempdir, with_suffix,
};
use rangefetch_testserver::{
    Fault, FaultRule, FaultScript, FileSpec, RequestLog, ServerConfig, TestServer, When,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// A server for `files` with these fault rules (script seed 0).
fn start(files: Vec<FileSpec>, rules: Vec<FaultRule>) -> TestServer {
    TestServer::start(ServerConfig {
        files,
        faults: FaultScript::new(rules),
    })
}

/// The GET requests a run sent to the server it was recorded against, in arrival order.
fn gets(run: &Run) -> Vec<&RequestLog> {
    run.served
        .as_ref()
        .expect("the run was recorded against a server")
        .requests
        .iter()
        .filter(|request| request.method == "GET")
        .collect()
}

/// The file-content bytes the server sent during the run.
fn served_bytes(run: &Run) -> u64 {
    run.served
        .as_ref()
        .expect("the run was recorded against a server")
        .body_bytes
}

/// The half-open range a request asked for: `bytes=a-b` is `(a, Some(b + 1))`, `bytes=a-` is
/// `(a, None)`.
fn asked(request: &RequestLog) -> Option<(u64, Option<u64>)> {
    let spec = request.range.as_deref()?.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let last = last.trim();
    let end = if last.is_empty() {
        None
    } else {
        Some(last.parse::<u64>().ok()? + 1)
    };
    Some((first, end))
}

/// The GETs of the run whose `Range` starts at `start`.
fn asked_from(run: &Run, start: u64) -> Vec<&RequestLog> {
    gets(run)
        .into_iter()
        .filter(|request| asked(request).is_some_and(|(first, _)| first == start))
        .collect()
}

/// How far from byte 0 the bodies of `requests` reach without a gap: a 200 covers `[0, its
/// body)`, a 206 `[range start, + its body)`.
fn covered_prefix(requests: &[&RequestLog]) -> u64 {
    let mut spans: Vec<(u64, u64)> = requests
        .iter()
        .filter(|request| request.body_bytes > 0)
        .filter_map(|request| {
            let start = match request.status {
                200 => 0,
                206 => asked(request)?.0,
                _ => return None,
            };
            Some((start, start + request.body_bytes))
        })
        .collect();
    spans.sort_unstable();
    let mut covered_to = 0;
    for (start, end) in spans {
        if start > covered_to {
            break;
        }
        covered_to = covered_to.max(end);
    }
    covered_to
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form of `Retry-After` dates.
fn http_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Howard Hinnant's days-to-civil, for days since the epoch.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} GMT",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

#[test]
fn http_date_formats_known_instants() {
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(1_704_164_645)),
        "Tue, 02 Jan 2024 03:04:05 GMT"
    );
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "Tue, 29 Feb 2000 00:00:00 GMT"
    );
}

// ---------------------------------------------------------------------------------------------
// Cut-off responses: the retry asks for the rest of the range, from the byte where it stopped.
// ---------------------------------------------------------------------------------------------

#[test]
fn reset_after_n_bytes_resumes_mid_range() {
    let size = 4 * MIB;
    let cut = 300_000;
    let file = FileSpec::new("/img.bin", size, 101);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::ResetAfter { bytes: cut },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // A reset may swallow bytes still in the kernel's buffers, so the retry starts somewhere in
    // (MIB, MIB + cut]; every byte the server counted beyond the file is one of those.
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=size + cut)
            .ranged()
            .covers(size),
    );
    assert_eq!(
        asked_from(&run, MIB).len(),
        1,
        "the range at 1 MiB was asked for again from its first byte\n{}",
        run.describe()
    );
    let resumed: Vec<(u64, Option<u64>)> = gets(&run)
        .iter()
        .filter_map(|request| asked(request))
        .filter(|(first, _)| (MIB + 1..=MIB + cut).contains(first))
        .collect();
    assert_eq!(
        resumed.len(),
        1,
        "expected one retry starting inside the cut-off range, at the byte where it stopped\n{}",
        run.describe()
    );
    assert_eq!(
        resumed[0].1,
        Some(2 * MIB),
        "the retry must ask for exactly the rest of the range\n{}",
        run.describe()
    );
}

#[test]
fn close_after_n_bytes_resumes_at_the_missing_byte() {
    let size = 4 * MIB;
    let cut = 123_457;
    let file = FileSpec::new("/img.bin", size, 102);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(2 * MIB).times(1),
            Fault::CloseAfter { bytes: cut },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // A clean close delivers every byte sent: nothing is fetched twice.
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=size)
            .ranged()
            .covers(size),
    );
    let cut_off = asked_from(&run, 2 * MIB);
    assert_eq!(cut_off.len(), 1, "\n{}", run.describe());
    assert_eq!(cut_off[0].body_bytes, cut, "\n{}", run.describe());
    let retry = asked_from(&run, 2 * MIB + cut);
    assert_eq!(
        retry.len(),
        1,
        "no retry from byte {} (where the body stopped)\n{}",
        2 * MIB + cut,
        run.describe()
    );
    assert_eq!(asked(retry[0]), Some((2 * MIB + cut, Some(3 * MIB))));
    assert_eq!(retry[0].status, 206);
}

#[test]
fn short_body_is_retried_from_the_missing_byte() {
    let size = 4 * MIB;
    let missing = 1000;
    let file = FileSpec::new("/img.bin", size, 103);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::ShortBody { missing },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=size)
            .ranged()
            .covers(size),
    );
    let retry = asked_from(&run, 2 * MIB - missing);
    assert_eq!(
        retry.len(),
        1,
        "the last {missing} bytes of the range were not asked for on their own\n{}",
        run.describe()
    );
    assert_eq!(asked(retry[0]), Some((2 * MIB - missing, Some(2 * MIB))));
    assert_eq!(retry[0].body_bytes, missing);
    assert_eq!(asked_from(&run, MIB).len(), 1, "\n{}", run.describe());
}

/// The issue's done-when: "Against the test server dropping every response after a random
/// 1–8 MB, a 256 MiB download finishes correct with total bytes served ≤ 1.1 × size."
#[test]
fn random_cuts_of_every_response_cost_at_most_a_tenth_more() {
    let size = 256 * MIB;
    let file = FileSpec::new("/big.bin", size, 104);
    let expected = file.sha256_hex();
    let server = TestServer::start(ServerConfig {
        files: vec![file],
        faults: FaultScript::new(vec![FaultRule::always(Fault::CutRandom {
            min: 1_000_000,
            max: 8_000_000,
        })])
        .with_seed(7),
    });
    let dir = tempdir();
    let out = dir.path().join("big.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/big.bin"), "--sha256", &expected],
    );
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=size + size / 10)
            .ranged()
            .covers(size),
    );
    // The script really did cut: more requests than the 32 chunks of 8 MiB.
    assert!(
        gets(&run).len() > 40,
        "too few requests for a script that cuts every response\n{}",
        run.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// Slow and stalled connections.
// ---------------------------------------------------------------------------------------------

#[test]
fn connection_stalled_forever_is_dropped_and_its_range_retried() {
    let size = 16 * MIB;
    let stalled_after = 100_000;
    let file = FileSpec::new("/img.bin", size, 105);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    let args_for = |url: &str| {
        vec![
            "get".to_owned(),
            url.to_owned(),
            "--chunk-size".to_owned(),
            "1MiB".to_owned(),
            "--stall-timeout".to_owned(),
            "3".to_owned(),
        ]
    };
    let url = server.url("/img.bin");
    let args = args_for(&url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let dir = tempdir();
    let fault_free = run_against(&server, dir.path(), &args);
    check(
        &fault_free,
        &dir.path().join("img.bin"),
        &Expect::success(&expected).served(size..=size),
    );

    server.set_faults(FaultScript::new(vec![FaultRule::new(
        When::RangeStartsAt(MIB).times(1),
        Fault::Stall {
            after_bytes: stalled_after,
            duration: None,
        },
    )]));
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(&server, dir.path(), &args);
    check(
        &run,
        &out,
        &Expect::success(&expected)
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
    let file = FileSpec::new("/img.bin", size, 106);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(3 * MIB).times(1),
            Fault::Throttle {
                bytes_per_sec: 32 * KIB,
            },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // The dribbling response may have pushed a little past the point of the take-over.
    check(
        &run,
        &out,
        &Expect::success(&expected)
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
fn throttled_run(server: &TestServer, connections: &str, expected: &str, size: u64) -> Run {
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        server,
        dir.path(),
        &[
            "get",
            &server.url("/img.bin"),
            "--chunk-size",
            "1MiB",
            "-c",
            connections,
            "--json",
            "--sha256",
            expected,
        ],
    );
    check(
        &run,
        &out,
        &Expect::success(expected)
            .json()
            .verified(true)
            .served(size..=size)
            .ranged()
            .covers(size),
    );
    run
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
    let server = start(
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

// ---------------------------------------------------------------------------------------------
// Error statuses.
// ---------------------------------------------------------------------------------------------

#[test]
fn status_503_with_retry_after_seconds_is_honoured() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 108);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::Status {
                code: 503,
                retry_after: Some("1".to_owned()),
            },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    check(
        &run,
        &out,
        &Expect::success(&expected)
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
    let file = FileSpec::new("/img.bin", size, 109);
    let expected = file.sha256_hex();
    let retry_at = http_date(SystemTime::now() + Duration::from_secs(3));
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::Status {
                code: 429,
                retry_after: Some(retry_at.clone()),
            },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    check(
        &run,
        &out,
        &Expect::success(&expected)
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
    let file = FileSpec::new("/img.bin", size, 111);
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(2 * MIB),
            Fault::Status {
                code,
                retry_after: None,
            },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    check(
        &run,
        &out,
        &Expect::failure(1)
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

// ---------------------------------------------------------------------------------------------
// Wrong headers and wrong bodies.
// ---------------------------------------------------------------------------------------------

#[test]
fn ignored_range_mid_download_still_gives_the_right_file() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 112);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(2 * MIB).times(1),
            Fault::IgnoreRange,
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // The unwanted 200 pushes some of the whole file before the client hangs up; a restart
    // (if the engine takes the 200 for a change) costs one more file.
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=2 * size + MIB)
            .covers(size),
    );
    let ignored: Vec<&RequestLog> = gets(&run)
        .into_iter()
        .filter(|request| request.status == 200)
        .collect();
    assert_eq!(
        ignored.len(),
        1,
        "the scenario needs one 200 to a ranged request\n{}",
        run.describe()
    );
}

#[test]
fn server_that_always_ignores_range_gives_the_right_file() {
    let size = 3 * MIB + 5;
    let file = FileSpec::new("/img.bin", size, 113);
    let expected = file.sha256_hex();
    let server = start(vec![file], vec![FaultRule::always(Fault::IgnoreRange)]);
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // The probe's 200 is the whole file, streamed once.
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=size)
            .max_requests(1)
            .covers(size),
    );
}

#[test]
fn wrong_content_range_is_rejected_and_retried() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 114);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::WrongContentRange { shift: 1 },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // The right SHA-256 is the proof that no byte of the mislabelled body was written.
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=size + MIB)
            .ranged()
            .covers(size),
    );
    let at_one_mib = asked_from(&run, MIB);
    assert_eq!(
        at_one_mib.len(),
        2,
        "the mislabelled range must be asked for again, in full\n{}",
        run.describe()
    );
    assert_eq!(asked(at_one_mib[1]), Some((MIB, Some(2 * MIB))));
    assert_eq!(at_one_mib[1].body_bytes, MIB, "\n{}", run.describe());
}

#[test]
fn wrong_total_never_gives_a_wrong_file() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 115);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::WrongTotal { total: size + MIB },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // Taken for a changed remote (start over) or a protocol error (retry the range): either
    // way the file is right, and at worst fetched twice.
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=2 * size + MIB)
            .covers(size),
    );
    assert!(
        asked_from(&run, MIB).len() >= 2,
        "the range with the wrong total was never asked for again\n{}",
        run.describe()
    );
}

#[test]
fn flipped_byte_with_sha256_exits_3_and_leaves_nothing() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 116);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![FaultRule::always(Fault::FlipByte {
            offset: 3 * MIB + 17,
        })],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &[
            "get",
            &server.url("/img.bin"),
            "--chunk-size",
            "1MiB",
            "--sha256",
            &expected,
        ],
    );
    check(
        &run,
        &out,
        &Expect::failure(3)
            .part_kept(false)
            .served(size..=size)
            .ranged()
            .stderr_has("checksum"),
    );
    assert!(!with_suffix(&out, ".part").exists());
}

/// Without `--sha256`, a corrupted byte goes unnoticed: the download "succeeds" and prints the
/// hash of the corrupted file. That printed hash differs from the true one — which is exactly
/// why `--sha256` (or `--sha256-sums`) matters: only an expected hash turns silent corruption
/// into exit 3.
#[test]
fn flipped_byte_without_sha256_prints_a_different_hash() {
    let size = 4 * MIB;
    let offset = 3 * MIB + 17;
    let file = FileSpec::new("/img.bin", size, 117);
    let true_hash = file.sha256_hex();
    let mut corrupted = rangefetch_testserver::content(117, 0..size);
    corrupted[offset as usize] ^= 0xFF;
    let corrupted_hash = sha256_bytes(&corrupted);
    assert_ne!(corrupted_hash, true_hash);
    let server = start(
        vec![file],
        vec![FaultRule::always(Fault::FlipByte { offset })],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // `check` also asserts that stdout's `<hex>  <path>` line is the file's (corrupted) hash.
    check(
        &run,
        &out,
        &Expect::success(&corrupted_hash)
            .served(size..=size)
            .ranged()
            .covers(size),
    );
    assert!(
        !run.stdout.contains(&true_hash),
        "the true hash was printed for a corrupted file\n{}",
        run.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// Validators: a changed remote, and a CDN that mishandles `If-Range`.
// ---------------------------------------------------------------------------------------------

/// The server of the change tests: 8 MiB that become new content (seed 119, ETag "v2") once
/// 3 MiB have been served.
fn changing_server() -> (TestServer, FileSpec, FileSpec) {
    let size = 8 * MIB;
    let old = FileSpec::new("/img.bin", size, 118);
    let new = FileSpec::new("/img.bin", size, 119);
    let server = start(
        vec![old.clone()],
        vec![FaultRule::always(Fault::ChangeContent {
            after_bytes_served: 3 * MIB,
            new_seed: 119,
            new_etag: "\"v2\"".to_owned(),
        })],
    );
    (server, old, new)
}

#[test]
fn content_change_mid_download_restarts_on_the_new_version() {
    let (server, old, new) = changing_server();
    let size = new.size;
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // Entirely the new content: never old bytes with new ones.
    check(
        &run,
        &out,
        &Expect::success(&new.sha256_hex())
            .served(size..=3 * size)
            .stderr_has("changed"),
    );
    assert_eq!(
        server
            .file("/img.bin")
            .and_then(|file| file.etag)
            .as_deref(),
        Some("\"v2\""),
        "the scenario needs the change to have happened"
    );
    let requests = gets(&run);
    let old_etag = old.etag.clone().expect("FileSpec::new has an ETag");
    assert!(
        requests
            .iter()
            .any(|request| request.if_range.as_deref() == Some(old_etag.as_str())),
        "no request pinned the first version\n{}",
        run.describe()
    );
    // The restart is a new probe (no If-Range); from there on, every request pins "v2" and
    // their bodies alone cover the file.
    let restart = requests
        .iter()
        .rposition(|request| request.if_range.is_none())
        .expect("the first request is a probe");
    assert!(
        restart > 0,
        "the download was not restarted after the change\n{}",
        run.describe()
    );
    let after = &requests[restart..];
    assert!(
        after[1..]
            .iter()
            .all(|request| request.if_range.as_deref() == Some("\"v2\"")),
        "after the restart a request did not pin the new version\n{}",
        run.describe()
    );
    assert!(
        covered_prefix(after) >= size,
        "the requests after the restart do not cover the file\n{}",
        run.describe()
    );
}

#[test]
fn content_change_with_the_old_sha256_exits_3_and_leaves_nothing() {
    let (server, old, _new) = changing_server();
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &[
            "get",
            &server.url("/img.bin"),
            "--chunk-size",
            "1MiB",
            "--sha256",
            &old.sha256_hex(),
        ],
    );
    check(&run, &out, &Expect::failure(3).part_kept(false));
}

#[test]
fn ok_to_an_etag_if_range_switches_form_without_restarting() {
    // Up to four requests (the connections the engine starts with) can carry the ETag form
    // before the first 200 is seen, and each 200 pushes a few MB into the loopback socket
    // buffers before the client hangs up (2.7-4.3 MiB each seen on a busy machine): allow 6 MiB
    // for each. Reading a whole 200 body would cost 63 MiB more.
    let size = 64 * MIB;
    let per_full_body = 6 * MIB;
    let file = FileSpec::new("/img.bin", size, 120);
    let expected = file.sha256_hex();
    let etag = file.etag.clone().expect("FileSpec::new has an ETag");
    let date = http_date(
        file.last_modified
            .expect("FileSpec::new has a Last-Modified"),
    );
    let server = start(vec![file], vec![FaultRule::always(Fault::OkOnEtagIfRange)]);
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &["get", &server.url("/img.bin"), "--chunk-size", "1MiB"],
    );
    // `ranged`: the date form still works on this CDN, so no request needs to go without
    // If-Range (ARCHITECTURE.md: every ranged request carries If-Range).
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=size + 4 * per_full_body)
            .ranged()
            .covers(size),
    );
    assert!(
        !run.stderr.to_lowercase().contains("changed"),
        "an unchanged file was reported as changed\n{}",
        run.describe()
    );
    let requests = gets(&run);
    assert_eq!(
        asked_from(&run, 0).len(),
        1,
        "the download restarted from byte 0\n{}",
        run.describe()
    );
    let with_etag: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, request)| request.if_range.as_deref() == Some(etag.as_str()))
        .map(|(idx, _)| idx)
        .collect();
    // Each connection the engine starts with (at most 4) may send the ETag
    // form before the first answer reveals the server's bug; none after.
    assert!(
        (1..=4).contains(&with_etag.len()),
        "expected the ETag form of If-Range at most once per starting connection, got {}\n{}",
        with_etag.len(),
        run.describe()
    );
    let full_bodies = requests
        .iter()
        .filter(|request| request.status == 200)
        .count();
    assert_eq!(full_bodies, with_etag.len(), "\n{}", run.describe());
    let last_etag = *with_etag.last().expect("checked above");
    assert!(
        requests[last_etag + 1..]
            .iter()
            .all(|request| request.if_range.as_deref() == Some(date.as_str())),
        "after the switch every request must carry the date form of If-Range ({date})\n{}",
        run.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// Redirects.
// ---------------------------------------------------------------------------------------------

#[test]
fn redirect_is_followed_once_and_ranges_go_to_the_target() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 121);
    let expected = file.sha256_hex();
    let server = start(
        vec![file],
        vec![
            FaultRule::always(Fault::Redirect {
                status: 301,
                location: "/img.bin".to_owned(),
            })
            .on_path("/old.bin"),
        ],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &[
            "get",
            &server.url("/old.bin"),
            "-o",
            "img.bin",
            "--chunk-size",
            "1MiB",
        ],
    );
    check(
        &run,
        &out,
        &Expect::success(&expected).served(size..=size).covers(size),
    );
    let requests = gets(&run);
    assert_eq!(requests[0].path, "/old.bin", "\n{}", run.describe());
    assert_eq!(requests[0].status, 301, "\n{}", run.describe());
    assert!(
        requests[1..]
            .iter()
            .all(|request| request.path == "/img.bin"),
        "only the first request may go to the old URL\n{}",
        run.describe()
    );
    assert!(
        requests[2..]
            .iter()
            .all(|request| request.if_range.is_some()),
        "a range request to the target without If-Range\n{}",
        run.describe()
    );
}

#[test]
fn redirect_loop_fails_after_at_most_ten_hops() {
    let server = start(
        vec![FileSpec::new("/img.bin", MIB, 122)],
        vec![
            FaultRule::always(Fault::Redirect {
                status: 302,
                location: "/loop.bin".to_owned(),
            })
            .on_path("/loop.bin"),
        ],
    );
    let dir = tempdir();
    let out = dir.path().join("loop.bin");
    let run = run_against(&server, dir.path(), &["get", &server.url("/loop.bin")]);
    check(
        &run,
        &out,
        &Expect::failure(1)
            .served(0..=0)
            .max_requests(12)
            .stderr_has("redirect"),
    );
    assert!(
        run.elapsed < Duration::from_secs(5),
        "a redirect loop is permanent, yet the run took {:?}\n{}",
        run.elapsed,
        run.describe()
    );
}

#[test]
fn expired_redirect_target_is_re_resolved_from_the_original_url() {
    // /old.bin first redirects to /a.bin, later to /b.bin (a fresh "presigned" URL for the same
    // object); /a.bin answers 403 once three requests have used it.
    let size = 8 * MIB;
    let a = FileSpec::new("/a.bin", size, 123);
    let b = FileSpec::new("/b.bin", size, 123);
    let expected = a.sha256_hex();
    let server = start(
        vec![a, b],
        vec![
            FaultRule::new(
                When::Nth(0),
                Fault::Redirect {
                    status: 302,
                    location: "/a.bin".to_owned(),
                },
            )
            .on_path("/old.bin"),
            FaultRule::new(
                When::AfterN(1),
                Fault::Redirect {
                    status: 302,
                    location: "/b.bin".to_owned(),
                },
            )
            .on_path("/old.bin"),
            FaultRule::always(Fault::ForbiddenAfter { requests: 3 }).on_path("/a.bin"),
        ],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &server,
        dir.path(),
        &[
            "get",
            &server.url("/old.bin"),
            "-o",
            "img.bin",
            "--chunk-size",
            "1MiB",
        ],
    );
    check(
        &run,
        &out,
        &Expect::success(&expected)
            .served(size..=size + MIB)
            .covers(size),
    );
    let requests = gets(&run);
    let on = |path: &str| {
        requests
            .iter()
            .filter(|request| request.path == path)
            .count()
    };
    assert!(
        requests
            .iter()
            .any(|request| request.path == "/a.bin" && request.status == 403),
        "the scenario needs /a.bin to have expired\n{}",
        run.describe()
    );
    assert!(
        on("/old.bin") >= 2,
        "the original URL was not resolved again\n{}",
        run.describe()
    );
    assert!(
        requests
            .iter()
            .any(|request| request.path == "/b.bin" && request.status == 206),
        "no range came from the renewed target\n{}",
        run.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// Mirrors.
// ---------------------------------------------------------------------------------------------

/// The requests `server` saw from index `from` on.
fn requests_since(server: &TestServer, from: usize) -> Vec<RequestLog> {
    server.requests()[from..].to_vec()
}

#[test]
fn two_mirrors_both_serve() {
    let size = 16 * MIB;
    let file = FileSpec::new("/img.bin", size, 124);
    let expected = file.sha256_hex();
    let primary = TestServer::serve(file.clone());
    let mirror = TestServer::serve(file);
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &primary,
        dir.path(),
        &[
            "get",
            &primary.url("/img.bin"),
            &mirror.url("/img.bin"),
            "--chunk-size",
            "1MiB",
        ],
    );
    check(&run, &out, &Expect::success(&expected).ranged());
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
    let expected = file.sha256_hex();
    let slow = start(
        vec![file.clone()],
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 256 * KIB,
        })],
    );
    let fast = TestServer::serve(file);
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &slow,
        dir.path(),
        &[
            "get",
            &slow.url("/img.bin"),
            &fast.url("/img.bin"),
            "--chunk-size",
            "1MiB",
        ],
    );
    check(&run, &out, &Expect::success(&expected));
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
    let file = FileSpec::new("/img.bin", size, 126);
    let expected = file.sha256_hex();
    let primary = TestServer::serve(file);
    let other = TestServer::serve(FileSpec::new("/img.bin", size + 1, 126));
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &primary,
        dir.path(),
        &[
            "get",
            &primary.url("/img.bin"),
            &other.url("/img.bin"),
            "--chunk-size",
            "1MiB",
        ],
    );
    check(
        &run,
        &out,
        &Expect::success(&expected)
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
    assert!(settled_body_bytes(&other) <= 1);
}

#[test]
fn mirror_that_starts_answering_404_is_dropped() {
    let size = 8 * MIB;
    let file = FileSpec::new("/img.bin", size, 127);
    let expected = file.sha256_hex();
    let primary = TestServer::serve(file.clone());
    let gone = start(
        vec![file],
        vec![FaultRule::new(
            When::AfterN(1),
            Fault::Status {
                code: 404,
                retry_after: None,
            },
        )],
    );
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &primary,
        dir.path(),
        &[
            "get",
            &primary.url("/img.bin"),
            &gone.url("/img.bin"),
            "--chunk-size",
            "1MiB",
        ],
    );
    check(
        &run,
        &out,
        &Expect::success(&expected)
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
        start(
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
    let urls = [
        primary.url("/img.bin"),
        survivor.url("/img.bin"),
        failing.url("/img.bin"),
        killed.url("/img.bin"),
    ];
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let mut args = vec!["get"];
    args.extend(urls.iter().map(String::as_str));
    args.extend(["--chunk-size", "1MiB", "--sha256", &expected]);
    let mut running = spawn(dir.path(), &args, Some(&primary));
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
    let run = running.wait();
    // Responses already streaming when the script changed run to their end.
    let from_failing = settled_body_bytes(&failing);
    check(
        &run,
        &out,
        &Expect::success(&expected).stderr_has("dropping mirror"),
    );
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
    let unavailable = || {
        start(
            vec![file.clone()],
            vec![FaultRule::new(
                When::AfterN(1),
                Fault::Status {
                    code: 503,
                    retry_after: None,
                },
            )],
        )
    };
    let primary = unavailable();
    let mirror = unavailable();
    let dir = tempdir();
    let out = dir.path().join("img.bin");
    let run = run_against(
        &primary,
        dir.path(),
        &[
            "get",
            &primary.url("/img.bin"),
            &mirror.url("/img.bin"),
            "--chunk-size",
            "1MiB",
            "--retries",
            "2",
        ],
    );
    check(&run, &out, &Expect::failure(1).stderr_has("503"));
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
