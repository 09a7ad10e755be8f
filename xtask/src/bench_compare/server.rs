//! The loopback servers a benchmark downloads from: a private nginx (one
//! unthrottled server block, one with `limit_rate`), the in-repo test
//! server, and the reference flaky server script. Each is our own child
//! process, stopped when its guard is dropped.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::data::DataFile;
use super::served::{Counter, TestServerControl};
use crate::cmd::{Cmd, describe};

/// nginx's per-connection rate in the throttled server block: `20m` is 20 MiB/s.
pub const SLOW_RATE_BYTES_PER_SEC: u64 = 20 << 20;
const SLOW_RATE_NGINX: &str = "20m";
/// nginx paces a throttled response by sleeping *after* each write, and a
/// write is up to `sendfile_max_chunk` (2 MiB by default since 1.21.4): a
/// response of 2 MiB or less would leave at full speed, and every response
/// would gain one write's head start. Small writes make the rate hold for
/// any request size, so that size ÷ (connections × rate) is a true floor.
const SLOW_WRITE_CHUNK_NGINX: &str = "256k";
/// How long a server may take to answer after it starts. The test server
/// hashes its whole file first: seconds for 4 GiB on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// One file as a server offers it.
#[derive(Clone, Debug)]
pub struct Source {
    pub url: String,
    /// The last segment of the URL: what the tools name the download.
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
    /// The server's processes: their CPU time is the server's, not contention.
    pub server_pids: Vec<u32>,
    /// Further URLs of the same bytes, given to the tools as mirrors.
    pub mirror_urls: Vec<String>,
    /// Where the server's own count of bytes served is read.
    pub counter: Option<Counter>,
}

/// A private nginx on free loopback ports (unthrottled, throttled, a second
/// unthrottled one as a mirror, and `stub_status`), with its config, pid
/// file, temp files, access and error logs in its own directory.
pub struct Nginx {
    child: Child,
    ports: Ports,
    pids: Vec<u32>,
    counter: Counter,
}

/// nginx's listening ports.
#[derive(Clone, Copy, Debug)]
struct Ports {
    fast: u16,
    slow: u16,
    mirror: u16,
    status: u16,
}

impl Nginx {
    /// Starts nginx serving `docroot`, and returns once both ports answer
    /// with `probe`'s size.
    pub fn start(
        program: &Path,
        docroot: &Path,
        state_dir: &Path,
        probe: &DataFile,
    ) -> Result<Nginx> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let [fast, slow, mirror, status] = free_ports()?;
        let ports = Ports {
            fast,
            slow,
            mirror,
            status,
        };
        let build_flags = Command::new(program)
            .arg("-V")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stderr).into_owned())
            .unwrap_or_default();
        let conf_path = state_dir.join("nginx.conf");
        let conf = nginx_conf(state_dir, docroot, ports, &build_flags);
        fs::write(&conf_path, conf)
            .with_context(|| format!("cannot write {}", conf_path.display()))?;
        let error_log = state_dir.join("error.log");
        let prefix = format!("{}/", state_dir.display());
        let conf_arg = conf_path.display().to_string();
        let error_log_arg = error_log.display().to_string();
        let nginx_args = ["-p", &prefix, "-c", &conf_arg, "-e", &error_log_arg];
        Cmd::new(&program.display().to_string())
            .args(nginx_args)
            .args(["-t", "-q"])
            .no_stdin()
            .run()
            .context("nginx rejected the benchmark's configuration")?;
        let child = Cmd::new(&program.display().to_string())
            .args(nginx_args)
            .args(["-g", "daemon off;"])
            .spawnable()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start nginx")?;
        let mut nginx = Nginx {
            child,
            ports,
            pids: Vec::new(),
            counter: Counter::Nginx {
                log: state_dir.join("access.log"),
                status_port: status,
            },
        };
        let path = format!("/{}", probe.file_name);
        for port in [fast, slow, mirror] {
            if let Err(err) = wait_until_served(&mut nginx.child, port, &path, probe.size) {
                let log = fs::read_to_string(&error_log).unwrap_or_default();
                return Err(err.context(format!("nginx did not come up; its error log:\n{log}")));
            }
        }
        // The workers exist once the ports answer: they accept the connections.
        nginx.pids = process_and_children(nginx.child.id());
        eprintln!(
            "nginx (pid {}): unthrottled on :{fast} and :{mirror}, limit_rate {SLOW_RATE_NGINX} \
             on :{slow}, stub_status on :{status}",
            nginx.child.id()
        );
        Ok(nginx)
    }

    /// `file` from the unthrottled server block.
    pub fn fast(&self, file: &DataFile) -> Source {
        self.source(self.ports.fast, file)
    }

    /// `file` from the `limit_rate` server block.
    pub fn slow(&self, file: &DataFile) -> Source {
        self.source(self.ports.slow, file)
    }

    /// `file` from two equal unthrottled server blocks: two mirrors.
    pub fn mirrored(&self, file: &DataFile) -> Source {
        let mut source = self.source(self.ports.fast, file);
        source.mirror_urls = vec![url(self.ports.mirror, file)];
        source
    }

    fn source(&self, port: u16, file: &DataFile) -> Source {
        Source {
            url: url(port, file),
            file_name: file.file_name.clone(),
            size: file.size,
            sha256: file.sha256.clone(),
            server_pids: self.pids.clone(),
            mirror_urls: Vec::new(),
            counter: Some(self.counter.clone()),
        }
    }
}

