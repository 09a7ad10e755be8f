//! `cargo xtask demo`: the main job, end to end. Builds the release binary,
//! serves 1 GiB from the flaky local test server, downloads and verifies it
//! with 8 connections, and reports the time; or, given a URL, downloads that.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, describe};
use crate::{Usage, heading, project_root};

const SERVER_ARGS: &[&str] = &["--size", "1GiB", "--seed", "1", "--flaky"];
const CONNECTIONS: &str = "8";
/// Generous: the server hashes its whole image before it prints the line.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(180);

/// `cargo xtask demo [URL [ARGS...]]`
pub fn run(args: &[String]) -> Result<ExitCode> {
    match args.split_first() {
        None => demo_local(),
        Some((flag, _)) if flag.starts_with('-') => {
            Err(Usage(format!("demo: takes a URL, not `{flag}`")).into())
        }
        Some((url, rest)) => demo_url(url, rest),
    }
}

/// `rangefetch get URL ARGS...` into the caller's current directory; exits
/// with rangefetch's own exit code so scripts see the contract's codes.
fn demo_url(url: &str, rest: &[String]) -> Result<ExitCode> {
    let root = project_root();
    Cmd::cargo()
        .dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "rangefetch",
            "--bin",
            "rangefetch",
        ])
        .run()?;
    let rangefetch = crate::target_dir(&root).join("release/rangefetch");
    let status = Cmd::new(&rangefetch.display().to_string())
        .args(["get", url])
        .args(rest)
        .status()?;
    let code = status
        .code()
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(1);
    Ok(ExitCode::from(code))
}

fn demo_local() -> Result<ExitCode> {
    let root = project_root();
    heading("build the release binaries");
    Cmd::cargo()
        .dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "rangefetch",
            "-p",
            "rangefetch-testserver",
        ])
        .args(["--bin", "rangefetch", "--bin", "rangefetch-testserver"])
        .run()?;
    let target = crate::target_dir(&root);
    let release = target.join("release");

    // Declared before the server so that it is dropped after it: the server
    // is killed first, then its log and the download are removed.
    let work_dir = WorkDir::create(&target.join(format!("xtask-demo-{}", std::process::id())))?;

    heading("start the flaky test server");
    let server_log_path = work_dir.path.join("server.log");
    let server_log = File::create(&server_log_path)
        .with_context(|| format!("cannot create {}", server_log_path.display()))?;
    let mut server = Server::spawn(
        Cmd::new(&release.join("rangefetch-testserver").display().to_string())
            .args(SERVER_ARGS.iter().copied())
            .spawnable()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(server_log),
    )?;
    let announced = server
        .first_line(SERVER_START_TIMEOUT)
        .and_then(|line| Announcement::parse(&line));
    let announced = match announced {
        Ok(announced) => announced,
        Err(err) => {
            eprintln!("{}", log_tail(&server_log_path));
            return Err(err);
        }
    };
    eprintln!("serving {} bytes at {}", announced.size, announced.url);

    heading("download with rangefetch");
    let output = work_dir.path.join("img.bin");
    let started = Instant::now();
    let status = Cmd::new(&release.join("rangefetch").display().to_string())
        .args([
            "get",
            announced.url.as_str(),
            "--sha256",
            announced.sha256.as_str(),
        ])
        .args(["-o".to_owned(), output.display().to_string()])
        .args(["-c", CONNECTIONS])
        .status()?;
    let elapsed = started.elapsed();

    heading("summary");
    let seconds = elapsed.as_secs_f64();
    if status.success() {
        println!(
            "ok: {:.2} GiB downloaded and verified in {seconds:.1} s = {:.0} MB/s ({CONNECTIONS} connections, flaky server)",
            announced.size as f64 / f64::from(1u32 << 30),
            announced.size as f64 / 1e6 / seconds.max(1e-3),
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "FAILED: rangefetch ended with {} after {seconds:.1} s",
            describe(status)
        );
        eprintln!("{}", log_tail(&server_log_path));
        bail!("the demo download failed")
    }
}

/// The server's first stdout line:
/// `URL=http://127.0.0.1:PORT/img.bin SHA256=<hex> SIZE=<n>`.
#[derive(Debug, PartialEq)]
struct Announcement {
    url: String,
    sha256: String,
    size: u64,
}

impl Announcement {
    fn parse(line: &str) -> Result<Announcement> {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                .with_context(|| format!("no {key}= in the test server's line `{line}`"))
        };
        let size = field("SIZE")?;
        Ok(Announcement {
            url: field("URL")?.to_owned(),
            sha256: field("SHA256")?.to_owned(),
            size: size
                .parse()
                .with_context(|| format!("SIZE `{size}` is not a number"))?,
        })
    }
}

/// The running test server; killed when dropped, on success or failure.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn spawn(command: &mut std::process::Command) -> Result<Server> {
        let mut child = command
            .spawn()
            .context("cannot start rangefetch-testserver")?;
        let stdout = child.stdout.take().expect("stdout was set to piped");
        let (sender, lines) = mpsc::channel();
        // Reads on a thread so the wait for the first line can time out, and
        // keeps draining so the server never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The receiver only wants the first line; later ones are dropped.
                let _ = sender.send(line);
            }
        });
        Ok(Server { child, lines })
    }

    fn first_line(&mut self, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!(
                    "the test server printed nothing within {} s",
                    timeout.as_secs()
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Its stdout closes a moment before it can be reaped.
                for _ in 0..50 {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        bail!("the test server exited with {}", describe(status));
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                bail!("the test server closed its stdout without printing its URL")
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Errors mean it has already exited, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory for the download and the server log; removed when
/// dropped. It sits in the target directory rather than /tmp, which may be
/// a RAM-backed tmpfs too small for (and distorting the speed of) 1 GiB.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(path: &Path) -> Result<WorkDir> {
        fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {err}", self.path.display());
        }
    }
}

/// The last lines of the server's stderr, to explain a failure.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        "the test server wrote nothing on stderr".to_owned()
    } else {
        format!("the test server's stderr ends with:\n{}", tail.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_line() {
        let line = "URL=http://127.0.0.1:4321/img.bin SHA256=ab12 SIZE=1073741824";
        let announced = Announcement::parse(line).expect("well-formed line");
        assert_eq!(
            announced,
            Announcement {
                url: "http://127.0.0.1:4321/img.bin".to_owned(),
                sha256: "ab12".to_owned(),
                size: 1 << 30,
            }
        );
    }

    #[test]
    fn a_line_without_size_is_an_error() {
        let err = Announcement::parse("URL=http://x/ SHA256=ab").expect_err("no SIZE");
        assert!(err.to_string().contains("SIZE"));
    }
}
