//! The per-connection token bucket behind `Fault::Throttle`: a smooth rate with a burst of
//! 10 ms worth of bytes, so a throttled link never sends in big lumps.

use std::time::{Duration, Instant};

/// How much time's worth of bytes the bucket holds; also the pacing granularity.
const BURST: Duration = Duration::from_millis(10);

/// The shortest wait `grant` asks for, so that a caller looping on it always makes progress.
const MIN_WAIT: Duration = Duration::from_micros(1);

/// A token bucket counting bytes.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    bytes_per_sec: u64,
    tokens: f64,
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket for this rate (at least 1 byte per second).
    pub(crate) fn new(bytes_per_sec: u64, now: Instant) -> Self {
        let mut bucket = Self {
            bytes_per_sec: bytes_per_sec.max(1),
            tokens: 0.0,
            last_refill: now,
        };
        bucket.tokens = bucket.capacity();
        bucket
    }

    /// Changes the rate, keeping the tokens earned so far (clamped to the new capacity).
    pub(crate) fn set_rate(&mut self, bytes_per_sec: u64, now: Instant) {
        self.refill(now);
        self.bytes_per_sec = bytes_per_sec.max(1);
        self.tokens = self.tokens.min(self.capacity());
    }

    fn capacity(&self) -> f64 {
        (self.bytes_per_sec as f64 * BURST.as_secs_f64()).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.bytes_per_sec as f64).min(self.capacity());
        self.last_refill = now;
    }

    /// Takes up to `want` bytes' worth of tokens (`want > 0`): `Ok(n)` with `1 <= n <= want`
    /// when a write may go ahead now, or `Err(wait)` until enough tokens will have come in.
    ///
    /// It waits for a whole burst (or `want`, if smaller) rather than granting a few bytes at a
    /// time, which would make a slow link send in tiny writes.
    pub(crate) fn grant(&mut self, want: usize, now: Instant) -> Result<usize, Duration> {
        self.refill(now);
        let target = (want as f64).min(self.capacity()).floor().max(1.0);
        // The tolerance absorbs floating-point dust, which would otherwise ask for a wait that
        // rounds to zero nanoseconds.
        if self.tokens + 1e-6 >= target {
            self.tokens = (self.tokens - target).max(0.0);
            return Ok(target as usize);
        }
        let deficit = target - self.tokens;
        Err(Duration::from_secs_f64(deficit / self.bytes_per_sec as f64).max(MIN_WAIT))
    }

    /// Waits until it may send, then takes up to `want` bytes' worth of tokens.
    pub(crate) async fn take(&mut self, want: usize) -> usize {
        loop {
            match self.grant(want, Instant::now()) {
                Ok(granted) => return granted,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_with_one_burst_then_paces() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100_000, start);
        // 10 ms at 100 kB/s is a 1000-byte burst.
        assert_eq!(bucket.grant(64 * 1024, start), Ok(1000));
        let wait = bucket.grant(64 * 1024, start).expect_err("bucket is empty");
        assert_eq!(wait, Duration::from_millis(10));
        assert_eq!(bucket.grant(64 * 1024, start + wait), Ok(1000));
        // Small writes are granted in full once their tokens are in.
        assert_eq!(
            bucket.grant(10, start + wait),
            Err(Duration::from_micros(100))
        );
        assert_eq!(bucket.grant(10, start + wait * 2), Ok(10));
    }

    #[test]
    fn rate_over_a_second_is_the_configured_one() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_000_000, start);
        let mut now = start;
        let mut sent = 0u64;
        while now < start + Duration::from_secs(1) {
            match bucket.grant(64 * 1024, now) {
                Ok(granted) => sent += granted as u64,
                Err(wait) => now += wait,
            }
        }
        // One initial burst over the rate, no more.
        assert!((1_000_000..=1_010_000).contains(&sent), "{sent}");
    }

    #[test]
    fn idle_time_does_not_build_a_big_burst_and_zero_is_one() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        assert_eq!(
            bucket.grant(1_000_000, start + Duration::from_secs(60)),
            Ok(10)
        );
        bucket.set_rate(0, start + Duration::from_secs(60));
        assert_eq!(bucket.grant(5, start + Duration::from_secs(61)), Ok(1));
    }
}
