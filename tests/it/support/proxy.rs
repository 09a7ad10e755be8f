//! A real tinyproxy in the foreground on a loopback port, with its configuration, log and pid
//! file in a temporary directory of its own, and the questions tests ask its log.

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::files::read_lossy;
use super::port::free_port;
use super::program::find_program;

/// Settings of a started [`Tinyproxy`].
#[derive(Clone, Debug, Default)]
pub struct TinyproxyOptions {
    /// Ports that `CONNECT` may reach (tinyproxy's `ConnectPort`); none allows no tunnel.
    pub connect_ports: Vec<u16>,
    /// `BasicAuth user password`: the proxy then demands these credentials.
    pub basic_auth: Option<(String, String)>,
}

/// A real tinyproxy in the foreground on a loopback port, with its configuration, log and pid
/// file in a temporary directory of its own. Dropping it kills the process.
pub struct Tinyproxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy; a port taken between choosing and binding it is retried with another.
    pub fn start(options: &TinyproxyOptions) -> Tinyproxy {
        let program = find_program("tinyproxy", "tinyproxy");
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("rangefetch-tinyproxy-")
                .tempdir()
                .expect("create tinyproxy's directory");
            let port = free_port();
            let conf_path = dir.path().join("tinyproxy.conf");
            std::fs::write(&conf_path, tinyproxy_conf(dir.path(), port, options))
                .expect("write tinyproxy.conf");
            let output = dir.path().join("output.txt");
            let output_file = std::fs::File::create(&output).expect("create tinyproxy's output");
            let mut child = Command::new(&program)
                .arg("-d")
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(output_file.try_clone().expect("clone a file handle"))
                .stderr(output_file)
                .spawn()
                .unwrap_or_else(|error| panic!("spawn {}: {error}", program.display()));
            let log = dir.path().join("tinyproxy.log");
            let until = Instant::now() + Duration::from_secs(15);
            let exited = loop {
                if let Some(status) = child.try_wait().expect("poll tinyproxy") {
                    break Some(status);
                }
                // The port alone could be another process's: the log says it is ours.
                if read_lossy(&log).contains("Accepting connections")
                    && TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
                {
                    break None;
                }
                if Instant::now() > until {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "tinyproxy did not accept connections on 127.0.0.1:{port} within 15 s; \
                         output:\n{}\nlog:\n{}",
                        read_lossy(&output),
                        read_lossy(&log)
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            match exited {
                None => return Tinyproxy { child, port, dir },
                Some(status) => {
                    let text = format!("{}\n{}", read_lossy(&output), read_lossy(&log));
                    if !text.contains("listening socket") {
                        panic!("tinyproxy exited at start ({status}):\n{text}");
                    }
                    last_failure = text;
                }
            }
        }
        panic!("tinyproxy could not bind a free loopback port in 5 attempts:\n{last_failure}");
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("tinyproxy.log"))
    }

    /// How many log lines there are now; see [`Tinyproxy::log_since`].
    pub fn log_mark(&self) -> usize {
        self.log().lines().count()
    }

    /// The log lines after `mark`.
    pub fn log_since(&self, mark: usize) -> Vec<String> {
        self.log().lines().skip(mark).map(str::to_owned).collect()
    }

    /// The request lines (`GET http://… HTTP/1.1`, `CONNECT host:port HTTP/1.1`) tinyproxy
    /// logged after `mark`.
    pub fn requests_since(&self, mark: usize) -> Vec<String> {
        self.log_since(mark)
            .into_iter()
            .filter_map(|line| {
                let (_, request) = line.split_once("Request (file descriptor")?;
                let (_, request) = request.split_once("):")?;
                Some(request.trim().to_owned())
            })
            .collect()
    }

    /// Waits up to 5 s until a request line after `mark` contains `needle` (the log is written
    /// by another process, a moment after the request), then returns all request lines.
    pub fn wait_for_request(&self, mark: usize, needle: &str) -> Vec<String> {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let requests = self.requests_since(mark);
            if requests.iter().any(|request| request.contains(needle)) || Instant::now() > until {
                return requests;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tinyproxy_conf(dir: &Path, port: u16, options: &TinyproxyOptions) -> String {
    let dir = dir.display();
    let mut conf = format!(
        "Port {port}
Listen 127.0.0.1
Timeout 60
LogFile \"{dir}/tinyproxy.log\"
LogLevel Info
PidFile \"{dir}/tinyproxy.pid\"
MaxClients 100
Allow 127.0.0.1
DisableViaHeader No
"
    );
    if options.connect_ports.is_empty() {
        // Without any ConnectPort line tinyproxy allows CONNECT to every port; a port nobody
        // uses keeps tunnels closed.
        conf.push_str("ConnectPort 1\n");
    }
    for connect_port in &options.connect_ports {
        conf.push_str(&format!("ConnectPort {connect_port}\n"));
    }
    if let Some((user, password)) = &options.basic_auth {
        conf.push_str(&format!("BasicAuth {user} {password}\n"));
    }
    conf
}
