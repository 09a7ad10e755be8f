//! Helpers of the proxy, TLS, cache and JSON tests, beside the shared harness in `common`: the
//! binary run with chosen environment variables, a real tinyproxy and a real nginx serving TLS
//! (each on a loopback port with its own configuration in a temporary directory, killed on
//! drop), a CA and server certificate generated here, and small file-system helpers.
//!
//! A test file that uses this module also declares `mod common;`.

#![allow(
    dead_code,
    reason = "each test file uses its own subset of the helpers"
)]

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rangefetch_testserver::TestServer;

use crate::common::{Run, free_port, spawn_env, start_nginx};

/// Runs `rangefetch ARGS` in `dir` with these environment variables added to the clean
/// environment of [`rangefetch`](crate::common::rangefetch), and records what `server` (if
/// given) saw during the run.
pub fn run_env(
    server: Option<&TestServer>,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Run {
    spawn_env(dir, args, server, env).wait()
}

/// A loopback port on which nothing listens: connecting to it is refused.
pub fn closed_port() -> u16 {
    // Nothing binds a port the kernel just handed out and took back in the moment a test
    // needs it, except another test doing the same; that would only make the refusal late.
    free_port()
}

/// Every regular file under `dir`, recursively (none if `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("read a directory entry");
            let file_type = entry.file_type().expect("stat a directory entry");
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if file_type.is_file() {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// An executable called `name` in PATH or the sbin directories.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// The text of a file, or an empty string if it cannot be read (yet).
fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// tinyproxy

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
        let program = find_program("tinyproxy").unwrap_or_else(|| {
            panic!(
                "tinyproxy is not installed (looked in PATH and /usr/bin): run `cargo xtask test`, \
                 which installs it, or `apt-get install tinyproxy`"
            )
        });
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

// ------------------------------------------------------------------------------------------
// Certificates

/// A CA generated for one test, and a server certificate it signed for `127.0.0.1` and
/// `localhost`, as PEM files in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).expect("empty CA parameters");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rangefetch test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the CA certificate");

        let server_key = KeyPair::generate().expect("generate the server key");
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server certificate parameters");
        server_params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("sign the server certificate");

        let dir = tempfile::Builder::new()
            .prefix("rangefetch-pki-")
            .tempdir()
            .expect("create the certificates' directory");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).expect("write server.pem");
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem())
            .expect("write server.key");
        TestPki { dir }
    }

    /// The CA certificate, PEM: what `--ca-cert` takes.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate, PEM.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key, PEM.
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

// ------------------------------------------------------------------------------------------
// nginx with TLS

/// A real nginx serving a directory over HTTPS on a loopback port, with its configuration, pid
/// file and logs in a temporary directory of its own. Dropping it kills the process.
pub struct TlsNginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsNginx {
    /// Serves `root` over TLS with the server certificate of `pki`; a port taken between
    /// choosing and binding it is retried with another.
    pub fn start(root: &Path, pki: &TestPki) -> TlsNginx {
        let (child, port, dir) = start_nginx("rangefetch-nginx-tls-", |dir, port, build_flags| {
            assert!(
                build_flags.contains("--with-http_ssl_module"),
                "this nginx has no TLS (no --with-http_ssl_module): install Debian's nginx-light \
                 (`cargo xtask test` does)"
            );
            nginx_tls_conf(dir, root, port, pki, build_flags)
        });
        TlsNginx { child, port, dir }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// `https://localhost:PORT` followed by `path`.
    pub fn localhost_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// The access log, one line per completed request:
    /// `STATUS METHOD URI "RANGE" "IF-RANGE" BODY_BYTES`.
    pub fn access_log(&self) -> Vec<String> {
        read_lossy(&self.dir.path().join("access.log"))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The error log (TLS handshake failures show up here at `info`).
    pub fn error_log(&self) -> String {
        read_lossy(&self.dir.path().join("error.log"))
    }
}

impl Drop for TlsNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One nginx process (no master, no daemon) whose every path lives in `dir`, serving TLS.
fn nginx_tls_conf(dir: &Path, root: &Path, port: u16, pki: &TestPki, build_flags: &str) -> String {
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
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{
    worker_connections 256;
}}
http {{
    log_format ranges '$status $request_method $uri \"$http_range\" \"$http_if_range\" $body_bytes_sent';
    access_log {dir}/access.log ranges;
{temp_paths}    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
        location / {{
        }}
    }}
}}
",
        root = root.display(),
        cert = pki.server_cert().display(),
        key = pki.server_key().display(),
    )
}

/// Writes `size` seeded pseudo-random bytes to `root/name`; returns their SHA-256.
pub fn write_random_file(root: &Path, name: &str, size: usize, seed: u64) -> String {
    let mut bytes = vec![0u8; size];
    rangefetch_testserver::fill(seed, 0, &mut bytes);
    std::fs::write(root.join(name), &bytes).expect("write the served file");
    crate::common::sha256_bytes(&bytes)
}

/// The access-log lines of `nginx` with this status.
pub fn nginx_lines_with_status(log: &[String], status: &str) -> Vec<String> {
    log.iter()
        .filter(|line| line.split(' ').next() == Some(status))
        .cloned()
        .collect()
}
