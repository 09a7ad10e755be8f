//! Interruption and resume (docs/CONTRACT.md, guarantees 1–3): Ctrl-C and `kill -9` at random
//! points leave a state a re-run resumes from without re-fetching much, a damaged journal or a
//! changed remote make the re-run start over (and say so), a finished file is not fetched
//! again, and a full disk or a missing directory fail with exit 4 before downloading.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rangefetch_testserver::{Fault, FaultRule, FaultScript, FileSpec, TestServer};

use crate::support::{
    Expect, KIB, MIB, Ran, Run, Scenario, SeededRng, journal_blocks, start_server, tempdir,
    with_suffix,
};

/// A server for one file whose every connection is throttled to `bytes_per_sec`, so that a
/// download is still running when the test interrupts it.
fn throttled_server(file: FileSpec, bytes_per_sec: u64) -> TestServer {
    start_server(
        vec![file],
        vec![FaultRule::always(Fault::Throttle { bytes_per_sec })],
    )
}

/// Starts the scenario, waits until it has written its resume journal, then sends SIGINT and
/// checks the interrupted exit: 130, one error line and a hint, `.part` and journal kept, no
/// output file.
fn interrupted_run(scenario: Scenario) -> Ran {
    let mut running = scenario.spawn();
    let state = with_suffix(running.out(), ".part.state");
    running.wait_until(
        "a resume journal (.part.state) recording a block",
        Duration::from_secs(30),
        || journal_blocks(&state).len() >= 8,
    );
    running.signal(libc::SIGINT);
    running.expect(
        Expect::failure(130)
            .hint()
            .part_kept(true)
            .stderr_has("interrupted"),
    )
}

fn served(run: &Run) -> u64 {
    run.served
        .as_ref()
        .expect("recorded against the server")
        .body_bytes
}

#[test]
fn sigint_then_rerun_resumes() {
    let size = 128 * MIB;
    let file = FileSpec::new("/big.bin", size, 31);
    let expected = file.sha256_hex();
    // 8 connections at 2 MiB/s: about eight seconds for the whole file, if not interrupted.
    let server = throttled_server(file, 2 * MIB);
    let dir = tempdir();
    let get = || {
        Scenario::on(&server, "/big.bin").in_dir(dir.path()).args(&[
            "-c",
            "8",
            "--chunk-size",
            "1MiB",
            "--sha256",
            &expected,
        ])
    };
    let first = interrupted_run(get());
    assert!(
        served(&first) < size / 2,
        "the interruption came too late to test anything\n{}",
        first.describe()
    );

    server.set_faults(FaultScript::default());
    let second = get().expect(Expect::success(&expected).served(0..=size - 1).ranged());
    // What the first run received was kept: together the runs fetched the file about once
    // (the re-run's probe of chunk 0, and bytes in flight at the interrupt, are the slack).
    let total = served(&first) + served(&second);
    assert!(
        total <= size + 8 * MIB,
        "the two runs fetched {total} bytes of a {size}-byte file\nfirst:\n{}\nsecond:\n{}",
        first.describe(),
        second.describe()
    );
}

/// A busy loop per core, beside the test, so that what a kill loses cannot depend on how
/// quiet the machine is. Stopped when dropped.
struct CpuHogs(Vec<std::process::Child>);

impl CpuHogs {
    fn start() -> CpuHogs {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        CpuHogs(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("start a busy loop (sh)")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let _ = hog.kill();
            let _ = hog.wait();
        }
    }
}

