//! The public face of the engine — [`Download`], its builder, [`Config`] and
//! [`Outcome`] — and the orchestrator, which reads as the pipeline: probe →
//! plan → fetch → store → verify → commit, restarting on a changed remote.
//! Each stage lives in its own module; this one only calls them in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::Url;
use tracing::{debug, warn};

use crate::cache::Cache;
use crate::cancel::CancelToken;
use crate::checksums::Sha256Hex;
use crate::claim::{Claim, Claimed, open_part};
use crate::error::{Error, ErrorKind, Result, object_identity, redact_url};
use crate::event::{Event, EventSink};
use crate::fetch::{FetchPolicy, Fetcher, PoolLimits};
use crate::journal::Journal;
use crate::limit::{ConnectionBudget, RateLimit};
use crate::piece_check::PieceCheck;
use crate::pieces::PieceHashes;
use crate::plan::{Scheduler, TakeOver};
use crate::pool::{Growth, Pool};
use crate::probe::{FirstBody, Remote, probe};
use crate::progress::{Counters, Ticker};
use crate::range::ByteRange;
use crate::resume::{Checked, JournalWriter, part_path, state_path};
use crate::retry::{Backoff, Jitter};
use crate::size::format_size;
use crate::sources::{MirrorProbe, Source, Sources, probe_mirrors};
use crate::store::{PartFile, WriteMode};
use crate::transport::Http;
use crate::verify::{HashFollower, HashProgress};
use crate::{commit, resume, reuse, transport};

/// Tunables of a download. Every field has a sensible default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Most connections open at once (1..=64).
    pub connections: usize,
    /// Bytes per ranged request.
    pub chunk_size: u64,
    /// A steal never leaves a piece smaller than this.
    pub min_piece: u64,
    /// Failed attempts without progress allowed per range before the
    /// download fails.
    pub retries: u32,
    /// A connection that receives no byte for this long is dropped and its
    /// range retried; it also bounds every wait for response headers.
    pub stall_timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// How long a response may take to begin — its headers and its first
    /// body byte — before the request is dropped and retried; after the
    /// first byte the stall timeout counts. `None`: the stall timeout, or
    /// through a proxy at least [`Config::CACHE_FIRST_BYTE`], since a cache
    /// filling a slice for another client holds the answer back until it
    /// has it (the shipped nginx recipe's `proxy_cache_lock_timeout`).
    pub first_byte_timeout: Option<Duration>,
    /// How chunk bytes are written to the part file.
    pub write_mode: WriteMode,
    /// Proxy for all requests; `None` means a direct connection (the engine
    /// never reads the environment: callers decide).
    pub proxy: Option<String>,
    /// Extra trusted root certificates, PEM, trusted beside the platform's
    /// store. Which roots the platform trusts is the platform verifier's
    /// decision (rustls-platform-verifier): on Linux the system bundle,
    /// which it locates through `SSL_CERT_FILE` / `SSL_CERT_DIR` when they
    /// are set. That lookup is the one environment read below the engine;
    /// the engine itself reads none.
    pub ca_certs_pem: Vec<Vec<u8>>,
    /// How often a changed remote may restart the download.
    pub max_restarts: u32,
    /// Retries allowed for the whole download, over all ranges.
    pub download_retries: u64,
    /// Connections opened at first; more are added, up to `connections`,
    /// only while that raises throughput, and taken back when it did not.
    pub start_connections: usize,
    /// The `User-Agent`; `None` is `rangefetch/<version>`.
    pub user_agent: Option<String>,
    /// Extra request headers, sent with every request to the URLs given
    /// (credentials — `Authorization`, cookies — never to another host a
    /// redirect leads to). Their values never appear in events, errors,
    /// the journal or `Debug` output.
    pub headers: RequestHeaders,
    /// A bandwidth cap, shared with every download given a clone of it.
    pub rate_limit: Option<RateLimit>,
    /// A connection budget shared with the other downloads of a batch:
    /// `connections` is then this download's own ceiling within it.
    pub budget: Option<ConnectionBudget>,
    /// Chunk and steal boundaries fall on multiples of this many bytes
    /// (a cache's slice size); 0 or 1: anywhere.
    pub align: u64,
    /// Start the plan, after its first chunk, at an offset this seed picks
    /// (clients behind one cache then fill different slices); `None`:
    /// lowest offset first.
    pub rotation_seed: Option<u64>,
    /// What kind of proxy [`Config::proxy`] is, when it is more than a
    /// plain HTTP proxy.
    pub proxy_flavor: ProxyFlavor,
    /// Most bytes a repair may fetch again when the finished file does
    /// not have the expected SHA-256 (see [`Event::Repaired`]); `None`:
    /// the file's size; 0: no repair, the mismatch is the error.
    pub repair_budget: Option<u64>,
}

