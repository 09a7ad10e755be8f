//! Sizing the connection pool: how many connections run and how many
//! should ([`Pool`], shared by the connections), and the policy that
//! decides it from measured throughput ([`Growth`], pure).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How many connections run, and how many should: a connection above the
/// desired count closes once its current range is done.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    live: AtomicUsize,
    desired: AtomicUsize,
    /// Answers that pushed back (429, 503) since [`Growth`] last looked.
    pushbacks: AtomicUsize,
}

impl Pool {
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn desired(&self) -> usize {
        self.desired.load(Ordering::Relaxed)
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
    pub(crate) fn leave_if_surplus(&self) -> bool {
        let desired = self.desired.load(Ordering::Relaxed);
        self.live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                (live > desired).then(|| live - 1)
            })
            .is_ok()
    }

    pub(crate) fn left(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether more connections run than should: a connection that was
    /// pushed back then gives its range back and closes.
    pub(crate) fn is_surplus(&self) -> bool {
        self.live.load(Ordering::Relaxed) > self.desired.load(Ordering::Relaxed)
    }

    /// A connection met a server pushing back (429 Too Many Requests, 503
    /// Service Unavailable).
    pub(crate) fn pushed_back(&self) {
        self.pushbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// How many pushbacks came since the last call.
    pub(crate) fn take_pushbacks(&self) -> usize {
        self.pushbacks.swap(0, Ordering::Relaxed)
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
///
/// A server that pushes back (429, 503, whatever its `Retry-After`) is
/// asking for fewer connections, not for patience: growth stops for good,
/// and the pool halves (at most once per window, never below one) for as
/// long as the pushback lasts, then holds that count (see [`Growth::pushback`]).
#[derive(Debug)]
pub(crate) struct Growth {
    connections: usize,
    ceiling: usize,
    window: Duration,
    window_start: Option<(Instant, u64)>,
    before_change: Option<(usize, f64)>,
    settled: bool,
    /// When the pool last halved for a pushback.
    last_pushback: Option<Instant>,
}

/// What [`Growth`] wants done with the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resize {
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
    pub(crate) fn window_for(latency: Duration) -> Duration {
        (latency * 3).clamp(Self::MIN_WINDOW, Self::MAX_WINDOW)
    }

    pub(crate) fn new(connections: usize, ceiling: usize, window: Duration) -> Self {
        Self {
            connections,
            ceiling,
            window,
            window_start: None,
            before_change: None,
            settled: connections >= ceiling,
            last_pushback: None,
        }
    }

    /// The server pushed back (429, 503): never grow again, and halve the
    /// pool (floor 1) unless it already halved within the last window, so
    /// that one burst of refusals, seen by every connection at once, counts
    /// once.
    pub(crate) fn pushback(&mut self, now: Instant) -> Resize {
        self.settled = true;
        if self
            .last_pushback
            .is_some_and(|last| now.duration_since(last) < self.window)
        {
            return Resize::Hold;
        }
        self.last_pushback = Some(now);
        let halved = (self.connections / 2).max(1);
        if halved == self.connections {
            return Resize::Hold;
        }
        self.connections = halved;
        Resize::ShrinkTo(halved)
    }

    /// Feeds a sample of total bytes written; `pending` says whether work is
    /// still waiting to be handed out (no point growing otherwise).
    pub(crate) fn observe(&mut self, now: Instant, bytes: u64, pending: bool) -> Resize {
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
    fn pushback_halves_once_per_window_down_to_one_and_stops_growth() {
        let window = Growth::MIN_WINDOW;
        let mut growth = Growth::new(8, 16, window);
        let start = Instant::now();
        // Every connection sees the burst at once: one halving.
        assert_eq!(growth.pushback(start), Resize::ShrinkTo(4));
        assert_eq!(growth.pushback(start + window / 2), Resize::Hold);
        assert_eq!(growth.pushback(start + window), Resize::ShrinkTo(2));
        assert_eq!(growth.pushback(start + window * 2), Resize::ShrinkTo(1));
        assert_eq!(growth.pushback(start + window * 3), Resize::Hold);
        // Throughput that would have quadrupled the pool no longer grows it.
        let mut now = start + window * 4;
        let mut bytes = 0;
        for _ in 0..6 {
            assert_eq!(growth.observe(now, bytes, true), Resize::Hold);
            now += window;
            bytes += 100_000_000;
        }
    }

    #[test]
    fn the_pool_counts_pushbacks_and_surplus() {
        let pool = Pool::default();
        pool.set_desired(2);
        for _ in 0..3 {
            pool.joined();
        }
        assert!(pool.is_surplus());
        pool.pushed_back();
        pool.pushed_back();
        assert_eq!(pool.take_pushbacks(), 2);
        assert_eq!(pool.take_pushbacks(), 0);
        assert!(pool.leave_if_surplus());
        assert!(!pool.is_surplus());
    }

    #[test]
    fn never_exceeds_the_ceiling() {
        let (_, connections) = simulate(4, 6, |n| n as f64 * 20e6);
        assert_eq!(connections, 6);
    }
}
