//! The harness of the integration tests: the built binary run under a deadline, one `check` of
//! what a run did (exit code, stderr, the output file and its hash, what the server saw), file
//! hashing, and a real nginx on a loopback port.

#![allow(
    dead_code,
    reason = "each test file uses its own subset of the helpers"
)]

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rangefetch_testserver::{RequestLog, TestServer};
use sha2::{Digest, Sha256};

/// No single run of the binary in these tests should come near this; a run that does is hung,
/// and is killed so the test fails instead of hanging the suite.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The SHA-256 of a file someone expected, but that no test file ever has.
pub const WRONG_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The built binary, with an environment that cannot leak into the test: no proxy variables,
/// no cache directory, no stdin.
pub fn rangefetch() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rangefetch"));
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "RANGEFETCH_CACHE_DIR",
    ] {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
}

/// Runs `rangefetch ARGS` in `dir`, without a server to account for.
pub fn run(dir: &Path, args: &[&str]) -> Run {
    spawn(dir, args, None).wait()
}

/// Runs `rangefetch ARGS` in `dir` and records what `server` saw during the run.
pub fn run_against(server: &TestServer, dir: &Path, args: &[&str]) -> Run {
    spawn(dir, args, Some(server)).wait()
}

/// Starts `rangefetch ARGS` in `dir`; `server`, if given, is snapshotted now so that the
/// finished [`Run`] reports only what this run cost it.
pub fn spawn<'s>(dir: &Path, args: &[&str], server: Option<&'s TestServer>) -> Running<'s> {
    spawn_env(dir, args, server, &[])
}

/// [`spawn`], with these environment variables added to the clean environment of
/// [`rangefetch`].
pub fn spawn_env<'s>(
    dir: &Path,
    args: &[&str],
    server: Option<&'s TestServer>,
    env: &[(&str, &str)],
) -> Running<'s> {
    let baseline = server.map(|server| Baseline {
        server,
        body_bytes: server.body_bytes_sent(),
        n_requests: server.requests().len(),
    });
    let mut command = rangefetch();
    command
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn the rangefetch binary");
    let stdout = child.stdout.take().map(read_all_in_thread);
    let stderr = child.stderr.take().map(read_all_in_thread);
    Running {
        child: Some(child),
        stdout,
        stderr,
        started: Instant::now(),
        dir: dir.to_owned(),
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        baseline,
    }
}

fn read_all_in_thread(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

struct Baseline<'s> {
    server: &'s TestServer,
    body_bytes: u64,
    n_requests: usize,
}

/// A running binary. Dropping it kills the process, so a failing test leaves nothing behind.
pub struct Running<'s> {
    child: Option<Child>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    started: Instant,
    dir: PathBuf,
    args: Vec<String>,
    baseline: Option<Baseline<'s>>,
}