/// The kind of proxy a download goes through, for proxies that want to be
/// spoken to in their own way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyFlavor {
    /// An ordinary HTTP proxy or cache: nothing special.
    #[default]
    Plain,
    /// A Dragonfly dfdaemon acting as the proxy (its HTTP proxy port,
    /// usually 4001): every request asks it to prefetch the whole file
    /// into the P2P network (`X-Dragonfly-Prefetch: true`); with an
    /// expected SHA-256 the task is keyed by content
    /// (`X-Dragonfly-Content-For-Calculating-Task-ID: sha256:<hex>`), so
    /// machines fetching one file from different URLs share it; chunks are
    /// aligned to its 4 MiB pieces; at most 8 connections go to the local
    /// daemon; and its `X-Dragonfly-Error-Type` is named in errors.
    Dragonfly,
}

impl ProxyFlavor {
    /// Dragonfly's piece size.
    pub const DRAGONFLY_PIECE: u64 = 4 << 20;
    /// Connections worth opening to one local dfdaemon.
    pub const DRAGONFLY_CONNECTIONS: usize = 8;
}

impl Config {
    /// The least first-byte timeout through a proxy (see
    /// [`Config::first_byte_timeout`]).
    pub const CACHE_FIRST_BYTE: Duration = Duration::from_secs(60);

    /// The first-byte timeout in force.
    pub(crate) fn first_byte(&self) -> Duration {
        match self.first_byte_timeout {
            Some(timeout) => timeout,
            None if self.proxy.is_some() => self.stall_timeout.max(Self::CACHE_FIRST_BYTE),
            None => self.stall_timeout,
        }
    }
}

/// Request headers a caller adds to every request: name and value pairs,
/// in order, repeated names allowed. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders(Vec<(String, String)>);

impl RequestHeaders {
    /// Adds a header; names and values are checked when the download is
    /// built.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// The headers, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for RequestHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}: <redacted>")))
            .finish()
    }
}

/// Setters that consume and return the `Config`, one per field, so a
/// configuration is one expression:
/// `Config::default().connections(16).stall_timeout(Duration::from_secs(60))`.
impl Config {
    /// Sets [`Config::connections`].
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }
    /// Sets [`Config::chunk_size`].
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self
    }
    /// Sets [`Config::min_piece`].
    pub fn min_piece(mut self, bytes: u64) -> Self {
        self.min_piece = bytes;
        self
    }
    /// Sets [`Config::retries`].
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
    /// Sets [`Config::stall_timeout`].
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }
    /// Sets [`Config::first_byte_timeout`].
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.first_byte_timeout = Some(timeout);
        self
    }
    /// Sets [`Config::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Sets [`Config::write_mode`].
    pub fn write_mode(mut self, mode: WriteMode) -> Self {
        self.write_mode = mode;
        self
    }
    /// Sets [`Config::proxy`].
    pub fn proxy(mut self, proxy: impl Into<String>) -> Self {
        self.proxy = Some(proxy.into());
        self
    }
    /// Adds a PEM bundle to [`Config::ca_certs_pem`].
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certs_pem.push(pem.into());
        self
    }
    /// Sets [`Config::max_restarts`].
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }
    /// Sets [`Config::download_retries`].
    pub fn download_retries(mut self, n: u64) -> Self {
        self.download_retries = n;
        self
    }
    /// Sets [`Config::start_connections`].
    pub fn start_connections(mut self, n: usize) -> Self {
        self.start_connections = n;
        self
    }
    /// Sets [`Config::align`].
    pub fn align(mut self, bytes: u64) -> Self {
        self.align = bytes;
        self
    }
    /// Sets [`Config::repair_budget`].
    pub fn repair_budget(mut self, bytes: Option<u64>) -> Self {
        self.repair_budget = bytes;
        self
    }
    /// Sets [`Config::proxy_flavor`].
    pub fn proxy_flavor(mut self, flavor: ProxyFlavor) -> Self {
        self.proxy_flavor = flavor;
        self
    }
    /// Sets [`Config::rotation_seed`].
    pub fn rotation_seed(mut self, seed: Option<u64>) -> Self {
        self.rotation_seed = seed;
        self
    }
    /// Sets [`Config::user_agent`].
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }
    /// Adds a request header to [`Config::headers`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }
    /// Sets [`Config::rate_limit`].
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }
    /// Sets [`Config::budget`].
    pub fn budget(mut self, budget: ConnectionBudget) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connections: 8,
            chunk_size: 8 << 20,
            min_piece: 1 << 20,
            retries: 5,
            stall_timeout: Duration::from_secs(20),
            first_byte_timeout: None,
            connect_timeout: Duration::from_secs(15),
            write_mode: WriteMode::Pwrite,
            proxy: None,
            ca_certs_pem: Vec::new(),
            max_restarts: 3,
            download_retries: 200,
            start_connections: 4,
            user_agent: None,
            headers: RequestHeaders::default(),
            rate_limit: None,
            budget: None,
            align: 1 << 20,
            rotation_seed: None,
            proxy_flavor: ProxyFlavor::Plain,
            repair_budget: None,
        }
    }
}

