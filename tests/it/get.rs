//! `rangefetch get`, `hash` and `verify` against the in-repo test server: the right bytes for
//! every size around a chunk boundary and every connection count, each byte fetched about once
//! with `Range` and `If-Range`, the exit codes of docs/CONTRACT.md, the `--json` summary, and an
//! output path that never holds a wrong file.

use std::path::Path;
use std::time::Duration;

use rangefetch_testserver::{Fault, FaultRule, FileSpec, TestServer};

use crate::support::{
    Expect, KIB, MIB, Run, Scenario, WRONG_SHA256, assert_exit, run, sha256_bytes, sha256_file,
    start_server, tempdir, with_suffix,
};

/// The chunk size of the boundary tests, small so that the files are too.
const SMALL_CHUNK: u64 = 64 * KIB;

/// Downloads a fault-free file of `size` bytes with `--chunk-size 64KiB` and checks that every
/// byte came exactly once, in ranged requests.
fn download_small(size: u64) {
    Scenario::new(FileSpec::new("/img.bin", size, size + 1))
        .args(&["--chunk-size", "64KiB"])
        .expect(
            Expect::success(&rangefetch_testserver::sha256_hex(size + 1, size))
                .served(size..=size)
                .ranged()
                .covers(size),
        );
}

#[test]
fn empty_file_from_a_server_without_ranges() {
    let run = Scenario::new(FileSpec::new("/empty.bin", 0, 3).without_ranges())
        .expect(Expect::success(&sha256_bytes(b"")).served(0..=0));
    assert_eq!(std::fs::metadata(&run.out).expect("stat").len(), 0);
}

#[test]
fn empty_file_whose_range_request_gets_416() {
    // With ranges on, the test server answers any range of an empty file `416` with
    // `Content-Range: bytes */0`, as nginx and S3 do.
    let run = Scenario::new(FileSpec::new("/empty.bin", 0, 4))
        .args(&["--sha256", &sha256_bytes(b"")])
        .expect(Expect::success(&sha256_bytes(b"")).served(0..=0));
    let served = run.served.as_ref().expect("recorded");
    assert_eq!(
        served.requests.first().map(|request| request.status),
        Some(416),
        "the scenario needs a 416 answer to the first request\n{}",
        run.describe()
    );
    assert_eq!(std::fs::metadata(&run.out).expect("stat").len(), 0);
}

#[test]
fn one_byte_file() {
    download_small(1);
}

#[test]
fn one_byte_less_than_a_chunk() {
    download_small(SMALL_CHUNK - 1);
}

#[test]
fn exactly_one_chunk() {
    download_small(SMALL_CHUNK);
}

#[test]
fn one_byte_more_than_a_chunk() {
    download_small(SMALL_CHUNK + 1);
}

#[test]
fn multi_chunk_file_with_1_to_16_connections() {
    let size = 5 * MIB + 12_345;
    let file = FileSpec::new("/img.bin", size, 77);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    for connections in [1usize, 2, 4, 8, 16] {
        // A steal can leave a few bytes of a shortened range in flight; more than one extra
        // chunk's worth means bytes were fetched twice.
        Scenario::on(&server, "/img.bin")
            .args(&["--chunk-size", "256KiB", "-c", &connections.to_string()])
            .args(&["--sha256", &expected])
            .expect(
                Expect::success(&expected)
                    .served(size..=size + 256 * KIB)
                    .ranged()
                    .covers(size),
            );
    }
}

#[test]
fn wrong_sha256_exits_3_and_leaves_nothing() {
    // The repair fetches every stretch once more (its budget: the file's size), finds that
    // the server serves these bytes, and says so.
    let size = 300 * KIB;
    Scenario::new(FileSpec::new("/img.bin", size, 5))
        .args(&["--chunk-size", "64KiB", "--sha256", WRONG_SHA256])
        .expect(
            Expect::failure(3)
                .part_kept(false)
                .served(2 * size..=2 * size + 64 * KIB)
                .stderr_has("checksum")
                .stderr_has("the server serves these bytes"),
        );
    // Without repair, the mismatch is the error at once.
    Scenario::new(FileSpec::new("/img.bin", size, 5))
        .args(&[
            "--chunk-size",
            "64KiB",
            "--sha256",
            WRONG_SHA256,
            "--repair-budget",
            "0",
        ])
        .expect(
            Expect::failure(3)
                .part_kept(false)
                .served(size..=size + 64 * KIB)
                .stderr_has("repair is off"),
        );
}