impl Running<'_> {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the child is running").id()
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("the child is running");
        child
            .try_wait()
            .expect("poll the rangefetch process")
            .is_some()
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, which
        // has not been reaped yet (we hold its `Child`), so it cannot name another process.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            result,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits, up to `deadline` from now, until `condition` holds; panics with what the
    /// process printed if the process exits first or the deadline passes.
    pub fn wait_until(
        &mut self,
        what: &str,
        deadline: Duration,
        mut condition: impl FnMut() -> bool,
    ) {
        let until = Instant::now() + deadline;
        loop {
            if condition() {
                return;
            }
            if self.has_exited() {
                let run = self.take_run();
                panic!("the process exited before {what}\n{}", run.describe());
            }
            if Instant::now() > until {
                panic!("no {what} within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit (killing the process after [`RUN_TIMEOUT`] and failing), then lets
    /// the server's counters settle.
    pub fn wait(mut self) -> Run {
        let until = self.started + RUN_TIMEOUT;
        loop {
            if self.has_exited() {
                return self.take_run();
            }
            if Instant::now() > until {
                let run = self.take_run_after_kill();
                panic!(
                    "rangefetch did not finish within {RUN_TIMEOUT:?}; killed it\n{}",
                    run.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the process and collects what it did.
    pub fn kill(mut self) -> Run {
        self.take_run_after_kill()
    }

    fn take_run_after_kill(&mut self) -> Run {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
        self.take_run()
    }

    fn take_run(&mut self) -> Run {
        let mut child = self.child.take().expect("the child is running");
        let status = child.wait().expect("reap the rangefetch process");
        let elapsed = self.started.elapsed();
        let text = |handle: Option<JoinHandle<Vec<u8>>>| {
            let bytes = handle
                .map(|handle| handle.join().expect("the pipe reader does not panic"))
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let stdout = text(self.stdout.take());
        let stderr = text(self.stderr.take());
        let served = self.baseline.take().map(|baseline| {
            let body_bytes = settled_body_bytes(baseline.server) - baseline.body_bytes;
            let requests = baseline.server.requests()[baseline.n_requests..].to_vec();
            Served {
                body_bytes,
                requests,
            }
        });
        Run {
            args: std::mem::take(&mut self.args),
            dir: self.dir.clone(),
            status,
            stdout,
            stderr,
            elapsed,
            served,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The server's byte count once responses to a client that is gone have stopped: writes to
/// its sockets fail within moments, so the count stops moving.
pub fn settled_body_bytes(server: &TestServer) -> u64 {
    let until = Instant::now() + Duration::from_secs(5);
    let mut last = server.body_bytes_sent();
    let mut stable_since = Instant::now();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        let now = server.body_bytes_sent();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(100) {
            break;
        }
    }
    last
}

/// What the server saw during one run.
#[derive(Clone, Debug)]
pub struct Served {
    /// File-content body bytes written to sockets.
    pub body_bytes: u64,
    /// The requests that arrived.
    pub requests: Vec<RequestLog>,
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub served: Option<Served>,
}

impl Run {
    /// Everything about the run worth seeing when an assertion fails.
    pub fn describe(&self) -> String {
        let served = match &self.served {
            Some(served) => {
                let requests: Vec<String> = served
                    .requests
                    .iter()
                    .map(|request| {
                        format!(
                            "    {} {} range={:?} if-range={:?} -> {} ({} body bytes, conn {})",
                            request.method,
                            request.path,
                            request.range,
                            request.if_range,
                            request.status,
                            request.body_bytes,
                            request.connection_id
                        )
                    })
                    .collect();
                let shown = requests.len().min(40);
                format!(
                    "server: {} body bytes, {} requests{}\n{}",
                    served.body_bytes,
                    requests.len(),
                    if shown < requests.len() {
                        " (first 40)"
                    } else {
                        ""
                    },
                    requests[..shown].join("\n")
                )
            }
            None => "server: not recorded".to_owned(),
        };
        let stdout_tail: Vec<&str> = self.stdout.lines().rev().take(5).collect();
        format!(
            "command: rangefetch {}\nin: {}\nstatus: {:?} after {:.2?}\nstderr:\n{}\nstdout (last lines, newest first):\n{}\n{served}",
            self.args.join(" "),
            self.dir.display(),
            self.status,
            self.elapsed,
            self.stderr,
            stdout_tail.join("\n"),
        )
    }

    /// The exit code; panics (showing the run) if a signal ended the process.
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(code) => code,
            None => panic!("the process was killed by a signal\n{}", self.describe()),
        }
    }

    /// The last non-empty stdout line, parsed as JSON.
    pub fn json_summary(&self) -> serde_json::Value {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_else(|| panic!("stdout is empty\n{}", self.describe()));
        serde_json::from_str(line).unwrap_or_else(|error| {
            panic!(
                "the last stdout line is not JSON ({error}): {line}\n{}",
                self.describe()
            )
        })
    }
}

/// What a run must have done; see [`check`].
#[derive(Clone, Debug, Default)]
pub struct Expect {
    /// The exit code.
    pub exit: i32,
    /// On success: the SHA-256 (lowercase hex) the output file must have.
    pub sha256: Option<String>,
    /// Bounds on the file-content bytes the server sent during the run.
    pub served: Option<RangeInclusive<u64>>,
    /// At most this many requests reached the server.
    pub max_requests: Option<usize>,
    /// Every GET carried `Range`, and every GET after the first (the probe, which knows no
    /// validator yet) carried `If-Range`.
    pub ranged: bool,
    /// The bytes served during the run cover `[0, n)`.
    pub covers: Option<u64>,
    /// Substrings that stderr must contain (case-insensitive).
    pub stderr_has: Vec<String>,
    /// A `hint:` line must follow the error line.
    pub hint: bool,
    /// The run used `--json`: check the summary object instead of the hash line.
    pub json: bool,
    /// On success with `--json`: the summary's `verified`.
    pub verified: Option<bool>,
    /// On failure: the output file must still hold exactly these bytes (it existed before
    /// and must be untouched); without it, the output must not exist.
    pub previous: Option<Vec<u8>>,
    /// On failure: whether `<out>.part` and `<out>.part.state` must both remain (for resume)
    /// or both be gone; `None` does not look.
    pub part_kept: Option<bool>,
}

impl Expect {
    /// Exit 0 and an output file with this SHA-256.
    pub fn success(sha256: &str) -> Self {
        Self {
            exit: 0,
            sha256: Some(sha256.to_ascii_lowercase()),
            ..Self::default()
        }
    }

    /// This non-zero exit code, and no output file.
    pub fn failure(exit: i32) -> Self {
        assert_ne!(exit, 0, "a failure has a non-zero exit code");
        Self {
            exit,
            ..Self::default()
        }
    }

    pub fn served(self, bounds: RangeInclusive<u64>) -> Self {
        Self {
            served: Some(bounds),
            ..self
        }
    }

    pub fn max_requests(self, n: usize) -> Self {
        Self {
            max_requests: Some(n),
            ..self
        }
    }

    pub fn ranged(self) -> Self {
        Self {
            ranged: true,
            ..self
        }
    }

    pub fn covers(self, len: u64) -> Self {
        Self {
            covers: Some(len),
            ..self
        }
    }

    pub fn stderr_has(mut self, text: &str) -> Self {
        self.stderr_has.push(text.to_owned());
        self
    }

    pub fn hint(self) -> Self {
        Self { hint: true, ..self }
    }

    pub fn json(self) -> Self {
        Self { json: true, ..self }
    }

    pub fn verified(self, verified: bool) -> Self {
        Self {
            verified: Some(verified),
            ..self
        }
    }

    pub fn previous(self, bytes: &[u8]) -> Self {
        Self {
            previous: Some(bytes.to_vec()),
            ..self
        }
    }

    pub fn part_kept(self, kept: bool) -> Self {
        Self {
            part_kept: Some(kept),
            ..self
        }
    }
}

/// Asserts everything `expect` says about a `get` run that wrote (or failed to write) `out`:
/// exit code; stderr (one `rangefetch: error:` line on failure, none on success); the output
/// file's presence and SHA-256; no `.part` or `.part.state` left after success; the `<hex>  <path>`
/// line or the `--json` summary on stdout; and what the server sent.
pub fn check(run: &Run, out: &Path, expect: &Expect) {
    let context = || run.describe();
    assert_exit(run, expect.exit, expect.hint);
    let stderr_lower = run.stderr.to_lowercase();
    for text in &expect.stderr_has {
        assert!(
            stderr_lower.contains(&text.to_lowercase()),
            "stderr does not mention {text:?}\n{}",
            context()
        );
    }
    let part = with_suffix(out, ".part");
    let state = with_suffix(out, ".part.state");
    if expect.exit == 0 {
        assert!(
            out.is_file(),
            "no output file at {}\n{}",
            out.display(),
            context()
        );
        let digest = sha256_file(out);
        if let Some(expected) = &expect.sha256 {
            assert_eq!(
                &digest,
                expected,
                "the output file has the wrong SHA-256\n{}",
                context()
            );
        }
        assert!(
            !part.exists(),
            "{} is left after success\n{}",
            part.display(),
            context()
        );
        assert!(
            !state.exists(),
            "{} is left after success\n{}",
            state.display(),
            context()
        );
        if expect.json {
            let summary = run.json_summary();
            assert_eq!(
                summary["event"],
                "done",
                "summary: {summary}\n{}",
                context()
            );
            assert_eq!(summary["ok"], true, "summary: {summary}\n{}", context());
            assert_eq!(
                summary["sha256"].as_str(),
                Some(digest.as_str()),
                "summary: {summary}\n{}",
                context()
            );
            let len = std::fs::metadata(out).expect("stat the output").len();
            assert_eq!(
                summary["bytes"].as_u64(),
                Some(len),
                "summary: {summary}\n{}",
                context()
            );
            assert!(
                summary["verified"].is_boolean(),
                "summary without `verified`: {summary}\n{}",
                context()
            );
            if let Some(verified) = expect.verified {
                assert_eq!(
                    summary["verified"],
                    verified,
                    "summary: {summary}\n{}",
                    context()
                );
            }
        } else {
            let last = run
                .stdout
                .lines()
                .rev()
                .find(|line| !line.is_empty())
                .unwrap_or_else(|| panic!("stdout is empty after success\n{}", context()));
            let (hex, shown_path) = last.split_once("  ").unwrap_or_else(|| {
                panic!(
                    "the last stdout line is not `<hex>  <path>`: {last:?}\n{}",
                    context()
                )
            });
            assert_eq!(
                hex,
                digest,
                "stdout's hash is not the file's\n{}",
                context()
            );
            assert_eq!(
                run.dir.join(shown_path),
                out,
                "stdout names another path\n{}",
                context()
            );
        }
    } else {
        match &expect.previous {
            Some(previous) => {
                let now = std::fs::read(out).unwrap_or_else(|error| {
                    panic!(
                        "the earlier {} is gone ({error})\n{}",
                        out.display(),
                        context()
                    )
                });
                assert!(
                    &now == previous,
                    "the earlier {} was changed by a failed run\n{}",
                    out.display(),
                    context()
                );
            }
            None => assert!(
                !out.exists(),
                "{} exists after a failed run\n{}",
                out.display(),
                context()
            ),
        }
        match expect.part_kept {
            Some(true) => assert!(
                part.is_file() && state.is_file(),
                "{} and {} must be kept for resume (part: {}, state: {})\n{}",
                part.display(),
                state.display(),
                part.exists(),
                state.exists(),
                context()
            ),
            Some(false) => assert!(
                !part.exists() && !state.exists(),
                "{} or {} is left (part: {}, state: {})\n{}",
                part.display(),
                state.display(),
                part.exists(),
                state.exists(),
                context()
            ),
            None => {}
        }
        if expect.json {
            let summary = run.json_summary();
            assert_eq!(
                summary["event"],
                "done",
                "summary: {summary}\n{}",
                context()
            );
            assert_eq!(summary["ok"], false, "summary: {summary}\n{}", context());
            assert_eq!(
                summary["exit_code"].as_i64(),
                Some(i64::from(expect.exit)),
                "summary: {summary}\n{}",
                context()
            );
            assert!(
                summary["error"]
                    .as_str()
                    .is_some_and(|error| !error.is_empty()),
                "summary without an error text: {summary}\n{}",
                context()
            );
        }
    }
    check_served(run, expect);
}

fn check_served(run: &Run, expect: &Expect) {
    let wants_server = expect.served.is_some()
        || expect.max_requests.is_some()
        || expect.ranged
        || expect.covers.is_some();
    if !wants_server {
        return;
    }
    let served = run
        .served
        .as_ref()
        .expect("server expectations need a run recorded against a server");
    if let Some(bounds) = &expect.served {
        assert!(
            bounds.contains(&served.body_bytes),
            "the server sent {} body bytes, expected {bounds:?}\n{}",
            served.body_bytes,
            run.describe()
        );
    }
    if let Some(max) = expect.max_requests {
        assert!(
            served.requests.len() <= max,
            "{} requests reached the server, expected at most {max}\n{}",
            served.requests.len(),
            run.describe()
        );
    }
    if expect.ranged {
        let gets: Vec<&RequestLog> = served
            .requests
            .iter()
            .filter(|request| request.method == "GET")
            .collect();
        assert!(
            !gets.is_empty(),
            "no GET reached the server\n{}",
            run.describe()
        );
        for (idx, request) in gets.iter().enumerate() {
            assert!(
                request.range.is_some(),
                "GET #{idx} has no Range header\n{}",
                run.describe()
            );
            assert!(
                idx == 0 || request.if_range.is_some(),
                "GET #{idx} has a Range but no If-Range header\n{}",
                run.describe()
            );
        }
    }
    if let Some(len) = expect.covers {
        let mut spans: Vec<(u64, u64)> = served
            .requests
            .iter()
            .filter(|request| request.method == "GET" && request.body_bytes > 0)
            .filter_map(|request| {
                let start = match request.status {
                    200 => Some(0),
                    206 => request.range.as_deref().and_then(range_start),
                    _ => None,
                }?;
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
        assert!(
            covered_to >= len,
            "the bytes served cover only [0, {covered_to}) of [0, {len})\n{}",
            run.describe()
        );
    }
}

/// The first byte of a `bytes=a-b` or `bytes=a-` header.
fn range_start(header: &str) -> Option<u64> {
    header
        .strip_prefix("bytes=")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Asserts the exit code, and that stderr says one clear thing: on failure, exactly one
/// `rangefetch: error:` line followed only by `hint:` lines (or clap's `error:` first line for
/// a usage error); on success, no error line at all.
pub fn assert_exit(run: &Run, exit: i32, hint: bool) {
    assert_eq!(run.code(), exit, "unexpected exit code\n{}", run.describe());
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let error_lines: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.starts_with("rangefetch: error:"))
        .map(|(idx, _)| idx)
        .collect();
    if exit == 0 {
        assert!(
            error_lines.is_empty() && !lines.iter().any(|line| line.starts_with("error:")),
            "an error line on stderr after success\n{}",
            run.describe()
        );
        return;
    }
    assert!(
        !lines.is_empty(),
        "stderr is empty after a failure\n{}",
        run.describe()
    );
    if exit == 2 && error_lines.is_empty() {
        // A usage error found by the argument parser (clap).
        assert!(
            lines[0].starts_with("error:") && lines[0].len() > "error:".len() + 5,
            "a usage error must start with a clear `error:` line\n{}",
            run.describe()
        );
        return;
    }
    assert_eq!(
        error_lines.len(),
        1,
        "stderr must have exactly one `rangefetch: error:` line\n{}",
        run.describe()
    );
    let error_idx = error_lines[0];
    let message = lines[error_idx]["rangefetch: error:".len()..].trim();
    assert!(
        message.len() > 5,
        "the error line says nothing\n{}",
        run.describe()
    );
    let after = &lines[error_idx + 1..];
    assert!(
        after.iter().all(|line| line.starts_with("hint:")),
        "only `hint:` lines may follow the error line\n{}",
        run.describe()
    );
    if hint {
        assert!(
            !after.is_empty(),
            "a `hint:` line must follow the error line\n{}",
            run.describe()
        );
    }
}

/// `path` with `suffix` appended to its file name: `x.bin` → `x.bin.part`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The lowercase hex SHA-256 of a file, read in pieces.
pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path)
        .unwrap_or_else(|error| panic!("open {} to hash it: {error}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(&hasher.finalize())
}

/// The lowercase hex SHA-256 of bytes in memory.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A fresh temporary directory for one test's files.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rangefetch-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Waits, up to `deadline`, until `condition` holds; panics naming `what` otherwise.
pub fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < until, "no {what} within {deadline:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tiny seeded generator (SplitMix64) for reproducible "random" choices in tests.
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw from `range` (inclusive).
    pub fn in_range(&mut self, range: RangeInclusive<u64>) -> u64 {
        range.start() + self.next_u64() % (range.end() - range.start() + 1)
    }
}

/// A real nginx serving a directory on a loopback port, with its configuration, pid file and
/// logs in a temporary directory of its own. Dropping it kills the process.
pub struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// Settings of a started [`Nginx`].
#[derive(Clone, Debug, Default)]
pub struct NginxOptions {
    /// nginx's `limit_rate` per connection, e.g. `"20m"`.
    pub limit_rate: Option<String>,
}

impl Nginx {
    /// Serves `root` with default settings.
    pub fn start(root: &Path) -> Nginx {
        Self::start_with(root, &NginxOptions::default())
    }

    /// Serves `root`; a port taken between choosing and binding it is retried with another.
    pub fn start_with(root: &Path, options: &NginxOptions) -> Nginx {
        let (child, port, dir) = start_nginx("rangefetch-nginx-", |dir, port, build_flags| {
            nginx_conf(dir, root, port, options, build_flags)
        });
        Nginx { child, port, dir }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The access log, one line per request: `STATUS METHOD URI "RANGE" "IF-RANGE" BODY_BYTES`.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .expect("read nginx's access log")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts nginx (no master, no daemon) with the configuration `conf(dir, port, build_flags)`
/// written into a fresh temporary directory named with `prefix`, and waits until it accepts
/// connections. A port taken between choosing and binding it is retried with another.
pub fn start_nginx(
    prefix: &str,
    conf: impl Fn(&Path, u16, &str) -> String,
) -> (Child, u16, tempfile::TempDir) {
    let program = find_nginx();
    let version = Command::new(&program)
        .arg("-V")
        .output()
        .expect("run `nginx -V`");
    let build_flags = String::from_utf8_lossy(&version.stderr).into_owned();
    let mut last_failure = String::new();
    for _attempt in 0..5 {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("create nginx's directory");
        let port = free_port();
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf(dir.path(), port, &build_flags)).expect("write nginx.conf");
        let error_log = dir.path().join("error.log");
        let mut child = Command::new(&program)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", program.display()));
        let until = Instant::now() + Duration::from_secs(15);
        let exited = loop {
            if let Some(status) = child.try_wait().expect("poll nginx") {
                break Some(status);
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                break None;
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "nginx did not accept connections on 127.0.0.1:{port} within 15 s; error log:\n{}",
                    std::fs::read_to_string(&error_log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match exited {
            None => return (child, port, dir),
            Some(status) => {
                let log = std::fs::read_to_string(&error_log).unwrap_or_default();
                if !log.contains("Address already in use") {
                    panic!("nginx exited at start ({status}); error log:\n{log}");
                }
                last_failure = log;
            }
        }
    }
    panic!("nginx could not bind a free loopback port in 5 attempts:\n{last_failure}");
}

/// nginx from PATH or the sbin directories; the tests need it and say how to get it.
fn find_nginx() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed (looked in PATH and /usr/sbin): run `cargo xtask test`, \
                 which installs it, or `apt-get install nginx-light`"
            )
        })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// One nginx process (no master, no daemon) whose every path lives in `dir`.
fn nginx_conf(
    dir: &Path,
    root: &Path,
    port: u16,
    options: &NginxOptions,
    build_flags: &str,
) -> String {
    let dir = dir.display();
    // Each module's temp path is set only if the module is built in: an unknown directive is
    // a fatal configuration error.
    let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .filter(|module| {
            **module == "client_body"
                || !build_flags.contains(&format!("--without-http_{module}_module"))
        })
        .map(|module| format!("    {module}_temp_path {dir}/tmp-{module};\n"))
        .collect();
    let limit_rate = options
        .limit_rate
        .as_deref()
        .map(|rate| format!("        limit_rate {rate};\n"))
        .unwrap_or_default();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{
    worker_connections 256;
}}
http {{
    log_format ranges '$status $request_method $uri \"$http_range\" \"$http_if_range\" $body_bytes_sent';
    access_log {dir}/access.log ranges;
{temp_paths}    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root};
{limit_rate}        location / {{
        }}
    }}
}}
",
        root = root.display(),
    )
}
