//! Limits shared by every download that holds them: a bandwidth cap
//! ([`RateLimit`], a token bucket) and a connection budget
//! ([`ConnectionBudget`], a total and a per-host ceiling). Both are cheap
//! handles: clone one into the [`Config`](crate::Config) of each download
//! of a batch and the limit is one for all of them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A bandwidth cap in bytes per second, shared by every connection of
/// every download given a clone of it, and changeable while they run.
///
/// It is a token bucket that holds at most one read's worth of tokens: a
/// connection that takes a read it has no tokens for goes into debt and
/// waits until the debt is paid, so over any stretch longer than one read
/// the bytes taken stay at the rate. What the kernel buffers before the
/// engine reads it (a socket's receive buffer, a few hundred KiB at most)
/// arrives above the limit at the start.
#[derive(Clone)]
pub struct RateLimit {
    inner: Arc<RateInner>,
}

struct RateInner {
    /// Bytes per second; 0 is no limit.
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
    changed: Notify,
}

struct Bucket {
    /// Tokens in hand; negative is debt.
    tokens: f64,
    last: Instant,
}

/// The most tokens the bucket keeps: about one read.
const BURST: f64 = 64.0 * 1024.0;

impl RateLimit {
    /// A cap of `bytes_per_second` (0 is no limit).
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            inner: Arc::new(RateInner {
                rate: AtomicU64::new(bytes_per_second),
                bucket: Mutex::new(Bucket {
                    tokens: 0.0,
                    last: Instant::now(),
                }),
                changed: Notify::new(),
            }),
        }
    }

    /// The cap in bytes per second, 0 for none.
    pub fn rate(&self) -> u64 {
        self.inner.rate.load(Ordering::Relaxed)
    }

    /// Changes the cap for every download sharing it, at once: waits in
    /// progress are re-timed at the new rate (0 lifts the limit).
    pub fn set_rate(&self, bytes_per_second: u64) {
        {
            let mut bucket = self.bucket();
            self.refill(&mut bucket, Instant::now());
            self.inner.rate.store(bytes_per_second, Ordering::Relaxed);
            if bytes_per_second == 0 {
                bucket.tokens = 0.0;
            }
        }
        self.inner.changed.notify_waiters();
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.inner
            .bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let rate = self.rate() as f64;
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(BURST);
    }

    /// Takes `bytes` from the bucket, waiting while it is in debt.
    pub(crate) async fn take(&self, bytes: u64) {
        let mut owed = bytes as f64;
        loop {
            // Made before the bucket is read, so a change of rate between
            // the reading and the wait still wakes it.
            let changed = self.inner.changed.notified();
            let wait = {
                let mut bucket = self.bucket();
                let rate = self.rate();
                if rate == 0 {
                    return;
                }
                self.refill(&mut bucket, Instant::now());
                bucket.tokens -= owed;
                owed = 0.0;
                if bucket.tokens >= 0.0 {
                    return;
                }
                Duration::from_secs_f64(-bucket.tokens / rate as f64)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // The rate changed: the debt is timed again at the new rate.
                () = changed => {}
            }
            // Awake: wait on only while the bucket is still in debt.
            let in_debt = {
                let mut bucket = self.bucket();
                if self.rate() == 0 {
                    return;
                }
                self.refill(&mut bucket, Instant::now());
                bucket.tokens < 0.0
            };
            if !in_debt {
                return;
            }
        }
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("bytes_per_second", &self.rate())
            .finish()
    }
}

/// How many connections a batch of downloads may hold at once, in total
/// and to any one host. Every connection of a download holding a clone
/// takes a permit for as long as it lives; a download whose pool would
/// grow takes more only while some are free, and its first connection
/// waits for one.
#[derive(Clone)]
pub struct ConnectionBudget {
    inner: Arc<BudgetInner>,
}