#[test]
fn twenty_kill_9_at_random_points_then_complete() {
    // Sized so that the twenty short runs, taken together, fetch a good part of the file: if
    // a killed run's progress were not kept for the next, the waste alone would break the
    // 1.15× bound. Two connections (`-c 2`) at 1 MiB/s each move most of the file in twenty
    // runs of 100–600 ms, so the twenty kills land all along one download. A busy loop runs
    // on every core meanwhile: the journal records each block as it is written, so what a
    // kill loses is bounded by bytes (a block per connection, and what was in flight), not
    // by how quickly a timer got to run.
    let _hogs = CpuHogs::start();
    let size = 12 * MIB;
    let file = FileSpec::new("/crash.bin", size, 32);
    let expected = file.sha256_hex();
    let server = throttled_server(file, MIB);
    let dir = tempdir();
    let out = dir.path().join("crash.bin");
    let state = with_suffix(&out, ".part.state");
    let get = || {
        Scenario::on(&server, "/crash.bin")
            .in_dir(dir.path())
            .args(&["-c", "2", "--chunk-size", "256KiB", "--sha256", &expected])
    };
    let mut rng = SeededRng::new(0x5eed_0004);
    let mut total = 0;
    let mut rounds = Vec::new();
    let mut finished_early = false;
    for round in 0..20 {
        let mut running = get().spawn();
        let kill_after = Duration::from_millis(rng.in_range(100..=600));
        // The random kill point is the test's input, not a wait for something to happen.
        std::thread::sleep(kill_after);
        if running.has_exited() {
            // The file was completed within the loop: that run must have succeeded.
            let done = running.expect(Expect::success(&expected));
            total += served(&done);
            rounds.push(format!("round {round}: finished before the kill"));
            finished_early = true;
            break;
        }
        let killed = running.kill();
        assert_eq!(
            killed.status.signal(),
            Some(libc::SIGKILL),
            "round {round}: the run ended on its own before the kill at {kill_after:?}\n{}",
            killed.describe()
        );
        assert!(
            !out.exists(),
            "round {round}: {} exists after kill -9 mid-download",
            out.display()
        );
        total += served(&killed);
        rounds.push(format!(
            "round {round}: killed after {kill_after:?}: {} bytes served, journal {}",
            served(&killed),
            if state.is_file() { "present" } else { "absent" }
        ));
    }

    server.set_faults(FaultScript::default());
    let last_served_at_most = if finished_early { 0 } else { size };
    let last = get().expect(Expect::success(&expected).served(0..=last_served_at_most));
    total += served(&last);
    assert!(
        total * 100 <= size * 115,
        "the runs fetched {total} bytes of a {size}-byte file ({:.3}×, at most 1.15× allowed): \
         each kill -9 may lose only what was not yet recorded\n{}\nlast run:\n{}",
        total as f64 / size as f64,
        rounds.join("\n"),
        last.describe()
    );
}

#[test]
fn lost_writes_are_found_and_only_the_damaged_blocks_fetched_again() {
    // A power cut loses writes the journal had already recorded: here, three recorded blocks
    // scrambled behind its back. The resume reads every recorded block back, keeps the ones
    // whose CRC still matches, and fetches exactly what is missing or damaged.
    let size = 16 * MIB;
    let file = FileSpec::new("/lost.bin", size, 33);
    let expected = file.sha256_hex();
    let server = throttled_server(file, 2 * MIB);
    let dir = tempdir();
    let get = || {
        Scenario::on(&server, "/lost.bin")
            .in_dir(dir.path())
            .args(&["-c", "2", "--chunk-size", "1MiB"])
    };
    let mut running = get().spawn();
    let state = with_suffix(running.out(), ".part.state");
    running.wait_until(
        "a journal recording 40 blocks",
        Duration::from_secs(60),
        || state.is_file() && journal_blocks(&state).len() >= 40,
    );
    let killed = running.kill();
    let blocks = journal_blocks(&state);
    let recorded: u64 = blocks.iter().map(|(start, end)| end - start).sum();
    let part = with_suffix(&killed.out, ".part");
    let damaged: Vec<(u64, u64)> = [5, 17, 33].iter().map(|&idx| blocks[idx]).collect();
    let mut handle = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&part)
        .expect("open the part file");
    for &(start, end) in &damaged {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut bytes = vec![0u8; usize::try_from(end - start).expect("fits")];
        handle.seek(SeekFrom::Start(start)).expect("seek");
        handle.read_exact(&mut bytes).expect("read the block");
        for byte in &mut bytes {
            *byte ^= 0x5a;
        }
        handle.seek(SeekFrom::Start(start)).expect("seek");
        handle.write_all(&bytes).expect("scramble the block");
    }
    drop(handle);
    let damaged_bytes: u64 = damaged.iter().map(|(start, end)| end - start).sum();
    server.set_faults(FaultScript::default());
    // `check` asserts the printed hash is the published file's, and that file the right one.
    let needed = size - recorded + damaged_bytes;
    let rerun = get().expect(
        Expect::success(&expected)
            .served(needed..=needed + MIB)
            .stderr_has("no longer in"),
    );
    let refetched: Vec<&rangefetch_testserver::RequestLog> = rerun
        .served
        .as_ref()
        .map(|served| served.requests.iter().collect())
        .unwrap_or_default();
    for &(start, _) in &damaged {
        assert!(
            refetched.iter().any(|request| request
                .range
                .as_deref()
                .is_some_and(|range| range.starts_with(&format!("bytes={start}-")))),
            "the damaged block at {start} was not asked for again\n{}",
            rerun.describe()
        );
    }
}

