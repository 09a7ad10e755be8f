//! Real servers and caches from Debian packages (lighttpd, Apache, Caddy, busybox httpd,
//! Python's `http.server`, Squid, Varnish), started in the foreground on a loopback port with a
//! configuration the test writes into a temporary directory of its own: [`Daemon`] starts one
//! and stops its whole process group on drop; [`served_root`] makes the seeded file it serves;
//! [`AccessLog`] reads what it logged.

use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::files::{read_lossy, sha256_bytes, tempdir};
use super::port::free_port;
use super::program::find_program;

/// How long a server may take to accept its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The mtime every served copy gets, so that two servers serving copies of one file send the
/// same `Last-Modified` (what a farm of identical backends does).
pub fn served_mtime() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A directory holding `size` seeded pseudo-random bytes as `name`, with the mtime
/// [`served_mtime`]; returns it and the file's SHA-256.
pub fn served_root(name: &str, size: u64, seed: u64) -> (tempfile::TempDir, String) {
    let root = tempdir();
    // Servers that drop privileges (Apache as www-data) must read it.
    set_mode(root.path(), 0o755);
    let sha256 = write_served(root.path(), name, size, seed);
    (root, sha256)
}

/// Writes the seeded file `name` into `dir` (a second copy for a mirror) with the mtime
/// [`served_mtime`]; returns its SHA-256.
pub fn write_served(dir: &Path, name: &str, size: u64, seed: u64) -> String {
    let mut bytes = vec![0u8; usize::try_from(size).expect("a test file fits in memory")];
    rangefetch_testserver::fill(seed, 0, &mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write the served file");
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open the served file");
    file.set_modified(served_mtime())
        .expect("set the served file's mtime");
    set_mode(&path, 0o644);
    sha256_bytes(&bytes)
}

/// How to start one server: its program, the Debian package that provides it, and what to
/// do in its fresh directory for a port.
pub struct DaemonSpec<'a> {
    /// The executable, e.g. `"lighttpd"`.
    pub program: &'a str,
    /// The Debian package providing it, named when it is missing.
    pub package: &'a str,
    /// Writes the configuration into the directory (for this port) and returns the
    /// arguments.
    pub configure: &'a dyn Fn(&Path, u16) -> Vec<String>,
    /// Environment variables for the process; `{dir}` in a value is its directory.
    pub env: Vec<(String, String)>,
    /// A file under the directory whose text says the port is in use (the program's own log);
    /// `None` means only its stdout and stderr are looked at.
    pub log: Option<&'a str>,
}