/// What a finished download produced.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// Where the file is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256.
    pub sha256: Sha256Hex,
    /// Whether it was checked against an expected hash.
    pub verified: bool,
    /// Whether an existing, matching file made the download unnecessary.
    pub already_present: bool,
    /// Whether the file came from the verified cache instead of the network.
    pub from_cache: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// Retried requests.
    pub retries: u64,
    /// Bytes reused from an earlier run.
    pub resumed_bytes: u64,
    /// Most connections used at once.
    pub connections: usize,
}

/// Builds a [`Download`].
#[derive(Clone)]
pub struct DownloadBuilder {
    urls: Vec<String>,
    output: Option<PathBuf>,
    sha256: Option<Sha256Hex>,
    config: Config,
    /// Settings made one by one, applied over `config` whatever the order
    /// of the calls: `.connections(16).config(c)` keeps the 16.
    overrides: Overrides,
    events: Option<EventSink>,
    cancel: CancelToken,
    cache: Option<Cache>,
    pieces: Option<PieceHashes>,
}

#[derive(Clone, Default)]
struct Overrides {
    connections: Option<usize>,
    chunk_size: Option<u64>,
    user_agent: Option<String>,
    headers: RequestHeaders,
    rate_limit: Option<RateLimit>,
    align: Option<u64>,
}

impl Overrides {
    fn apply(self, config: &mut Config) {
        if let Some(n) = self.connections {
            config.connections = n;
        }
        if let Some(bytes) = self.chunk_size {
            config.chunk_size = bytes;
        }
        if let Some(agent) = self.user_agent {
            config.user_agent = Some(agent);
        }
        for (name, value) in self.headers.iter() {
            config.headers.push(name, value);
        }
        if let Some(limit) = self.rate_limit {
            config.rate_limit = Some(limit);
        }
        if let Some(bytes) = self.align {
            config.align = bytes;
        }
    }
}

/// One file to download: sources, destination, expected hash and settings.
///
/// Dropping the future returned by [`Download::run`] cancels the download;
/// see the crate documentation for what it leaves behind.
pub struct Download {
    urls: Vec<Url>,
    output: PathBuf,
    sha256: Option<Sha256Hex>,
    config: Config,
    events: Option<EventSink>,
    cancel: CancelToken,
    cache: Option<Cache>,
    pieces: Option<PieceHashes>,
}

impl Download {
    /// Starts building a download of `url`.
    pub fn builder(url: impl Into<String>) -> DownloadBuilder {
        DownloadBuilder {
            urls: vec![url.into()],
            output: None,
            sha256: None,
            config: Config::default(),
            overrides: Overrides::default(),
            events: None,
            cancel: CancelToken::new(),
            cache: None,
            pieces: None,
        }
    }
}

impl DownloadBuilder {
    /// Adds a mirror: another URL serving the same bytes.
    pub fn mirror(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Destination path; default: the URL's file name in the current directory.
    pub fn output(mut self, path: impl Into<PathBuf>) -> Self {
        self.output = Some(path.into());
        self
    }

    /// The expected SHA-256; the file is published only if it matches.
    pub fn sha256(mut self, hash: Sha256Hex) -> Self {
        self.sha256 = Some(hash);
        self
    }

    /// All settings at once. Settings made one by one (`.connections`,
    /// `.chunk_size`, `.header`, `.user_agent`, `.rate_limit`) apply over
    /// these, before or after this call.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Most connections open at once.
    pub fn connections(mut self, n: usize) -> Self {
        self.overrides.connections = Some(n);
        self
    }

    /// Bytes per ranged request.
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.overrides.chunk_size = Some(bytes);
        self
    }

    /// Chunk boundaries on multiples of `bytes` (see [`Config::align`]).
    pub fn align(mut self, bytes: u64) -> Self {
        self.overrides.align = Some(bytes);
        self
    }

    /// Adds a request header (see [`Config::headers`]).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.headers.push(name, value);
        self
    }

    /// The `User-Agent` to send.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.overrides.user_agent = Some(agent.into());
        self
    }

    /// Caps the bandwidth; clone one [`RateLimit`] into several downloads
    /// to cap them together, and change it with [`RateLimit::set_rate`]
    /// while they run.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.overrides.rate_limit = Some(limit);
        self
    }

    /// Delivers progress [`Event`]s to `sink`.
    pub fn on_event(mut self, sink: impl Fn(Event) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(sink));
        self
    }

    /// Stops the download when `token` is cancelled: connections stop,
    /// progress is flushed and recorded, and `run` returns
    /// [`ErrorKind::Cancelled`].
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = token;
        self
    }

    /// Reference piece hashes (a Metalink's `<pieces>`): each piece is
    /// checked the moment its last byte is written, and one that fails is
    /// fetched again from another source at once. A list that does not fit
    /// the size the server reports is set aside with a notice.
    pub fn piece_hashes(mut self, pieces: PieceHashes) -> Self {
        self.pieces = Some(pieces);
        self
    }

    /// Uses a verified, content-addressed cache: with an expected hash, a
    /// cached copy is re-verified and placed at the output without any
    /// request; a verified download is added to it; and when the network
    /// fails, a copy that appeared meanwhile is served instead.
    pub fn cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Checks the settings and makes the [`Download`].
    pub fn build(mut self) -> Result<Download> {
        let invalid = |m: String| Error::new(ErrorKind::InvalidInput, m);
        std::mem::take(&mut self.overrides).apply(&mut self.config);
        if self.config.proxy_flavor == ProxyFlavor::Dragonfly {
            dragonfly(&mut self.config, self.sha256);
        }
        // Names and values are checked here, so a bad header is a build
        // error, not a failed request.
        crate::transport::request_headers(&self.config)?;
        if !(1..=64).contains(&self.config.connections) {
            return Err(invalid(format!(
                "connections must be between 1 and 64, not {}",
                self.config.connections
            )));
        }
        if self.config.chunk_size == 0 {
            return Err(invalid("chunk size must be at least 1 byte".into()));
        }
        let urls = self
            .urls
            .iter()
            .map(|raw| parse_url(raw))
            .collect::<Result<Vec<_>>>()?;
        let output = match self.output {
            Some(path) => path,
            None => {
                let first = urls.first().ok_or_else(|| invalid("no URL given".into()))?;
                let name = crate::name::file_name_from_url(first.as_str()).map_err(|e| {
                    invalid(format!(
                        "cannot name the output after {}",
                        redact_url(first)
                    ))
                    .with_source(e)
                })?;
                PathBuf::from(name)
            }
        };
        Ok(Download {
            urls,
            output,
            sha256: self.sha256,
            config: self.config,
            events: self.events,
            cancel: self.cancel,
            cache: self.cache,
            pieces: self.pieces,
        })
    }
}

