//! The public face of the engine — [`Download`], its builder, [`Config`] and
//! [`Outcome`] — and the orchestrator, which reads as the pipeline: probe →
//! plan → fetch → store → verify → commit, restarting on a changed remote.
//! Each stage lives in its own module; this one only calls them in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::{Client, Url};
use tracing::{debug, warn};

use crate::cache::Cache;
use crate::cancel::CancelToken;
use crate::checksums::Sha256Hex;
use crate::claim::{Claim, Claimed, open_part};
use crate::error::{Error, ErrorKind, Result, redact_url};
use crate::event::{Event, EventSink};
use crate::fetch::{FetchPolicy, Fetcher, PoolLimits};
use crate::journal::Journal;
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
    /// How chunk bytes are written to the part file.
    pub write_mode: WriteMode,
    /// Proxy for all requests; `None` means a direct connection (the engine
    /// never reads the environment: callers decide).
    pub proxy: Option<String>,
    /// Extra trusted root certificates, PEM.
    pub ca_certs_pem: Vec<Vec<u8>>,
    /// How often a changed remote may restart the download.
    pub max_restarts: u32,
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
        })
    }
}

/// Parses a URL the engine can fetch: `http` or `https`.
pub(crate) fn parse_url(raw: &str) -> Result<Url> {
    let invalid = |m: String| Error::new(ErrorKind::InvalidInput, m);
    let url =
        Url::parse(raw).map_err(|e| invalid(format!("invalid URL {raw:?}")).with_source(e))?;
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

    /// How long the probes wait for response headers: the stall timeout,
    /// like every other request (a server that accepts and never answers
    /// is a stalled one). The connect itself is bounded by the connect
    /// timeout too.
    fn probe_timeout(&self) -> Duration {
        self.config.stall_timeout
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
            if let Some(outcome) = reuse::already_present(&self.output, expected, started).await? {
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
                if let Some(outcome) =
                    reuse::from_cache(cache, expected, &self.output, started, None, &emit).await
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
                if let Some(outcome) =
                    reuse::from_cache(cache, expected, &self.output, started, Some(error), &emit)
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
        let client = transport::client(&self.config)?;
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
                        ErrorKind::Network | ErrorKind::HttpStatus(_) | ErrorKind::Protocol
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
        client: &Client,
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
        client: &Client,
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
            resume::load(state_path, part_path, &remote, &redact_url(url), &|event| {
                self.emit(event)
            })
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
        let hasher = start_hasher(&part, checked.and_then(|c| c.hash_from))?;
        hasher.advance(done.prefix_end());
        counters.bytes.store(resumed_bytes, Ordering::Relaxed);
        let _ticker = Ticker::start(Arc::clone(&counters), remote.total, self.events.clone());
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
            let mirrors = &self.urls[primary_idx + 1..];
            sources.extend(probe_mirrors(client, mirrors, primary, events).await);
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
            scheduler: std::sync::Mutex::new(Scheduler::new(
                remote.total.unwrap_or(0),
                self.config.chunk_size,
                self.config.min_piece,
                &done,
            )),
            hasher,
            counters: Arc::clone(&counters),
            policy: self.fetch_policy(),
            events: self.events.clone(),
            journal,
            block_size: resume::block_size(remote.total.unwrap_or(0)),
        });
        let fetch = async {
            match first {
                FirstBody::Empty => Ok((0, 1)),
                FirstBody::Partial(response, got) if ranged => {
                    // The probe's body is the first chunk of a fresh plan; a
                    // resumed plan starts elsewhere, so it is dropped.
                    let first = (resumed_bytes == 0 && !resuming).then_some((response, got));
                    let limits = PoolLimits {
                        connections: self.config.connections,
                        start: self.config.start_connections,
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
            () = self.cancel.cancelled() => Err(cancelled()),
        };
        drop(_ticker);
        if result.is_err()
            && let Some(journal) = &fetcher.journal
        {
            // What the hasher reached, so a re-run need not hash it again.
            journal.hash_point(fetcher.hasher.progress());
        }
        let (written, peak_connections) = result?;
        self.emit(Event::Downloaded { bytes: written });
        let digest = commit::finish_hash(&fetcher, written).await?;
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
        ..Journal::new(redact_url(url), remote.total.unwrap_or(0), chunk_size)
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

pub(crate) fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
}