#[test]
fn no_journal_is_left_after_success() {
    // Downloads that outlive a checkpoint or two (the journal is rewritten while the bytes
    // arrive): whatever checkpoint is still being written when the download completes must not
    // leave a journal beside the finished file. Four runs, since the overlap is a matter of
    // timing; `check` asserts that neither `.part` nor `.part.state` remains.
    let size = 192 * MIB;
    let file = FileSpec::new("/big.bin", size, 40);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    for _attempt in 0..4 {
        Scenario::on(&server, "/big.bin")
            .args(&["--sha256", &expected])
            .expect(Expect::success(&expected));
    }
}

/// A 64 MiB download (seed `seed`) interrupted with a journal in place, then `damage` done to
/// that journal's bytes, then the same command again on the fault-free server; returns the
/// rerun, checked against `expect` (with the file's SHA-256 filled in).
fn rerun_after_damaging_the_journal(
    seed: u64,
    damage: impl FnOnce(&mut Vec<u8>),
    expect: impl FnOnce(&str) -> Expect,
) -> Ran {
    let file = FileSpec::new("/img.bin", 64 * MIB, seed);
    let expected = file.sha256_hex();
    let server = throttled_server(file, 2 * MIB);
    let dir = tempdir();
    let get = || {
        Scenario::on(&server, "/img.bin").in_dir(dir.path()).args(&[
            "--chunk-size",
            "1MiB",
            "--sha256",
            &expected,
        ])
    };
    let interrupted = interrupted_run(get());
    let state = with_suffix(&interrupted.out, ".part.state");
    let mut journal = std::fs::read(&state).expect("read the journal");
    damage(&mut journal);
    std::fs::write(&state, &journal).expect("write the damaged journal");
    server.set_faults(FaultScript::default());
    get().expect(expect(&expected))
}