/// A usage error: exit 2, one `error:` line, nothing written, no request sent.
fn usage_error(args: &[&str]) {
    Scenario::new(FileSpec::new("/img.bin", 1000, 6))
        .args(args)
        .expect(Expect::failure(2).part_kept(false).max_requests(0));
}

#[test]
fn malformed_sha256_is_a_usage_error() {
    usage_error(&["--sha256", "xyz"]);
}

#[test]
fn sha256_of_63_digits_is_a_usage_error() {
    usage_error(&["--sha256", &WRONG_SHA256[1..]]);
}

#[test]
fn zero_connections_is_a_usage_error() {
    usage_error(&["-c", "0"]);
}

#[test]
fn sixty_five_connections_is_a_usage_error() {
    usage_error(&["-c", "65"]);
}

#[test]
fn unparsable_chunk_size_is_a_usage_error() {
    usage_error(&["--chunk-size", "12Q"]);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    usage_error(&["--no-such-flag"]);
}

#[test]
fn sixty_four_connections_is_accepted() {
    let size = 200 * KIB;
    Scenario::new(FileSpec::new("/img.bin", size, 8))
        .args(&["-c", "64", "--chunk-size", "4KiB"])
        .expect(Expect::success_of_file().ranged().covers(size));
}

/// An output that cannot be created: exit 4, nothing left behind, nothing downloaded.
fn unwritable_output(out: &Path) {
    // The probe may have fetched its first chunk before the part file was opened.
    Scenario::new(FileSpec::new("/img.bin", 100 * KIB, 9))
        .args(&["-o", out.to_str().expect("a UTF-8 path")])
        .expect(Expect::failure(4).part_kept(false).served(0..=100 * KIB));
}

#[test]
fn output_whose_parent_is_a_regular_file_exits_4() {
    // Permissions do not stop root, so the parent is made unusable instead: it is a file.
    let dir = tempdir();
    let parent = dir.path().join("a-regular-file");
    std::fs::write(&parent, b"not a directory").expect("write");
    unwritable_output(&parent.join("img.bin"));
    assert_eq!(
        std::fs::read(&parent).expect("read"),
        b"not a directory",
        "the file in the way was changed"
    );
}

#[test]
fn output_in_a_missing_directory_exits_4() {
    let dir = tempdir();
    unwritable_output(&dir.path().join("no-such-dir").join("img.bin"));
}

#[test]
fn output_in_proc_exits_4() {
    // /proc refuses new files even to root.
    unwritable_output(Path::new("/proc/rangefetch-test-output.bin"));
}

#[test]
fn server_without_range_support() {
    let size = 3 * MIB + 7;
    let file = FileSpec::new("/img.bin", size, 10).without_ranges();
    let expected = file.sha256_hex();
    // One stream of the whole file; the probe's answer is that stream.
    Scenario::new(file)
        .args(&["--chunk-size", "256KiB", "-c", "8", "--sha256", &expected])
        .expect(Expect::success(&expected).served(size..=size).covers(size));
}

#[test]
fn server_that_ignores_range() {
    let size = 3 * MIB + 9;
    let file = FileSpec::new("/img.bin", size, 11);
    let expected = file.sha256_hex();
    // A 200 to the probe's range means "no ranges here": its body is the whole file.
    Scenario::new(file)
        .faults(vec![FaultRule::always(Fault::IgnoreRange)])
        .args(&["--chunk-size", "256KiB", "--sha256", &expected])
        .expect(Expect::success(&expected).served(size..=size).covers(size));
}

#[test]
fn not_found_fails_fast_with_one_request() {
    let run = Scenario::new(FileSpec::new("/img.bin", 1000, 12))
        .path("/missing.bin")
        .expect(
            Expect::failure(1)
                .part_kept(false)
                .max_requests(1)
                .served(0..=0)
                .stderr_has("404")
                .hint(),
        );
    assert!(
        run.elapsed < Duration::from_secs(10),
        "a 404 is permanent, yet the run took {:?}\n{}",
        run.elapsed,
        run.describe()
    );
    assert_eq!(
        run.served.as_ref().expect("recorded").requests.len(),
        1,
        "a 404 must not be retried\n{}",
        run.describe()
    );
}

