//! The plan: which bytes are still to fetch, which are in flight and with
//! whom, and which are written. Pure bookkeeping, no I/O.
//!
//! A [`Scheduler`] hands out [`Assignment`]s, lowest offset first so the hash
//! frontier keeps up. A task's owner *claims* bytes just before writing them,
//! which moves the task's cursor; when nothing is left to hand out, an idle
//! connection steals the far half of the largest unclaimed remainder, so the
//! slowest range never decides the total time.
//!
//! Behind a site cache two more rules matter. Every boundary the plan cuts —
//! a piece's end, a steal's split point — lands on a multiple of the
//! alignment ([`Scheduler::aligned`]), so every client asks for the same
//! byte ranges as the cache keys its slices by (nginx's `slice`, Dragonfly's
//! pieces). And a rotated plan ([`Scheduler::rotated`]) starts, after its
//! first piece, at a pivot of its own and wraps around, so that several
//! clients fetching one file through one cache fill different slices instead
//! of queueing on the same cache lock; the price is that the hash frontier
//! waits for the bytes below the pivot, which are fetched last.
//!
//! Invariant (property-tested): pending ∪ (every task's `[cursor, end)`) ∪
//! claimed bytes cover `[0, total)` exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::range::{ByteRange, RangeSet};

/// Identifies one in-flight task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

/// A range handed to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The task to report claims against.
    pub id: TaskId,
    /// The bytes it covers when handed out; the end may later shrink.
    pub range: ByteRange,
    /// Whether it was stolen from another task's remainder.
    pub stolen: bool,
}

#[derive(Clone, Copy, Debug)]
struct Task {
    /// Next byte to claim.
    cursor: u64,
    /// One past the last byte this task may claim; shrinks when stolen from.
    end: u64,
    /// When the task was handed out (time since the download started).
    started: Duration,
    /// Bytes claimed since then.
    claimed: u64,
    /// At its connection's last look, data was already waiting: what holds
    /// this task back is this process (its CPU, its writes), not the
    /// server, and what a steal would cut off is probably already in the
    /// socket buffers.
    backlogged: bool,
}

/// How slow a task must be, next to its peers, before an idle connection
/// takes its remainder over.
#[derive(Clone, Copy, Debug)]
pub struct TakeOver {
    /// A task younger than this is never judged.
    pub min_age: Duration,
    /// A task is slow when its rate is below this fraction of the mean rate
    /// of the tasks in flight.
    pub slow_fraction: f64,
}

/// Tracks pending, in-flight and written bytes of one file.
#[derive(Clone, Debug)]
pub struct Scheduler {
    total: u64,
    chunk_size: u64,
    min_piece: u64,
    /// Boundaries the plan cuts are multiples of this (1: anywhere).
    align: u64,
    /// Where pieces after the first start being handed out (0: lowest first).
    pivot: u64,
    /// Unassigned ranges, by start; disjoint.
    pending: BTreeMap<u64, u64>,
    tasks: BTreeMap<TaskId, Task>,
    written: RangeSet,
    next_id: u64,
    /// Time since the download started, as last told by the caller.
    now: Duration,
    /// A task expected to finish sooner than this is not stolen from (see
    /// [`Scheduler::steal_horizon`]).
    steal_horizon: Duration,
}

impl Scheduler {
    /// Plans `[0, total)` in chunks of `chunk_size`, skipping what `done`
    /// already covers. Steals never leave a piece below `min_piece` bytes.
    pub fn new(total: u64, chunk_size: u64, min_piece: u64, done: &RangeSet) -> Self {
        let mut pending = BTreeMap::new();
        for gap in done.gaps(total) {
            pending.insert(gap.start, gap.end);
        }
        let mut written = RangeSet::new();
        for range in done.ranges() {
            written.insert(ByteRange::new(range.start.min(total), range.end.min(total)));
        }
        Self {
            total,
            chunk_size: chunk_size.max(1),
            min_piece: min_piece.max(1),
            align: 1,
            pivot: 0,
            pending,
            tasks: BTreeMap::new(),
            written,
            next_id: 0,
            now: Duration::ZERO,
            steal_horizon: Duration::ZERO,
        }
    }

