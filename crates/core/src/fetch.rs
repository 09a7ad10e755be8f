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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::header;
use reqwest::{Response, Url};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::admit::{Expect, Refusal, admit_range};
use crate::error::{Error, ErrorKind, Result, redact_url};
use crate::event::{Event, EventSink};
use crate::journal::Block;
use crate::limit::{ConnectionBudget, Permit, RateLimit};
use crate::piece_check::{BadPiece, MAX_PIECE_FAILURES, PieceCheck};
use crate::plan::{Assignment, Scheduler, TakeOver, TaskId};
use crate::pool::{Growth, Pool, Resize};
use crate::probe::probe;
use crate::progress::Counters;
use crate::range::{ByteRange, format_range_header};
use crate::resume::JournalWriter;
use crate::retry::{Backoff, Jitter};
use crate::sources::{IF_RANGE_DATE, IF_RANGE_ETAG, IF_RANGE_NONE, Sources};
use crate::store::PartFile;
use crate::transport::{Http, next_chunk_or_wait, send_within, status_error};
use crate::verify::HashFollower;

/// Retry and timeout settings of the fetch stage.
#[derive(Clone, Debug)]
pub(crate) struct FetchPolicy {
    pub retries: u32,
    pub download_retries: u64,
    pub stall_timeout: Duration,
    /// The wait for a response's headers and first body byte.
    pub first_byte_timeout: Duration,
    pub backoff: Backoff,
    pub take_over: TakeOver,
    /// How long an idle connection waits before looking for work again
    /// while other connections still hold ranges.
    pub idle_poll: Duration,
    /// Whether an expected SHA-256 will check the bytes: only then may
    /// bytes of sources that cannot be shown to serve the same version
    /// (another origin, other validators) go into one file.
    pub expected_hash: bool,
}

/// Whether two URLs have the same origin (scheme, host, port).
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

/// How large the pool may grow and how it starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolLimits {
    /// The ceiling.
    pub connections: usize,
    /// Connections opened at first.
    pub start: usize,
    /// Bytes per range request.
    pub chunk_size: u64,
    /// How long [`Growth`] measures each step.
    pub window: Duration,
}

/// Stretches of a stream handed to the device as they complete; see
/// [`PartFile::start_writeback`].
const WRITEBACK_BLOCK: u64 = 4 << 20;

/// Re-resolves of an expired redirect target allowed per source. Every
/// connection that meets the 403 asks once, so this must exceed the pool.
const MAX_RE_RESOLVES: u32 = 64;

/// State shared by all connections of one download.
pub(crate) struct Fetcher {
    pub pool: Pool,
    pub client: Http,
    pub sources: Sources,
    pub total: Option<u64>,
    pub part: PartFile,
    pub scheduler: Mutex<Scheduler>,
    pub hasher: HashFollower,
    pub counters: Arc<Counters>,
    pub policy: FetchPolicy,
    pub events: Option<EventSink>,
    pub started: Instant,
    /// The resume journal, appended to as blocks are written (ranged
    /// downloads only).
    pub journal: Option<JournalWriter>,
    /// The grid the journal's blocks are cut at.
    pub block_size: u64,
    /// Where every written stretch came from, in the order written.
    pub served: Mutex<Vec<Served>>,
    /// Reference piece hashes, checked as pieces land.
    pub pieces: Option<PieceCheck>,
    /// The bandwidth cap, if any.
    pub rate: Option<RateLimit>,
    /// The batch's connection budget and the host this download counts
    /// against, if any.
    pub budget: Option<(ConnectionBudget, String)>,
}

/// Where a stretch of the part file came from: which source, over which
/// connection, on which attempt of its range, and the CRC-32 of the bytes
/// as they arrived. A mismatch at the end is located and repaired from
/// these (see [`crate::repair`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Served {
    pub range: ByteRange,
    pub source: usize,
    pub connection: u64,
    pub attempt: u32,
    pub crc: u32,
}

/// Who is writing a stream: its source, connection and attempt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Writer {
    pub source: usize,
    pub connection: u64,
    pub attempt: u32,
}