/// What speaking to a Dragonfly dfdaemon changes (see
/// [`ProxyFlavor::Dragonfly`]): its headers, chunks on its pieces, and no
/// more connections than one local daemon serves well.
fn dragonfly(config: &mut Config, sha256: Option<Sha256Hex>) {
    let piece = ProxyFlavor::DRAGONFLY_PIECE;
    config.headers.push("X-Dragonfly-Prefetch", "true");
    if let Some(hash) = sha256 {
        config.headers.push(
            "X-Dragonfly-Content-For-Calculating-Task-ID",
            format!("sha256:{hash}"),
        );
    }
    config.align = if config.align <= 1 {
        piece
    } else {
        config.align.div_ceil(piece) * piece
    };
    config.chunk_size = config.chunk_size.div_ceil(piece).max(1) * piece;
    config.connections = config.connections.min(ProxyFlavor::DRAGONFLY_CONNECTIONS);
    config.start_connections = config.start_connections.min(config.connections);
}

/// Parses a URL the engine can fetch: `http` or `https`.
pub(crate) fn parse_url(raw: &str) -> Result<Url> {
    let invalid = |m: String| Error::new(ErrorKind::InvalidInput, m);
    // An unparsable URL cannot be redacted field by field: show it without
    // its query and user information, where credentials would be.
    let shown = || {
        let no_query = raw.split(['?', '#']).next().unwrap_or_default();
        match no_query.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}"),
                None => no_query.to_owned(),
            },
            None => no_query.to_owned(),
        }
    };
    let url = Url::parse(raw)
        .map_err(|e| invalid(format!("invalid URL {:?}", shown())).with_source(e))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "unsupported URL scheme {:?}: use http or https",
            url.scheme()
        )));
    }
    Ok(url)
}

pub(crate) fn cancelled() -> Error {
    Error::new(
        ErrorKind::Cancelled,
        "cancelled; partial data kept for resume",
    )
}

/// Cancelled with `kept` bytes of the file in the part file, recorded for
/// the next run ([`Error::kept_bytes`]).
fn cancelled_keeping(kept: u64) -> Error {
    Error::new(
        ErrorKind::Cancelled,
        format!("cancelled; {} kept for resume", format_size(kept)),
    )
    .with_kept_bytes(kept)
}