    /// No steal from a task that, at the rate it has delivered so far, will
    /// finish within `horizon`. A steal throws away whatever of the far half
    /// the server already sent (on a fast link, nearly all of it: socket
    /// buffers hold megabytes), so it pays only when the victim would take
    /// long to get there itself. A task that has delivered nothing yet may
    /// be stolen from once it is older than `horizon` (its request may be
    /// stalled). Zero (the default) steals whenever a piece of
    /// `2 × min_piece` is left.
    pub fn steal_horizon(mut self, horizon: Duration) -> Self {
        self.steal_horizon = horizon;
        self
    }

    /// Cuts pieces and steals only at multiples of `align` bytes (or at the
    /// end of the file); 0 and 1 mean anywhere. Pieces never shrink below
    /// `align`, so the smallest piece becomes at least one slice. A chunk
    /// size below `align` wins: the plan is then aligned to the chunk size
    /// (asked for small requests, a caller gets them).
    pub fn aligned(mut self, align: u64) -> Self {
        self.align = align.clamp(1, self.chunk_size);
        self.min_piece = self.min_piece.max(self.align);
        self
    }

    /// Hands out the pieces after the first one starting from a pivot that
    /// `seed` picks (a multiple of the alignment below the file's end), up to
    /// the end of the file, then from the lowest offset up to the pivot.
    /// The first piece stays the lowest: a fresh plan's first piece is the
    /// probe's, already asked for.
    pub fn rotated(mut self, seed: u64) -> Self {
        let n_units = self.total.div_ceil(self.align);
        self.pivot = if n_units == 0 {
            0
        } else {
            mix(seed) % n_units * self.align
        };
        self
    }

    /// Size of the file.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes written so far.
    pub fn written(&self) -> &RangeSet {
        &self.written
    }

    /// Whether every byte is written.
    pub fn is_complete(&self) -> bool {
        self.written.covered() == self.total
    }

    /// Whether anything is left to hand out or in flight.
    pub fn has_work(&self) -> bool {
        !self.pending.is_empty() || self.tasks.values().any(|t| t.cursor < t.end)
    }

