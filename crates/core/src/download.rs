//! The orchestrator: [`Download`] and its builder run probe → plan → fetch →
//! verify → commit, and restart on a changed remote.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::{Client, Url};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::cache::Cache;
use crate::cancel::CancelToken;
use crate::checksums::Sha256Hex;
use crate::error::{Error, ErrorKind, Result, redact_url};
use crate::event::{Event, EventSink};
use crate::fetch::{Counters, FetchPolicy, Fetcher, Pool, Source};
use crate::journal::Journal;
use crate::plan::{Scheduler, TakeOver};
use crate::probe::{FirstBody, Remote, probe};
use crate::range::RangeSet;
use crate::retry::{Backoff, Jitter};
use crate::size::format_size;
use crate::store::{PartFile, WriteMode, free_space, parent_dir, sync_dir, write_atomic};
use crate::verify::{HashFollower, HashProgress, hash_file};

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
    /// range retried.
    pub stall_timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// How chunk bytes are written to the part file.
    pub write_mode: WriteMode,
    /// Proxy for all requests; `None` means a direct connection (the engine
    /// never reads the environment: callers decide).
    pub proxy: Option<String>,
    /// Extra trusted root certificates, PEM.
    pub ca_certs_pem: Vec<Vec<u8>>,
    /// How often a changed remote may restart the download.
    pub max_restarts: u32,
    /// How often progress is flushed and recorded for resume (at least; a
    /// slow device spaces checkpoints out). A `kill -9` loses at most about
    /// this much transfer time.
    pub checkpoint_interval: Duration,
    /// Retries allowed for the whole download, over all ranges.
    pub download_retries: u64,
    /// Connections opened at first; more are added, up to `connections`,
    /// only while that raises throughput, and taken back when it did not.
    pub start_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connections: 8,
            chunk_size: 8 << 20,
            min_piece: 1 << 20,
            retries: 5,
            stall_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(15),
            write_mode: WriteMode::Pwrite,
            proxy: None,
            ca_certs_pem: Vec::new(),
            max_restarts: 3,
            checkpoint_interval: Duration::from_millis(25),
            download_retries: 200,
            start_connections: 4,
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
    events: Option<EventSink>,
    cancel: CancelToken,
    cache: Option<Cache>,
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
    peak_connections: std::sync::atomic::AtomicUsize,
}

impl Download {
    /// Starts building a download of `url`.
    pub fn builder(url: impl Into<String>) -> DownloadBuilder {
        DownloadBuilder {
            urls: vec![url.into()],
            output: None,
            sha256: None,
            config: Config::default(),
            events: None,
            cancel: CancelToken::new(),
            cache: None,
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

    /// All settings at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Most connections open at once.
    pub fn connections(mut self, n: usize) -> Self {
        self.config.connections = n;
        self
    }

    /// Bytes per ranged request.
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.config.chunk_size = bytes;
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

    /// Uses a verified, content-addressed cache: with an expected hash, a
    /// cached copy is re-verified and placed at the output without any
    /// request; a verified download is added to it; and when the network
    /// fails, a copy that appeared meanwhile is served instead.
    pub fn cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Checks the settings and makes the [`Download`].
    pub fn build(self) -> Result<Download> {
        let invalid = |m: String| Error::new(ErrorKind::InvalidInput, m);
        if !(1..=64).contains(&self.config.connections) {
            return Err(invalid(format!(
                "connections must be between 1 and 64, not {}",
                self.config.connections
            )));
        }
        if self.config.chunk_size == 0 {
            return Err(invalid("chunk size must be at least 1 byte".into()));
        }
        let mut urls = Vec::new();
        for raw in &self.urls {
            let url = Url::parse(raw)
                .map_err(|e| invalid(format!("invalid URL {raw:?}")).with_source(e))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(format!(
                    "unsupported URL scheme {:?}: use http or https",
                    url.scheme()
                )));
            }
            urls.push(url);
        }
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
            peak_connections: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}

/// `<out>.part.state`: the resume journal, beside the part file.
pub fn state_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".part.state");
    PathBuf::from(name)
}

fn cancelled() -> Error {
    Error::new(
        ErrorKind::Cancelled,
        "cancelled; partial data kept for resume",
    )
}

/// Flushes the part file, then records what it durably holds. The order is
/// the whole point: a journal never names a byte that is not on disk.
fn checkpoint(fetcher: &Fetcher, template: &Journal, state_path: &Path) -> std::io::Result<()> {
    // Hash progress first: the written set only grows, so it then covers at
    // least the hashed prefix.
    let progress = fetcher.hasher.progress();
    let done = fetcher
        .scheduler
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .written()
        .clone();
    fetcher.part.sync_data()?;
    let journal = Journal {
        done,
        hashed: progress.hashed,
        hash_state: progress.state,
        ..template.clone()
    };
    write_atomic(state_path, &journal.encode())
}

