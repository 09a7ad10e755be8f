//! The fetch stage: a pool of connections pulling ranges from one shared
//! [`Scheduler`], streaming each body straight into the part file.
//!
//! Every connection owns one task at a time. A failed or stalled request is
//! retried from the byte where it stopped, after a backoff; meanwhile an idle
//! connection may steal the far half of what remains. Every ranged request
//! carries `If-Range`, and every response is checked against the probe
//! (status, `Content-Range`, total, validator) before a byte is written, so
//! bytes of two versions can never be mixed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reqwest::header;
use reqwest::{Client, Response, StatusCode};
use tracing::debug;

use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventSink};
use crate::plan::{Assignment, Scheduler, TaskId};
use crate::probe::{Remote, Validator, header_str, network_error, status_error};
use crate::range::{ByteRange, format_range_header, parse_content_range};
use crate::retry::{Jitter, backoff_delay, next_delay};
use crate::store::PartFile;
use crate::verify::HashFollower;

/// Retry and timeout settings of the fetch stage.
#[derive(Clone, Debug)]
pub(crate) struct FetchPolicy {
    pub retries: u32,
    pub stall_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub max_wait: Duration,
}

/// Counters shared with the progress ticker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
    pub active: AtomicUsize,
}

/// State shared by all connections of one download.
pub(crate) struct Fetcher {
    pub client: Client,
    pub remote: Remote,
    pub part: PartFile,
    pub scheduler: Mutex<Scheduler>,
    pub hasher: HashFollower,
    pub counters: Arc<Counters>,
    pub policy: FetchPolicy,
    pub events: Option<EventSink>,
}

/// Marks a connection as transferring for as long as it lives.
struct Active<'a>(&'a AtomicUsize);