    /// Number of tasks in flight.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Tells the plan what time it is (since the download started); rates
    /// for [`Scheduler::take_over`] are measured on this clock.
    pub fn set_now(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    fn new_task(&mut self, range: ByteRange, stolen: bool) -> Assignment {
        let id = TaskId(self.next_id);
        self.next_id += 1;
        self.tasks.insert(
            id,
            Task {
                cursor: range.start,
                end: range.end,
                started: self.now,
                claimed: 0,
                backlogged: false,
            },
        );
        Assignment { id, range, stolen }
    }

    /// The size of the next piece handed out: a chunk while much is left,
    /// then smaller as the unassigned bytes shrink (an even share per task
    /// in flight, never below `min_piece`), so that the tail is already cut
    /// fine when connections start to go idle, and they take small pending
    /// pieces instead of stealing — every steal throws away whatever of the
    /// victim's range the server already sent.
    fn piece_size(&self) -> u64 {
        let unassigned: u64 = self.pending.iter().map(|(start, end)| end - start).sum();
        let share = unassigned / (self.tasks.len() as u64 + 1);
        self.chunk_size.min(share.max(self.min_piece))
    }

    /// Where a piece wanted to end at `offset` ends: the nearest aligned
    /// boundary above `start`, or, for the first piece, the first one at or
    /// above `offset`, so that a fresh plan's first piece still holds the
    /// probe's chunk when the chunk size is not a multiple of the alignment.
    /// Rounding to the nearest keeps the tail's pieces an even share.
    fn piece_end(&self, start: u64, offset: u64) -> u64 {
        let up = offset.div_ceil(self.align).saturating_mul(self.align);
        if self.next_id == 0 {
            return up;
        }
        let down = offset - offset % self.align;
        if down > start && offset - down < up - offset {
            down
        } else {
            up
        }
    }

    /// The pending range to cut the next piece from: the lowest for the
    /// first piece or an unrotated plan; else the first at or after the
    /// pivot (split there), wrapping to the lowest.
    fn next_pending(&mut self) -> Option<(u64, u64)> {
        let lowest = self.pending.iter().next().map(|(&s, &e)| (s, e));
        if self.pivot == 0 || self.next_id == 0 {
            return lowest;
        }
        let holding = self
            .pending
            .range(..=self.pivot)
            .next_back()
            .map(|(&s, &e)| (s, e))
            .filter(|&(_, end)| end > self.pivot);
        if let Some((start, end)) = holding {
            // Split at the pivot, so the piece starts on it.
            self.pending.insert(start, self.pivot);
            self.pending.insert(self.pivot, end);
            return Some((self.pivot, end));
        }
        self.pending
            .range(self.pivot..)
            .next()
            .map(|(&s, &e)| (s, e))
            .or(lowest)
    }

    /// The next range to fetch: the lowest pending piece (or, rotated, the
    /// first from the pivot on), else the far half of the largest in-flight
    /// remainder, else `None`.
    pub fn next_assignment(&mut self) -> Option<Assignment> {
        let piece = self.piece_size();
        if let Some((start, end)) = self.next_pending() {
            self.pending.remove(&start);
            let chunk_end = end.min(self.piece_end(start, start.saturating_add(piece)));
            if chunk_end < end {
                self.pending.insert(chunk_end, end);
            }
            return Some(self.new_task(ByteRange::new(start, chunk_end), false));
        }
        self.steal()
    }

    /// Splits the largest in-flight remainder and hands out its far half.
    pub fn steal(&mut self) -> Option<Assignment> {
        let (&victim, task) = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.backlogged)
            .max_by_key(|(id, t)| (t.end - t.cursor, std::cmp::Reverse(**id)))?;
        let remaining = task.end - task.cursor;
        if remaining < 2 * self.min_piece {
            return None;
        }
        let age = self.now.saturating_sub(task.started).as_secs_f64();
        let horizon = self.steal_horizon.as_secs_f64();
        if task.claimed > 0 && age > 0.0 {
            let rate = task.claimed as f64 / age;
            let eta = remaining as f64 / rate;
            if eta < horizon {
                return None;
            }
        } else if age < horizon {
            // Nothing delivered yet, but not for long: its answer may be on
            // its way (or in a socket buffer of a busy process).
            return None;
        }
        let end = task.end;
        // The aligned boundary at or below the middle: with at least one
        // smallest piece (itself at least the alignment) on either side of the
        // middle, it lies above the cursor and leaves the thief a whole piece.
        let middle = task.cursor + remaining / 2;
        let mid = middle - middle % self.align;
        if mid <= task.cursor || mid >= end {
            return None;
        }
        if let Some(task) = self.tasks.get_mut(&victim) {
            task.end = mid;
        }
        Some(self.new_task(ByteRange::new(mid, end), true))
    }

    /// Records whether task `id`'s connection found data already waiting
    /// when it last asked for more. A backlogged task is neither stolen
    /// from nor taken over: the server has sent what it is asked for and
    /// this process has yet to read it, so another connection would fetch
    /// the same bytes again and only a busier process could read them. The
    /// mark clears as soon as the connection has to wait for the server.
    pub fn set_backlogged(&mut self, id: TaskId, backlogged: bool) {
        if let Some(task) = self.tasks.get_mut(&id) {
            task.backlogged = backlogged;
        }
    }

    /// The bytes task `id` may still claim, `[cursor, end)`; empty when the
    /// task is unknown or finished.
    pub fn remaining(&self, id: TaskId) -> ByteRange {
        self.tasks
            .get(&id)
            .map_or(ByteRange::new(0, 0), |t| ByteRange::new(t.cursor, t.end))
    }

    /// Claims up to `want` bytes at the task's cursor for writing and returns
    /// them; an empty range means the task has nothing left (it finished, or
    /// its remainder was stolen).
    pub fn claim(&mut self, id: TaskId, want: u64) -> ByteRange {
        let Some(task) = self.tasks.get_mut(&id) else {
            return ByteRange::new(0, 0);
        };
        let take = want.min(task.end - task.cursor);
        let claimed = ByteRange::new(task.cursor, task.cursor + take);
        task.cursor += take;
        task.claimed += take;
        claimed
    }