/// Every stdout line of a `--json` run is one JSON object with an `event`.
fn assert_json_lines(run: &Run) {
    for line in run.stdout.lines().filter(|line| !line.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {line}\n{}", run.describe()));
        assert!(
            value["event"].is_string(),
            "a JSON line without `event`: {line}\n{}",
            run.describe()
        );
    }
}

#[test]
fn json_summary_on_success() {
    let size = MIB + 3;
    let file = FileSpec::new("/img.bin", size, 13);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);

    let run = Scenario::on(&server, "/img.bin")
        .args(&["--json", "--chunk-size", "256KiB", "--sha256", &expected])
        .expect(
            Expect::success(&expected)
                .json()
                .verified(true)
                .served(size..=size + 256 * KIB),
        );
    assert_json_lines(&run);

    // Without an expected hash the summary still carries the hash, unverified.
    let run = Scenario::on(&server, "/img.bin")
        .args(&["--json"])
        .expect(Expect::success(&expected).json().verified(false));
    assert_json_lines(&run);
}

#[test]
fn json_summary_on_failure() {
    let server = TestServer::serve(FileSpec::new("/img.bin", 100 * KIB, 14));
    let dir = tempdir();
    let run = Scenario::on(&server, "/img.bin")
        .in_dir(dir.path())
        .args(&["--json", "--sha256", WRONG_SHA256])
        .expect(Expect::failure(3).json().part_kept(false));
    assert_json_lines(&run);

    Scenario::on(&server, "/missing.bin")
        .in_dir(dir.path())
        .args(&["--json"])
        .expect(Expect::failure(1).json());
}

#[test]
fn hash_subcommand_agrees_with_sha2() {
    let dir = tempdir();
    let files: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        ("small", b"hello, world\n".to_vec()),
        ("big", rangefetch_testserver::content(15, 0..3 * MIB + 1)),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    let hashed = run(dir.path(), &["hash", "empty", "small", "big"]);
    assert_exit(&hashed, 0, false);
    let lines: Vec<&str> = hashed.stdout.lines().collect();
    let expected: Vec<String> = files
        .iter()
        .map(|(name, bytes)| format!("{}  {name}", sha256_bytes(bytes)))
        .collect();
    assert_eq!(lines, expected, "\n{}", hashed.describe());

    let missing = run(dir.path(), &["hash", "small", "no-such-file"]);
    assert_exit(&missing, 4, false);
}

#[test]
fn verify_subcommand_agrees_with_sha2() {
    let dir = tempdir();
    let bytes = rangefetch_testserver::content(16, 0..MIB + 5);
    let digest = sha256_bytes(&bytes);
    std::fs::write(dir.path().join("img.bin"), &bytes).expect("write");
    assert_eq!(sha256_file(&dir.path().join("img.bin")), digest);

    let matching = run(dir.path(), &["verify", "img.bin", "--sha256", &digest]);
    assert_exit(&matching, 0, false);
    let upper = run(
        dir.path(),
        &[
            "verify",
            "img.bin",
            "--sha256",
            &digest.to_ascii_uppercase(),
        ],
    );
    assert_exit(&upper, 0, false);

    let mismatch = run(dir.path(), &["verify", "img.bin", "--sha256", WRONG_SHA256]);
    assert_exit(&mismatch, 3, false);

    let malformed = run(dir.path(), &["verify", "img.bin", "--sha256", "xyz"]);
    assert_exit(&malformed, 2, false);

    let other = sha256_bytes(b"other");
    let sums = [
        (
            "gnu.sha256",
            format!("{other}  other.iso\n{digest}  img.bin\n"),
        ),
        ("gnu-binary.sha256", format!("{digest} *img.bin\n")),
        (
            "bsd.sha256",
            format!("SHA256 (other.iso) = {other}\nSHA256 (img.bin) = {digest}\n"),
        ),
    ];
    for (name, text) in &sums {
        std::fs::write(dir.path().join(name), text).expect("write");
        let verified = run(dir.path(), &["verify", "img.bin", "--sha256-sums", name]);
        assert_exit(&verified, 0, false);
        assert!(verified.stdout.contains("OK"), "{}", verified.describe());
    }

    std::fs::write(
        dir.path().join("wrong.sha256"),
        format!("{WRONG_SHA256}  img.bin\n"),
    )
    .expect("write");
    let wrong = run(
        dir.path(),
        &["verify", "img.bin", "--sha256-sums", "wrong.sha256"],
    );
    assert_exit(&wrong, 3, false);

    std::fs::write(
        dir.path().join("lacking.sha256"),
        format!("{other}  other.iso\n"),
    )
    .expect("write");
    let lacking = run(
        dir.path(),
        &["verify", "img.bin", "--sha256-sums", "lacking.sha256"],
    );
    assert_exit(&lacking, 2, false);
}

