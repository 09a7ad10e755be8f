//! The fetch stage: a pool of connections pulling ranges from one shared
//! [`Scheduler`], streaming each body straight into the part file.
//!
//! Every connection owns one task at a time. A failed or stalled request is
//! retried from the byte where it stopped, after a backoff, on whichever
//! source (mirror) currently delivers best; meanwhile an idle connection may
//! steal the far half of what remains, or take over a range whose connection
//! dribbles far below its peers. Every ranged request carries `If-Range`, and
//! every response is checked against the probe (status, `Content-Range`,
//! total, validator) before a byte is written, so bytes of two versions can
//! never be mixed.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use reqwest::header;
use reqwest::{Client, Response, StatusCode, Url};
use tracing::{debug, warn};

use crate::error::{Error, ErrorKind, Result, redact_url};
use crate::event::{Event, EventSink};
use crate::plan::{Assignment, Scheduler, TakeOver, TaskId};
use crate::probe::{Validator, header_str, next_chunk, probe, send_within, status_error};
use crate::range::{ByteRange, format_range_header, parse_content_range};
use crate::retry::{Backoff, Jitter};
use crate::store::PartFile;
use crate::verify::HashFollower;

/// Retry and timeout settings of the fetch stage.
#[derive(Clone, Debug)]
pub(crate) struct FetchPolicy {
    pub retries: u32,
    pub download_retries: u64,
    pub stall_timeout: Duration,
    pub backoff: Backoff,
    pub take_over: TakeOver,
    /// How long an idle connection waits before looking for work again
    /// while other connections still hold ranges.
    pub idle_poll: Duration,
}

/// Counters shared with the progress ticker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
    pub active: AtomicUsize,
}

/// Stretches of a stream handed to the device as they complete; see
/// [`PartFile::start_writeback`].
const WRITEBACK_BLOCK: u64 = 4 << 20;

/// Re-resolves of an expired redirect target allowed per source. Every
/// connection that meets the 403 asks once, so this must exceed the pool.
const MAX_RE_RESOLVES: u32 = 64;

/// Which `If-Range` form a source gets. Some CDNs answer `200` to an ETag
/// `If-Range` even when it matches; for them we fall back to the date, and
/// then to a plain `Range` whose reply is checked against the validator.
const IF_RANGE_ETAG: u8 = 0;
const IF_RANGE_DATE: u8 = 1;
const IF_RANGE_NONE: u8 = 2;

/// One place the bytes can come from: the primary URL or a mirror.
pub(crate) struct Source {
    /// The URL as given, re-resolved when a redirect target expires.
    pub original: Url,
    /// Where ranges go: the URL after redirects.
    pub url: RwLock<Url>,
    /// This source's own validator, pinned by its probe.
    pub validator: Validator,
    if_range_mode: AtomicU8,
    alive: AtomicBool,
    consecutive_failures: AtomicU32,
    re_resolves: AtomicU32,
    /// Body bytes delivered and connection-time spent, for weighting.
    bytes: AtomicU64,
    busy_nanos: AtomicU64,
    active: AtomicUsize,
}

impl Source {
    pub(crate) fn new(original: Url, url: Url, validator: Validator) -> Self {
        let mode = if validator.etag.is_some() {
            IF_RANGE_ETAG
        } else {
            IF_RANGE_DATE
        };
        Self {
            original,
            url: RwLock::new(url),
            validator,
            if_range_mode: AtomicU8::new(mode),
            alive: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            re_resolves: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        }
    }

    pub(crate) fn url(&self) -> Url {
        self.url
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn if_range(&self, mode: u8) -> Option<&str> {
        match mode {
            IF_RANGE_ETAG => self.validator.if_range(),
            IF_RANGE_DATE => self.validator.last_modified.as_deref(),
            _ => None,
        }
    }

    /// Bytes per second this source delivered while busy; `None` before
    /// any sample.
    fn rate(&self) -> Option<f64> {
        let nanos = self.busy_nanos.load(Ordering::Relaxed);
        (nanos > 0).then(|| self.bytes.load(Ordering::Relaxed) as f64 / (nanos as f64 / 1e9))
    }
}

/// How many connections run, and how many should: a connection above the
/// desired count closes once its current range is done.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    live: AtomicUsize,
    desired: AtomicUsize,
}