fn url(port: u16, file: &DataFile) -> String {
    format!("http://127.0.0.1:{port}/{}", file.file_name)
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM is nginx's fast shutdown: the master stops its workers, then
        // exits. A master killed outright would leave the workers running.
        let pid = self.child.id();
        signal("-TERM", &pid.to_string());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Still there: the master and the workers it started.
        for pid in &self.pids {
            signal("-KILL", &pid.to_string());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config, in the words of `serve.sh`'s method: sendfile, keep-alive,
/// every path inside `dir`; an unbuffered access log of each request's port,
/// status and body bytes, which bench-compare sums per run.
fn nginx_conf(dir: &Path, docroot: &Path, ports: Ports, build_flags: &str) -> String {
    let Ports {
        fast: fast_port,
        slow: slow_port,
        mirror: mirror_port,
        status: status_port,
    } = ports;
    let dir = dir.display();
    let docroot = docroot.display();
    // A temp path directive of a module that is not built in is a fatal error.
    let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .filter(|module| {
            **module == "client_body"
                || !build_flags.contains(&format!("--without-http_{module}_module"))
        })
        .map(|module| format!("    {module}_temp_path {dir}/tmp-{module};\n"))
        .collect();
    format!(
        "# cargo xtask bench-compare: a private nginx on loopback, stopped when the run ends
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    log_format bench '$server_port $status $body_bytes_sent';
    access_log {dir}/access.log bench;
{temp_paths}    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{fast_port};
        root {docroot};
    }}
    server {{
        listen 127.0.0.1:{slow_port};
        root {docroot};
        limit_rate {SLOW_RATE_NGINX};
        sendfile_max_chunk {SLOW_WRITE_CHUNK_NGINX};
    }}
    server {{
        listen 127.0.0.1:{mirror_port};
        root {docroot};
    }}
    server {{
        listen 127.0.0.1:{status_port};
        access_log off;
        location = /status {{
            stub_status;
        }}
    }}
}}
"
    )
}

/// A server started as our child: the test server or the flaky script.
/// Killed when dropped.
pub struct ChildServer {
    child: Child,
    pub source: Source,
}