/// The block a stream is writing: where it started and the CRC of its bytes
/// so far. Dropping it records what it holds, so a stream that ends for any
/// reason (done, stolen, failed) leaves no written byte unrecorded.
struct OpenBlock<'a> {
    fetcher: &'a Fetcher,
    writer: Writer,
    start: u64,
    end: u64,
    crc: crc32fast::Hasher,
}

impl<'a> OpenBlock<'a> {
    fn new(fetcher: &'a Fetcher, writer: Writer, start: u64) -> Self {
        Self {
            fetcher,
            writer,
            start,
            end: start,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Takes `data`, just written at the block's end, closing a block at
    /// each grid line it crosses.
    fn written(&mut self, mut data: &[u8]) {
        let grid = self.fetcher.block_size;
        while !data.is_empty() {
            let line = (self.end / grid + 1) * grid;
            let take = usize::try_from(line - self.end).map_or(data.len(), |n| n.min(data.len()));
            self.crc.update(&data[..take]);
            self.end += take as u64;
            data = &data[take..];
            if self.end == line {
                self.close();
            }
        }
    }

    /// Records the block so far (if any) and starts the next at its end.
    fn close(&mut self) {
        if self.end > self.start {
            let crc = std::mem::take(&mut self.crc).finalize();
            let range = ByteRange::new(self.start, self.end);
            if let Some(journal) = &self.fetcher.journal {
                journal.block(Block { range, crc }, &self.fetcher.hasher);
            }
            self.fetcher
                .served
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Served {
                    range,
                    source: self.writer.source,
                    connection: self.writer.connection,
                    attempt: self.writer.attempt,
                    crc,
                });
        }
        self.start = self.end;
    }
}

impl Drop for OpenBlock<'_> {
    fn drop(&mut self) {
        self.close();
    }
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
        if let Some(assignment) = plan.take_over(self.policy.take_over, self.sources.peer_rate()) {
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
        permit: Option<Permit>,
    ) -> Result<()> {
        // This connection's share of the batch's budget, held until it ends.
        let _permit = permit;
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
            if let Err(error) = self
                .run_task(assignment.id, response, &mut jitter, seed)
                .await
            {
                self.pool.left();
                return Err(error);
            }
        }
    }

    fn drop_source(&self, idx: usize, error: &Error) {
        if self.sources.drop_source(idx, error) {
            self.emit(Event::MirrorDropped {
                url: redact_url(&self.sources[idx].original),
                reason: error.to_string(),
            });
        }
    }

    /// Runs the connection pool over a ranged remote, the probe's body
    /// first; returns the bytes written and the most connections used at
    /// once. Dropping the future aborts every connection (they live in a
    /// [`JoinSet`]).
    pub(crate) async fn run_pool(
        self: &Arc<Self>,
        first: Option<(Response, ByteRange)>,
        limits: PoolLimits,
    ) -> Result<(u64, usize)> {
        let fetcher = self;
        let window = limits.window;
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
        let n_chunks = remaining.div_ceil(limits.chunk_size).max(1);
        let ceiling = (limits.connections as u64).min(n_chunks) as usize;
        let mut workers = JoinSet::new();
        let base_seed = crate::download::seed();
        let start = limits.start.clamp(1, ceiling);
        // Before any connection runs: one that finds the pool above its
        // desired size closes.
        fetcher.pool.set_desired(start);
        fetcher.pool.joined();
        // The first connection's share of a budget is the caller's (it was
        // taken before the probe, whose connection this is).
        workers.spawn(Arc::clone(fetcher).worker(first, base_seed, None));
        let mut spawned = 1;
        while spawned < start
            && fetcher.spawn_worker(&mut workers, base_seed.wrapping_add(spawned as u64))
        {
            spawned += 1;
        }
        let mut peak = spawned;
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
                    // Connections a full budget held back join as others'
                    // are freed.
                    while pending && fetcher.budget.is_some() && fetcher.pool.live() < fetcher.pool.desired()
                        && fetcher.spawn_worker(&mut workers, base_seed.wrapping_add(spawned as u64))
                    {
                        spawned += 1;
                        peak = peak.max(fetcher.pool.live());
                    }
                    let bytes = fetcher.counters.bytes.load(Ordering::Relaxed);
                    // A server pushing back (429, 503) shrinks the pool.
                    let resize = if fetcher.pool.take_pushbacks() > 0 {
                        growth.pushback(Instant::now())
                    } else {
                        growth.observe(Instant::now(), bytes, pending)
                    };
                    match resize {
                        Resize::Hold => {}
                        Resize::GrowTo(target) => {
                            fetcher.pool.set_desired(target);
                            while fetcher.pool.live() < target
                                && fetcher.spawn_worker(&mut workers, base_seed.wrapping_add(spawned as u64))
                            {
                                spawned += 1;
                            }
                            debug!(connections = target, "more connections add throughput; growing");
                            peak = peak.max(fetcher.pool.live());
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
        Ok((total, peak))
    }

    /// Pieces that failed their reference hash go back to the plan; the
    /// sources that served them (other than the last one left) are dropped.
    /// A piece failing [`MAX_PIECE_FAILURES`] times fails the download.
    pub(crate) fn bad_pieces(&self, bad: &[BadPiece], writer: Writer) -> Result<()> {
        for piece in bad {
            let mut culprits = vec![writer.source];
            culprits.extend(
                self.served
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .filter(|served| {
                        served.range.start < piece.range.end && piece.range.start < served.range.end
                    })
                    .map(|served| served.source),
            );
            culprits.sort_unstable();
            culprits.dedup();
            // Only a source that served the whole piece is known to have
            // served bad bytes; a piece of several sources is fetched again
            // without blaming any (the next failure will tell).
            let blamed = if culprits.len() == 1 {
                culprits.clone()
            } else {
                Vec::new()
            };
            let named: Vec<String> = culprits
                .iter()
                .map(|&idx| redact_url(&self.sources[idx].original))
                .collect();
            let message = format!(
                "piece {} (bytes {}) does not have its published hash; served by {}",
                piece.index,
                piece.range,
                named.join(", ")
            );
            warn!("{message}");
            if piece.failures >= MAX_PIECE_FAILURES {
                self.plan().abort();
                return Err(Error::new(
                    ErrorKind::ChecksumMismatch,
                    format!("{message}; it failed {} times", piece.failures),
                )
                .permanent());
            }
            self.emit(Event::Notice {
                message: format!("{message}; fetching it again"),
            });
            let error = Error::new(
                ErrorKind::RemoteChanged,
                format!(
                    "served bytes failing piece {}'s published hash",
                    piece.index
                ),
            );
            for idx in blamed {
                if self.sources.has_others(idx) {
                    self.drop_source(idx, &error);
                }
            }
            self.counters
                .bytes
                .fetch_sub(piece.range.len(), Ordering::Relaxed);
            self.plan().refetch(piece.range);
        }
        Ok(())
    }

    /// Adds a connection to the pool, if the batch's budget has room for
    /// it; returns whether it did.
    fn spawn_worker(self: &Arc<Self>, workers: &mut JoinSet<Result<()>>, seed: u64) -> bool {
        let permit = match &self.budget {
            Some((budget, host)) => match budget.try_acquire(host) {
                Some(permit) => Some(permit),
                None => return false,
            },
            None => None,
        };
        self.pool.joined();
        workers.spawn(Arc::clone(self).worker(None, seed, permit));
        true
    }

    /// Fetches one task's bytes, retrying from where each attempt stopped.
    async fn run_task(
        &self,
        id: TaskId,
        mut response: Option<Response>,
        jitter: &mut Jitter,
        connection: u64,
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
                Some(response) => {
                    let writer = Writer {
                        source: 0,
                        connection,
                        attempt: failures + 1,
                    };
                    (0, self.stream_body(id, writer, want, response).await)
                }
                None => {
                    let Some(idx) = self.sources.pick(jitter) else {
                        self.plan().abort();
                        return Err(
                            Error::new(ErrorKind::Network, "every source failed").with_range(want)
                        );
                    };
                    let writer = Writer {
                        source: idx,
                        connection,
                        attempt: failures + 1,
                    };
                    (idx, self.fetch_range(id, writer, want).await)
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
            let pushback = matches!(error.kind(), ErrorKind::HttpStatus(429 | 503));
            if pushback {
                self.pool.pushed_back();
            }
            if error.kind() == ErrorKind::HttpStatus(403) && self.re_resolve(source_idx).await {
                continue;
            }
            let source_failures = source.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            let source_fault = matches!(
                error.kind(),
                ErrorKind::Network
                    | ErrorKind::Certificate
                    | ErrorKind::HttpStatus(_)
                    | ErrorKind::Protocol
                    | ErrorKind::RemoteChanged
            );
            if source_fault
                && self.sources.has_others(source_idx)
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
            if pushback && self.pool.is_surplus() {
                // The pool shrank while this connection waited: its range
                // goes back to the plan, and the worker closes.
                self.plan().release(id);
                return Ok(());
            }
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
        let small = crate::probe::SMALL_PROBE_LEN;
        match probe(
            &self.client,
            &source.original,
            small,
            self.policy.first_byte_timeout,
        )
        .await
        {
            Ok((remote, _))
                if remote.total == self.total
                    && source
                        .validator
                        .mismatch(&remote.validator, source.etag_unstable())
                        .is_none()
                    && (self.policy.expected_hash || same_origin(&remote.url, &source.url())) =>
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
    async fn fetch_range(&self, id: TaskId, writer: Writer, want: ByteRange) -> Result<()> {
        let idx = writer.source;
        let source = &self.sources[idx];
        let url = source.url();
        let Some(range_value) = format_range_header(want) else {
            return Ok(());
        };
        let mut request = self
            .client
            .get(&url)
            .header(header::RANGE, range_value)
            .header(header::ACCEPT_ENCODING, "identity");
        // The form this request uses: a late answer to it may demote only
        // this form, never one a newer request already switched to.
        let mode = source.if_range_mode.load(Ordering::Relaxed);
        if let Some(validator) = source.if_range(mode) {
            request = request.header(header::IF_RANGE, validator);
        }
        let response = send_within(request, self.policy.first_byte_timeout, &url).await?;
        let got = self.check_response(idx, &url, &response, want, mode)?;
        self.stream_body(id, writer, got, response).await
    }

    /// Admits a ranged response (see [`crate::admit`]) and acts on a
    /// refusal: a farm's flipping ETags switch the source to its date, a
    /// mishandled `If-Range` form is demoted. Returns the range to write.
    pub(crate) fn check_response(
        &self,
        idx: usize,
        url: &Url,
        response: &Response,
        want: ByteRange,
        mode: u8,
    ) -> Result<ByteRange> {
        let source = &self.sources[idx];
        let changed = |what: String| Error::new(ErrorKind::RemoteChanged, what).with_url(url);
        let protocol = |what: String| Error::new(ErrorKind::Protocol, what).with_url(url);
        if !same_origin(response.url(), &source.url()) && !self.policy.expected_hash {
            // Bytes from another origin cannot be shown to be this file's
            // without a hash to check them against.
            return Err(changed(format!(
                "redirected mid-download to another origin ({})",
                redact_url(response.url())
            )));
        }
        let expect = Expect {
            validator: &source.validator,
            total: self.total,
            etag_unstable: source.etag_unstable(),
        };
        let refusal = match admit_range(response.status(), response.headers(), want, expect) {
            Ok(admitted) => return Ok(admitted.wanted),
            Err(refusal) => refusal,
        };
        match refusal {
            Refusal::Status => Err(status_error(response, url)),
            Refusal::Protocol(message) => Err(protocol(message)),
            Refusal::Changed(message) => Err(changed(message)),
            Refusal::EtagFlip(reason) => {
                self.etags_flip(idx, &reason);
                // The body came from a backend with the same size and date;
                // still, take it only through a request pinned by that date.
                Err(protocol(format!(
                    "{reason}, with the same size and Last-Modified; retrying pinned by the date"
                )))
            }
            Refusal::WholeUnchanged if mode != IF_RANGE_NONE => {
                // A 200 carrying the very validator we sent: the server
                // mishandles this If-Range form, not a changed file.
                let next = if mode == IF_RANGE_ETAG && source.validator.last_modified.is_some() {
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
                Err(protocol(
                    "server answered a range with the whole unchanged file; retrying with another If-Range form"
                        .into(),
                ))
            }
            Refusal::WholeUnchanged => Err(changed(
                "server sent the whole file instead of the range: it stopped serving ranges".into(),
            )),
        }
    }

    /// Source `idx` gives one file different ETags on different
    /// connections while its size and Last-Modified stay the same: from now
    /// on the date pins the version (in `If-Range` and in every check), and
    /// the user hears of it once.
    fn etags_flip(&self, idx: usize, reason: &str) {
        let source = &self.sources[idx];
        if source.set_etag_unstable() {
            source.if_range_mode.store(IF_RANGE_DATE, Ordering::Relaxed);
            if idx == 0
                && let Some(journal) = &self.journal
            {
                journal.etag_unstable();
            }
            let protection = if self.policy.expected_hash {
                "the expected SHA-256 decides"
            } else {
                "pass --sha256 to protect the file"
            };
            self.emit(Event::Notice {
                message: format!(
                    "{} gives this file different ETags on different connections ({reason}) while its size and Last-Modified stay the same, as load-balanced servers do; using Last-Modified to pin the version ({protection})",
                    redact_url(&source.original)
                ),
            });
        }
    }

    /// Streams a body carrying `expected` into the part file. Returns `Ok`
    /// when the body is complete or the task has nothing left to claim
    /// (its remainder was stolen); a short body is a transient error.
    async fn stream_body(
        &self,
        id: TaskId,
        writer: Writer,
        expected: ByteRange,
        mut response: Response,
    ) -> Result<()> {
        let source = &self.sources[writer.source];
        let _active = Active::new(&self.counters.active, &source.active);
        let url = source.url();
        let mut offset = expected.start;
        let mut block = OpenBlock::new(self, writer, offset);
        let mut last = Instant::now();
        // Until the first byte the first-byte timeout counts (a cache may
        // still be filling), then the stall timeout.
        let mut wait = self.policy.first_byte_timeout;
        // Looks in a row that found nothing read yet. One wait after data
        // was waiting can be a server between two writes; the second says
        // the server, not this process, is what the connection waits on.
        let mut waits = 0u32;
        while offset < expected.end {
            let (chunk, ready) = next_chunk_or_wait(&mut response, wait, &url, || {
                if waits >= 1 {
                    self.plan().set_backlogged(id, false);
                }
            })
            .await?;
            waits = if ready { 0 } else { waits + 1 };
            let backlogged = waits < 2;
            let Some(chunk) = chunk else {
                break;
            };
            wait = self.policy.stall_timeout;
            if !source.alive.load(Ordering::Relaxed) {
                // Dropped meanwhile (its bytes failed a piece hash, it kept
                // failing): what is still in flight from it is not wanted;
                // the rest of the range goes to another source.
                return Err(Error::new(
                    ErrorKind::RemoteChanged,
                    "source dropped while its response was streaming",
                )
                .with_url(&url));
            }
            let now = Instant::now();
            source.busy_nanos.fetch_add(
                now.duration_since(last).as_nanos() as u64,
                Ordering::Relaxed,
            );
            source
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if let Some(limit) = &self.rate {
                limit.take(chunk.len() as u64).await;
            }
            last = Instant::now();
            let mut data = &chunk[..];
            let mut first_claim = true;
            while !data.is_empty() {
                let claimed = {
                    let mut plan = self.plan();
                    if first_claim {
                        plan.set_backlogged(id, backlogged);
                        first_claim = false;
                    }
                    plan.claim(id, data.len() as u64)
                };
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
                block.written(&data[..len]);
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
                self.counters
                    .bytes
                    .fetch_add(claimed.len(), Ordering::Relaxed);
                match &self.pieces {
                    Some(check) => {
                        let bad = check.wrote(&self.part, claimed).map_err(|e| {
                            Error::io(format!("cannot read {}", self.part.path().display()), e)
                        })?;
                        self.bad_pieces(&bad, writer)?;
                        let written = self.plan().written().prefix_end();
                        self.hasher.advance(written.min(check.verified_prefix()));
                    }
                    None => {
                        if let Some(frontier) = frontier {
                            self.hasher.advance(frontier);
                        }
                    }
                }
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