/// `<out>.part`, beside the output.
pub fn part_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

impl Download {
    /// Where the file will be.
    pub fn output(&self) -> &Path {
        &self.output
    }

    fn emit(&self, event: Event) {
        if let Some(sink) = &self.events {
            sink(event);
        }
    }

    fn client(&self) -> Result<Client> {
        let mut builder = Client::builder()
            .connect_timeout(self.config.connect_timeout)
            .pool_max_idle_per_host(self.config.connections)
            .tcp_nodelay(true)
            .redirect(redirect_policy())
            .user_agent(concat!("rangefetch/", env!("CARGO_PKG_VERSION")));
        builder = match &self.config.proxy {
            Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy).map_err(|e| {
                Error::new(ErrorKind::InvalidInput, "invalid proxy URL").with_source(e)
            })?),
            None => builder.no_proxy(),
        };
        for pem in &self.config.ca_certs_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                Error::new(ErrorKind::InvalidInput, "invalid CA certificate PEM").with_source(e)
            })?;
            if certs.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "no certificate in the CA PEM file",
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        builder.build().map_err(|e| {
            Error::new(ErrorKind::InvalidInput, "cannot set up the HTTP client").with_source(e)
        })
    }

    /// Runs the download to completion.
    pub async fn run(&self) -> Result<Outcome> {
        let started = Instant::now();
        let mut _cache_lock = None;
        if let Some(expected) = self.sha256 {
            if let Some(outcome) = self.already_present(expected, started).await? {
                return Ok(outcome);
            }
            if let Some(cache) = &self.cache {
                // Another process fetching the same file holds this lock; we
                // wait for it and then, most likely, hit the cache.
                let locker = cache.clone();
                let lock = tokio::select! {
                    lock = tokio::task::spawn_blocking(move || locker.lock(&expected)) => lock,
                    () = self.cancel.cancelled() => return Err(cancelled()),
                };
                match lock {
                    Ok(Ok(lock)) => _cache_lock = Some(lock),
                    Ok(Err(error)) => {
                        warn!(%error, "cannot lock the cache entry; going on without the lock")
                    }
                    Err(error) => warn!(%error, "cache lock task failed"),
                }
                if let Some(outcome) = self.serve_from_cache(cache, expected, started, None).await {
                    return Ok(outcome);
                }
            }
        }
        let result = self.download(started).await;
        match (&result, &self.cache, self.sha256) {
            (Ok(outcome), Some(cache), Some(_)) if outcome.verified => {
                let cache = cache.clone();
                let path = outcome.path.clone();
                let hash = outcome.sha256;
                match tokio::task::spawn_blocking(move || cache.insert(&path, &hash)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => self.emit(Event::Notice {
                        message: format!("could not add the file to the cache: {error}"),
                    }),
                    Err(error) => warn!(%error, "cache insert task failed"),
                }
            }
            (Err(error), Some(cache), Some(expected))
                if matches!(
                    error.kind(),
                    ErrorKind::Network | ErrorKind::HttpStatus(_) | ErrorKind::Protocol
                ) =>
            {
                if let Some(outcome) = self
                    .serve_from_cache(cache, expected, started, Some(error))
                    .await
                {
                    return Ok(outcome);
                }
            }
            _ => {}
        }
        result
    }

    /// Places a verified cached copy at the output, if the cache has one.
    async fn serve_from_cache(
        &self,
        cache: &Cache,
        expected: Sha256Hex,
        started: Instant,
        network_error: Option<&Error>,
    ) -> Option<Outcome> {
        let cache = cache.clone();
        let output = self.output.clone();
        let placed = tokio::task::spawn_blocking(move || cache.place(&expected, &output)).await;
        let placement = match placed {
            Ok(Ok(placement)) => placement,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Ok(Err(error)) => {
                self.emit(Event::Notice {
                    message: format!("cannot use the cached copy: {error}"),
                });
                return None;
            }
            Err(_) => return None,
        };
        let bytes = std::fs::metadata(&self.output)
            .map(|m| m.len())
            .unwrap_or(0);
        let why = match network_error {
            Some(error) => format!("the download failed ({error}); "),
            None => String::new(),
        };
        self.emit(Event::Notice {
            message: format!("{why}served from the verified cache ({placement})"),
        });
        Some(Outcome {
            path: self.output.clone(),
            bytes,
            sha256: expected,
            verified: true,
            already_present: false,
            from_cache: true,
            elapsed: started.elapsed(),
            retries: 0,
            resumed_bytes: 0,
            connections: 0,
        })
    }

    async fn download(&self, started: Instant) -> Result<Outcome> {
        let client = self.client()?;
        let part_path = part_path(&self.output);
        let state_path = state_path(&self.output);
        let mut restarts = 0;
        let mut fresh = false;
        loop {
            match self
                .attempt(&client, &part_path, &state_path, started, fresh)
                .await
            {
                Err(error)
                    if error.kind() == ErrorKind::RemoteChanged
                        && restarts < self.config.max_restarts =>
                {
                    restarts += 1;
                    fresh = true;
                    warn!(%error, "remote changed; discarding partial data and starting over");
                    self.emit(Event::RemoteChanged {
                        reason: format!(
                            "the remote file changed during the download ({error}); starting over"
                        ),
                    });
                    // Unlink rather than truncate: no byte of the old version
                    // can survive, and the previous attempt's hasher, which
                    // may still be reading its map of the old file, keeps a
                    // valid inode instead of faulting on a truncated one.
                    let _ = std::fs::remove_file(&state_path);
                    let _ = std::fs::remove_file(&part_path);
                }
                other => return other,
            }
        }
    }

    async fn already_present(
        &self,
        expected: Sha256Hex,
        started: Instant,
    ) -> Result<Option<Outcome>> {
        let path = self.output.clone();
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let digest = tokio::task::spawn_blocking(move || hash_file(&path))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, "hashing task failed").with_source(e))?
            .map_err(|e| Error::io(format!("cannot read {}", self.output.display()), e))?;
        if digest != expected {
            return Ok(None);
        }
        Ok(Some(Outcome {
            path: self.output.clone(),
            bytes: meta.len(),
            sha256: digest,
            verified: true,
            already_present: true,
            from_cache: false,
            elapsed: started.elapsed(),
            retries: 0,
            resumed_bytes: meta.len(),
            connections: 0,
        }))
    }

    async fn probe_with_retries(
        &self,
        client: &Client,
        url: &Url,
        first_len: u64,
    ) -> Result<(Remote, FirstBody)> {
        let mut jitter = Jitter::new(seed());
        let mut failures = 0;
        loop {
            match probe(
                client,
                url,
                first_len,
                self.config.stall_timeout.max(self.config.connect_timeout),
            )
            .await
            {
                Ok(found) => return Ok(found),
                Err(error) if error.is_retryable() && failures < self.config.retries => {
                    failures += 1;
                    let delay = Backoff::DEFAULT.delay(failures, error.retry_after(), &mut jitter);
                    self.emit(Event::retry(
                        crate::range::ByteRange::new(0, self.config.chunk_size),
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

    /// Reads the resume journal and decides whether it may be trusted for
    /// this remote; says why not when it may not.
    fn load_resume(
        &self,
        state_path: &Path,
        part_path: &Path,
        remote: &Remote,
        url: &Url,
    ) -> Option<Journal> {
        let bytes = match std::fs::read(state_path) {
            Ok(bytes) => bytes,
            Err(_) => return None,
        };
        let notice = |message: String| {
            warn!("{message}");
            self.emit(Event::Notice { message });
            None
        };
        let journal = match Journal::decode(&bytes) {
            Ok(journal) => journal,
            Err(error) => {
                return notice(format!(
                    "ignoring resume state {}: {error}; starting over",
                    state_path.display()
                ));
            }
        };
        if journal.url != redact_url(url) {
            return notice(format!(
                "resume state {} is for another URL ({}); starting over",
                state_path.display(),
                journal.url
            ));
        }
        let same_total = remote.total == Some(journal.total);
        let same_validator = remote.validator.etag == journal.etag
            && remote.validator.last_modified == journal.last_modified;
        if !same_total || !same_validator {
            let what = if !same_total {
                format!(
                    "size {} → {}",
                    journal.total,
                    remote.total.map_or("unknown".into(), |t| t.to_string())
                )
            } else {
                "its ETag or Last-Modified differ".to_owned()
            };
            let reason = format!(
                "the remote file changed since the last run ({what}); discarding {} downloaded bytes and starting over",
                journal.done.covered()
            );
            warn!("{reason}");
            self.emit(Event::RemoteChanged { reason });
            return None;
        }
        if !remote.ranges {
            return notice("the server no longer serves byte ranges; starting over".to_owned());
        }
        let part_len = std::fs::metadata(part_path).map(|m| m.len()).unwrap_or(0);
        if part_len != journal.total {
            return notice(format!(
                "{} is not the size the resume state expects; starting over",
                part_path.display()
            ));
        }
        Some(journal)
    }

    async fn attempt(
        &self,
        client: &Client,
        part_path: &Path,
        state_path: &Path,
        started: Instant,
        fresh: bool,
    ) -> Result<Outcome> {
        let url = self
            .urls
            .first()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no URL given"))?;
        // With a journal on disk the first chunk is probably written already:
        // probe with one byte instead of a chunk that would be thrown away.
        let probe_len = if !fresh && state_path.exists() {
            1
        } else {
            self.config.chunk_size
        };
        let (remote, first) = tokio::select! {
            probed = self.probe_with_retries(client, url, probe_len) => probed?,
            () = self.cancel.cancelled() => return Err(cancelled()),
        };
        debug!(url = %redact_url(&remote.url), total = ?remote.total, ranges = remote.ranges, "probed");
        let resume = if fresh {
            None
        } else {
            self.load_resume(state_path, part_path, &remote, url)
        };
        let resumed_bytes = resume.as_ref().map_or(0, |j| j.done.covered());
        self.emit(Event::Started {
            url: redact_url(&remote.url),
            total: remote.total,
            ranges: remote.ranges,
            resumed_bytes,
        });
        let io_err = |what: &str, e| Error::io(format!("cannot {what} {}", part_path.display()), e);
        let part =
            PartFile::open(part_path, self.config.write_mode).map_err(|e| io_err("create", e))?;
        if resume.is_none() {
            let _ = std::fs::remove_file(state_path);
            part.set_len(0).map_err(|e| io_err("truncate", e))?;
            if let Some(total) = remote.total {
                self.reserve_space(&part, total)?;
            }
        }
        let done = resume.as_ref().map(|j| j.done.clone()).unwrap_or_default();
        let hash_resume = resume.as_ref().map(|j| HashProgress {
            hashed: j.hashed,
            state: j.hash_state.clone(),
        });
        let hasher_file = std::fs::File::open(part_path).map_err(|e| io_err("open", e))?;
        let hasher = HashFollower::start(hasher_file, hash_resume)
            .map_err(|e| Error::io("cannot start the hasher thread", e))?;
        hasher.advance(done.prefix_end());
        let counters = Arc::new(Counters::default());
        counters.bytes.store(resumed_bytes, Ordering::Relaxed);
        let policy = FetchPolicy {
            retries: self.config.retries,
            download_retries: self.config.download_retries,
            stall_timeout: self.config.stall_timeout,
            backoff: Backoff::DEFAULT,
            take_over: TakeOver {
                min_age: Duration::from_secs(2),
                slow_fraction: 0.25,
            },
            idle_poll: Duration::from_millis(100),
        };
        let ticker = self.spawn_ticker(Arc::clone(&counters), remote.total);
        let ranged = remote.ranges && remote.total.is_some();
        let template = Journal {
            url: redact_url(url),
            total: remote.total.unwrap_or(0),
            chunk_size: self.config.chunk_size,
            etag: remote.validator.etag.clone(),
            last_modified: remote.validator.last_modified.clone(),
            done: RangeSet::new(),
            hashed: 0,
            hash_state: Vec::new(),
        };
        let scheduler = Scheduler::new(
            remote.total.unwrap_or(0),
            self.config.chunk_size,
            self.config.min_piece,
            &done,
        );
        let mut sources = vec![Source::new(
            url.clone(),
            remote.url.clone(),
            remote.validator.clone(),
        )];
        if ranged {
            sources.extend(self.probe_mirrors(client, remote.total).await);
        }
        let fetcher = Arc::new(Fetcher {
            pool: Pool::default(),
            client: client.clone(),
            sources,
            total: remote.total,
            started: Instant::now(),
            part,
            scheduler: std::sync::Mutex::new(scheduler),
            hasher,
            counters: Arc::clone(&counters),
            policy,
            events: self.events.clone(),
        });
        let stop_checkpoints = CancelToken::new();
        let checkpointer = ranged.then(|| {
            let fetcher = Arc::clone(&fetcher);
            let template = template.clone();
            let state_path = state_path.to_owned();
            let interval = self.config.checkpoint_interval;
            let stop = stop_checkpoints.clone();
            tokio::spawn(async move {
                // A checkpoint flushes data to the device; when that is slow,
                // checkpoints space out so they never take over a fifth of
                // the time.
                let mut pause = interval;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.cancelled() => break,
                    }
                    let began = Instant::now();
                    let fetcher = Arc::clone(&fetcher);
                    let template = template.clone();
                    let state_path = state_path.clone();
                    let saved = tokio::task::spawn_blocking(move || {
                        checkpoint(&fetcher, &template, &state_path)
                    })
                    .await;
                    if let Ok(Err(error)) = saved {
                        warn!(%error, "cannot record progress for resume");
                    }
                    pause = interval.max(began.elapsed() * 2);
                }
            })
        });
        let fetch = async {
            match first {
                FirstBody::Empty => Ok(0),
                FirstBody::Partial(response, got) if ranged => {
                    // The probe's body is the first chunk of a fresh plan; a
                    // resumed plan starts elsewhere, so it is dropped.
                    let first = resume.is_none().then_some((response, got));
                    self.fetch_ranges(&fetcher, first, Growth::window_for(remote.latency))
                        .await
                }
                FirstBody::Partial(response, _) | FirstBody::Whole(response) => {
                    crate::stream::single_stream(&fetcher, response).await
                }
            }
        };
        let result = tokio::select! {
            result = fetch => result,
            () = self.cancel.cancelled() => Err(cancelled()),
        };
        ticker.abort();
        if let Some(checkpointer) = checkpointer {
            // Stop between checkpoints, never inside one: a checkpoint still
            // writing after the commit would leave a stale journal behind.
            stop_checkpoints.cancel();
            let _ = checkpointer.await;
            if result
                .as_ref()
                .is_err_and(|e| e.kind() != ErrorKind::RemoteChanged)
            {
                // Record what is durably on disk so a re-run resumes from here.
                let fetcher = Arc::clone(&fetcher);
                let template = template.clone();
                let state_path = state_path.to_owned();
                let _ = tokio::task::spawn_blocking(move || {
                    checkpoint(&fetcher, &template, &state_path)
                })
                .await;
            }
        }
        let written = result?;
        self.emit(Event::Downloaded { bytes: written });
        let finisher = Arc::clone(&fetcher);
        let (digest, hashed) = tokio::task::spawn_blocking(move || finisher.hasher.finish())
            .await
            .map_err(|e| Error::new(ErrorKind::Io, "hashing task failed").with_source(e))?
            .map_err(|e| io_err("hash", e))?;
        if hashed != written {
            return Err(Error::new(
                ErrorKind::Io,
                format!("internal: hashed {hashed} of {written} bytes"),
            ));
        }
        if let Some(expected) = self.sha256
            && digest != expected
        {
            // These bytes are not the file asked for; keeping them would
            // only make a re-run fail the same way.
            let _ = std::fs::remove_file(part_path);
            let _ = std::fs::remove_file(state_path);
            return Err(Error::new(
                ErrorKind::ChecksumMismatch,
                format!("checksum mismatch: expected sha256 {expected}, got {digest}"),
            )
            .with_url(url));
        }
        self.emit(Event::Verified {
            sha256: digest,
            against_expected: self.sha256.is_some(),
        });
        self.commit(&fetcher.part, part_path)?;
        let _ = std::fs::remove_file(state_path);
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
            connections: self.peak_connections.load(Ordering::Relaxed).max(1),
        })
    }

    /// Probes every mirror for its size and validator; a mirror that cannot
    /// be reached, serves no ranges, or disagrees on the size is dropped
    /// with a warning.
    async fn probe_mirrors(&self, client: &Client, total: Option<u64>) -> Vec<Source> {
        let mut probes = JoinSet::new();
        for (idx, mirror) in self.urls.iter().enumerate().skip(1) {
            let client = client.clone();
            let mirror = mirror.clone();
            let timeout = self.config.stall_timeout.max(self.config.connect_timeout);
            probes.spawn(async move {
                (
                    idx,
                    mirror.clone(),
                    probe(&client, &mirror, 1, timeout).await,
                )
            });
        }
        let mut found = Vec::new();
        while let Some(Ok((idx, mirror, result))) = probes.join_next().await {
            let reason = match result {
                Ok((remote, _)) if remote.ranges && remote.total == total => {
                    found.push((idx, Source::new(mirror, remote.url, remote.validator)));
                    continue;
                }
                Ok((remote, _)) if !remote.ranges => "it does not serve byte ranges".to_owned(),
                Ok((remote, _)) => format!(
                    "its size ({} bytes) differs from the primary's ({} bytes)",
                    remote.total.unwrap_or(0),
                    total.unwrap_or(0)
                ),
                Err(error) => error.to_string(),
            };
            let url = redact_url(&mirror);
            warn!(%url, %reason, "dropping mirror");
            self.emit(Event::MirrorDropped { url, reason });
        }
        found.sort_by_key(|(idx, _)| *idx);
        found.into_iter().map(|(_, source)| source).collect()
    }

    /// Checks free space and preallocates the part file, so a full disk
    /// fails before the download rather than half-way.
    fn reserve_space(&self, part: &PartFile, total: u64) -> Result<()> {
        let dir = parent_dir(part.path());
        let allocated = part.allocated().unwrap_or(0);
        let needed = total.saturating_sub(allocated);
        if let Ok(free) = free_space(dir)
            && needed > free
        {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "not enough disk space in {}: needs {}, {} free",
                    dir.display(),
                    format_size(needed),
                    format_size(free)
                ),
            ));
        }
        part.preallocate(total).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                Error::io(
                    format!(
                        "not enough disk space in {}: needs {}",
                        dir.display(),
                        format_size(needed)
                    ),
                    e,
                )
            } else {
                Error::io(format!("cannot allocate {}", part.path().display()), e)
            }
        })
    }

    /// Runs the connection pool over a ranged remote; returns bytes written.
    async fn fetch_ranges(
        &self,
        fetcher: &Arc<Fetcher>,
        first: Option<(reqwest::Response, crate::range::ByteRange)>,
        window: Duration,
    ) -> Result<u64> {
        let total = fetcher.total.unwrap_or(0);
        let first = match first {
            Some((response, got)) => {
                let mut plan = fetcher.plan();
                // The probe asked for exactly one chunk at 0, which is what a
                // fresh plan hands out first.
                match plan.next_assignment() {
                    Some(a) if a.range.start == 0 && got.end <= a.range.end => Some((a, response)),
                    _ => {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            "internal: first chunk does not match the probe",
                        ));
                    }
                }
            }
            None => None,
        };
        let remaining = total.saturating_sub(fetcher.plan().written().covered());
        let n_chunks = remaining.div_ceil(self.config.chunk_size).max(1);
        let ceiling = (self.config.connections as u64).min(n_chunks) as usize;
        let mut workers = JoinSet::new();
        let base_seed = seed();
        let start = self.config.start_connections.clamp(1, ceiling);
        // Before any connection runs: one that finds the pool above its
        // desired size closes.
        fetcher.pool.set_desired(start);
        fetcher.pool.joined();
        workers.spawn(Arc::clone(fetcher).worker(first, base_seed));
        let mut spawned = 1;
        while spawned < start {
            fetcher.pool.joined();
            workers.spawn(Arc::clone(fetcher).worker(None, base_seed.wrapping_add(spawned as u64)));
            spawned += 1;
        }
        self.peak_connections.fetch_max(spawned, Ordering::Relaxed);
        let mut growth = Growth::new(spawned, ceiling, window);
        // Several looks per window, so a window ends close to its length.
        let mut tick = tokio::time::interval(window / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                joined = workers.join_next() => match joined {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(error))) => return Err(error),
                    Some(Err(join_error)) => {
                        return Err(Error::new(ErrorKind::Io, "a connection task failed").with_source(join_error));
                    }
                },
                _ = tick.tick() => {
                    let pending = !fetcher.plan().pending().is_empty();
                    let bytes = fetcher.counters.bytes.load(Ordering::Relaxed);
                    match growth.observe(Instant::now(), bytes, pending) {
                        Resize::Hold => {}
                        Resize::GrowTo(target) => {
                            fetcher.pool.set_desired(target);
                            while fetcher.pool.live() < target {
                                fetcher.pool.joined();
                                workers.spawn(Arc::clone(fetcher).worker(None, base_seed.wrapping_add(spawned as u64)));
                                spawned += 1;
                            }
                            debug!(connections = target, "more connections add throughput; growing");
                            self.peak_connections.fetch_max(fetcher.pool.live(), Ordering::Relaxed);
                        }
                        Resize::ShrinkTo(target) => {
                            debug!(connections = target, "more connections did not add throughput; shrinking");
                            fetcher.pool.set_desired(target);
                        }
                    }
                }
            }
        }
        let plan = fetcher.plan();
        if !plan.is_complete() {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "internal: connections ended with {} of {total} bytes written",
                    plan.written().covered()
                ),
            ));
        }
        Ok(total)
    }

    fn spawn_ticker(
        &self,
        counters: Arc<Counters>,
        total: Option<u64>,
    ) -> tokio::task::JoinHandle<()> {
        let events = self.events.clone();
        tokio::spawn(async move {
            let Some(events) = events else { return };
            let period = Duration::from_millis(250);
            let mut interval = tokio::time::interval(period);
            let mut last_bytes = 0u64;
            let mut last_at = Instant::now();
            let mut rate = 0f64;
            loop {
                interval.tick().await;
                let bytes = counters.bytes.load(Ordering::Relaxed);
                let now = Instant::now();
                let dt = now.duration_since(last_at).as_secs_f64();
                if dt > 0.0 {
                    let instant_rate = (bytes - last_bytes) as f64 / dt;
                    rate = if rate == 0.0 {
                        instant_rate
                    } else {
                        0.7 * rate + 0.3 * instant_rate
                    };
                }
                last_bytes = bytes;
                last_at = now;
                events(Event::Progress {
                    bytes,
                    total,
                    rate_bps: rate as u64,
                    connections: counters.active.load(Ordering::Relaxed),
                    retries: counters.retries.load(Ordering::Relaxed),
                });
            }
        })
    }

    /// Flushes, renames `<out>.part` to `<out>` atomically and makes the
    /// rename durable.
    fn commit(&self, part: &PartFile, part_path: &Path) -> Result<()> {
        part.sync_all()
            .map_err(|e| Error::io(format!("cannot flush {}", part_path.display()), e))?;
        std::fs::rename(part_path, &self.output).map_err(|e| {
            Error::io(
                format!(
                    "cannot rename {} to {}",
                    part_path.display(),
                    self.output.display()
                ),
                e,
            )
        })?;
        let dir = match self.output.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        sync_dir(&dir)
            .map_err(|e| Error::io(format!("cannot sync directory {}", dir.display()), e))?;
        Ok(())
    }
}

