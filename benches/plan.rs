//! Scheduler bookkeeping per network body chunk: a 4 GiB file planned in
//! 8 MiB chunks, drained with 64 KiB claims, each followed by
//! `mark_written`, the work `fetch` does under the plan's lock for every
//! chunk it writes. Throughput is in claims, so time per claim is
//! 1 / (elements per second). Times are on-CPU time (see `clock`).

mod clock;

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rangefetch_core::internals::RangeSet;
use rangefetch_core::internals::{Assignment, Scheduler};

use crate::clock::iter_on_cpu;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const TOTAL: u64 = 4 * GIB;
const CHUNK: u64 = 8 * MIB;
const MIN_PIECE: u64 = MIB;
/// One body chunk of a connection.
const CLAIM: u64 = 64 * KIB;

/// Plans the file and drains it with `connections` tasks served round-robin,
/// one claim each per turn, so that the written set holds a gap per task in
/// flight as in a real download; a task that runs dry is released and
/// replaced by the next assignment (stolen halves included). Returns the
/// number of claims that returned bytes.
fn drain(connections: usize) -> u64 {
    let mut plan = Scheduler::new(TOTAL, CHUNK, MIN_PIECE, &RangeSet::new());
    let mut tasks: Vec<Assignment> = (0..connections)
        .map_while(|_| plan.next_assignment())
        .collect();
    let mut claims = 0;
    while !tasks.is_empty() {
        let mut slot = 0;
        while slot < tasks.len() {
            let id = tasks[slot].id;
            let claimed = plan.claim(id, CLAIM);
            if claimed.is_empty() {
                plan.release(id);
                match plan.next_assignment() {
                    Some(next) => tasks[slot] = next,
                    None => {
                        tasks.swap_remove(slot);
                        continue;
                    }
                }
            } else {
                claims += 1;
                black_box(plan.mark_written(claimed));
            }
            slot += 1;
        }
    }
    assert!(plan.is_complete(), "the drain writes every byte");
    claims
}

/// The same drain with a lock taken around each call, as `fetch` does:
/// one for the claim, one for `mark_written` (uncontended here).
fn drain_locked(connections: usize) -> u64 {
    let plan = Mutex::new(Scheduler::new(TOTAL, CHUNK, MIN_PIECE, &RangeSet::new()));
    let lock = || plan.lock().expect("no panics while the lock is held");
    let mut tasks: Vec<Assignment> = (0..connections)
        .map_while(|_| lock().next_assignment())
        .collect();
    let mut claims = 0;
    while !tasks.is_empty() {
        let mut slot = 0;
        while slot < tasks.len() {
            let id = tasks[slot].id;
            let claimed = lock().claim(id, CLAIM);
            if claimed.is_empty() {
                let next = {
                    let mut plan = lock();
                    plan.release(id);
                    plan.next_assignment()
                };
                match next {
                    Some(next) => tasks[slot] = next,
                    None => {
                        tasks.swap_remove(slot);
                        continue;
                    }
                }
            } else {
                claims += 1;
                black_box(lock().mark_written(claimed));
            }
            slot += 1;
        }
    }
    assert!(lock().is_complete(), "the drain writes every byte");
    claims
}

fn claims(c: &mut Criterion) {
    clock::announce();
    let mut group = c.benchmark_group("plan_4GiB_claim_64KiB");
    group
        .sample_size(20)
        // Equal samples, each far longer than the on-CPU clock's tick.
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for connections in [1, 16] {
        // Steals split remainders off the 64 KiB grid, so count the claims
        // of this (deterministic) drain rather than assume TOTAL / CLAIM.
        let n_claims = drain(connections);
        assert_eq!(drain_locked(connections), n_claims);
        group.throughput(Throughput::Elements(n_claims));
        group.bench_function(BenchmarkId::new("claim_mark_written", connections), |b| {
            iter_on_cpu(b, || drain(black_box(connections)));
        });
        group.bench_function(
            BenchmarkId::new("claim_mark_written_mutex", connections),
            |b| {
                iter_on_cpu(b, || drain_locked(black_box(connections)));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, claims);
criterion_main!(benches);
