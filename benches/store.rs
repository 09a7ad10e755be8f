//! The reassembly store: writing a 256 MiB part file in 256 KiB pieces (the
//! size of a network body chunk) through `pwrite` against mapped windows, and
//! reading it back through `map_read` windows against `read()`.
//!
//! These are the figures behind `WriteMode`'s default: each write iteration
//! goes into a fresh, preallocated file, as a download does, so the mapped
//! path pays for its page faults and zero-fill every time. The data stays in
//! the page cache (no `fdatasync`): the device is the same for both modes.
//! Times are wall-clock, unlike the CPU-bound benches: page-cache work done
//! outside the bench thread (reclaim, writeback) belongs to the cost here.

use std::fs::File;
use std::hint::black_box;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rangefetch_core::WriteMode;
use rangefetch_core::internals::PartFile;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

const FILE_SIZE: usize = 256 * MIB;

/// What one body chunk of a connection delivers at a time, roughly.
const PIECE: usize = 256 * KIB;

/// The buffer of the `read()` baseline.
const READ_BUFFER: usize = MIB;

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A part file that exists for one iteration; removed on drop, outside the
/// timed region, so dirty pages are discarded rather than written back.
struct FreshPart {
    part: PartFile,
    path: PathBuf,
}

impl FreshPart {
    fn create(dir: &Path, mode: WriteMode) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = dir.join(format!(
            "write-{}.part",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let part = PartFile::open(&path, mode).expect("create the part file");
        part.preallocate(FILE_SIZE as u64)
            .expect("preallocate the part file");
        Self { part, path }
    }
}

impl Drop for FreshPart {
    fn drop(&mut self) {
        // A leftover file only costs disk space in target/tmp.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn write(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temp dir under target/");
    let piece = pattern(PIECE);
    let mut group = c.benchmark_group("store_write_256MiB");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(FILE_SIZE as u64));
    for (name, mode) in [
        ("pwrite", WriteMode::Pwrite),
        ("mapped_window", WriteMode::MappedWindow),
    ] {
        group.bench_function(BenchmarkId::new(name, "256KiB_pieces"), |b| {
            b.iter_batched(
                || FreshPart::create(dir.path(), mode),
                |fresh| {
                    for offset in (0..FILE_SIZE).step_by(PIECE) {
                        fresh
                            .part
                            .write_at(offset as u64, black_box(&piece))
                            .expect("write a piece");
                    }
                    // Returned so that the file's removal is not timed.
                    fresh
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

/// Something that depends on every byte, cheaper than SHA-256, so that the
/// read paths are compared on getting the bytes to the CPU.
fn fold(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .map(|word| u64::from_le_bytes(word.try_into().expect("chunks of 8 bytes")))
        .fold(0, u64::wrapping_add)
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temp dir under target/");
    let path = dir.path().join("read.part");
    let part = PartFile::open(&path, WriteMode::Pwrite).expect("create the part file");
    part.preallocate(FILE_SIZE as u64)
        .expect("preallocate the part file");
    let data = pattern(FILE_SIZE);
    part.write_at(0, &data).expect("write the part file");
    let expected = fold(&data);
    drop(data);

    let mut group = c.benchmark_group("store_read_256MiB");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(FILE_SIZE as u64));
    for window in [MIB, 8 * MIB] {
        let read_mapped = || {
            let mut sum = 0u64;
            for offset in (0..FILE_SIZE).step_by(window) {
                let map = part.map_read(offset as u64, window).expect("map a window");
                sum = sum.wrapping_add(fold(&map));
            }
            sum
        };
        assert_eq!(read_mapped(), expected);
        let label = format!("{}MiB", window / MIB);
        group.bench_function(BenchmarkId::new("map_read", label), |b| b.iter(read_mapped));
    }
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut read_loop = || {
        let mut file = File::open(&path).expect("open the part file");
        let mut sum = 0u64;
        // The file is a whole number of buffers; `read_exact` is a `read()`
        // loop that keeps the words of `fold` aligned.
        for _ in 0..FILE_SIZE / READ_BUFFER {
            file.read_exact(&mut buffer).expect("read the part file");
            sum = sum.wrapping_add(fold(&buffer));
        }
        sum
    };
    assert_eq!(read_loop(), expected);
    group.bench_function(BenchmarkId::new("read", "1MiB"), |b| b.iter(&mut read_loop));
    group.finish();
}

criterion_group!(benches, write, read);
criterion_main!(benches);