/// Decides how many connections to keep open. Every `WINDOW` it compares
/// throughput with the window before the last change:
///
/// - nearly linear gain (≥ `LINEAR`): the server caps each connection, so
///   quadruple (up to the ceiling);
/// - a solid gain (≥ `GAIN`): double again;
/// - almost nothing (< `WORTHLESS`): the extra connections only cost CPU (and
///   starve the hasher): go back to the previous count and stay there;
/// - anything else: stay.
///
/// On a fast link more connections only cost CPU, on a per-connection-capped
/// link they multiply throughput; this finds out which link it is on within
/// a few windows.
#[derive(Debug)]
struct Growth {
    connections: usize,
    ceiling: usize,
    window: Duration,
    window_start: Option<(Instant, u64)>,
    before_change: Option<(usize, f64)>,
    settled: bool,
}

/// What [`Growth`] wants done with the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resize {
    Hold,
    /// Open connections up to this many.
    GrowTo(usize),
    /// Let connections above this many finish their range and close.
    ShrinkTo(usize),
}

impl Growth {
    /// The shortest window: on loopback or a LAN, long enough for a new
    /// connection to be streaming at full rate for most of it.
    const MIN_WINDOW: Duration = Duration::from_millis(100);
    /// The longest: a slow link finds its connection count within seconds.
    const MAX_WINDOW: Duration = Duration::from_secs(1);
    const LINEAR: f64 = 1.7;
    const GAIN: f64 = 1.25;
    const WORTHLESS: f64 = 1.1;