struct BudgetInner {
    total: Arc<Semaphore>,
    total_size: usize,
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// One connection's share of a [`ConnectionBudget`], returned on drop.
pub(crate) struct Permit {
    _total: OwnedSemaphorePermit,
    _host: OwnedSemaphorePermit,
}

impl ConnectionBudget {
    /// At most `total` connections at once, at most `per_host` of them to
    /// one host (both at least 1).
    pub fn new(total: usize, per_host: usize) -> Self {
        let total = total.max(1);
        Self {
            inner: Arc::new(BudgetInner {
                total: Arc::new(Semaphore::new(total)),
                total_size: total,
                per_host: per_host.clamp(1, total),
                hosts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The ceiling in total.
    pub fn total(&self) -> usize {
        self.inner.total_size
    }

    /// The ceiling per host.
    pub fn per_host(&self) -> usize {
        self.inner.per_host
    }

    /// Connections free right now, in total.
    pub fn available(&self) -> usize {
        self.inner.total.available_permits()
    }

    fn host(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            hosts
                .entry(host.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.inner.per_host))),
        )
    }

    /// Waits for a connection to `host`.
    pub(crate) async fn acquire(&self, host: &str) -> Permit {
        let host = self.host(host);
        // The host's permit first: a file whose host is full does not sit
        // on a share of the total that another host's file could use.
        let host_permit = host.acquire_owned().await;
        let total_permit = Arc::clone(&self.inner.total).acquire_owned().await;
        match (host_permit, total_permit) {
            (Ok(host), Ok(total)) => Permit {
                _total: total,
                _host: host,
            },
            // The semaphores are never closed.
            _ => unreachable!("connection budget semaphores are never closed"),
        }
    }

    /// A connection to `host` if one is free now.
    pub(crate) fn try_acquire(&self, host: &str) -> Option<Permit> {
        let host = self.host(host).try_acquire_owned().ok()?;
        let total = Arc::clone(&self.inner.total).try_acquire_owned().ok()?;
        Some(Permit {
            _total: total,
            _host: host,
        })
    }
}

impl fmt::Debug for ConnectionBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionBudget")
            .field("total", &self.inner.total_size)
            .field("per_host", &self.inner.per_host)
            .field("available", &self.available())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `reads` reads of `size` bytes from `tasks` tasks at once and
    /// returns the (paused-clock) time it took.
    async fn drain(limit: &RateLimit, tasks: usize, reads: usize, size: u64) -> Duration {
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let limit = limit.clone();
            set.spawn(async move {
                for _ in 0..reads {
                    limit.take(size).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn many_connections_share_one_rate() {
        let limit = RateLimit::new(4 << 20);
        // 8 connections × 64 reads × 64 KiB = 32 MiB at 4 MiB/s: 8 s.
        let took = drain(&limit, 8, 64, 64 << 10).await;
        let secs = took.as_secs_f64();
        assert!((7.9..=8.1).contains(&secs), "took {secs} s");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_takes_no_time_and_a_change_applies_at_once() {
        let limit = RateLimit::new(0);
        assert_eq!(drain(&limit, 4, 100, 1 << 20).await, Duration::ZERO);
        limit.set_rate(1 << 20);
        // 2 MiB at 1 MiB/s, then lifted halfway through the second.
        let slow = limit.clone();
        let task = tokio::spawn(async move { drain(&slow, 1, 32, 64 << 10).await });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        limit.set_rate(0);
        let took = task.await.expect("task");
        let secs = took.as_secs_f64();
        assert!((1.4..=1.6).contains(&secs), "took {secs} s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_raised_rate_shortens_a_wait_in_progress() {
        let limit = RateLimit::new(64 << 10);
        // 1 MiB owed at 64 KiB/s would be 16 s; raised to 1 MiB/s after 1 s,
        // the remaining ~960 KiB take under a second.
        let slow = limit.clone();
        let task = tokio::spawn(async move { drain(&slow, 1, 1, 1 << 20).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        limit.set_rate(1 << 20);
        let secs = task.await.expect("task").as_secs_f64();
        assert!(secs < 2.1, "took {secs} s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_burst_is_one_read() {
        let limit = RateLimit::new(1 << 20);
        // A long idle time does not let a batch of reads through at once.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let took = drain(&limit, 1, 17, 64 << 10).await.as_secs_f64();
        // 17 reads of 64 KiB: one from the bucket, 16 at 1 MiB/s = 1 s.
        assert!((0.95..=1.05).contains(&took), "took {took} s");
    }

    #[tokio::test]
    async fn the_budget_caps_the_total_and_each_host() {
        let budget = ConnectionBudget::new(3, 2);
        let a1 = budget.try_acquire("a").expect("first a");
        let a2 = budget.try_acquire("a").expect("second a");
        assert!(budget.try_acquire("a").is_none(), "a third to one host");
        let b1 = budget.try_acquire("b").expect("first b");
        assert!(budget.try_acquire("c").is_none(), "a fourth in total");
        drop(a1);
        assert!(
            budget.try_acquire("a").is_some(),
            "a freed permit is reused"
        );
        drop((a2, b1));
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire("c").await })
        };
        assert!(waiter.await.is_ok());
        assert_eq!(budget.available(), 3);
    }
}
