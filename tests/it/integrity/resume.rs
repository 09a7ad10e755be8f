//! A printed hash is always the hash of the file on disk, even after a resume whose recorded
//! bytes were changed behind the journal (zeroed, as lost writes after a power cut would be):
//! the resume checks every recorded block and fetches the damaged ones again;
//! and two runs on one output never write one part file: the second waits for the first and
//! then finds the file it published.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use rangefetch_testserver::{Fault, FaultRule, FaultScript, FileSpec, TestServer};

use crate::support::{Expect, MIB, Ran, Scenario, start_server, tempdir, with_suffix};

/// 32 MiB, each connection throttled so that a run is still going when the test acts.
fn slow_server(seed: u64) -> (TestServer, FileSpec) {
    let file = FileSpec::new("/img.bin", 32 * MIB, seed);
    let server = start_server(
        vec![file.clone()],
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 2 * MIB,
        })],
    );
    (server, file)
}

/// The `hashed N` count of the journal at `state`, if it can be read whole right now.
fn journal_hashed(state: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(state).ok()?;
    text.lines()
        .filter_map(|line| line.strip_prefix("hashed "))
        .next_back()?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// Runs `get` on `server` in `dir` until its journal vouches for a hashed prefix of at least
/// 2 MiB, kills it, and zeroes that prefix in the part file; returns the prefix length.
fn kill_and_zero_the_hashed_prefix(server: &TestServer, dir: &Path, args: &[&str]) -> u64 {
    let mut running = Scenario::on(server, "/img.bin")
        .in_dir(dir)
        .args(args)
        .spawn();
    let state = with_suffix(running.out(), ".part.state");
    running.wait_until(
        "a journal vouching for 2 MiB of hashed bytes",
        Duration::from_secs(60),
        || journal_hashed(&state).is_some_and(|hashed| hashed >= 2 * MIB),
    );
    let killed = running.kill();
    let hashed = journal_hashed(&state).expect("the journal survives the kill");
    let part = with_suffix(&killed.out, ".part");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .expect("open the part file");
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.write_all(&vec![0u8; usize::try_from(hashed).expect("fits")])
        .expect("zero the recorded prefix");
    hashed
}

#[test]
fn a_resume_never_vouches_for_recorded_bytes_that_changed() {
    let (server, file) = slow_server(360);
    let dir = tempdir();
    let args = ["--sha256", &file.sha256_hex(), "--chunk-size", "1MiB"];
    let zeroed = kill_and_zero_the_hashed_prefix(&server, dir.path(), &args);
    server.set_faults(FaultScript::default());
    // The journal's CRCs and hash state say the prefix was fine; the disk says otherwise,
    // and the disk wins: the zeroed blocks are fetched again.
    let run = Scenario::on(&server, "/img.bin")
        .in_dir(dir.path())
        .args(&args)
        .expect(Expect::success(&file.sha256_hex()).stderr_has("no longer in"));
    let served = run.served.as_ref().map_or(0, |served| served.body_bytes);
    assert!(
        served >= zeroed,
        "the rerun fetched {served} bytes, fewer than the {zeroed} zeroed\n{}",
        run.describe()
    );
}

#[test]
fn after_a_damaged_resume_without_a_hash_the_file_is_right_and_its_hash_printed() {
    let (server, file) = slow_server(361);
    let dir = tempdir();
    let args = ["--chunk-size", "1MiB"];
    kill_and_zero_the_hashed_prefix(&server, dir.path(), &args);
    server.set_faults(FaultScript::default());
    // `check` asserts that the printed hash is the published file's.
    Scenario::on(&server, "/img.bin")
        .in_dir(dir.path())
        .args(&args)
        .expect(Expect::success(&file.sha256_hex()).stderr_has("no longer in"));
}

/// Two runs on one output (`-o img.bin` in one directory), the second started once the first
/// is writing its part file. They ask for two paths of the same 32 MiB, so the server's log
/// tells their requests apart; `args(file)` gives each run's extra arguments. Returns both
/// runs, finished, with the server and the file.
fn two_runs(args: impl Fn(&FileSpec) -> Vec<String>) -> (Ran, Ran, TestServer, FileSpec) {
    let file = FileSpec::new("/img.bin", 32 * MIB, 362);
    let twin = FileSpec {
        path: "/twin.bin".into(),
        ..file.clone()
    };
    let server = start_server(
        vec![file.clone(), twin],
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 2 * MIB,
        })],
    );
    let dir = tempdir();
    let extra = args(&file);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut first = Scenario::on(&server, "/img.bin")
        .in_dir(dir.path())
        .args(&["-o", "img.bin"])
        .args(&extra)
        .spawn();
    let part = with_suffix(first.out(), ".part");
    first.wait_until("the first run's part file", Duration::from_secs(30), || {
        part.is_file()
    });
    let second = Scenario::on(&server, "/twin.bin")
        .in_dir(dir.path())
        .args(&["-o", "img.bin"])
        .args(&extra)
        .spawn();
    let first = first.expect(Expect::success(&file.sha256_hex()));
    let second = second.expect(Expect::success(&file.sha256_hex()).stderr_has("waiting"));
    drop(dir);
    (first, second, server, file)
}

/// The requests the second run (the one for `/twin.bin`) sent.
fn twin_requests(server: &TestServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|request| request.path == "/twin.bin")
        .count()
}

#[test]
fn a_second_run_on_one_output_waits_and_finds_the_file_with_a_hash() {
    let (_, second, server, _) = two_runs(|file| vec!["--sha256".into(), file.sha256_hex()]);
    assert_eq!(
        twin_requests(&server),
        0,
        "the second run fetched instead of waiting\n{}",
        second.describe()
    );
}

#[test]
fn a_second_run_on_one_output_without_a_hash_prints_the_published_files_hash() {
    // `check` asserts the printed hash is the output's, and the output the file's.
    let (_, second, server, _) = two_runs(|_| Vec::new());
    assert_eq!(twin_requests(&server), 0, "\n{}", second.describe());
}
