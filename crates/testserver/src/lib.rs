//! A loopback HTTP/1.1 server with byte ranges and scripted faults, for rangefetch's
//! integration tests, benches and demo.
//!
//! [`TestServer`] serves seeded, deterministic files ([`FileSpec`]): byte `i` of a file is a
//! function of its seed, generated on the fly ([`fill`]), so multi-GiB files cost no memory and
//! a test knows every byte and the SHA-256 ([`sha256_hex`]) without downloading anything. It
//! speaks enough HTTP/1.1 for real clients (curl, reqwest): GET and HEAD, persistent
//! connections, single byte ranges with 206 and 416, `If-Range` against a strong `ETag` or
//! `Last-Modified`. A [`FaultScript`] breaks chosen responses on purpose: resets, early closes,
//! stalls, late or missing heads, throttling, error statuses and 304s, wrong, added, duplicated
//! or missing headers (validators included, which `If-Range` then follows), `Content-Range`
//! oddities, bodies longer than announced, gzip content and transfer codings, per-connection
//! ETags, proxies that mangle `If-Range`, corrupted or changing content, redirects. Every
//! request is logged ([`RequestLog`]) for tests to assert on.
//!
//! The server runs on its own thread and tokio runtime, so a test may use any runtime or none;
//! it binds `127.0.0.1:0`. Dropping it stops accepting, aborts open connections (stalled ones
//! included), joins the thread, and re-raises any panic the server had, so a server bug fails
//! the test that hit it. It never depends on `rangefetch-core`: client and server must not share
//! a range-parsing bug.
//!
//! ```
//! use std::io::{Read, Write};
//! use rangefetch_testserver::{FileSpec, TestServer, content};
//!
//! let server = TestServer::serve(FileSpec::new("/img.bin", 1000, 7));
//! let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
//! stream
//!     .write_all(b"GET /img.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n")
//!     .expect("send");
//! let mut response = Vec::new();
//! stream.read_to_end(&mut response).expect("receive");
//! assert!(response.starts_with(b"HTTP/1.1 206 Partial Content\r\n"));
//! assert!(response.ends_with(&content(7, 10..20)));
//! assert_eq!(server.requests()[0].range.as_deref(), Some("bytes=10-19"));
//! ```

mod content;
mod date;
mod encoding;
mod fault;
mod http;
mod respond;
mod server;
mod throttle;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

pub use content::{content, fill, sha256_hex};
pub use fault::{Fault, FaultRule, FaultScript, When};

use server::{Running, Shared, lock};

/// The `Last-Modified` of a [`FileSpec::new`] file: Tue, 02 Jan 2024 03:04:05 GMT. Fixed, so
/// runs are reproducible and tests can send it back in `If-Range`.
pub const DEFAULT_LAST_MODIFIED_UNIX_SECS: u64 = 1_704_164_645;

/// One file the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// The request path, e.g. `"/img.bin"`; a query string in the request is ignored.
    pub path: String,
    /// Length in bytes.
    pub size: u64,
    /// The content's seed: byte `i` is `content(seed, i..i + 1)[0]`.
    pub seed: u64,
    /// The full `ETag` header value, quotes included (`"\"v1\""`, or `"W/\"x\""` for a weak
    /// one, which never satisfies `If-Range`); `None` sends no `ETag`.
    pub etag: Option<String>,
    /// The `Last-Modified` time (sent and compared to the second); `None` sends none.
    pub last_modified: Option<SystemTime>,
    /// Whether the server honours `Range` and sends `Accept-Ranges: bytes`; when false every GET
    /// gets 200 and the whole file.
    pub accept_ranges: bool,
}

impl FileSpec {
    /// A file with a strong `ETag` derived from seed and size (`"<seed hex>-<size hex>"`), the
    /// fixed [`DEFAULT_LAST_MODIFIED_UNIX_SECS`] date, and range support.
    pub fn new(path: &str, size: u64, seed: u64) -> Self {
        Self {
            path: path.to_owned(),
            size,
            seed,
            etag: Some(format!("\"{seed:x}-{size:x}\"")),
            last_modified: Some(
                SystemTime::UNIX_EPOCH + Duration::from_secs(DEFAULT_LAST_MODIFIED_UNIX_SECS),
            ),
            accept_ranges: true,
        }
    }

