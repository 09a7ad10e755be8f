//! Bytes served, counted by the server: nginx's access log (`$body_bytes_sent`
//! of every request) or the test server's own counter, read before and after
//! each run. The client's word is not taken for it: what a tool throws away
//! after a steal or a cut is exactly what this is meant to show.

use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ChildStdin;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// How long the server may take, after the tool exits, to notice its closed
/// connections and log their last requests.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

/// Body bytes and requests a server saw, over one run or since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    pub bytes: u64,
    pub requests: u64,
}

/// Where a server's count is read.
#[derive(Clone, Debug)]
pub enum Counter {
    /// nginx: its access log in the `bench` format (`$server_port $status
    /// $body_bytes_sent`), and the port of its `stub_status`, which tells
    /// when every connection is closed and so every request logged.
    Nginx { log: PathBuf, status_port: u16 },
    /// rangefetch-testserver: a line on its stdin, answered on its stdout.
    TestServer(Arc<Mutex<TestServerControl>>),
}

/// The test server's stdin, and the lines it prints after its URL line.
pub struct TestServerControl {
    pub stdin: ChildStdin,
    pub lines: Receiver<String>,
}

impl std::fmt::Debug for TestServerControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestServerControl")
    }
}

/// The count before a run, to subtract afterwards.
#[derive(Clone, Copy, Debug)]
pub enum Mark {
    /// The access log's length in bytes.
    LogOffset(u64),
    Totals(Served),
}

impl Counter {
    pub fn mark(&self) -> Result<Mark> {
        match self {
            Counter::Nginx { log, .. } => Ok(Mark::LogOffset(
                fs::metadata(log).map_or(0, |meta| meta.len()),
            )),
            Counter::TestServer(control) => Ok(Mark::Totals(ask(control)?)),
        }
    }

    /// What was served since `mark`, once the server has settled: every
    /// connection closed (nginx), or the counter steady (the test server).
    pub fn since(&self, mark: Mark) -> Result<Served> {
        match (self, mark) {
            (Counter::Nginx { log, status_port }, Mark::LogOffset(offset)) => {
                wait_for_idle_nginx(*status_port)?;
                let mut file =
                    File::open(log).with_context(|| format!("cannot open {}", log.display()))?;
                file.seek(SeekFrom::Start(offset))?;
                let mut served = Served::default();
                for line in BufReader::new(file).lines() {
                    let line = line.with_context(|| format!("cannot read {}", log.display()))?;
                    if let Some(bytes) = parse_log_line(&line) {
                        served.bytes += bytes;
                        served.requests += 1;
                    }
                }
                Ok(served)
            }
            (Counter::TestServer(control), Mark::Totals(before)) => {
                let deadline = Instant::now() + SETTLE_TIMEOUT;
                let mut last = ask(control)?;
                // A response whose client is gone ends at its next write; a few
                // polls without change mean none is left.
                let mut steady = 0;
                while steady < 4 && Instant::now() < deadline {
                    thread::sleep(POLL);
                    let now = ask(control)?;
                    steady = if now == last { steady + 1 } else { 0 };
                    last = now;
                }
                Ok(Served {
                    bytes: last.bytes.saturating_sub(before.bytes),
                    requests: last.requests.saturating_sub(before.requests),
                })
            }
            _ => bail!("a mark from another kind of server"),
        }
    }
}

fn ask(control: &Mutex<TestServerControl>) -> Result<Served> {
    let mut control = control.lock().unwrap_or_else(PoisonError::into_inner);
    // Answers to earlier questions that timed out are stale.
    while control.lines.try_recv().is_ok() {}
    writeln!(control.stdin).context("cannot ask the test server for its count")?;
    control.stdin.flush()?;
    let line = control
        .lines
        .recv_timeout(Duration::from_secs(10))
        .context("the test server did not answer with its count")?;
    parse_test_server_line(&line)
        .with_context(|| format!("the test server answered `{line}`, not SENT=… REQUESTS=…"))
}

/// `SENT=123 REQUESTS=4`, the test server's answer.
fn parse_test_server_line(line: &str) -> Option<Served> {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(Served {
        bytes: field("SENT")?,
        requests: field("REQUESTS")?,
    })
}

/// The body bytes of one `bench` access-log line, `PORT STATUS BYTES`.
fn parse_log_line(line: &str) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields[..] {
        [port, status, bytes] if port.parse::<u16>().is_ok() && status.parse::<u16>().is_ok() => {
            bytes.parse().ok()
        }
        _ => None,
    }
}

/// `Active connections: 3` from a stub_status page.
fn parse_active_connections(page: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.trim().strip_prefix("Active connections:"))?
        .trim()
        .parse()
        .ok()
}

/// Waits until nginx's only open connection is the one asking: every
/// request of the run has ended and been logged.
fn wait_for_idle_nginx(port: u16) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let active = status_page(port)
            .ok()
            .and_then(|page| parse_active_connections(&page));
        if active.is_some_and(|active| active <= 1) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "nginx still had {} connection(s) open {} s after the run",
                active.map_or_else(|| "?".to_owned(), |active| (active - 1).to_string()),
                SETTLE_TIMEOUT.as_secs()
            );
        }
        thread::sleep(POLL);
    }
}

fn status_page(port: u16) -> std::io::Result<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut page = String::new();
    stream.take(64 * 1024).read_to_string(&mut page)?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_answers_parse() {
        assert_eq!(
            parse_test_server_line("SENT=1048676 REQUESTS=2"),
            Some(Served {
                bytes: 1_048_676,
                requests: 2
            })
        );
        assert_eq!(
            parse_test_server_line("URL=http://x SHA256=ab SIZE=1"),
            None
        );
        assert_eq!(parse_test_server_line("SENT=x REQUESTS=2"), None);
        assert_eq!(parse_log_line("40123 206 8388608"), Some(8_388_608));
        assert_eq!(parse_log_line("40123 200 0"), Some(0));
        assert_eq!(parse_log_line("127.0.0.1 - - [date] GET"), None);
        assert_eq!(parse_log_line(""), None);
        let page = "Active connections: 3 \nserver accepts handled requests\n 5 5 9 \n\
                    Reading: 0 Writing: 1 Waiting: 2 \n";
        assert_eq!(parse_active_connections(page), Some(3));
        assert_eq!(parse_active_connections("HTTP/1.1 404 Not Found\r\n"), None);
    }
}
