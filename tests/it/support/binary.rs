//! Running the built binary: a clean environment (no proxy variables, no cache directory, no
//! stdin), a deadline after which a hung run is killed, and a [`Run`] that holds the exit
//! status, both streams and what the test server saw during the run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rangefetch_testserver::{RequestLog, TestServer};

/// No single run of the binary in these tests should come near this; a run that does is hung,
/// and is killed so the test fails instead of hanging the suite.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

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
    spawn_env(dir, args, None, &[]).wait()
}

/// Starts `rangefetch ARGS` in `dir`, with these environment variables added to the clean
/// environment of [`rangefetch`]; `server`, if given, is snapshotted now so that the finished
/// [`Run`] reports only what this run cost it.
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
    /// The arguments, without the program name.
    pub args: Vec<String>,
    /// The working directory it ran in.
    pub dir: PathBuf,
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it printed to stdout.
    pub stdout: String,
    /// Everything it printed to stderr.
    pub stderr: String,
    /// From the spawn to the exit.
    pub elapsed: Duration,
    /// What the server it was recorded against saw during the run; `None` if none was.
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