    /// The same file with another `ETag` value (quotes included), or none.
    pub fn with_etag(self, etag: Option<&str>) -> Self {
        Self {
            etag: etag.map(str::to_owned),
            ..self
        }
    }

    /// The same file with another `Last-Modified`, or none.
    pub fn with_last_modified(self, last_modified: Option<SystemTime>) -> Self {
        Self {
            last_modified,
            ..self
        }
    }

    /// The same file served without range support.
    pub fn without_ranges(self) -> Self {
        Self {
            accept_ranges: false,
            ..self
        }
    }

    /// The lowercase hex SHA-256 of the file's content.
    pub fn sha256_hex(&self) -> String {
        sha256_hex(self.seed, self.size)
    }
}

/// What a [`TestServer`] serves and how it misbehaves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerConfig {
    /// The files, by path; a later file with the same path replaces an earlier one.
    pub files: Vec<FileSpec>,
    /// The fault script; the default has no rules.
    pub faults: FaultScript,
}

/// One request as the server saw it and answered it.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestLog {
    /// The method, e.g. `"GET"` (empty if the request line could not be parsed).
    pub method: String,
    /// The request path without query.
    pub path: String,
    /// The request-target as sent, query included.
    pub target: String,
    /// All headers, names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The raw `Range` header.
    pub range: Option<String>,
    /// The raw `If-Range` header.
    pub if_range: Option<String>,
    /// The status sent (for a [`Fault::DelayHeaders`] head still held back, the one it will
    /// have).
    pub status: u16,
    /// Bytes of a file body written to the socket, as they go on the wire: the file's content,
    /// [`Fault::LongerBody`]'s padding included; for [`Fault::Gzip`] the compressed bytes, and
    /// for [`Fault::TransferGzip`] the chunked framing too. It grows as each piece is handed to
    /// the socket, so once a client has read a byte it is counted here; a failed write is not
    /// counted. The few bytes of an error page's text are not counted either.
    pub body_bytes: u64,
    /// Which connection carried the request: 0, 1, ... in accept order.
    pub connection_id: u64,
    /// The faults of the rules that matched, in script order.
    pub faults: Vec<Fault>,
}

impl RequestLog {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A running loopback server; see the [crate documentation](crate).
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// `None` only during drop.
    running: Option<Running>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// If no loopback port or thread can be had, which a test cannot work around anyway.
    pub fn start(config: ServerConfig) -> TestServer {
        Self::bind(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("binding a loopback port and starting the server's runtime")
    }

    /// Starts a server on `addr` (the binary uses it for `--port`); it is listening when this
    /// returns.
    pub fn bind(config: ServerConfig, addr: SocketAddr) -> std::io::Result<TestServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let running = server::spawn(listener, Arc::clone(&shared))?;
        Ok(TestServer {
            addr,
            shared,
            running: Some(running),
        })
    }

    /// Starts a server for one file, without faults.
    pub fn serve(file: FileSpec) -> TestServer {
        Self::start(ServerConfig {
            files: vec![file],
            faults: FaultScript::default(),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.shared.log).clone()
    }

    /// Total file-content body bytes written to sockets, over all paths and connections
    /// (counted as for [`RequestLog::body_bytes`]).
    pub fn body_bytes_sent(&self) -> u64 {
        self.shared.body_bytes_sent.load(Ordering::Relaxed)
    }

    /// Replaces the fault script; it applies to requests that arrive from now on, with its
    /// counters at zero (responses already streaming keep their faults).
    pub fn set_faults(&self, faults: FaultScript) {
        self.shared.set_faults(faults);
    }

    /// Replaces the file at `spec.path` (or adds one) for requests that arrive from now on:
    /// new content, size or validators, as when an origin's object is overwritten.
    pub fn replace_file(&self, spec: FileSpec) {
        lock(&self.shared.files).insert(spec.path.clone(), spec);
    }

    /// The file currently served at `path`, with any `ChangeContent` applied.
    pub fn file(&self, path: &str) -> Option<FileSpec> {
        lock(&self.shared.files).get(path).cloned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        // A second panic while the test is already unwinding would abort the process and hide
        // the first one, so the server's panic is only re-raised on a clean drop.
        if let Err(panic) = running.stop()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}
