//! A real nginx serving a file of seeded bytes on a loopback port, over HTTP or, with a
//! [`TestPki`], HTTPS, with the directory it serves, its configuration, pid file and logs in
//! temporary directories of its own. Dropping it kills the process.

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::files::{read_lossy, sha256_bytes, tempdir};
use super::pki::TestPki;
use super::port::free_port;
use super::program::find_program;

/// Settings of a started [`Nginx`].
#[derive(Clone, Debug, Default)]
pub struct NginxOptions<'a> {
    /// nginx's `limit_rate` per connection, e.g. `"20m"`.
    pub limit_rate: Option<String>,
    /// Serve HTTPS with this PKI's server certificate instead of plain HTTP.
    pub tls: Option<&'a TestPki>,
}

impl<'a> NginxOptions<'a> {
    /// HTTPS with `pki`'s server certificate, and otherwise the defaults.
    pub fn tls(pki: &'a TestPki) -> Self {
        Self {
            tls: Some(pki),
            ..Self::default()
        }
    }
}

/// A running nginx; see the module documentation.
pub struct Nginx {
    child: Child,
    port: u16,
    scheme: &'static str,
    dir: tempfile::TempDir,
    root: tempfile::TempDir,
}

impl Nginx {
    /// Serves `size` seeded pseudo-random bytes as `/name`; returns nginx and the file's
    /// SHA-256, computed here from the bytes themselves.
    pub fn serving(name: &str, size: u64, seed: u64, options: &NginxOptions) -> (Nginx, String) {
        let root = tempdir();
        let mut bytes = vec![0u8; usize::try_from(size).expect("a test file fits in memory")];
        rangefetch_testserver::fill(seed, 0, &mut bytes);
        std::fs::write(root.path().join(name), &bytes).expect("write the served file");
        (Self::start(root, options), sha256_bytes(&bytes))
    }

    /// Serves the directory `root` as it is (a tree of files the test wrote).
    pub fn serving_dir(root: tempfile::TempDir, options: &NginxOptions) -> Nginx {
        Self::start(root, options)
    }

    /// Serves `root` and waits until nginx accepts connections; a port taken between choosing
    /// and binding it is retried with another.
    fn start(root: tempfile::TempDir, options: &NginxOptions) -> Nginx {
        let program = find_program("nginx", "nginx-light");
        let version = Command::new(&program)
            .arg("-V")
            .output()
            .expect("run `nginx -V`");
        let build_flags = String::from_utf8_lossy(&version.stderr).into_owned();
        if options.tls.is_some() {
            assert!(
                build_flags.contains("--with-http_ssl_module"),
                "this nginx has no TLS (no --with-http_ssl_module): install Debian's nginx-light \
                 (`cargo xtask test` does)"
            );
        }
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("rangefetch-nginx-")
                .tempdir()
                .expect("create nginx's directory");
            let port = free_port();
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(
                &conf_path,
                nginx_conf(dir.path(), root.path(), port, options, &build_flags),
            )
            .expect("write nginx.conf");
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
                        "nginx did not accept connections on 127.0.0.1:{port} within 15 s; error \
                         log:\n{}",
                        read_lossy(&error_log)
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            match exited {
                None => {
                    return Nginx {
                        child,
                        port,
                        scheme,
                        dir,
                        root,
                    };
                }
                Some(status) => {
                    let log = read_lossy(&error_log);
                    if !log.contains("Address already in use") {
                        panic!("nginx exited at start ({status}); error log:\n{log}");
                    }
                    last_failure = log;
                }
            }
        }
        panic!("nginx could not bind a free loopback port in 5 attempts:\n{last_failure}");
    }

    /// The directory it serves, for more files.
    pub fn root(&self) -> PathBuf {
        self.root.path().to_owned()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (or `https://`) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    /// `http://localhost:PORT` (or `https://`) followed by `path`.
    pub fn localhost_url(&self, path: &str) -> String {
        format!("{}://localhost:{}{path}", self.scheme, self.port)
    }

    /// The access log, one line per completed request:
    /// `STATUS METHOD URI "RANGE" "IF-RANGE" BODY_BYTES`.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .expect("read nginx's access log (nginx creates it at start)")
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

/// The lines of an access log with this status.
pub fn lines_with_status(log: &[String], status: &str) -> Vec<String> {
    log.iter()
        .filter(|line| line.split(' ').next() == Some(status))
        .cloned()
        .collect()
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
    // TLS handshake failures are logged at `info`.
    let (error_level, listen, tls) = match options.tls {
        None => ("notice", format!("127.0.0.1:{port}"), String::new()),
        Some(pki) => (
            "info",
            format!("127.0.0.1:{port} ssl"),
            format!(
                "        ssl_certificate {};\n        ssl_certificate_key {};\n",
                pki.server_cert().display(),
                pki.server_key().display()
            ),
        ),
    };
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log {error_level};
events {{
    worker_connections 256;
}}
http {{
    log_format ranges '$status $request_method $uri \"$http_range\" \"$http_if_range\" $body_bytes_sent';
    access_log {dir}/access.log ranges;
{temp_paths}    default_type application/octet-stream;
    sendfile on;
    server {{
        listen {listen};
        server_name localhost;
{tls}        root {root};
{limit_rate}        location / {{
        }}
    }}
}}
",
        root = root.display(),
    )
}