    /// A measurement window for a link whose probe took `latency` (connect,
    /// TLS and one request: three or four round trips). New connections
    /// spend that long before their first byte and then leave TCP slow
    /// start, so a window of a few such latencies measures them at speed.
    fn window_for(latency: Duration) -> Duration {
        (latency * 3).clamp(Self::MIN_WINDOW, Self::MAX_WINDOW)
    }

    fn new(connections: usize, ceiling: usize, window: Duration) -> Self {
        Self {
            connections,
            ceiling,
            window,
            window_start: None,
            before_change: None,
            settled: connections >= ceiling,
        }
    }

    /// Feeds a sample of total bytes written; `pending` says whether work is
    /// still waiting to be handed out (no point growing otherwise).
    fn observe(&mut self, now: Instant, bytes: u64, pending: bool) -> Resize {
        if self.settled || !pending {
            return Resize::Hold;
        }
        let Some((start, start_bytes)) = self.window_start else {
            self.window_start = Some((now, bytes));
            return Resize::Hold;
        };
        let elapsed = now.duration_since(start);
        if elapsed < self.window {
            return Resize::Hold;
        }
        let rate = bytes.saturating_sub(start_bytes) as f64 / elapsed.as_secs_f64();
        self.window_start = Some((now, bytes));
        let target = match self.before_change {
            None => self.connections * 2,
            Some((previous, before)) => {
                let gain = if before > 0.0 {
                    rate / before
                } else {
                    f64::INFINITY
                };
                if gain >= Self::LINEAR {
                    self.connections * 4
                } else if gain >= Self::GAIN {
                    self.connections * 2
                } else if gain < Self::WORTHLESS {
                    self.settled = true;
                    self.connections = previous;
                    return Resize::ShrinkTo(previous);
                } else {
                    self.settled = true;
                    return Resize::Hold;
                }
            }
        };
        let target = target.min(self.ceiling);
        if target == self.connections {
            // Already at the ceiling, and the last step paid: nothing is
            // left to try.
            self.settled = true;
            return Resize::Hold;
        }
        self.before_change = Some((self.connections, rate));
        self.connections = target;
        // One more window is still measured at the ceiling, so a jump that
        // did not pay can be taken back.
        Resize::GrowTo(target)
    }
}

