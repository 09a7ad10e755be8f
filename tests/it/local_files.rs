//! `hash` and `verify` of local input that is not a plain file, and usage errors under
//! `--json`: a FIFO, a `/proc` or `/sys` file and a block device are read to their end (their
//! reported length is 0, or 4096, whatever they hold), an endless character device is refused
//! with exit 2 and one line, and `--json` ends with its `done` line even when the command line
//! is wrong.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::{self, JoinHandle};

use rangefetch_testserver::FileSpec;

use crate::support::program::find_program;
use crate::support::{
    Expect, MIB, Run, Scenario, WRONG_SHA256, assert_exit, run, sha256_bytes, tempdir,
};

/// Bytes of a pattern that no digest of zeros or of the empty string can match.
fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A named pipe whose writer thread writes `data` once a reader opens it, then closes it.
struct Fifo {
    path: PathBuf,
    writer: JoinHandle<io::Result<()>>,
}

impl Fifo {
    fn fed(dir: &Path, name: &str, data: Vec<u8>) -> Fifo {
        let path = dir.join(name);
        let status = Command::new(find_program("mkfifo", "coreutils"))
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(
            status.success(),
            "mkfifo {} failed: {status}",
            path.display()
        );
        let writer_path = path.clone();
        let writer = thread::spawn(move || {
            File::options()
                .write(true)
                .open(&writer_path)?
                .write_all(&data)
        });
        Fifo { path, writer }
    }

    /// How the writer ended. A writer still waiting for a reader (the run never opened the
    /// FIFO) is released by opening and closing the read side, so it fails instead of hanging.
    fn writer_result(self) -> io::Result<()> {
        if !self.writer.is_finished() {
            drop(
                File::options()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&self.path),
            );
        }
        self.writer.join().expect("the FIFO writer does not panic")
    }
}

/// Asserts a successful `hash` whose only stdout line is `<digest>  <shown>`.
fn assert_hash_line(run: &Run, digest: &str, shown: &str) {
    assert_exit(run, 0, false);
    assert_eq!(
        run.stdout.trim_end(),
        format!("{digest}  {shown}"),
        "hash printed another digest or path\n{}",
        run.describe()
    );
}

#[test]
fn hash_of_a_fifo_is_the_hash_of_what_was_written_into_it() {
    let dir = tempdir();
    let data = pattern(MIB);
    let fifo = Fifo::fed(dir.path(), "stream", data.clone());
    let hashed = run(dir.path(), &["hash", "stream"]);
    assert_hash_line(&hashed, &sha256_bytes(&data), "stream");
    fifo.writer_result()
        .expect("the whole MiB went into the FIFO");
}

#[test]
fn verify_of_a_fifo_reads_it_to_its_end() {
    let dir = tempdir();
    let data = pattern(MIB);
    let expected = sha256_bytes(&data);

    let fifo = Fifo::fed(dir.path(), "right", data.clone());
    let right = run(dir.path(), &["verify", "right", "--sha256", &expected]);
    assert_exit(&right, 0, false);
    assert_eq!(
        right.stdout.trim_end(),
        "right: OK",
        "\n{}",
        right.describe()
    );
    fifo.writer_result()
        .expect("the whole MiB went into the FIFO");

    let fifo = Fifo::fed(dir.path(), "wrong", data);
    let wrong = run(dir.path(), &["verify", "wrong", "--sha256", WRONG_SHA256]);
    assert_exit(&wrong, 3, false);
    assert!(
        wrong.stderr.contains(&expected),
        "the mismatch must name the stream's real digest\n{}",
        wrong.describe()
    );
    fifo.writer_result()
        .expect("the whole MiB went into the FIFO");
}