impl Pool {
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn set_desired(&self, n: usize) {
        self.desired.store(n.max(1), Ordering::Relaxed);
    }

    /// Counts a connection in, before its task is spawned.
    pub(crate) fn joined(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts this connection out if the pool is above its desired size;
    /// returns whether it should close.
    fn leave_if_surplus(&self) -> bool {
        let desired = self.desired.load(Ordering::Relaxed);
        self.live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                (live > desired).then(|| live - 1)
            })
            .is_ok()
    }

    fn left(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// State shared by all connections of one download.
pub(crate) struct Fetcher {
    pub pool: Pool,
    pub client: Client,
    pub sources: Vec<Source>,
    pub total: Option<u64>,
    pub part: PartFile,
    pub scheduler: Mutex<Scheduler>,
    pub hasher: HashFollower,
    pub counters: Arc<Counters>,
    pub policy: FetchPolicy,
    pub events: Option<EventSink>,
    pub started: Instant,
}

/// Marks a connection as transferring for as long as it lives.
struct Active<'a> {
    counters: [&'a AtomicUsize; 2],
}

impl<'a> Active<'a> {
    fn new(global: &'a AtomicUsize, source: &'a AtomicUsize) -> Self {
        global.fetch_add(1, Ordering::Relaxed);
        source.fetch_add(1, Ordering::Relaxed);
        Self {
            counters: [global, source],
        }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        for counter in self.counters {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What a worker found when it looked for work.
enum Next {
    Work(Assignment),
    Wait,
    Done,
}

impl Fetcher {
    pub(crate) fn plan(&self) -> MutexGuard<'_, Scheduler> {
        // A panic while holding the lock is a bug elsewhere; the plan itself
        // is only ever mutated through short, non-panicking methods.
        let mut plan = self
            .scheduler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        plan.set_now(self.started.elapsed());
        plan
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Some(sink) = &self.events {
            sink(event);
        }
    }

    fn next_work(&self) -> Next {
        let mut plan = self.plan();
        if let Some(assignment) = plan.next_assignment() {
            return Next::Work(assignment);
        }
        if let Some(assignment) = plan.take_over(self.policy.take_over, self.peer_rate()) {
            debug!(range = %assignment.range, "took over the range of a connection far slower than its peers");
            return Next::Work(assignment);
        }
        if plan.has_work() {
            Next::Wait
        } else {
            Next::Done
        }
    }

    /// One connection: takes tasks until the plan has nothing left.
    pub(crate) async fn worker(
        self: Arc<Self>,
        mut first: Option<(Assignment, Response)>,
        seed: u64,
    ) -> Result<()> {
        let mut jitter = Jitter::new(seed);
        loop {
            let (assignment, response) = match first.take() {
                Some((assignment, response)) => (assignment, Some(response)),
                None => {
                    if self.pool.leave_if_surplus() {
                        return Ok(());
                    }
                    match self.next_work() {
                        Next::Work(assignment) => (assignment, None),
                        Next::Wait => {
                            // Others still hold ranges: one may fail and
                            // release its range, or become worth stealing from.
                            tokio::time::sleep(self.policy.idle_poll).await;
                            continue;
                        }
                        Next::Done => {
                            self.pool.left();
                            return Ok(());
                        }
                    }
                }
            };
            if assignment.stolen {
                debug!(range = %assignment.range, "stole part of a range in flight");
            }
            if let Err(error) = self.run_task(assignment.id, response, &mut jitter).await {
                self.pool.left();
                return Err(error);
            }
        }
    }

    /// The alive source to use next: one never sampled first, then the best
    /// throughput per connection already on it, so connections spread over
    /// mirrors in proportion to what each delivers.
    fn pick_source(&self, jitter: &mut Jitter) -> Option<usize> {
        let alive: Vec<usize> = (0..self.sources.len())
            .filter(|&i| self.sources[i].alive.load(Ordering::Relaxed))
            .collect();
        if let Some(&unsampled) = alive
            .iter()
            .filter(|&&i| self.sources[i].rate().is_none())
            .min_by_key(|&&i| self.sources[i].active.load(Ordering::Relaxed))
        {
            return Some(unsampled);
        }
        // A little randomness keeps an unlucky early sample from starving a
        // good mirror forever.
        alive.into_iter().max_by(|&a, &b| {
            let score = |i: usize, noise: f64| {
                let source = &self.sources[i];
                source.rate().unwrap_or(0.0) * (0.9 + 0.2 * noise)
                    / (source.active.load(Ordering::Relaxed) as f64 + 1.0)
            };
            score(a, jitter.next_unit()).total_cmp(&score(b, jitter.next_unit()))
        })
    }

    /// Bytes per second of a typical busy connection, over all sources.
    fn peer_rate(&self) -> f64 {
        let (bytes, nanos) = self.sources.iter().fold((0u64, 0u64), |(b, n), s| {
            (
                b + s.bytes.load(Ordering::Relaxed),
                n + s.busy_nanos.load(Ordering::Relaxed),
            )
        });
        if nanos == 0 {
            0.0
        } else {
            bytes as f64 / (nanos as f64 / 1e9)
        }
    }

    /// Whether more than one source is still alive.
    fn has_other_sources(&self, idx: usize) -> bool {
        self.sources
            .iter()
            .enumerate()
            .any(|(i, s)| i != idx && s.alive.load(Ordering::Relaxed))
    }

    fn drop_source(&self, idx: usize, error: &Error) {
        let source = &self.sources[idx];
        if source.alive.swap(false, Ordering::Relaxed) {
            let url = redact_url(&source.original);
            warn!(%url, %error, "dropping mirror");
            self.emit(Event::MirrorDropped {
                url,
                reason: error.to_string(),
            });
        }
    }

    /// Fetches one task's bytes, retrying from where each attempt stopped.
    async fn run_task(
        &self,
        id: TaskId,
        mut response: Option<Response>,
        jitter: &mut Jitter,
    ) -> Result<()> {
        let mut failures = 0u32;
        loop {
            let want = self.plan().remaining(id);
            if want.is_empty() {
                self.plan().release(id);
                return Ok(());
            }
            let (source_idx, result) = match response.take() {
                // The probe response always comes from the primary source.
                Some(response) => (0, self.stream_body(id, 0, want, response).await),
                None => {
                    let Some(idx) = self.pick_source(jitter) else {
                        self.plan().abort();
                        return Err(
                            Error::new(ErrorKind::Network, "every source failed").with_range(want)
                        );
                    };
                    (idx, self.fetch_range(id, idx, want).await)
                }
            };
            let source = &self.sources[source_idx];
            let still_wanted = self.plan().remaining(id);
            let progressed = still_wanted.start > want.start;
            if progressed {
                source.consecutive_failures.store(0, Ordering::Relaxed);
            }
            let error = match result {
                Ok(()) => continue,
                Err(error) => error,
            };
            if progressed {
                // An attempt that delivered bytes before failing is a flaky
                // link doing its best, not a sign the range cannot be had.
                failures = 0;
            }
            if error.kind() == ErrorKind::HttpStatus(403) && self.re_resolve(source_idx).await {
                continue;
            }
            let source_failures = source.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            let source_fault = matches!(
                error.kind(),
                ErrorKind::Network
                    | ErrorKind::HttpStatus(_)
                    | ErrorKind::Protocol
                    | ErrorKind::RemoteChanged
            );
            if source_fault
                && self.has_other_sources(source_idx)
                && (!error.is_retryable()
                    || error.kind() == ErrorKind::RemoteChanged
                    || source_failures > self.policy.retries)
            {
                // A mirror that disagrees or keeps failing is dropped; the
                // range moves on to the others.
                self.drop_source(source_idx, &error);
                continue;
            }
            failures += 1;
            let total_retries = self.counters.retries.load(Ordering::Relaxed);
            if !error.is_retryable()
                || failures > self.policy.retries
                || total_retries >= self.policy.download_retries
            {
                // The download fails: nobody may take this range, or any
                // other, for a request that can only fail the same way.
                self.plan().abort();
                return Err(error.with_range(still_wanted).with_attempts(failures));
            }
            let delay = self
                .policy
                .backoff
                .delay(failures, error.retry_after(), jitter);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            debug!(range = %still_wanted, attempt = failures, error = %error, ?delay, "retrying");
            self.emit(Event::retry(still_wanted, failures, &error, delay));
            tokio::time::sleep(delay).await;
        }
    }

    /// A redirect target (a presigned URL) that starts answering 403 may
    /// have expired: resolve the original URL again, and keep the new target
    /// if it serves the same file. Returns whether the source was renewed.
    async fn re_resolve(&self, idx: usize) -> bool {
        let source = &self.sources[idx];
        if source.original == source.url()
            || source.re_resolves.fetch_add(1, Ordering::Relaxed) >= MAX_RE_RESOLVES
        {
            return false;
        }
        match probe(&self.client, &source.original, 1, self.policy.stall_timeout).await {
            Ok((remote, _))
                if remote.total == self.total
                    && !source.validator.contradicts(&remote.validator) =>
            {
                debug!(url = %redact_url(&remote.url), "re-resolved an expired redirect target");
                *source
                    .url
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = remote.url;
                true
            }
            _ => false,
        }
    }

    /// Requests `want` from source `idx` with `If-Range` and checks the
    /// answer before streaming it.
    async fn fetch_range(&self, id: TaskId, idx: usize, want: ByteRange) -> Result<()> {
        let source = &self.sources[idx];
        let url = source.url();
        let Some(range_value) = format_range_header(want) else {
            return Ok(());
        };
        let mut request = self
            .client
            .get(url.clone())
            .header(header::RANGE, range_value)
            .header(header::ACCEPT_ENCODING, "identity");
        // The form this request uses: a late answer to it may demote only
        // this form, never one a newer request already switched to.
        let mode = source.if_range_mode.load(Ordering::Relaxed);
        if let Some(validator) = source.if_range(mode) {
            request = request.header(header::IF_RANGE, validator);
        }
        let response = send_within(request, self.policy.stall_timeout, &url).await?;
        let got = self.check_response(idx, &url, &response, want, mode)?;
        self.stream_body(id, idx, got, response).await
    }

    /// Validates a ranged response against the request and the probe;
    /// returns the range its body carries.
    fn check_response(
        &self,
        idx: usize,
        url: &Url,
        response: &Response,
        want: ByteRange,
        mode: u8,
    ) -> Result<ByteRange> {
        let source = &self.sources[idx];
        let headers = response.headers();
        let validator = Validator::from_headers(headers);
        let changed = |what: String| Error::new(ErrorKind::RemoteChanged, what).with_url(url);
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                let same_version = !source.validator.contradicts(&validator)
                    && source.validator.if_range().is_some()
                    && validator.if_range().is_some()
                    && header_str(headers, header::CONTENT_LENGTH)
                        .and_then(crate::header::parse_content_length)
                        .is_none_or(|len| Some(len) == self.total);
                if same_version && mode != IF_RANGE_NONE {
                    // A 200 carrying the very validator we sent: the server
                    // mishandles this If-Range form, not a changed file.
                    let next = if mode == IF_RANGE_ETAG && source.validator.last_modified.is_some()
                    {
                        IF_RANGE_DATE
                    } else {
                        IF_RANGE_NONE
                    };
                    let _ = source.if_range_mode.compare_exchange(
                        mode,
                        next,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    warn!(url = %redact_url(url), "server ignores If-Range although the file is unchanged; using another form");
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        "server answered a range with the whole unchanged file; retrying with another If-Range form",
                    )
                    .with_url(url));
                }
                return Err(changed(
                    "server sent the whole file instead of the range: the remote changed or stopped serving ranges"
                        .to_owned(),
                ));
            }
            _ => return Err(status_error(response, url)),
        }
        if source.validator.contradicts(&validator) {
            return Err(changed(format!(
                "validator changed from {} to {}",
                source.validator.if_range().unwrap_or("none"),
                validator.if_range().unwrap_or("none")
            )));
        }
        let value = header_str(headers, header::CONTENT_RANGE).ok_or_else(|| {
            Error::new(ErrorKind::Protocol, "206 response without Content-Range").with_url(url)
        })?;
        let content_range = parse_content_range(value).map_err(|e| {
            Error::new(ErrorKind::Protocol, "bad Content-Range")
                .with_url(url)
                .with_source(e)
        })?;
        if content_range.total.is_some() && content_range.total != self.total {
            return Err(changed(format!(
                "size changed from {} to {} bytes",
                self.total.unwrap_or(0),
                content_range.total.unwrap_or(0)
            )));
        }
        match content_range.range {
            Some(got) if got.start == want.start && got.end <= want.end && !got.is_empty() => {
                Ok(got)
            }
            _ => Err(Error::new(
                ErrorKind::Protocol,
                format!("asked for bytes {want}, server answered Content-Range {value:?}"),
            )
            .with_url(url)),
        }
    }

    /// Streams a body carrying `expected` into the part file. Returns `Ok`
    /// when the body is complete or the task has nothing left to claim
    /// (its remainder was stolen); a short body is a transient error.
    async fn stream_body(
        &self,
        id: TaskId,
        idx: usize,
        expected: ByteRange,
        mut response: Response,
    ) -> Result<()> {
        let source = &self.sources[idx];
        let _active = Active::new(&self.counters.active, &source.active);
        let url = source.url();
        let mut offset = expected.start;
        let mut last = Instant::now();
        while offset < expected.end {
            let Some(chunk) = next_chunk(&mut response, self.policy.stall_timeout, &url).await?
            else {
                break;
            };
            let now = Instant::now();
            source.busy_nanos.fetch_add(
                now.duration_since(last).as_nanos() as u64,
                Ordering::Relaxed,
            );
            source
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            last = now;
            let mut data = &chunk[..];
            while !data.is_empty() {
                let claimed = self.plan().claim(id, data.len() as u64);
                if claimed.is_empty() {
                    return Ok(());
                }
                if claimed.start != offset {
                    // The plan and the stream disagree about where we are:
                    // writing would put bytes at the wrong offset.
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("internal: claimed {claimed} while the stream is at {offset}"),
                    )
                    .permanent());
                }
                let len = claimed.len() as usize;
                self.part
                    .write_at(claimed.start, &data[..len])
                    .map_err(|e| {
                        Error::io(format!("cannot write {}", self.part.path().display()), e)
                    })?;
                offset = claimed.end;
                data = &data[len..];
                // Each time this stream completes a writeback block, start
                // writing it to the device in the background.
                let block_end = claimed.end / WRITEBACK_BLOCK * WRITEBACK_BLOCK;
                if block_end > claimed.start && block_end >= expected.start + WRITEBACK_BLOCK {
                    self.part
                        .start_writeback(block_end - WRITEBACK_BLOCK, WRITEBACK_BLOCK);
                }
                let frontier = self.plan().mark_written(claimed);
                if let Some(frontier) = frontier {
                    self.hasher.advance(frontier);
                }
                self.counters
                    .bytes
                    .fetch_add(claimed.len(), Ordering::Relaxed);
            }
        }
        if offset == expected.end {
            // Read the end of the body so the connection goes back to the
            // pool for the next range instead of being closed.
            let _ = tokio::time::timeout(Duration::from_millis(50), response.chunk()).await;
        }
        if offset < expected.end {
            return Err(Error::new(
                ErrorKind::Network,
                format!(
                    "connection closed after {} of {} bytes",
                    offset - expected.start,
                    expected.len()
                ),
            )
            .with_url(&url));
        }
        Ok(())
    }
}
