//! A real SOCKS5 server, Debian's microsocks, in the foreground on a loopback port, and the
//! connections its output says it made (`connected to HOST:PORT`: the name itself when the
//! client left DNS to the proxy, `socks5h`, an address when it resolved the name itself).

use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::files::read_lossy;
use super::port::free_port;
use super::program::find_program;

/// A running microsocks; dropping it kills the process.
pub struct Microsocks {
    child: Child,
    port: u16,
    output: PathBuf,
    _dir: tempfile::TempDir,
}

impl Microsocks {
    /// Starts microsocks on a free loopback port, demanding `credentials` if given.
    pub fn start(credentials: Option<(&str, &str)>) -> Microsocks {
        let program = find_program("microsocks", "microsocks");
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("rangefetch-microsocks-")
                .tempdir()
                .expect("create microsocks's directory");
            let port = free_port();
            let output = dir.path().join("output.txt");
            let output_file = std::fs::File::create(&output).expect("create microsocks's output");
            let mut command = Command::new(&program);
            command.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
            if let Some((user, password)) = credentials {
                command.args(["-u", user, "-P", password]);
            }
            let mut child = command
                .stdin(Stdio::null())
                .stdout(output_file.try_clone().expect("clone a file handle"))
                .stderr(output_file)
                .spawn()
                .unwrap_or_else(|error| panic!("spawn {}: {error}", program.display()));
            let until = Instant::now() + Duration::from_secs(15);
            let exited = loop {
                if let Some(status) = child.try_wait().expect("poll microsocks") {
                    break Some(status);
                }
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    break None;
                }
                if Instant::now() > until {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "microsocks did not accept connections on 127.0.0.1:{port} within 15 s:\n{}",
                        read_lossy(&output)
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            match exited {
                None => {
                    return Microsocks {
                        child,
                        port,
                        output,
                        _dir: dir,
                    };
                }
                Some(status) => last_failure = format!("{status}: {}", read_lossy(&output)),
            }
        }
        panic!("microsocks could not bind a free loopback port in 5 attempts: {last_failure}");
    }

    /// The proxy URL with `scheme` (`socks5` or `socks5h`) and optional credentials.
    pub fn url(&self, scheme: &str, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => {
                format!("{scheme}://{user}:{password}@127.0.0.1:{}", self.port)
            }
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The `HOST:PORT` targets it connected to, in order.
    pub fn connections(&self) -> Vec<String> {
        read_lossy(&self.output)
            .lines()
            .filter_map(|line| {
                line.split_once("connected to ")
                    .map(|(_, t)| t.trim().to_owned())
            })
            .collect()
    }

    /// Waits up to 5 s for a connection to `target` to appear in its output (another process
    /// writes it), then returns all of them.
    pub fn wait_for_connection(&self, target: &str) -> Vec<String> {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.connections();
            if seen.iter().any(|t| t == target) || Instant::now() > until {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