impl<'a> Active<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Fetcher {
    fn plan(&self) -> MutexGuard<'_, Scheduler> {
        // A panic while holding the lock is a bug elsewhere; the plan itself
        // is only ever mutated through short, non-panicking methods.
        self.scheduler.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, event: Event) {
        if let Some(sink) = &self.events {
            sink(event);
        }
    }

    /// One connection: takes tasks until the plan has nothing left.
    pub(crate) async fn worker(self: Arc<Self>, mut first: Option<(Assignment, Response)>, seed: u64) -> Result<()> {
        let mut jitter = Jitter::new(seed);
        loop {
            let (assignment, response) = match first.take() {
                Some((assignment, response)) => (assignment, Some(response)),
                None => {
                    let next = self.plan().next_assignment();
                    match next {
                        Some(assignment) => (assignment, None),
                        None => return Ok(()),
                    }
                }
            };
            if assignment.stolen {
                debug!(range = %assignment.range, "stole the far half of a range in flight");
            }
            self.run_task(assignment.id, response, &mut jitter).await?;
        }
    }

    /// Fetches one task's bytes, retrying from where each attempt stopped.
    async fn run_task(&self, id: TaskId, mut response: Option<Response>, jitter: &mut Jitter) -> Result<()> {
        let mut failures = 0u32;
        loop {
            let want = self.plan().remaining(id);
            if want.is_empty() {
                self.plan().release(id);
                return Ok(());
            }
            let result = match response.take() {
                Some(response) => self.stream_body(id, want, response).await,
                None => self.fetch_range(id, want).await,
            };
            let error = match result {
                Ok(()) => continue,
                Err(error) => error,
            };
            let still_wanted = self.plan().remaining(id);
            let progressed = still_wanted.start > want.start;
            if progressed {
                // An attempt that delivered bytes before failing is a flaky
                // link doing its best, not a sign the range cannot be had.
                failures = 0;
            }
            failures += 1;
            if !error.is_retryable() || failures > self.policy.retries {
                self.plan().release(id);
                return Err(error.with_range(still_wanted).with_attempts(failures));
            }
            let backoff = backoff_delay(failures, self.policy.backoff_base, self.policy.backoff_cap, jitter.next_unit());
            let delay = next_delay(backoff, error.retry_after(), self.policy.max_wait);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            debug!(range = %still_wanted, attempt = failures, error = %error, ?delay, "retrying");
            self.emit(Event::Retry {
                range: still_wanted,
                attempt: failures,
                class: error.kind().class(),
                message: error.to_string(),
                delay,
            });
            tokio::time::sleep(delay).await;
        }
    }

    /// Requests `want` with `If-Range` and checks the answer before streaming it.
    async fn fetch_range(&self, id: TaskId, want: ByteRange) -> Result<()> {
        let url = &self.remote.url;
        let Some(range_value) = format_range_header(want) else {
            return Ok(());
        };
        let mut request = self
            .client
            .get(url.clone())
            .header(header::RANGE, range_value)
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(validator) = self.remote.validator.if_range() {
            request = request.header(header::IF_RANGE, validator);
        }
        let response = match tokio::time::timeout(self.policy.stall_timeout, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(network_error(error, url)),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Network,
                    format!("no response within {} s", self.policy.stall_timeout.as_secs()),
                )
                .with_url(url));
            }
        };
        let got = self.check_response(&response, want)?;
        self.stream_body(id, got, response).await
    }

    /// Validates a ranged response against the request and the probe;
    /// returns the range its body carries.
    fn check_response(&self, response: &Response, want: ByteRange) -> Result<ByteRange> {
        let url = &self.remote.url;
        let headers = response.headers();
        let validator = Validator::from_headers(headers);
        let changed = |what: String| Error::new(ErrorKind::RemoteChanged, what).with_url(url);
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                return Err(changed(
                    "server sent the whole file instead of the range: the remote changed or stopped serving ranges"
                        .to_owned(),
                ));
            }
            _ => return Err(status_error(response, url)),
        }
        if self.remote.validator.contradicts(&validator) {
            return Err(changed(format!(
                "validator changed from {:?} to {:?}",
                self.remote.validator.if_range().unwrap_or(""),
                validator.if_range().unwrap_or("")
            )));
        }
        let value = header_str(headers, header::CONTENT_RANGE).ok_or_else(|| {
            Error::new(ErrorKind::Protocol, "206 response without Content-Range").with_url(url)
        })?;
        let content_range = parse_content_range(value)
            .map_err(|e| Error::new(ErrorKind::Protocol, "bad Content-Range").with_url(url).with_source(e))?;
        if content_range.total.is_some() && content_range.total != self.remote.total {
            return Err(changed(format!(
                "size changed from {} to {} bytes",
                self.remote.total.unwrap_or(0),
                content_range.total.unwrap_or(0)
            )));
        }
        match content_range.range {
            Some(got) if got.start == want.start && got.end <= want.end && !got.is_empty() => Ok(got),
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
    async fn stream_body(&self, id: TaskId, expected: ByteRange, mut response: Response) -> Result<()> {
        let _active = Active::new(&self.counters.active);
        let url = &self.remote.url;
        let mut offset = expected.start;
        while offset < expected.end {
            let chunk = match tokio::time::timeout(self.policy.stall_timeout, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(error)) => return Err(network_error(error, url)),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Network,
                        format!("stalled: no data for {} s", self.policy.stall_timeout.as_secs()),
                    )
                    .with_url(url));
                }
            };
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
                    ));
                }
                let len = claimed.len() as usize;
                self.part
                    .write_at(claimed.start, &data[..len])
                    .map_err(|e| Error::io(format!("cannot write {}", self.part.path().display()), e))?;
                offset = claimed.end;
                data = &data[len..];
                let frontier = self.plan().mark_written(claimed);
                if let Some(frontier) = frontier {
                    self.hasher.advance(frontier);
                }
                self.counters.bytes.fetch_add(claimed.len(), Ordering::Relaxed);
            }
        }
        if offset < expected.end {
            return Err(Error::new(
                ErrorKind::Network,
                format!("connection closed after {} of {} bytes", offset - expected.start, expected.len()),
            )
            .with_url(url));
        }
        Ok(())
    }
}