impl Download {
    /// Where the file will be.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// The settings it runs with, one-by-one settings applied.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn emit(&self, event: Event) {
        if let Some(sink) = &self.events {
            sink(event);
        }
    }

    /// How long the probes wait for response headers: the first-byte
    /// timeout, like every other request (a server that accepts and never
    /// answers is a stalled one). The connect itself is bounded by the
    /// connect timeout too.
    fn probe_timeout(&self) -> Duration {
        self.config.first_byte()
    }

    /// Runs the download to completion.
    pub async fn run(&self) -> Result<Outcome> {
        let started = Instant::now();
        if self.output.is_dir() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the output {} is a directory; name a file inside it",
                    self.output.display()
                ),
            ));
        }
        let emit = |event| self.emit(event);
        let mut _cache_lock = None;
        if let Some(expected) = self.sha256 {
            if let Some(outcome) =
                reuse::already_present(&self.output, expected, started, self.events.as_ref())
                    .await?
            {
                return Ok(outcome);
            }
            if let Some(cache) = &self.cache {
                // Another process fetching the same file holds this lock; we
                // wait for it (polling, so that cancelling or dropping the
                // download leaves no thread blocked on it) and then, most
                // likely, hit the cache.
                loop {
                    match cache.try_lock(&expected) {
                        Ok(Some(lock)) => {
                            _cache_lock = Some(lock);
                            break;
                        }
                        Ok(None) => {}
                        Err(error) => {
                            warn!(%error, "cannot lock the cache entry; going on without the lock");
                            break;
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        () = self.cancel.cancelled() => return Err(cancelled()),
                    }
                }
                if let Some(outcome) = reuse::from_cache(
                    cache,
                    expected,
                    &self.output,
                    started,
                    None,
                    &emit,
                    self.events.as_ref(),
                )
                .await
                {
                    return Ok(outcome);
                }
            }
        }
        let result = self.download(started).await;
        match (&result, &self.cache, self.sha256) {
            (Ok(outcome), Some(cache), Some(_)) if outcome.verified => {
                commit::enter_cache(cache, &outcome.path, outcome.sha256, &emit).await;
            }
            (Err(error), Some(cache), Some(expected))
                if matches!(
                    error.kind(),
                    ErrorKind::Network | ErrorKind::HttpStatus(_) | ErrorKind::Protocol
                ) =>
            {
                if let Some(outcome) = reuse::from_cache(
                    cache,
                    expected,
                    &self.output,
                    started,
                    Some(error),
                    &emit,
                    self.events.as_ref(),
                )
                .await
                {
                    return Ok(outcome);
                }
            }
            _ => {}
        }
        result
    }

    /// Attempts until one succeeds, fails for good, or the remote changed
    /// more often than `max_restarts`. A primary URL that fails (at the
    /// probe or later, when no mirror could carry the download) hands over
    /// to the next URL, from the start: bytes of two sources that cannot be
    /// shown to be the same file never share a part file.
    async fn download(&self, started: Instant) -> Result<Outcome> {
        let client = transport::client(&self.config, &self.urls)?;
        let part_path = part_path(&self.output);
        let state_path = state_path(&self.output);
        let claim = Claim {
            output: &self.output,
            expected: self.sha256,
            cancel: &self.cancel,
            started,
        };
        let _lock = match claim.take(&|event| self.emit(event)).await? {
            Claimed::Ours(lock) => lock,
            Claimed::Published(outcome) => return Ok(outcome),
        };
        let mut restarts = 0;
        let mut fresh = false;
        let mut primary = 0;
        loop {
            let result = self
                .attempt(&client, &part_path, &state_path, started, fresh, primary)
                .await;
            match result {
                Err(error)
                    if error.kind() == ErrorKind::RemoteChanged
                        && restarts < self.config.max_restarts =>
                {
                    restarts += 1;
                    warn!(%error, "remote changed; discarding partial data and starting over");
                    self.emit(Event::RemoteChanged {
                        reason: format!(
                            "the remote file changed during the download ({error}); starting over"
                        ),
                    });
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::Network
                            | ErrorKind::Certificate
                            | ErrorKind::HttpStatus(_)
                            | ErrorKind::Protocol
                    ) && primary + 1 < self.urls.len() =>
                {
                    primary += 1;
                    let message = format!(
                        "{error}; trying {} from the start",
                        redact_url(&self.urls[primary])
                    );
                    warn!("{message}");
                    self.emit(Event::Notice { message });
                }
                other => return other,
            }
            fresh = true;
            // Unlink rather than truncate: no byte of the old version can
            // survive, and the previous attempt's hasher, which may still be
            // reading its map of the old file, keeps a valid inode instead of
            // faulting on a truncated one.
            let _ = std::fs::remove_file(&state_path);
            let _ = std::fs::remove_file(&part_path);
        }
    }

    /// The probe, retried like any range: the same backoff, counted in the
    /// download's retries and against its budget.
    async fn probe_with_retries(
        &self,
        client: &Http,
        url: &Url,
        first_len: u64,
        counters: &Counters,
    ) -> Result<(Remote, FirstBody)> {
        let mut jitter = Jitter::new(seed());
        let mut failures = 0;
        loop {
            match probe(client, url, first_len, self.probe_timeout()).await {
                Ok(found) => return Ok(found),
                Err(error)
                    if error.is_retryable()
                        && failures < self.config.retries
                        && counters.retries.load(Ordering::Relaxed)
                            < self.config.download_retries =>
                {
                    failures += 1;
                    let delay = Backoff::DEFAULT.delay(failures, error.retry_after(), &mut jitter);
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    self.emit(Event::retry(
                        ByteRange::new(0, first_len.max(1)),
                        failures,
                        &error,
                        delay,
                    ));
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error.with_attempts(failures + 1)),
            }
        }
    }

    /// One pass of the pipeline over the remote as the probe finds it.
    async fn attempt(
        &self,
        client: &Http,
        part_path: &Path,
        state_path: &Path,
        started: Instant,
        fresh: bool,
        primary_idx: usize,
    ) -> Result<Outcome> {
        let url = self
            .urls
            .get(primary_idx)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no URL given"))?;
        let counters = Arc::new(Counters::default());
        // With a journal on disk the first chunk is probably written already:
        // probe with two bytes instead of a chunk that would be thrown away.
        let probe_len = if !fresh && state_path.exists() {
            crate::probe::SMALL_PROBE_LEN
        } else {
            self.config.chunk_size
        };
        // In a batch, the probe's connection is this download's first share
        // of the budget: it becomes the first connection of the pool, and
        // the share is held until the attempt ends.
        let host = budget_host(url);
        let _first_permit = match &self.config.budget {
            Some(budget) => tokio::select! {
                permit = budget.acquire(&host) => Some(permit),
                () = self.cancel.cancelled() => return Err(cancelled()),
            },
            None => None,
        };
        let (remote, first) = tokio::select! {
            probed = self.probe_with_retries(client, url, probe_len, &counters) => probed?,
            () = self.cancel.cancelled() => return Err(cancelled()),
        };
        debug!(url = %redact_url(&remote.url), total = ?remote.total, ranges = remote.ranges, "probed");
        // A digest the server states must agree before any body beyond the
        // probe's is fetched; without an expected hash the file is held to it.
        let expected = crate::digest::at_probe(self.sha256, &remote, &|event| self.emit(event))?;
        let resume = if fresh {
            None
        } else {
            resume::load(
                state_path,
                part_path,
                &remote,
                &object_identity(url),
                &|event| self.emit(event),
            )
        };
        for message in crate::probe::notices(&remote, &first, self.sha256.is_some()) {
            self.emit(Event::Notice { message });
        }
        let part = open_part(
            part_path,
            self.config.write_mode,
            resume.is_none().then_some(remote.total),
            &|event| self.emit(event),
        )?;
        let ranged = remote.ranges && remote.total.is_some();
        let resuming = resume.is_some();
        let journal_says_etag_unstable = resume.as_ref().is_some_and(|j| j.etag_unstable);
        let checked = match resume {
            Some(journal) => Some(self.check_resume(&part, journal).await?),
            None => None,
        };
        let done = checked
            .as_ref()
            .map(|c| c.journal.done())
            .unwrap_or_default();
        let resumed_bytes = done.covered();
        self.emit(Event::Started {
            url: redact_url(&remote.url),
            total: remote.total,
            ranges: remote.ranges,
            resumed_bytes,
        });
        let journal = if ranged {
            let journal = checked
                .as_ref()
                .map(|c| c.journal.clone())
                .unwrap_or_else(|| new_journal(url, &remote, self.config.chunk_size));
            match JournalWriter::start(state_path, &journal) {
                Ok(writer) => Some(writer),
                Err(error) => {
                    warn!(%error, "cannot write the resume journal; going on without");
                    None
                }
            }
        } else {
            let _ = std::fs::remove_file(state_path);
            None
        };
        let pieces = match (&self.pieces, remote.total) {
            (Some(pieces), Some(total)) if ranged => match pieces.fit(total) {
                Ok(()) => Some(PieceCheck::new(pieces.clone(), total)),
                Err(error) => {
                    self.emit(Event::Notice {
                        message: format!("not using the piece hashes: {error}"),
                    });
                    None
                }
            },
            _ => None,
        };
        // With piece hashes, what an earlier run hashed is hashed again: its
        // pieces are checked first, and the hasher follows only what passed.
        let hash_from = if pieces.is_some() {
            None
        } else {
            checked.and_then(|c| c.hash_from)
        };
        let hasher = start_hasher(&part, hash_from)?;
        if pieces.is_none() {
            hasher.advance(done.prefix_end());
        }
        counters.bytes.store(resumed_bytes, Ordering::Relaxed);
        let ticker = Ticker::start(Arc::clone(&counters), remote.total, self.events.clone());
        let transfer_started = Instant::now();
        let mut sources = vec![Source::new(
            url.clone(),
            remote.url.clone(),
            remote.validator.clone(),
        )];
        if ranged {
            let events = self.events.as_ref();
            let primary = MirrorProbe {
                total: remote.total,
                validator: &remote.validator,
                expected_hash: self.sha256.is_some(),
                timeout: self.probe_timeout(),
            };
            let mut mirrors = self.urls[primary_idx + 1..].to_vec();
            let named = self.named_mirrors(&remote, &mirrors);
            mirrors.extend(named);
            sources.extend(probe_mirrors(client, &mirrors, primary, events).await);
        }
        if journal_says_etag_unstable && sources[0].set_etag_unstable() {
            sources[0]
                .if_range_mode
                .store(crate::sources::IF_RANGE_DATE, Ordering::Relaxed);
        }
        let fetcher = Arc::new(Fetcher {
            pool: Pool::default(),
            client: client.clone(),
            sources: Sources::new(sources),
            total: remote.total,
            started: Instant::now(),
            part,
            scheduler: std::sync::Mutex::new(
                plan(&self.config, remote.total, &done)
                    .steal_horizon(Growth::window_for(remote.latency)),
            ),
            hasher,
            counters: Arc::clone(&counters),
            policy: self.fetch_policy(),
            events: self.events.clone(),
            journal,
            block_size: resume::block_size(remote.total.unwrap_or(0)),
            served: std::sync::Mutex::new(Vec::new()),
            pieces,
            rate: self.config.rate_limit.clone(),
            budget: self
                .config
                .budget
                .clone()
                .map(|budget| (budget, budget_host(url))),
        });
        if let Some(check) = &fetcher.pieces {
            // What an earlier run wrote is checked against the pieces before
            // anything is fetched; a piece that fails is fetched again.
            for range in done.ranges() {
                let bad = check.wrote(&fetcher.part, *range).map_err(|e| {
                    Error::io(format!("cannot read {}", fetcher.part.path().display()), e)
                })?;
                for piece in bad {
                    self.emit(Event::Notice {
                        message: format!(
                            "piece {} (bytes {}) kept from an earlier run does not have its published hash; fetching it again",
                            piece.index, piece.range
                        ),
                    });
                    counters
                        .bytes
                        .fetch_sub(piece.range.len(), Ordering::Relaxed);
                    fetcher.plan().refetch(piece.range);
                }
            }
            let written = fetcher.plan().written().prefix_end();
            fetcher.hasher.advance(written.min(check.verified_prefix()));
        }
        let fetch = async {
            match first {
                FirstBody::Empty => Ok((0, 1)),
                FirstBody::Partial(response, got) if ranged => {
                    // The probe's body is the first chunk of a fresh plan; a
                    // resumed plan starts elsewhere, so it is dropped.
                    let first = (resumed_bytes == 0 && !resuming).then_some((response, got));
                    let limits = PoolLimits {
                        connections: self.config.connections,
                        start: start_connections(&self.config),
                        chunk_size: self.config.chunk_size,
                        window: Growth::window_for(remote.latency),
                    };
                    fetcher.run_pool(first, limits).await
                }
                FirstBody::Whole(response) | FirstBody::Encoded(response, _) => {
                    crate::stream::single_stream(&fetcher, Some(response))
                        .await
                        .map(|written| (written, 1))
                }
                FirstBody::Partial(..) | FirstBody::Refetch(_) | FirstBody::Mangled => {
                    crate::stream::single_stream(&fetcher, None)
                        .await
                        .map(|written| (written, 1))
                }
            }
        };
        let result = tokio::select! {
            result = fetch => result,
            () = self.cancel.cancelled() => Err(cancelled_keeping(if fetcher.journal.is_some() { fetcher.plan().written().covered() } else { 0 })),
        };
        ticker.finish(transfer_started.elapsed());
        if result.is_err()
            && let Some(journal) = &fetcher.journal
        {
            // What the hasher reached, so a re-run need not hash it again.
            journal.hash_point(fetcher.hasher.progress());
        }
        let (written, peak_connections) = result?;
        self.emit(Event::Downloaded { bytes: written });
        let mut digest = commit::finish_hash(&fetcher, written).await?;
        if let Some(want) = expected
            && digest != want
            && ranged
        {
            digest = self.repair(&fetcher, want, &done).await?;
        }
        commit::check_expected(digest, expected, part_path, state_path, url)?;
        self.emit(Event::Verified {
            sha256: digest,
            against_expected: self.sha256.is_some(),
        });
        commit::publish(&fetcher.part, &self.output, state_path)?;
        Ok(Outcome {
            path: self.output.clone(),
            bytes: written,
            sha256: digest,
            verified: self.sha256.is_some(),
            already_present: false,
            from_cache: false,
            elapsed: started.elapsed(),
            retries: counters.retries.load(Ordering::Relaxed),
            resumed_bytes,
            connections: peak_connections.max(1),
        })
    }

    /// The mirrors the primary's response names (`Link: rel=duplicate`)
    /// that are not among the URLs given, said once. They are probed like
    /// any mirror: a size or validator of their own keeps them out (and
    /// without an expected hash, another origin only stands by).
    fn named_mirrors(&self, remote: &Remote, given: &[Url]) -> Vec<Url> {
        let mut named = Vec::new();
        for raw in &remote.duplicates {
            let Ok(url) = parse_url(raw) else { continue };
            let known = self
                .urls
                .iter()
                .chain(given)
                .chain(&named)
                .any(|u| *u == url)
                || url == remote.url;
            if !known {
                named.push(url);
            }
        }
        if !named.is_empty() {
            let shown: Vec<String> = named.iter().map(redact_url).collect();
            self.emit(Event::Notice {
                message: format!(
                    "the server names {} mirror(s) of this file (Link: rel=duplicate): {}",
                    named.len(),
                    shown.join(", ")
                ),
            });
        }
        named
    }

    /// The finished file has another hash than `expected`: repair it (see
    /// [`crate::repair`]) within the budget, and say what was wrong. On
    /// failure the part file and journal go, as for any mismatch.
    async fn repair(
        &self,
        fetcher: &Arc<Fetcher>,
        expected: Sha256Hex,
        resumed: &crate::range::RangeSet,
    ) -> Result<Sha256Hex> {
        let total = fetcher.total.unwrap_or(0);
        let budget = self.config.repair_budget.unwrap_or(total);
        if budget == 0 {
            // As for any mismatch nothing repairs: the bytes are not the file.
            let _ = std::fs::remove_file(fetcher.part.path());
            let _ = std::fs::remove_file(state_path(&self.output));
            return Err(Error::new(
                ErrorKind::ChecksumMismatch,
                format!("checksum mismatch: expected sha256 {expected} (repair is off)"),
            ));
        }
        let message = format!(
            "the file does not have the expected SHA-256; looking for the bad stretches (fetching at most {} again)",
            format_size(budget)
        );
        warn!("{message}");
        self.emit(Event::Notice { message });
        // New connections: a bad answer that came over a kept-alive one
        // (or from a cache in the way) is not asked again the same way.
        let fresh = transport::client(&self.config, &self.urls)?;
        let policy = crate::repair::RepairPolicy {
            client: &fresh,
            budget,
            through_proxy: self.config.proxy.is_some(),
        };
        match crate::repair::repair(fetcher, expected, resumed, policy).await {
            Ok(repaired) => {
                let shown: Vec<String> = repaired
                    .pieces
                    .iter()
                    .map(crate::repair::describe)
                    .collect();
                let message = format!(
                    "repaired: {} had other bytes than two other copies agree on; replaced ({} fetched again), and the file now has the expected SHA-256",
                    shown.join("; "),
                    format_size(repaired.fetched)
                );
                warn!("{message}");
                self.emit(Event::Notice { message });
                self.emit(Event::Repaired {
                    pieces: repaired.pieces,
                    fetched: repaired.fetched,
                });
                Ok(expected)
            }
            Err(error) => {
                let _ = std::fs::remove_file(fetcher.part.path());
                let _ = std::fs::remove_file(state_path(&self.output));
                Err(error)
            }
        }
    }

    /// Checks every block the journal records against the part file and
    /// says what no longer matched (lost writes after a power cut, a part
    /// file changed behind the journal's back): those blocks are fetched
    /// again.
    async fn check_resume(&self, part: &PartFile, journal: Journal) -> Result<Checked> {
        let reader = part
            .reader()
            .map_err(|e| Error::io(format!("cannot open {}", part.path().display()), e))?;
        let path = part.path().to_owned();
        let checked = tokio::task::spawn_blocking(move || {
            resume::check(&PartFile::from_file(reader, path), journal)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, "resume check task failed").with_source(e))?
        .map_err(|e| Error::io(format!("cannot read {}", part.path().display()), e))?;
        if checked.damaged > 0 {
            let message = format!(
                "{} of the bytes the resume state recorded are no longer in {} (lost writes, or the file was changed); fetching them again",
                format_size(checked.damaged),
                part.path().display()
            );
            warn!("{message}");
            self.emit(Event::Notice { message });
        }
        Ok(checked)
    }

    fn fetch_policy(&self) -> FetchPolicy {
        FetchPolicy {
            retries: self.config.retries,
            download_retries: self.config.download_retries,
            stall_timeout: self.config.stall_timeout,
            first_byte_timeout: self.config.first_byte(),
            backoff: Backoff::DEFAULT,
            take_over: TakeOver {
                min_age: Duration::from_secs(2),
                slow_fraction: 0.25,
            },
            idle_poll: Duration::from_millis(100),
            expected_hash: self.sha256.is_some(),
        }
    }
}