impl ChildServer {
    /// `rangefetch-testserver --size SIZE --seed SEED EXTRA…`: serves
    /// generated bytes, so no file is needed on disk.
    pub fn test_server(
        program: &Path,
        size: u64,
        seed: u64,
        extra: &[String],
        log: &Path,
    ) -> Result<ChildServer> {
        let log_file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Cmd::new(&program.display().to_string())
            .args(["--size".to_owned(), size.to_string()])
            .args(["--seed".to_owned(), seed.to_string()])
            .args(extra.iter().cloned())
            .spawnable()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("cannot start rangefetch-testserver")?;
        let stdout = child.stdout.take().expect("stdout was set to piped");
        let stdin = child.stdin.take().expect("stdin was set to piped");
        let (sender, lines) = mpsc::channel();
        // Keeps draining stdout so the server never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut server = ChildServer {
            source: Source {
                url: String::new(),
                file_name: String::new(),
                size,
                sha256: String::new(),
                server_pids: vec![child.id()],
                mirror_urls: Vec::new(),
                counter: None,
            },
            child,
        };
        let line = match lines.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => match server.child.try_wait() {
                Ok(Some(status)) => bail!(
                    "rangefetch-testserver exited with {} (log: {})",
                    describe(status),
                    log.display()
                ),
                _ => bail!("rangefetch-testserver printed no URL line"),
            },
        };
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .with_context(|| format!("no {key}= in the test server's line `{line}`"))
        };
        server.source.url = field("URL")?;
        server.source.sha256 = field("SHA256")?;
        server.source.file_name = server
            .source
            .url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let announced = field("SIZE")?;
        if announced != size.to_string() {
            bail!("the test server announced SIZE={announced}, not {size}");
        }
        // Every later line answers a question on stdin.
        server.source.counter = Some(Counter::TestServer(Arc::new(Mutex::new(
            TestServerControl { stdin, lines },
        ))));
        Ok(server)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // Errors mean it has already exited, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill SIGNAL TARGET` through procps' kill (a negative target is a process
/// group); failures mean the target is already gone.
pub fn signal(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Loopback ports that were free a moment ago (all held until all are
/// found, so they differ).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind a loopback port")?;
        *port = listener.local_addr()?.port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// Waits until `HEAD path` on the port answers 200 with the expected length,
/// failing early if the server exits.
fn wait_until_served(child: &mut Child, port: u16, path: &str, size: u64) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last_answer = String::from("no answer");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the server exited with {}", describe(status));
        }
        match head(port, path) {
            Ok((200, Some(length))) if length == size => return Ok(()),
            Ok((status, length)) => {
                last_answer = format!("HEAD {path} answered {status}, length {length:?}");
                // A wrong answer will not improve by waiting much longer.
                if status != 200 && status != 0 {
                    bail!("port {port}: {last_answer}, expected 200 and {size} bytes");
                }
            }
            Err(err) => last_answer = err.to_string(),
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("port {port} did not serve {path} in time ({last_answer})")
}

/// `HEAD path` over HTTP/1.0: the status code and Content-Length.
fn head(port: u16, path: &str) -> std::io::Result<(u16, Option<u64>)> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "HEAD {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.take(64 * 1024).read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let length = response.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    });
    Ok((status, length))
}

/// `pid` and its direct children (nginx's master and workers), from /proc.
fn process_and_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        let parent = fs::read_to_string(format!("/proc/{child}/stat"))
            .ok()
            .and_then(|stat| {
                stat_fields(&stat)
                    .get(1)
                    .and_then(|ppid| ppid.parse::<u32>().ok())
            });
        if parent == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses): state, ppid, …, utime is index 11, stime 12.
pub fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_skips_temp_paths_of_missing_modules() {
        let ports = Ports {
            fast: 1,
            slow: 2,
            mirror: 3,
            status: 4,
        };
        let conf = nginx_conf(
            Path::new("/s"),
            Path::new("/d"),
            ports,
            "configure arguments: --without-http_uwsgi_module",
        );
        assert!(conf.contains("access_log /s/access.log bench;"));
        assert!(conf.contains("listen 127.0.0.1:4;\n        access_log off;"));
        assert!(conf.contains("scgi_temp_path /s/tmp-scgi;"));
        assert!(!conf.contains("uwsgi_temp_path"));
        assert!(conf.contains(
            "listen 127.0.0.1:2;\n        root /d;\n        limit_rate 20m;\n        sendfile_max_chunk 256k;"
        ));
    }

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "42 (a b) c) S 7 42 42 0 -1 0 0 0 0 0 150 25 0 0";
        let fields = stat_fields(stat);
        assert_eq!(fields[1], "7");
        assert_eq!((fields[11], fields[12]), ("150", "25"));
    }
}