#[test]
fn get_with_a_checksum_file() {
    let size = 500 * KIB;
    let file = FileSpec::new("/img.bin", size, 17);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    Scenario::on(&server, "/img.bin")
        .local_file(
            "SHA256SUMS",
            format!("{WRONG_SHA256}  other.bin\n{expected}  img.bin\n"),
        )
        .args(&["--sha256-sums", "SHA256SUMS", "--json"])
        .expect(Expect::success(&expected).json().verified(true));

    // An entry for another name only: a usage error, before any download.
    Scenario::on(&server, "/img.bin")
        .local_file("SHA256SUMS", format!("{expected}  other.bin\n"))
        .args(&["--sha256-sums", "SHA256SUMS"])
        .expect(Expect::failure(2).part_kept(false).served(0..=0));
}

#[test]
fn rerun_after_success_downloads_nothing() {
    let size = 2 * MIB;
    let file = FileSpec::new("/img.bin", size, 18);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    let dir = tempdir();
    let get = || {
        Scenario::on(&server, "/img.bin").in_dir(dir.path()).args(&[
            "--chunk-size",
            "256KiB",
            "--sha256",
            &expected,
        ])
    };
    get().expect(Expect::success(&expected).served(size..=size + 256 * KIB));
    get().expect(Expect::success(&expected).served(0..=0));
}

#[test]
fn failed_download_leaves_an_existing_output_untouched() {
    let previous = b"an older file, which a failed download must not replace\n".to_vec();
    let run = Scenario::new(FileSpec::new("/img.bin", 700 * KIB, 19))
        .local_file("img.bin", &previous)
        .args(&["--chunk-size", "64KiB", "--sha256", WRONG_SHA256])
        .expect(Expect::failure(3).previous(&previous).part_kept(false));
    assert!(!with_suffix(&run.out, ".part").exists());
}

/// The nice value of each of `pid`'s threads, by thread name (`/proc/PID/task/*/stat`).
fn thread_niceness(pid: u32) -> Vec<(String, i32)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("stat")),
        ) else {
            continue;
        };
        // After the name's closing parenthesis: state, then fields 4 to 19 of proc(5);
        // the nice value is field 19.
        let nice = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(16))
            .and_then(|nice| nice.parse().ok());
        if let Some(nice) = nice {
            threads.push((name.trim().to_owned(), nice));
        }
    }
    threads
}

/// On a fast link the hash is the one sequential job, so the CLI runs its async runtime five
/// steps nicer than the process and leaves the hasher threads (started from the main thread)
/// at the process's priority.
#[test]
#[cfg(target_os = "linux")]
fn the_hasher_keeps_the_process_priority_and_the_connections_run_below_it() {
    let size = 16 * MIB;
    let file = FileSpec::new("/img.bin", size, 20);
    let server = start_server(
        vec![file],
        vec![FaultRule::always(Fault::Throttle { bytes_per_sec: MIB })],
    );
    let mut running = Scenario::on(&server, "/img.bin")
        .args(&["-c", "2", "--chunk-size", "1MiB", "--json"])
        .spawn();
    let pid = running.pid();
    let mut threads = Vec::new();
    running.wait_until(
        "the hasher and the runtime's threads",
        Duration::from_secs(60),
        || {
            threads = thread_niceness(pid);
            let has = |name: &str| threads.iter().any(|(thread, _)| thread == name);
            has("rangefetch-sha") && has("rangefetch-hash") && has("tokio-rt-worker")
        },
    );
    running.signal(libc::SIGINT);
    running.expect(Expect::failure(130).part_kept(true).json());
    let main = threads
        .iter()
        .find(|(name, _)| name == "rangefetch")
        .map(|&(_, nice)| nice)
        .unwrap_or_else(|| panic!("no main thread among {threads:?}"));
    for (name, nice) in &threads {
        let wanted = match name.as_str() {
            "tokio-rt-worker" => (main + 5).min(19),
            _ => main,
        };
        assert_eq!(
            *nice, wanted,
            "thread {name} (process at {main}): {threads:?}"
        );
    }
}