#[test]
fn corrupt_journal_is_ignored_with_a_warning() {
    let size = 64 * MIB;
    // A byte of the header (the URL line): the header is one checksummed unit, so a journal
    // whose header cannot be trusted is discarded whole and the file is fetched again.
    let rerun = rerun_after_damaging_the_journal(
        33,
        |journal| journal[30] ^= 0x01,
        |expected| {
            Expect::success(expected)
                .stderr_has("resume state")
                .served(size..=size + 8 * MIB)
        },
    );
    let warnings: Vec<&str> = rerun
        .stderr
        .lines()
        .filter(|line| line.to_lowercase().contains("resume state"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning line about the resume state\n{}",
        rerun.describe()
    );
}

#[test]
fn a_damaged_journal_line_keeps_the_blocks_before_it() {
    // Damage the first block line of the last quarter: it and every line after it are
    // dropped, the blocks before it are used.
    let rerun = rerun_after_damaging_the_journal(
        35,
        |journal| {
            let text = String::from_utf8_lossy(journal).into_owned();
            let blocks: Vec<&str> = text
                .lines()
                .filter(|line| line.starts_with("block "))
                .collect();
            let victim = blocks[blocks.len() * 3 / 4];
            let at = text.find(victim).expect("the line is in the text") + "block ".len();
            journal[at] ^= 0x01;
        },
        |expected| Expect::success(expected).stderr_has("damaged line"),
    );
    let served = served(&rerun);
    assert!(
        served < 64 * MIB,
        "the blocks before the damaged line were not reused: {served} bytes served\n{}",
        rerun.describe()
    );
}

#[test]
fn remote_changed_between_runs_starts_over() {
    let size = 64 * MIB;
    let old = FileSpec::new("/img.bin", size, 34);
    let server = throttled_server(old, 2 * MIB);
    let dir = tempdir();
    // No expected hash: only the validators can tell the versions apart.
    let get = || {
        Scenario::on(&server, "/img.bin")
            .in_dir(dir.path())
            .args(&["--chunk-size", "1MiB"])
    };
    interrupted_run(get());

    let new = FileSpec::new("/img.bin", size, 35).with_etag(Some("\"v2\""));
    let new_sha256 = new.sha256_hex();
    server.replace_file(new);
    server.set_faults(FaultScript::default());
    get().expect(
        Expect::success(&new_sha256)
            .stderr_has("changed")
            .served(size..=size + 8 * MIB)
            .covers(size),
    );
}

#[test]
fn rerun_after_a_resumed_download_fetches_nothing() {
    let size = 64 * MIB;
    let file = FileSpec::new("/img.bin", size, 36);
    let expected = file.sha256_hex();
    let server = throttled_server(file, 2 * MIB);
    let dir = tempdir();
    let get = || {
        Scenario::on(&server, "/img.bin").in_dir(dir.path()).args(&[
            "--chunk-size",
            "1MiB",
            "--sha256",
            &expected,
        ])
    };
    interrupted_run(get());
    server.set_faults(FaultScript::default());
    get().expect(Expect::success(&expected).served(0..=size - 1));

    get().expect(Expect::success(&expected).served(0..=0));
}

/// A tmpfs mounted on a directory for the life of the guard.
struct Tmpfs {
    mount_point: PathBuf,
}

impl Tmpfs {
    fn mount(mount_point: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(mount_point)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "`mount -t tmpfs` failed ({status}) although running as root; the disk-full test \
             needs a container or host that allows mounting"
        );
        Tmpfs {
            mount_point: mount_point.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Busy (a process still holds a file): detach it now, it goes when released.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}

#[test]
fn disk_full_on_small_tmpfs_as_root() {
    // The one test that needs a privilege: only root can mount a small filesystem to fill. It
    // fails rather than skips without it, so that a passing suite means the space check was
    // tested.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "disk_full_on_small_tmpfs_as_root needs root, to mount a tmpfs (running as uid \
         {euid}): run the tests as root, as CI does"
    );
    let dir = tempdir();
    let mount_point = dir.path().join("small");
    std::fs::create_dir(&mount_point).expect("create the mount point");
    let _tmpfs = Tmpfs::mount(&mount_point, "8m");
    // The space check comes before the download, not half-way through it.
    Scenario::new(FileSpec::new("/img.bin", 32 * MIB, 37))
        .in_dir(&mount_point)
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::failure(4)
                .stderr_has("needs")
                .served(0..=MIB)
                .hint(),
        );
}

#[test]
fn output_in_a_missing_directory_exits_4() {
    let run = Scenario::new(FileSpec::new("/img.bin", 100 * KIB, 38))
        .args(&["-o", "missing/img.bin"])
        .expect(Expect::failure(4).part_kept(false));
    assert!(!run.dir.join("missing").exists());
}

#[test]
fn resume_without_an_expected_hash_prints_the_right_hash() {
    // Without --sha256 nothing can catch a wrong byte but the printed hash itself, which a
    // resume computes from the journal's saved hash state plus the bytes fetched now: it must
    // be the hash of the whole file, and the file must be the served one.
    let size = 32 * MIB;
    let file = FileSpec::new("/img.bin", size, 39);
    let expected = file.sha256_hex();
    let server = throttled_server(file, MIB);
    let dir = tempdir();
    let get = || {
        Scenario::on(&server, "/img.bin").in_dir(dir.path()).args(&[
            "-c",
            "4",
            "--chunk-size",
            "256KiB",
        ])
    };
    interrupted_run(get());
    server.set_faults(FaultScript::default());
    get().expect(Expect::success(&expected).served(0..=size - 1));
}
