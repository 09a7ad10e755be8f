//! The sources of one download: the primary URL and its mirrors, each with
//! its own pinned validator, `If-Range` form, health and throughput, and
//! the choice of which one serves the next range.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use reqwest::Url;
use tokio::task::JoinSet;
use tracing::warn;

use crate::error::{Error, redact_url};
use crate::event::{Event, EventSink};
use crate::probe::{SMALL_PROBE_LEN, Validator, probe};
use crate::retry::Jitter;
use crate::transport::Http;

/// Which `If-Range` form a source gets. Some CDNs answer `200` to an ETag
/// `If-Range` even when it matches; for them we fall back to the date, and
/// then to a plain `Range` whose reply is checked against the validator.
pub(crate) const IF_RANGE_ETAG: u8 = 0;
pub(crate) const IF_RANGE_DATE: u8 = 1;
pub(crate) const IF_RANGE_NONE: u8 = 2;

/// One place the bytes can come from: the primary URL or a mirror.
pub(crate) struct Source {
    /// The URL as given, re-resolved when a redirect target expires.
    pub original: Url,
    /// Where ranges go: the URL after redirects.
    pub url: RwLock<Url>,
    /// This source's own validator, pinned by its probe.
    pub validator: Validator,
    pub(crate) if_range_mode: AtomicU8,
    /// Set once the source's ETags are seen to flip between backends.
    etag_unstable: AtomicBool,
    pub(crate) alive: AtomicBool,
    pub(crate) consecutive_failures: AtomicU32,
    pub(crate) re_resolves: AtomicU32,
    /// Body bytes delivered and connection-time spent, for weighting.
    pub(crate) bytes: AtomicU64,
    pub(crate) busy_nanos: AtomicU64,
    pub(crate) active: AtomicUsize,
}

