//! SHA-256 throughput, the verify stage's hot path: three implementations
//! (sha2, ring, aws-lc-rs) over in-memory blocks of 64 KiB to 16 MiB, and a
//! page-cached 256 MiB file hashed through `hash_file`'s 4 MiB maps (mapped
//! and unmapped by a second thread, whose time is not counted here:
//! bench-compare times `rangefetch hash` by the wall clock) against a
//! `read()` loop.
//!
//! The in-memory group bounds what any file path can reach: on a CPU with the
//! SHA extensions all three should run at the same instruction-bound speed,
//! so the choice between them is about the build, not the figures.
//!
//! Times are the bench thread's on-CPU time (see `clock`), which includes the
//! kernel's work for `read()` and page faults but not time spent waiting for
//! a CPU on a shared machine.

mod clock;

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use sha2::{Digest, Sha256};

use crate::clock::iter_on_cpu;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Block sizes: a network chunk, the `read()` buffer, a large map window.
const BLOCK_SIZES: [usize; 3] = [64 * KIB, MIB, 16 * MIB];

/// Large enough that per-call overheads vanish, small enough to stay in the
/// page cache of the project machine next to everything else.
const FILE_SIZE: usize = 256 * MIB;

/// The buffer of the `read()` baseline.
const READ_BUFFER: usize = MIB;

/// Deterministic bytes that no implementation can special-case.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            // xorshift64: cheap, and not a run of one byte.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn memory(c: &mut Criterion) {
    clock::announce();
    let mut group = c.benchmark_group("sha256_memory");
    group
        .sample_size(10)
        // Equal samples, each far longer than the on-CPU clock's tick.
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let data = pattern(*BLOCK_SIZES.iter().max().expect("at least one block size"));
    for block_size in BLOCK_SIZES {
        let block = &data[..block_size];
        group.throughput(Throughput::Bytes(block_size as u64));
        let label = format!("{}KiB", block_size / KIB);
        group.bench_with_input(BenchmarkId::new("sha2", &label), block, |b, block| {
            iter_on_cpu(b, || Sha256::digest(black_box(block)));
        });
        group.bench_with_input(BenchmarkId::new("ring", &label), block, |b, block| {
            iter_on_cpu(b, || {
                ring::digest::digest(&ring::digest::SHA256, black_box(block))
            });
        });
        group.bench_with_input(BenchmarkId::new("aws_lc_rs", &label), block, |b, block| {
            iter_on_cpu(b, || {
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, black_box(block))
            });
        });
    }
    group.finish();
}

/// SHA-256 of `path` through `read()` into a fixed buffer: the baseline the
/// mapped path has to beat.
fn hash_by_read(path: &Path, buffer: &mut [u8]) -> std::io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    loop {
        let n = file.read(buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().into())
}

fn file(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temp dir under target/");
    let path = dir.path().join("hash-input");
    let data = pattern(FILE_SIZE);
    File::create(&path)
        .and_then(|mut f| f.write_all(&data))
        .expect("write the input file");
    let expected: [u8; 32] = Sha256::digest(&data).into();
    drop(data);
    let mut buffer = vec![0u8; READ_BUFFER];
    // Both paths must agree, and this read pulls the file into the page cache.
    assert_eq!(
        hash_by_read(&path, &mut buffer).expect("read the input file"),
        expected
    );
    let mapped = rangefetch_core::hash_file(&path).expect("hash the input file");
    assert_eq!(mapped.as_bytes(), &expected);

    let mut group = c.benchmark_group("sha256_file");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(FILE_SIZE as u64));
    group.bench_function("map_4MiB_prefetched/hash_file", |b| {
        iter_on_cpu(b, || {
            rangefetch_core::hash_file(black_box(&path)).expect("hash_file")
        });
    });
    group.bench_function("read_1MiB/sha2", |b| {
        iter_on_cpu(b, || {
            hash_by_read(black_box(&path), &mut buffer).expect("read loop")
        });
    });
    group.finish();
}

criterion_group!(benches, memory, file);
criterion_main!(benches);