    /// Hands the whole remainder of the slowest task to a new one, when that
    /// task delivers less than `policy.slow_fraction` of `peer_rate` (bytes
    /// per second of a typical connection of this download): the fix for a
    /// connection that stalls or dribbles on a range too small to split. The
    /// old task's next claim comes back empty, so its connection moves on.
    pub fn take_over(&mut self, policy: TakeOver, peer_rate: f64) -> Option<Assignment> {
        if !(peer_rate.is_finite() && peer_rate > 0.0) {
            return None;
        }
        let now = self.now;
        let threshold = peer_rate * policy.slow_fraction;
        let victim = self
            .tasks
            .iter()
            .filter_map(|(id, t)| {
                let age = now.saturating_sub(t.started);
                if t.cursor >= t.end || age < policy.min_age || t.backlogged {
                    return None;
                }
                let rate = t.claimed as f64 / age.as_secs_f64();
                // Judge by what is left at this rate: a slow task about to
                // finish is not worth a new request.
                let left = (t.end - t.cursor) as f64;
                let eta_slow = left / rate.max(1.0);
                let eta_fresh = left / peer_rate;
                (rate < threshold && eta_slow > eta_fresh + policy.min_age.as_secs_f64())
                    .then_some((*id, eta_slow))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(id, _)| id)?;
        let task = self.tasks.get_mut(&victim)?;
        let range = ByteRange::new(task.cursor, task.end);
        task.end = task.cursor;
        Some(self.new_task(range, true))
    }

    /// Records claimed bytes as written; returns the new end of the
    /// contiguous written prefix if it moved.
    pub fn mark_written(&mut self, range: ByteRange) -> Option<u64> {
        let before = self.written.prefix_end();
        self.written.insert(range);
        let after = self.written.prefix_end();
        (after > before).then_some(after)
    }

    /// Ends a task; whatever it did not claim goes back to the pending queue.
    pub fn release(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.remove(&id)
            && task.cursor < task.end
        {
            self.pending.insert(task.cursor, task.end);
        }
    }

    /// Stops handing out work: pending ranges and tasks are dropped (their
    /// owners see empty claims), written bytes stay recorded. Used when the
    /// download fails, so no connection starts a request that is moot.
    pub fn abort(&mut self) {
        self.pending.clear();
        self.tasks.clear();
    }

    /// Pending ranges, in order (for tests and the journal).
    pub fn pending(&self) -> Vec<ByteRange> {
        self.pending
            .iter()
            .map(|(&s, &e)| ByteRange::new(s, e))
            .collect()
    }

    /// In-flight remainders `[cursor, end)`, in task order.
    pub fn in_flight_ranges(&self) -> Vec<ByteRange> {
        self.tasks
            .values()
            .map(|t| ByteRange::new(t.cursor, t.end))
            .collect()
    }

    /// Bytes written that turned out bad (a piece failing its reference
    /// hash): they are no longer written, and go back to the pending queue
    /// to be fetched again. Only whole written ranges are taken back; no
    /// task holds them.
    pub fn refetch(&mut self, range: ByteRange) {
        let range = ByteRange::new(range.start.min(self.total), range.end.min(self.total));
        if range.is_empty() {
            return;
        }
        self.written.remove(range);
        self.pending.insert(range.start, range.end);
    }
}

/// A 64-bit mix (splitmix64's finaliser), so that nearby seeds — the pids of
/// clients started together — pick pivots far apart.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fresh(total: u64, chunk: u64, min_piece: u64) -> Scheduler {
        Scheduler::new(total, chunk, min_piece, &RangeSet::new())
    }

    #[test]
    fn hands_out_chunks_lowest_first() {
        // With the smallest piece a whole chunk, every piece is a chunk.
        let mut plan = fresh(25, 10, 10);
        let a = plan.next_assignment().expect("first");
        let b = plan.next_assignment().expect("second");
        let c = plan.next_assignment().expect("third");
        assert_eq!(
            (a.range, b.range, c.range),
            (
                ByteRange::new(0, 10),
                ByteRange::new(10, 20),
                ByteRange::new(20, 25)
            )
        );
        assert!(!c.stolen);
    }

    #[test]
    fn pieces_shrink_as_the_unassigned_bytes_do() {
        // 100 MiB in 8 MiB chunks over 8 connections, 1 MiB at least: chunks while much is
        // left, then an even share per task in flight, then the smallest piece.
        let mib = 1 << 20;
        let mut plan = fresh(100 * mib, 8 * mib, mib);
        let mut sizes = Vec::new();
        while let Some(assignment) = plan.next_assignment() {
            if assignment.stolen {
                break;
            }
            sizes.push(assignment.range.len());
            if plan.in_flight() == 8 {
                // One connection finishes and asks again.
                let (&oldest, _) = plan.tasks.iter().next().expect("a task");
                let range = plan.remaining(oldest);
                plan.claim(oldest, range.len());
                plan.mark_written(range);
                plan.release(oldest);
            }
        }
        assert_eq!(sizes.iter().sum::<u64>(), 100 * mib, "{sizes:?}");
        assert!(sizes[..4].iter().all(|&size| size == 8 * mib), "{sizes:?}");
        assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
        // Only the very end of the file may be cut below the smallest piece.
        let (last, rest) = sizes.split_last().expect("pieces");
        assert!(
            rest.iter().all(|&size| size >= mib) && *last <= mib,
            "{sizes:?}"
        );
        assert!(
            rest.iter().rev().take(4).all(|&size| size == mib),
            "{sizes:?}"
        );
    }

    #[test]
    fn a_task_about_to_finish_is_not_stolen_from_within_the_horizon() {
        let mib = 1 << 20;
        let mut plan = fresh(8 * mib, 8 * mib, mib).steal_horizon(Duration::from_millis(500));
        let a = plan.next_assignment().expect("first");
        // 1 MiB in 10 ms: the 7 MiB left take 70 ms, inside the horizon.
        plan.set_now(Duration::from_millis(10));
        assert_eq!(plan.claim(a.id, mib).len(), mib);
        assert!(
            plan.next_assignment().is_none(),
            "stole from a task about to finish"
        );
        // 1 MiB in 1 s: 7 s left, far past it: the far half is stolen.
        plan.set_now(Duration::from_secs(1));
        let stolen = plan.next_assignment().expect("a steal");
        assert!(stolen.stolen);
        // Nothing delivered yet: left alone for the horizon (its answer may
        // be on its way), then stealable (a stalled request).
        let mut plan = fresh(8 * mib, 8 * mib, mib).steal_horizon(Duration::from_secs(60));
        plan.next_assignment().expect("first");
        plan.set_now(Duration::from_millis(10));
        assert_eq!(plan.next_assignment(), None);
        plan.set_now(Duration::from_secs(61));
        assert!(plan.next_assignment().is_some_and(|s| s.stolen));
    }

    #[test]
    fn steals_far_half_of_largest_remainder() {
        let mut plan = fresh(100, 100, 10);
        let a = plan.next_assignment().expect("whole file");
        assert_eq!(plan.claim(a.id, 20), ByteRange::new(0, 20));
        let b = plan.next_assignment().expect("a steal");
        assert!(b.stolen);
        assert_eq!(b.range, ByteRange::new(60, 100));
        // The victim may now claim only up to the split point.
        assert_eq!(plan.claim(a.id, 1000), ByteRange::new(20, 60));
        assert!(plan.claim(a.id, 1).is_empty());
    }

    /// Judged after a second, slow below 30 % of the peers' rate.
    const TAKE_OVER: TakeOver = TakeOver {
        min_age: Duration::from_secs(1),
        slow_fraction: 0.3,
    };

    #[test]
    fn takes_over_a_dribbling_task() {
        let mut plan = fresh(400, 100, 100);
        let policy = TAKE_OVER;
        let tasks: Vec<_> = (0..4)
            .map(|_| plan.next_assignment().expect("chunk"))
            .collect();
        plan.set_now(Duration::from_secs(2));
        for task in &tasks[..3] {
            plan.claim(task.id, 90);
        }
        plan.claim(tasks[3].id, 2);
        // Peers deliver 45 B/s; the last task 1 B/s with 98 bytes left.
        let taken = plan
            .take_over(policy, 45.0)
            .expect("the slow task is taken over");
        assert_eq!(taken.range, ByteRange::new(302, 400));
        assert!(plan.claim(tasks[3].id, 10).is_empty());
        // Healthy tasks are left alone, and the new one is too young to judge.
        assert_eq!(plan.take_over(policy, 45.0), None);
        // Without a reference rate nothing is judged.
        assert_eq!(plan.take_over(policy, 0.0), None);
    }

    #[test]
    fn a_task_with_data_waiting_is_neither_stolen_from_nor_taken_over() {
        let mut plan = fresh(100, 100, 10);
        let policy = TAKE_OVER;
        let a = plan.next_assignment().expect("whole file");
        plan.set_now(Duration::from_secs(2));
        // 1 B/s against peers' 50: slow, but its connection found data
        // waiting (this process, not the server, holds it back), so nobody
        // steals from it or takes it over.
        plan.claim(a.id, 2);
        plan.set_backlogged(a.id, true);
        assert_eq!(plan.take_over(policy, 50.0), None);
        assert_eq!(plan.next_assignment(), None);
        // Its connection has to wait for the server again: both apply.
        plan.set_backlogged(a.id, false);
        let stolen = plan.next_assignment().expect("a steal");
        assert!(stolen.stolen);
        assert_eq!(stolen.range, ByteRange::new(51, 100));
        let taken = plan.take_over(policy, 50.0).expect("taken over");
        assert_eq!(taken.range, ByteRange::new(2, 51));

        // Among several, a steal passes over the backlogged ones: the
        // largest remainder of those waiting for their server is split.
        let mut plan = fresh(300, 100, 10);
        let mut tasks = Vec::new();
        while !plan.pending().is_empty() {
            tasks.push(plan.next_assignment().expect("a piece"));
        }
        assert!(tasks.len() >= 2, "{tasks:?}");
        let largest = tasks
            .iter()
            .max_by_key(|task| task.range.len())
            .expect("tasks");
        plan.set_backlogged(largest.id, true);
        let stolen = plan.next_assignment().expect("a steal");
        assert!(stolen.stolen);
        assert!(
            !(largest.range.start <= stolen.range.start && stolen.range.end <= largest.range.end),
            "stole {} from the backlogged {}",
            stolen.range,
            largest.range
        );
    }

    #[test]
    fn does_not_steal_below_min_piece() {
        let mut plan = fresh(30, 30, 16);
        let _a = plan.next_assignment().expect("whole file");
        assert_eq!(plan.next_assignment(), None);
    }

    #[test]
    fn resumes_only_the_gaps() {
        let mut done = RangeSet::new();
        done.insert(ByteRange::new(0, 40));
        done.insert(ByteRange::new(60, 70));
        let mut plan = Scheduler::new(100, 1000, 1, &done);
        assert_eq!(
            plan.pending(),
            vec![ByteRange::new(40, 60), ByteRange::new(70, 100)]
        );
        assert_eq!(plan.written().prefix_end(), 40);
        let a = plan.next_assignment().expect("gap");
        assert_eq!(a.range, ByteRange::new(40, 60));
    }

    #[test]
    fn aligned_pieces_and_steals_cut_on_the_alignment() {
        // A 3 MiB chunk on 2 MiB slices: the first piece grows to 4 MiB (it holds the probe's
        // 3 MiB), and no piece straddles a slice.
        let mib = 1 << 20;
        let total = 11 * mib + 5;
        let mut plan = fresh(total, 3 * mib, 1).aligned(2 * mib);
        let a = plan.next_assignment().expect("first");
        assert_eq!(a.range, ByteRange::new(0, 4 * mib));
        let mut ends = vec![a.range.end];
        while let Some(next) = plan.next_assignment() {
            if next.stolen {
                break;
            }
            ends.push(next.range.end);
        }
        assert!(
            ends.iter()
                .all(|&end| end.is_multiple_of(2 * mib) || end == total),
            "{ends:?}"
        );
        // A steal splits on a slice boundary below the middle of what is left.
        let mut plan = fresh(10 * mib, 10 * mib, 1).aligned(mib);
        let whole = plan.next_assignment().expect("whole file");
        plan.claim(whole.id, mib / 2);
        let stolen = plan.next_assignment().expect("a steal");
        assert!(stolen.stolen);
        assert_eq!(stolen.range, ByteRange::new(5 * mib, 10 * mib));
    }

    #[test]
    fn a_chunk_below_the_alignment_wins() {
        let mib = 1 << 20;
        let mut plan = fresh(4 * mib, 256 << 10, mib).aligned(mib);
        let a = plan.next_assignment().expect("first");
        let b = plan.next_assignment().expect("second");
        assert_eq!(
            (a.range, b.range),
            (
                ByteRange::new(0, 256 << 10),
                ByteRange::new(256 << 10, 512 << 10)
            )
        );
    }

    #[test]
    fn shrinking_stops_at_the_alignment() {
        let mib = 1 << 20;
        let mut plan = fresh(40 * mib, 8 * mib, 1 << 16).aligned(mib);
        let mut sizes = Vec::new();
        while let Some(assignment) = plan.next_assignment() {
            if assignment.stolen {
                break;
            }
            sizes.push(assignment.range.len());
        }
        assert!(sizes.iter().all(|&size| size >= mib), "{sizes:?}");
        assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<u64>(), 40 * mib);
        // Unaligned, the same plan cuts its tail below a slice.
        let mut plan = fresh(40 * mib, 8 * mib, 1 << 16);
        let mut smallest = u64::MAX;
        while let Some(assignment) = plan.next_assignment() {
            if assignment.stolen {
                break;
            }
            smallest = smallest.min(assignment.range.len());
        }
        assert!(smallest < mib);
    }

    #[test]
    fn a_rotated_plan_starts_at_its_pivot_after_the_first_piece() {
        let mib = 1 << 20;
        let plan = fresh(64 * mib, 4 * mib, mib).aligned(mib);
        let pivots: std::collections::BTreeSet<u64> = (0..8)
            .map(|seed| plan.clone().rotated(seed).pivot)
            .collect();
        // Eight seeds in a row (pids started together) pick eight pivots.
        assert_eq!(pivots.len(), 8, "{pivots:?}");
        assert!(
            pivots
                .iter()
                .all(|&pivot| pivot.is_multiple_of(mib) && pivot < 64 * mib)
        );
        let mut plan = plan.rotated(3);
        let pivot = plan.pivot;
        let first = plan.next_assignment().expect("first");
        assert_eq!(first.range.start, 0, "the probe's piece comes first");
        let second = plan.next_assignment().expect("second");
        assert_eq!(second.range.start, pivot.max(first.range.end));
        // Drain: from the pivot to the end, then wrapping to the bytes below it.
        let mut starts = vec![first.range.start, second.range.start];
        while let Some(next) = plan.next_assignment() {
            if next.stolen {
                break;
            }
            starts.push(next.range.start);
        }
        let wrap = starts
            .windows(2)
            .position(|w| w[1] < w[0])
            .map_or(starts.len(), |i| i + 1);
        assert!(
            starts[1..wrap].windows(2).all(|w| w[0] < w[1]),
            "{starts:?}"
        );
        assert!(
            starts[wrap..].iter().all(|&start| start < pivot),
            "{starts:?}"
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Assign,
        Claim(usize, u64),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Assign),
            (0usize..8, 0u64..5000).prop_map(|(i, n)| Op::Claim(i, n)),
            (0usize..8).prop_map(Op::Release),
        ]
    }

    fn alignment() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(7),
            Just(64),
            Just(512),
            Just(2048)
        ]
    }

    /// A plan, aligned and rotated or not, as the download builds it; its
    /// alignment is the smaller of `align` and the chunk size.
    fn planned(total: u64, chunk: u64, min_piece: u64, align: u64, seed: Option<u64>) -> Scheduler {
        let plan = fresh(total, chunk, min_piece).aligned(align);
        match seed {
            Some(seed) => plan.rotated(seed),
            None => plan,
        }
    }

    proptest! {
        /// Pending, in-flight remainders and claimed bytes tile `[0, total)`
        /// exactly, after any sequence of assignments, steals, claims and
        /// releases, aligned and rotated or not; every piece and steal ends on
        /// the alignment or at the file's end; and draining the plan writes
        /// every byte once.
        #[test]
        fn plan_tiles_the_file(total in 0u64..20_000, chunk in 1u64..6000, min_piece in 1u64..600, align in alignment(), seed in proptest::option::of(any::<u64>()), ops in proptest::collection::vec(op(), 0..80)) {
            let mut plan = planned(total, chunk, min_piece, align, seed);
            let step = align.clamp(1, chunk);
            let mut live: Vec<TaskId> = Vec::new();
            let mut claimed = vec![0u8; total as usize];
            for op in ops {
                match op {
                    Op::Assign => if let Some(a) = plan.next_assignment() {
                        prop_assert!(a.range.end.is_multiple_of(step) || a.range.end == total, "{:?}", a);
                        live.push(a.id);
                    },
                    Op::Claim(i, n) => if let Some(&id) = live.get(i % live.len().max(1)) {
                        let r = plan.claim(id, n);
                        for b in &mut claimed[r.start as usize..r.end as usize] { *b += 1; }
                        plan.mark_written(r);
                    },
                    Op::Release(i) => if !live.is_empty() {
                        let id = live.remove(i % live.len());
                        plan.release(id);
                    },
                }
                let mut cover = claimed.clone();
                for r in plan.pending().into_iter().chain(plan.in_flight_ranges()) {
                    for b in &mut cover[r.start as usize..r.end as usize] { *b += 1; }
                }
                prop_assert!(cover.iter().all(|&c| c == 1), "bytes not covered exactly once");
            }
            // Drain: keep assigning and claiming until nothing is left.
            let mut rounds = 0;
            while plan.has_work() {
                rounds += 1;
                prop_assert!(rounds < 100_000);
                let id = match plan.next_assignment() {
                    Some(a) => a.id,
                    None => *plan.tasks.keys().find(|id| !plan.remaining(**id).is_empty()).expect("work left"),
                };
                let r = plan.claim(id, 777);
                for b in &mut claimed[r.start as usize..r.end as usize] { *b += 1; }
                plan.mark_written(r);
            }
            prop_assert!(claimed.iter().all(|&c| c == 1));
            prop_assert!(plan.is_complete());
            prop_assert_eq!(plan.written().prefix_end(), total);
        }

        /// Without releases (whose remainders start where a connection stopped), every piece
        /// and every steal of an aligned plan starts and ends on the alignment or at the
        /// file's end, whatever the claims and steals in between.
        #[test]
        fn aligned_boundaries(total in 0u64..50_000, chunk in 1u64..9000, min_piece in 1u64..900, align in alignment(), seed in proptest::option::of(any::<u64>()), claims in proptest::collection::vec((0usize..16, 0u64..3000), 0..120)) {
            let mut plan = planned(total, chunk, min_piece, align, seed);
            let step = align.clamp(1, chunk);
            let on_boundary = |offset: u64| offset.is_multiple_of(step) || offset == total;
            let mut live: Vec<TaskId> = Vec::new();
            for (i, n) in claims {
                if let Some(a) = plan.next_assignment() {
                    prop_assert!(on_boundary(a.range.start) && on_boundary(a.range.end), "{:?}", a);
                    live.push(a.id);
                }
                if let Some(&id) = live.get(i % live.len().max(1)) {
                    let r = plan.claim(id, n);
                    plan.mark_written(r);
                }
                for r in plan.in_flight_ranges() {
                    prop_assert!(r.is_empty() || on_boundary(r.end), "{:?}", r);
                }
            }
        }
    }
}