impl Source {
    pub(crate) fn new(original: Url, url: Url, validator: Validator) -> Self {
        // A weak ETag never goes in If-Range (RFC 9110 §13.1.5); it is still
        // compared on every response.
        let mode = if validator.strong_etag().is_some() {
            IF_RANGE_ETAG
        } else if validator.last_modified.is_some() {
            IF_RANGE_DATE
        } else {
            IF_RANGE_NONE
        };
        Self {
            original,
            url: RwLock::new(url),
            validator,
            if_range_mode: AtomicU8::new(mode),
            etag_unstable: AtomicBool::new(false),
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

    /// Whether this source's ETags flip between backends, so that only its
    /// Last-Modified pins the version.
    pub(crate) fn etag_unstable(&self) -> bool {
        self.etag_unstable.load(Ordering::Relaxed)
    }

    /// Marks the ETags unstable; returns whether this call did.
    pub(crate) fn set_etag_unstable(&self) -> bool {
        !self.etag_unstable.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn if_range(&self, mode: u8) -> Option<&str> {
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

/// Every source of a download, the primary first.
pub(crate) struct Sources {
    list: Vec<Source>,
}

impl std::ops::Deref for Sources {
    type Target = [Source];

    fn deref(&self) -> &[Source] {
        &self.list
    }
}

impl Sources {
    pub(crate) fn new(list: Vec<Source>) -> Self {
        Self { list }
    }

    /// The alive source to use next: one never sampled first, then the best
    /// throughput per connection already on it, so connections spread over
    /// mirrors in proportion to what each delivers.
    pub(crate) fn pick(&self, jitter: &mut Jitter) -> Option<usize> {
        let alive: Vec<usize> = (0..self.list.len())
            .filter(|&i| self.list[i].alive.load(Ordering::Relaxed))
            .collect();
        if let Some(&unsampled) = alive
            .iter()
            .filter(|&&i| self.list[i].rate().is_none())
            .min_by_key(|&&i| self.list[i].active.load(Ordering::Relaxed))
        {
            return Some(unsampled);
        }
        // A little randomness keeps an unlucky early sample from starving a
        // good mirror forever.
        alive.into_iter().max_by(|&a, &b| {
            let score = |i: usize, noise: f64| {
                let source = &self.list[i];
                source.rate().unwrap_or(0.0) * (0.9 + 0.2 * noise)
                    / (source.active.load(Ordering::Relaxed) as f64 + 1.0)
            };
            score(a, jitter.next_unit()).total_cmp(&score(b, jitter.next_unit()))
        })
    }

    /// Bytes per second of a typical busy connection, over all sources.
    pub(crate) fn peer_rate(&self) -> f64 {
        let (bytes, nanos) = self.list.iter().fold((0u64, 0u64), |(b, n), s| {
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

    /// Whether a source other than `idx` is still alive.
    pub(crate) fn has_others(&self, idx: usize) -> bool {
        self.list
            .iter()
            .enumerate()
            .any(|(i, s)| i != idx && s.alive.load(Ordering::Relaxed))
    }

    /// Marks source `idx` dead; returns whether it was alive until now.
    pub(crate) fn drop_source(&self, idx: usize, error: &Error) -> bool {
        let source = &self.list[idx];
        let was_alive = source.alive.swap(false, Ordering::Relaxed);
        if was_alive {
            warn!(url = %redact_url(&source.original), %error, "dropping mirror");
        }
        was_alive
    }
}

/// What a mirror is compared with: the primary as its probe found it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MirrorProbe<'a> {
    pub total: Option<u64>,
    pub validator: &'a Validator,
    /// Whether an expected SHA-256 will check the bytes.
    pub expected_hash: bool,
    pub timeout: std::time::Duration,
}

/// Probes every mirror for its size and validator. A mirror that cannot be
/// reached, serves no ranges, or disagrees on the size is dropped with an
/// event. One whose validators are not the primary's (another ETag, none at
/// all) serves bytes that cannot be shown to be the same file: without an
/// expected hash it is kept out of this download (it stands by, should the
/// primary fail), with a notice; with one, the hash decides.
pub(crate) async fn probe_mirrors(
    client: &Http,
    mirrors: &[Url],
    primary: MirrorProbe<'_>,
    events: Option<&EventSink>,
) -> Vec<Source> {
    let mut probes = JoinSet::new();
    for (idx, mirror) in mirrors.iter().enumerate() {
        let client = client.clone();
        let mirror = mirror.clone();
        let timeout = primary.timeout;
        probes.spawn(async move {
            (
                idx,
                mirror.clone(),
                probe(&client, &mirror, SMALL_PROBE_LEN, timeout).await,
            )
        });
    }
    let emit = |event| {
        if let Some(sink) = events {
            sink(event);
        }
    };
    let mut found = Vec::new();
    while let Some(Ok((idx, mirror, result))) = probes.join_next().await {
        let reason = match result {
            Ok((remote, _))
                if remote.ranges
                    && remote.total == primary.total
                    && !primary.expected_hash
                    && !primary.validator.same_version(&remote.validator) =>
            {
                emit(Event::Notice {
                    message: format!(
                        "not mixing bytes of {} into this download: its ETag or Last-Modified differ from the primary's (or neither has any), so without --sha256 its bytes cannot be shown to be the same file; it is used only if the primary fails",
                        redact_url(&mirror)
                    ),
                });
                continue;
            }
            Ok((remote, _)) if remote.ranges && remote.total == primary.total => {
                found.push((idx, Source::new(mirror, remote.url, remote.validator)));
                continue;
            }
            Ok((remote, _)) if !remote.ranges => "it does not serve byte ranges".to_owned(),
            Ok((remote, _)) => format!(
                "its size ({} bytes) differs from the primary's ({} bytes)",
                remote.total.unwrap_or(0),
                primary.total.unwrap_or(0)
            ),
            Err(error) => error.to_string(),
        };
        let url = redact_url(&mirror);
        warn!(%url, %reason, "dropping mirror");
        emit(Event::MirrorDropped { url, reason });
    }
    found.sort_by_key(|(idx, _)| *idx);
    found.into_iter().map(|(_, source)| source).collect()
}
