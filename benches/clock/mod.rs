//! On-CPU time for CPU-bound benches on a shared machine: wall-clock time
//! counts whatever else ran meanwhile, the scheduler's own account of this
//! thread does not. `openssl speed` divides by CPU time too unless given
//! `-elapsed`, so figures taken this way compare with its output.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Bencher;

const SCHEDSTAT: &str = "/proc/thread-self/schedstat";

/// Time this thread has run on a CPU, user and kernel, if the kernel keeps
/// scheduler statistics. The first field of `schedstat`, in nanoseconds; it
/// is brought up to date at context switches and ticks, so a reading lags by
/// at most a tick (4 ms at `HZ=250`): samples must be much longer than that.
fn on_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string(SCHEDSTAT).ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Which clock the benches of this binary use; printed once so that a
/// figure is never read as the other kind.
pub fn announce() {
    match on_cpu() {
        Some(_) => eprintln!("times below are on-CPU time of the bench thread ({SCHEDSTAT})"),
        None => eprintln!("{SCHEDSTAT} unavailable: times below are wall-clock"),
    }
}

/// Runs `routine` like `Bencher::iter`, timed in on-CPU time when the kernel
/// provides it and in wall-clock time otherwise.
pub fn iter_on_cpu<O>(b: &mut Bencher<'_>, mut routine: impl FnMut() -> O) {
    if on_cpu().is_none() {
        b.iter(routine);
        return;
    }
    b.iter_custom(|iters| {
        let wall = Instant::now();
        let start = on_cpu().expect("schedstat was readable a moment ago");
        for _ in 0..iters {
            black_box(routine());
        }
        let end = on_cpu().expect("schedstat was readable a moment ago");
        let cpu = end.saturating_sub(start);
        // Criterion's warm-up starts with one iteration, which can fit in a
        // tick and read zero; the wall clock is then the only measure.
        if cpu.is_zero() { wall.elapsed() } else { cpu }
    });
}