/// Follows up to 10 redirects and refuses a downgrade from HTTPS to HTTP.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|prev| prev.scheme() == "https")
            && attempt.url().scheme() == "http";
        if downgrade {
            attempt.error("refusing a redirect from https to http")
        } else if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
}

/// Fetches a small text resource (a checksum file), at most `limit` bytes,
/// with the same proxy and TLS settings as a download.
pub async fn fetch_text(url: &str, config: &Config, limit: usize) -> Result<String> {
    let download = Download::builder(url)
        .output("unused")
        .config(config.clone())
        .build()?;
    let client = download.client()?;
    let url = download
        .urls
        .first()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no URL given"))?;
    let mut response = crate::probe::send_within(
        client.get(url.clone()),
        config.stall_timeout.max(config.connect_timeout),
        url,
    )
    .await?;
    if !response.status().is_success() {
        return Err(crate::probe::status_error(&response, url));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| crate::probe::network_error(e, url))?
    {
        if body.len() + chunk.len() > limit {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("larger than {limit} bytes"),
            )
            .with_url(url));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `Growth` a link where `rate(n)` is the throughput of `n`
    /// connections and returns the decisions, one per window.
    fn simulate(start: usize, ceiling: usize, rate: impl Fn(usize) -> f64) -> (Vec<Resize>, usize) {
        let window = Growth::MIN_WINDOW;
        let mut growth = Growth::new(start, ceiling, window);
        let mut now = Instant::now();
        let mut bytes = 0u64;
        let mut decisions = Vec::new();
        let mut connections = start;
        assert_eq!(growth.observe(now, bytes, true), Resize::Hold);
        for _ in 0..8 {
            now += window;
            bytes += (rate(connections) * window.as_secs_f64()) as u64;
            let decision = growth.observe(now, bytes, true);
            match decision {
                Resize::GrowTo(n) | Resize::ShrinkTo(n) => connections = n,
                Resize::Hold => {}
            }
            decisions.push(decision);
        }
        (decisions, connections)
    }

    #[test]
    fn per_connection_caps_reach_the_ceiling_in_two_windows() {
        let (decisions, connections) = simulate(4, 16, |n| n as f64 * 20e6);
        assert_eq!(&decisions[..2], &[Resize::GrowTo(8), Resize::GrowTo(16)]);
        assert_eq!(connections, 16);
        // The jump to the ceiling paid, so nothing is left to decide.
        assert!(
            decisions[2..].iter().all(|d| *d == Resize::Hold),
            "{decisions:?}"
        );
    }

    #[test]
    fn windows_follow_the_probe_latency_within_bounds() {
        assert_eq!(
            Growth::window_for(Duration::from_micros(300)),
            Growth::MIN_WINDOW
        );
        assert_eq!(
            Growth::window_for(Duration::from_millis(120)),
            Duration::from_millis(360)
        );
        assert_eq!(
            Growth::window_for(Duration::from_secs(3)),
            Growth::MAX_WINDOW
        );
    }

    #[test]
    fn a_fast_link_goes_back_to_the_start() {
        let (decisions, connections) = simulate(4, 16, |n| 1.5e9 + n as f64 * 1e6);
        assert_eq!(&decisions[..2], &[Resize::GrowTo(8), Resize::ShrinkTo(4)]);
        assert_eq!(connections, 4);
        assert!(decisions[2..].iter().all(|d| *d == Resize::Hold));
    }

    #[test]
    fn a_partial_gain_keeps_doubling_then_settles() {
        // Throughput grows, but sub-linearly, up to a shared cap of 200 MB/s.
        let (_, connections) = simulate(2, 64, |n| (n as f64 * 30e6).min(200e6));
        assert!((4..=16).contains(&connections), "{connections}");
    }

    #[test]
    fn never_exceeds_the_ceiling() {
        let (_, connections) = simulate(4, 6, |n| n as f64 * 20e6);
        assert_eq!(connections, 6);
    }
}
