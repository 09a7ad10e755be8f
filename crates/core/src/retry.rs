//! Retry policy in one place: which failures are worth another attempt, and
//! how long to wait before it.
//!
//! The arithmetic is pure (no clock, no randomness source of its own) so it
//! can be property-tested; callers pass the attempt number and a jitter value.

use std::time::Duration;

/// Whether a response status may succeed if the same request is repeated.
///
/// 408, 425, 429 and all 5xx are transient; any other status (404, 403, 410,
/// 416 …) is permanent and fails the download at once.
pub fn status_is_transient(code: u16) -> bool {
    matches!(code, 408 | 425 | 429) || (500..=599).contains(&code)
}

/// Exponential backoff with "equal jitter": attempt `n` (1-based) waits
/// between half and all of `base · 2^(n-1)`, never more than `cap`.
///
/// `jitter` is any value in `[0, 1]`; values outside are clamped.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exponent).min(cap);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let half = full / 2;
    half + half.mul_f64(jitter)
}

/// The delay before the next attempt: the backoff, or the server's
/// `Retry-After` if that is longer, never above `max_wait`.
pub fn next_delay(
    backoff: Duration,
    retry_after: Option<Duration>,
    max_wait: Duration,
) -> Duration {
    backoff.max(retry_after.unwrap_or_default()).min(max_wait)
}

/// The waiting rules of every retry loop (probe, ranges, single stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The first backoff; each further failure doubles it.
    pub base: Duration,
    /// The longest backoff.
    pub cap: Duration,
    /// The longest wait of all, `Retry-After` included.
    pub max_wait: Duration,
}

impl Backoff {
    pub(crate) const DEFAULT: Backoff = Backoff {
        base: Duration::from_millis(250),
        cap: Duration::from_secs(10),
        max_wait: Duration::from_secs(60),
    };

    /// How long to wait after failure number `failures` (1-based), given the
    /// server's `Retry-After`, if it sent one.
    pub(crate) fn delay(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        jitter: &mut Jitter,
    ) -> Duration {
        let backoff = backoff_delay(failures, self.base, self.cap, jitter.next_unit());
        next_delay(backoff, retry_after, self.max_wait)
    }
}

/// A small xorshift generator for jitter; not for anything that needs to be
/// unpredictable.
#[derive(Clone, Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A value in `[0, 1)`.
    pub(crate) fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies_statuses() {
        for code in [404, 403, 410, 416, 401, 400] {
            assert!(!status_is_transient(code), "{code}");
        }
        for code in [500, 502, 503, 504, 429, 408] {
            assert!(status_is_transient(code), "{code}");
        }
    }

    #[test]
    fn backoff_grows_then_caps() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        assert_eq!(backoff_delay(1, base, cap, 1.0), base);
        assert_eq!(backoff_delay(3, base, cap, 1.0), base * 4);
        assert_eq!(backoff_delay(3, base, cap, 0.0), base * 2);
        assert_eq!(backoff_delay(40, base, cap, 1.0), cap);
    }

    #[test]
    fn retry_after_wins_when_longer_but_is_capped() {
        let max = Duration::from_secs(60);
        let backoff = Duration::from_secs(1);
        assert_eq!(
            next_delay(backoff, Some(Duration::from_secs(3)), max),
            Duration::from_secs(3)
        );
        assert_eq!(next_delay(backoff, None, max), backoff);
        assert_eq!(
            next_delay(backoff, Some(Duration::from_secs(3600)), max),
            max
        );
    }

    proptest! {
        #[test]
        fn backoff_stays_within_cap(attempt in 0u32..200, base_ms in 0u64..10_000, cap_ms in 0u64..120_000, jitter in any::<f64>()) {
            let cap = Duration::from_millis(cap_ms);
            let delay = backoff_delay(attempt, Duration::from_millis(base_ms), cap, jitter);
            prop_assert!(delay <= cap);
        }

        #[test]
        fn jitter_is_a_unit_value(seed in any::<u64>()) {
            let mut jitter = Jitter::new(seed);
            for _ in 0..16 {
                let value = jitter.next_unit();
                prop_assert!((0.0..1.0).contains(&value));
            }
        }
    }
}