/// A new journal for this remote: its fixed fields, nothing recorded yet.
fn new_journal(url: &Url, remote: &Remote, chunk_size: u64) -> Journal {
    Journal {
        etag: remote.validator.etag.clone(),
        last_modified: remote.validator.last_modified.clone(),
        ..Journal::new(object_identity(url), remote.total.unwrap_or(0), chunk_size)
    }
}

/// Starts the hasher on the part file's own handle, from a recorded state
/// whose whole prefix the resume check found intact, or from byte 0.
fn start_hasher(part: &PartFile, from: Option<HashProgress>) -> Result<HashFollower> {
    let reader = part
        .reader()
        .map_err(|e| Error::io(format!("cannot open {}", part.path().display()), e))?;
    HashFollower::start(reader, from).map_err(|e| Error::io("cannot start the hasher thread", e))
}

/// What a batch's per-host cap counts this download against: the host of
/// the URL it started from.
fn budget_host(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_owned()
}

/// How many connections the pool opens at first. Under a bandwidth cap,
/// one per 4 MiB/s of it (at least one): more could not raise throughput,
/// and the pool grows from there only if measuring shows they do.
fn start_connections(config: &Config) -> usize {
    let start = config.start_connections;
    match config.rate_limit.as_ref().map(RateLimit::rate) {
        Some(rate) if rate > 0 => {
            let useful = usize::try_from(rate / (4 << 20))
                .unwrap_or(usize::MAX)
                .max(1);
            start.min(useful)
        }
        _ => start,
    }
}

pub(crate) fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
}

/// The plan of a ranged download: chunks, aligned and rotated as configured.
fn plan(config: &Config, total: Option<u64>, done: &crate::range::RangeSet) -> Scheduler {
    let plan = Scheduler::new(
        total.unwrap_or(0),
        config.chunk_size,
        config.min_piece,
        done,
    )
    .aligned(config.align);
    match config.rotation_seed {
        Some(seed) => plan.rotated(seed),
        None => plan,
    }
}
