//! Progress: the counters the connections bump, and the ticker task that
//! turns them into [`Event::Progress`] a few times a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::event::{Event, EventSink};

/// Counters shared by the connections and the progress ticker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Bytes of the file written so far (the single-stream fallback sets it
    /// back to 0 when it starts over).
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
    pub active: AtomicUsize,
}

/// How often progress is reported.
const PERIOD: Duration = Duration::from_millis(250);

/// The ticker task; it stops when this guard is dropped, or with a last
/// report when [`Ticker::finish`] is called.
pub(crate) struct Ticker {
    task: Option<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
    total: Option<u64>,
    events: Option<EventSink>,
}

impl Ticker {
    /// Starts reporting `counters` to `events` (nothing runs without a sink).
    pub(crate) fn start(
        counters: Arc<Counters>,
        total: Option<u64>,
        events: Option<EventSink>,
    ) -> Self {
        let task = events.clone().map(|events| {
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(PERIOD);
                let mut rate = Rate::default();
                loop {
                    interval.tick().await;
                    let bytes = counters.bytes.load(Ordering::Relaxed);
                    events(Event::Progress {
                        bytes,
                        total,
                        rate_bps: rate.sample(Instant::now(), bytes),
                        connections: counters.active.load(Ordering::Relaxed),
                        retries: counters.retries.load(Ordering::Relaxed),
                    });
                }
            })
        });
        Self {
            task,
            counters,
            total,
            events,
        }
    }

    /// Stops the ticker and reports where the counters ended: the last
    /// `Progress` of a finished transfer has `bytes == total`, that of a
    /// failed or cancelled one the bytes kept. (Dropping the guard instead
    /// reports nothing more: a dropped download emits no event.)
    pub(crate) fn finish(mut self, elapsed: Duration) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(events) = &self.events {
            let bytes = self.counters.bytes.load(Ordering::Relaxed);
            let secs = elapsed.as_secs_f64();
            events(Event::Progress {
                bytes,
                total: self.total,
                rate_bps: if secs > 0.0 {
                    (bytes as f64 / secs) as u64
                } else {
                    0
                },
                connections: 0,
                retries: self.counters.retries.load(Ordering::Relaxed),
            });
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A smoothed transfer rate from samples of a byte counter.
#[derive(Debug, Default)]
struct Rate {
    last: Option<(Instant, u64)>,
    smoothed: f64,
}

impl Rate {
    /// Feeds the counter's value at `now`; returns bytes per second. A
    /// counter that went down (a stream starting over from byte 0) starts
    /// the measurement over rather than underflowing.
    fn sample(&mut self, now: Instant, bytes: u64) -> u64 {
        if let Some((at, last_bytes)) = self.last {
            let dt = now.duration_since(at).as_secs_f64();
            match bytes.checked_sub(last_bytes) {
                Some(delta) if dt > 0.0 => {
                    let instant = delta as f64 / dt;
                    self.smoothed = if self.smoothed == 0.0 {
                        instant
                    } else {
                        0.7 * self.smoothed + 0.3 * instant
                    };
                }
                Some(_) => {}
                None => self.smoothed = 0.0,
            }
        }
        self.last = Some((now, bytes));
        self.smoothed as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_starts_over_does_not_underflow() {
        let start = Instant::now();
        let mut rate = Rate::default();
        assert_eq!(rate.sample(start, 0), 0);
        let step = Duration::from_millis(250);
        assert_eq!(rate.sample(start + step, 1_000_000), 4_000_000);
        // The single stream restarted: the counter went back to a few bytes.
        let after_reset = rate.sample(start + step * 2, 1000);
        assert_eq!(after_reset, 0, "a reset must not read as a huge rate");
        let next = rate.sample(start + step * 3, 251_000);
        assert_eq!(next, 1_000_000);
    }
}