/// A server in the foreground, in its own process group, with its directory; dropping it
/// stops the group (SIGTERM, then SIGKILL) and reaps it.
pub struct Daemon {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the server and waits until its port accepts connections; a port taken between
    /// choosing and binding it is retried with another.
    pub fn start(spec: &DaemonSpec) -> Daemon {
        let program = find_program(spec.program, spec.package);
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix(&format!("rangefetch-{}-", spec.program))
                .tempdir()
                .expect("create the server's directory");
            // Servers that drop privileges (squid, varnish) write their logs as another user.
            set_mode(dir.path(), 0o777);
            let port = free_port();
            let args = (spec.configure)(dir.path(), port);
            let output = dir.path().join("output.txt");
            let output_file = std::fs::File::create(&output).expect("create the server's output");
            set_mode(&output, 0o666);
            let mut command = Command::new(&program);
            command
                .args(&args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(output_file.try_clone().expect("clone a file handle"))
                .stderr(output_file)
                .process_group(0);
            for (name, value) in &spec.env {
                command.env(
                    name,
                    value.replace("{dir}", &dir.path().display().to_string()),
                );
            }
            let mut child = command
                .spawn()
                .unwrap_or_else(|error| panic!("spawn {}: {error}", program.display()));
            let text = || {
                let log = spec
                    .log
                    .map(|log| read_lossy(&dir.path().join(log)))
                    .unwrap_or_default();
                format!("output:\n{}\nlog:\n{log}", read_lossy(&output))
            };
            let until = Instant::now() + START_TIMEOUT;
            let exited = loop {
                if let Some(status) = child.try_wait().expect("poll the server") {
                    break Some(status);
                }
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    break None;
                }
                if Instant::now() > until {
                    stop_group(&mut child);
                    panic!(
                        "{} did not accept connections on 127.0.0.1:{port} within {START_TIMEOUT:?}\n{}",
                        spec.program,
                        text()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            match exited {
                None => {
                    return Daemon { child, port, dir };
                }
                Some(status) => {
                    let text = text();
                    if !text.to_lowercase().contains("address already in use") {
                        stop_group(&mut child);
                        panic!("{} exited at start ({status})\n{text}", spec.program);
                    }
                    last_failure = text;
                }
            }
        }
        panic!(
            "{} could not bind a free loopback port in 5 attempts:\n{last_failure}",
            spec.program
        );
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The access log `name` in its directory.
    pub fn log(&self, name: &str) -> AccessLog {
        AccessLog::new(self.dir.path().join(name))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop_group(&mut self.child);
    }
}

/// SIGKILL to the process group the child leads (a server's workers and helpers with it:
/// varnish's cache process, squid's helpers), then reaps the child. Nothing of a test server
/// needs a graceful end, and a graceful one (Caddy's, Squid's) takes seconds.
fn stop_group(child: &mut Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions; the group is the one our
        // unreaped child leads (spawned with `process_group(0)`), so it names only processes
        // we started.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("chmod {}: {error}", path.display()));
}

/// One line of an access log in the format every server here is configured with:
/// `STATUS METHOD PATH "RANGE" BYTES` (`-` for an absent Range header); nginx's
/// (`support/nginx.rs`) has its `"IF-RANGE"` before the bytes, which is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// The status sent.
    pub status: u16,
    /// The method.
    pub method: String,
    /// The path asked for.
    pub path: String,
    /// The Range header, if the request had one.
    pub range: Option<String>,
    /// Body bytes sent.
    pub bytes: u64,
}

impl Logged {
    /// Parses one line; `None` for a line of another shape. Fields after the quoted range
    /// and before the byte count (nginx's `If-Range`) are skipped.
    pub fn parse(line: &str) -> Option<Logged> {
        let (head, rest) = line.split_once(" \"")?;
        let (range, _) = rest.split_once('"')?;
        let bytes = line.rsplit(' ').next()?;
        let mut fields = head.split_whitespace();
        let status = fields.next()?.parse().ok()?;
        let method = fields.next()?.to_owned();
        let path = fields.next()?.to_owned();
        let range = match range.trim() {
            "" | "-" => None,
            range => Some(range.to_owned()),
        };
        let bytes = match bytes.trim() {
            "-" => 0,
            bytes => bytes.parse().ok()?,
        };
        Some(Logged {
            status,
            method,
            path,
            range,
            bytes,
        })
    }
}

/// A server's access log, written by another process; [`AccessLog::mark`] and
/// [`AccessLog::since`] give what one run added.
pub struct AccessLog {
    path: PathBuf,
    json: bool,
    settle: Duration,
}

impl AccessLog {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            json: false,
            settle: Duration::from_millis(200),
        }
    }

    /// The log is Caddy's JSON lines, not the text format of [`Logged`].
    pub fn caddy_json(self) -> Self {
        Self { json: true, ..self }
    }

    /// The server buffers its log and writes it out this often (lighttpd: once a second).
    pub fn flushed_every(self, interval: Duration) -> Self {
        Self {
            settle: interval + Duration::from_millis(300),
            ..self
        }
    }

    /// Every parsed entry so far (lines of another shape are left out).
    pub fn entries(&self) -> Vec<Logged> {
        let text = read_lossy(&self.path);
        if self.json {
            text.lines().filter_map(parse_caddy_line).collect()
        } else {
            text.lines().filter_map(Logged::parse).collect()
        }
    }

    /// How many entries there are now.
    pub fn mark(&self) -> usize {
        self.entries().len()
    }

    /// The entries after `mark`, once there are some and the log has stopped growing for a
    /// moment (a server writes its line when a response ends, which may be a moment after the
    /// client is done, and lighttpd only once a second).
    pub fn since(&self, mark: usize) -> Vec<Logged> {
        let until = Instant::now() + Duration::from_secs(10);
        let mut last = self.entries().len();
        let mut stable_since = Instant::now();
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(25));
            let now = self.entries().len();
            if now != last {
                last = now;
                stable_since = Instant::now();
            } else if now > mark && stable_since.elapsed() >= self.settle {
                break;
            }
        }
        self.entries().into_iter().skip(mark).collect()
    }

    /// The whole text, for failure messages.
    pub fn text(&self) -> String {
        read_lossy(&self.path)
    }
}

/// One line of Caddy's JSON access log.
fn parse_caddy_line(line: &str) -> Option<Logged> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    let request = entry.get("request")?;
    Some(Logged {
        status: u16::try_from(entry.get("status")?.as_u64()?).ok()?,
        method: request.get("method")?.as_str()?.to_owned(),
        path: request.get("uri")?.as_str()?.to_owned(),
        range: request
            .get("headers")
            .and_then(|headers| headers.get("Range"))
            .and_then(|values| values.get(0))
            .and_then(|value| value.as_str())
            .map(str::to_owned),
        bytes: entry.get("size")?.as_u64()?,
    })
}

/// The entries that are GETs of `path`.
pub fn gets_of<'a>(entries: &'a [Logged], path: &str) -> Vec<&'a Logged> {
    entries
        .iter()
        .filter(|entry| entry.method == "GET" && entry.path == path)
        .collect()
}