#[test]
fn hash_of_proc_and_sys_files_is_the_hash_of_their_bytes() {
    // /proc/sys/kernel/ostype reports length 0, /sys/kernel/profiling 4096; both hold a few
    // bytes that do not change while the system runs.
    let dir = tempdir();
    for path in ["/proc/sys/kernel/ostype", "/sys/kernel/profiling"] {
        let bytes = std::fs::read(path).unwrap_or_else(|error| {
            panic!("this test needs {path} (Linux with /proc and /sys mounted): {error}")
        });
        assert!(!bytes.is_empty(), "{path} is empty");
        let hashed = run(dir.path(), &["hash", path]);
        assert_hash_line(&hashed, &sha256_bytes(&bytes), path);
    }
}

#[test]
fn hash_and_verify_of_endless_character_devices_exit_2_with_one_line() {
    let dir = tempdir();
    for args in [
        vec!["hash", "/dev/zero"],
        vec!["hash", "/dev/urandom"],
        vec!["verify", "/dev/zero", "--sha256", WRONG_SHA256],
    ] {
        let refused = run(dir.path(), &args);
        assert_exit(&refused, 2, false);
        let lines: Vec<&str> = refused
            .stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one line on stderr\n{}", refused.describe());
        assert!(
            lines[0].contains(args[1]) && lines[0].contains("character device"),
            "the line must name the device and say why\n{}",
            refused.describe()
        );
        assert!(
            refused.stdout.is_empty(),
            "no digest for a refused device\n{}",
            refused.describe()
        );
    }
}

/// A loop device over a file, detached on drop.
struct LoopDevice {
    device: String,
    losetup: PathBuf,
}

impl LoopDevice {
    fn attach(backing: &Path) -> LoopDevice {
        let losetup = find_program("losetup", "mount");
        let output = Command::new(&losetup)
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .expect("run losetup");
        assert!(
            output.status.success(),
            "this test needs root and a free loop device (losetup --find --show {}): {}",
            backing.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(device.starts_with("/dev/"), "losetup printed {device:?}");
        LoopDevice { device, losetup }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new(&self.losetup)
            .args(["--detach", &self.device])
            .status();
    }
}

#[test]
fn hash_and_verify_of_a_block_device_cover_the_whole_device() {
    // A block device reports length 0; its bytes are the backing file's.
    let dir = tempdir();
    let data = pattern(3 * MIB);
    let backing = dir.path().join("disk.img");
    std::fs::write(&backing, &data).expect("write the backing file");
    let device = LoopDevice::attach(&backing);
    let expected = sha256_bytes(&data);

    let hashed = run(dir.path(), &["hash", &device.device]);
    assert_hash_line(&hashed, &expected, &device.device);
    let verified = run(
        dir.path(),
        &["verify", &device.device, "--sha256", &expected],
    );
    assert_exit(&verified, 0, false);
}

/// `get --json` with `args` is a usage error whose stdout is one `done` line, class `input`.
fn json_usage_error(args: &[&str]) {
    let ran = Scenario::new(FileSpec::new("/img.bin", 1000, 6))
        .args(args)
        .expect(Expect::failure(2).json().part_kept(false).max_requests(0));
    let summary = ran.json_summary();
    assert_eq!(
        summary["class"],
        "input",
        "summary: {summary}\n{}",
        ran.describe()
    );
    assert!(
        summary["t_s"].is_f64(),
        "every JSON line carries t_s: {summary}\n{}",
        ran.describe()
    );
    assert_eq!(
        ran.stdout.lines().count(),
        1,
        "stdout must be the done line alone\n{}",
        ran.describe()
    );
}

#[test]
fn json_unknown_flag_ends_with_a_done_line() {
    json_usage_error(&["--no-such-flag", "--json"]);
}

#[test]
fn json_malformed_sha256_ends_with_a_done_line() {
    json_usage_error(&["--json", "--sha256", "xyz"]);
}

#[test]
fn json_bad_chunk_size_ends_with_a_done_line() {
    json_usage_error(&["--json", "--chunk-size", "12Q"]);
}
