//! The verified, content-addressed cache (`--cache-dir`, `RANGEFETCH_CACHE_DIR`): with a known
//! hash a hit is re-verified and placed at the output without a single request (the test
//! server's log proves it); only verified files enter; a corrupted entry is never handed out;
//! a failed network falls back to it; two processes fetching the same file share one download;
//! `--cache-max-size` evicts the least recently used entries.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rangefetch_testserver::{Fault, FaultRule, FileSpec, TestServer, sha256_hex};

use crate::support::{
    Expect, KIB, MIB, Ran, Scenario, WRONG_SHA256, closed_port, files_under, run,
    settled_body_bytes, sha256_file, start_server, tempdir,
};

/// `DIR/sha256/<2 hex>/<64 hex>`, where the cache (`Cache`, crates/core/src/cache.rs) keeps the
/// file of that hash.
fn entry_path(cache: &Path, hash: &str) -> PathBuf {
    cache.join("sha256").join(&hash[..2]).join(hash)
}

/// The entries (files) in the cache's `sha256/` tree.
fn entries(cache: &Path) -> Vec<PathBuf> {
    files_under(&cache.join("sha256"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// Downloads `path` from `server` into a fresh directory as `img.bin` with `--sha256 expected
/// --cache-dir cache`, checks it and that it entered the cache, and returns the run.
fn fill_cache(server: &TestServer, path: &str, expected: &str, cache: &Path) -> Ran {
    let run = Scenario::on(server, path)
        .args(&["-o", "img.bin", "--sha256", expected])
        .args(&["--cache-dir", path_str(cache)])
        .expect(Expect::success(expected));
    let entry = entry_path(cache, expected);
    assert!(
        entry.is_file(),
        "a verified download did not enter the cache at {}; the cache holds {:?}\n{}",
        entry.display(),
        entries(cache),
        run.describe()
    );
    assert_eq!(sha256_file(&entry), expected, "the cache entry's content");
    run
}

#[test]
fn a_hit_is_placed_without_any_request() {
    let size = 3 * MIB + 5;
    let file = FileSpec::new("/img.bin", size, 51);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    let cache = tempdir();
    fill_cache(&server, "/img.bin", &expected, cache.path());

    Scenario::on(&server, "/img.bin")
        .args(&["--sha256", &expected, "--cache-dir", path_str(cache.path())])
        .args(&["--json"])
        .expect(
            Expect::success(&expected)
                .json()
                .verified(true)
                .max_requests(0)
                .served(0..=0),
        );
}

#[test]
fn the_cache_dir_can_come_from_the_environment() {
    let size = MIB + 17;
    let file = FileSpec::new("/img.bin", size, 52);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    let cache = tempdir();
    let get = || {
        Scenario::on(&server, "/img.bin")
            .args(&["--sha256", &expected])
            .env("RANGEFETCH_CACHE_DIR", path_str(cache.path()))
    };

    let run = get().expect(Expect::success(&expected).covers(size));
    assert_eq!(
        entries(cache.path()),
        vec![entry_path(cache.path(), &expected)],
        "RANGEFETCH_CACHE_DIR was not used as the cache\n{}",
        run.describe()
    );

    get().expect(Expect::success(&expected).max_requests(0));
}

#[test]
fn only_verified_files_enter_the_cache() {
    let size = 700 * KIB;
    let file = FileSpec::new("/img.bin", size, 53);
    let actual = file.sha256_hex();
    let server = TestServer::serve(file);
    let cache = tempdir();
    let get = || Scenario::on(&server, "/img.bin").args(&["--cache-dir", path_str(cache.path())]);

    // A wrong expected hash: exit 3, and nothing in the cache under any name.
    let run = get()
        .args(&["--sha256", WRONG_SHA256])
        .expect(Expect::failure(3).part_kept(false));
    assert_eq!(
        entries(cache.path()),
        Vec::<PathBuf>::new(),
        "a file that failed verification entered the cache\n{}",
        run.describe()
    );

    // No expected hash: the download succeeds but proves nothing, so nothing is inserted.
    let run = get().expect(Expect::success(&actual));
    assert_eq!(
        entries(cache.path()),
        Vec::<PathBuf>::new(),
        "an unverified download entered the cache\n{}",
        run.describe()
    );
}

#[test]
fn a_corrupted_entry_is_not_used() {
    let size = 2 * MIB + 99;
    let file = FileSpec::new("/img.bin", size, 54);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    let cache = tempdir();
    fill_cache(&server, "/img.bin", &expected, cache.path());

    // Flip one byte in the middle of the entry, in place.
    let entry = entry_path(cache.path(), &expected);
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&entry)
            .expect("open the cache entry");
        let offset = size / 2;
        let mut byte = [0u8; 1];
        file.seek(SeekFrom::Start(offset)).expect("seek");
        file.read_exact(&mut byte).expect("read a byte");
        byte[0] ^= 0xFF;
        file.seek(SeekFrom::Start(offset)).expect("seek");
        file.write_all(&byte).expect("write the flipped byte");
        file.sync_all().expect("sync the entry");
    }
    assert_ne!(sha256_file(&entry), expected, "the corruption took");

    let run = Scenario::on(&server, "/img.bin")
        .args(&["--sha256", &expected, "--cache-dir", path_str(cache.path())])
        .expect(
            Expect::success(&expected)
                .covers(size)
                .served(size..=2 * size),
        );
    // Whatever the cache holds now for that hash is the right content.
    for found in entries(cache.path()) {
        assert_eq!(
            sha256_file(&found),
            found
                .file_name()
                .and_then(|name| name.to_str())
                .expect("a hex name"),
            "the cache keeps a corrupted entry at {}\n{}",
            found.display(),
            run.describe()
        );
    }
}

#[test]
fn a_failed_network_falls_back_to_the_cache() {
    let size = MIB + 1;
    let file = FileSpec::new("/img.bin", size, 55);
    let expected = file.sha256_hex();
    let server = TestServer::serve(file);
    let url = server.url("/img.bin");
    let cache = tempdir();
    fill_cache(&server, "/img.bin", &expected, cache.path());
    // The server is gone, and its port with it.
    drop(server);
    let gone = format!("http://127.0.0.1:{}/img.bin", closed_port());

    for url in [url, gone] {
        Scenario::url(url)
            .args(&["--sha256", &expected, "--cache-dir", path_str(cache.path())])
            .args(&["--retries", "1"])
            .expect(Expect::success(&expected).stderr_has("cache"));
    }
}

#[test]
fn two_processes_fetching_the_same_file_download_it_once() {
    let size = 8 * MIB;
    let file = FileSpec::new("/img.bin", size, 56);
    let expected = file.sha256_hex();
    // Throttled, so that the second process starts while the first is still downloading.
    let server = start_server(
        vec![file],
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 2 * MIB,
        })],
    );
    let cache = tempdir();
    let before = server.body_bytes_sent();
    // Neither run is recorded against the server: they overlap, so its count is read for both.
    let get = || {
        Scenario::url(server.url("/img.bin"))
            .args(&["--sha256", &expected, "--cache-dir", path_str(cache.path())])
            .args(&["-c", "2", "--chunk-size", "1MiB"])
    };
    let started = Instant::now();
    let first = get().spawn();
    let second = get().spawn();
    let first = first.wait();
    let second = second.wait();
    let elapsed = started.elapsed();
    let served = settled_body_bytes(&server) - before;
    let first = first.expect(Expect::success(&expected));
    let second = second.expect(Expect::success(&expected));
    // Both ran at once: each alone takes about size / (2 connections × 2 MiB/s) = 2 s.
    assert!(
        first.elapsed + second.elapsed > elapsed + Duration::from_millis(500),
        "the two runs did not overlap (first {:.2?}, second {:.2?}, together {elapsed:.2?})",
        first.elapsed,
        second.elapsed
    );
    let limit = size + size * 3 / 10;
    assert!(
        served <= limit,
        "the server sent {served} body bytes for two concurrent fetches of a {size}-byte file \
         sharing a cache (at most {limit} expected: the second should wait on the lock and hit \
         the cache)\nfirst:\n{}\nsecond:\n{}",
        first.describe(),
        second.describe()
    );
}

#[test]
fn cache_max_size_evicts_the_least_recently_used() {
    let files: Vec<FileSpec> = (0..3)
        .map(|idx| FileSpec::new(&format!("/f{idx}.bin"), MIB, 60 + idx))
        .collect();
    let hashes: Vec<String> = files.iter().map(FileSpec::sha256_hex).collect();
    let server = start_server(files.clone(), Vec::new());
    let cache = tempdir();
    let cap = (5 * MIB / 2).to_string();
    for (file, hash) in files.iter().zip(&hashes) {
        Scenario::on(&server, &file.path)
            .args(&["-o", "out.bin", "--sha256", hash])
            .args(&[
                "--cache-dir",
                path_str(cache.path()),
                "--cache-max-size",
                &cap,
            ])
            .expect(Expect::success(hash));
        // Distinct last-use times even on a coarse clock.
        std::thread::sleep(Duration::from_millis(50));
    }
    let held = entries(cache.path());
    assert!(
        !entry_path(cache.path(), &hashes[0]).exists(),
        "the least recently used entry survived a 2.5 MiB cap holding 3 MiB: {held:?}"
    );
    for hash in &hashes[1..] {
        assert!(
            entry_path(cache.path(), hash).is_file(),
            "a recent entry {hash} was evicted; the cache holds {held:?}"
        );
    }
    let total: u64 = held
        .iter()
        .map(|path| std::fs::metadata(path).expect("stat an entry").len())
        .sum();
    assert!(
        total <= 5 * MIB / 2,
        "the entries total {total} bytes, over the 2.5 MiB cap: {held:?}"
    );
}

#[test]
fn cache_max_size_keeps_an_entry_that_was_just_used() {
    // A hit counts as a use: after f0 is read again, f1 is the least recently used.
    let files: Vec<FileSpec> = (0..3)
        .map(|idx| FileSpec::new(&format!("/f{idx}.bin"), MIB, 70 + idx))
        .collect();
    let hashes: Vec<String> = files.iter().map(FileSpec::sha256_hex).collect();
    let server = start_server(files.clone(), Vec::new());
    let cache = tempdir();
    let cap = (5 * MIB / 2).to_string();
    let fetch = |idx: usize| {
        let run = Scenario::on(&server, &files[idx].path)
            .args(&["-o", "out.bin", "--sha256", &hashes[idx]])
            .args(&[
                "--cache-dir",
                path_str(cache.path()),
                "--cache-max-size",
                &cap,
            ])
            .expect(Expect::success(&hashes[idx]));
        std::thread::sleep(Duration::from_millis(50));
        run
    };
    fetch(0);
    fetch(1);
    let hit = fetch(0);
    assert_eq!(
        hit.served.as_ref().map(|served| served.requests.len()),
        Some(0),
        "the second fetch of f0 should be a cache hit\n{}",
        hit.describe()
    );
    fetch(2);
    let held = entries(cache.path());
    assert!(
        entry_path(cache.path(), &hashes[0]).is_file(),
        "the entry used last-but-one was evicted: {held:?}"
    );
    assert!(
        !entry_path(cache.path(), &hashes[1]).exists(),
        "the least recently used entry survived: {held:?}"
    );
    assert!(entry_path(cache.path(), &hashes[2]).is_file());
}

/// The cache issue's "done when", at 64 MiB instead of 1 GiB: a cache hit completes a `get` without
/// any request, in about the time of one SHA-256 pass (printed, not asserted).
#[test]
fn a_64_mib_hit_makes_no_request_and_costs_about_one_hash_pass() {
    let size = 64 * MIB;
    let seed = 57;
    let expected = sha256_hex(seed, size);
    let server = TestServer::serve(FileSpec::new("/big.bin", size, seed));
    let cache = tempdir();
    fill_cache(&server, "/big.bin", &expected, cache.path());

    let hit = Scenario::on(&server, "/big.bin")
        .args(&["--sha256", &expected, "--cache-dir", path_str(cache.path())])
        .expect(Expect::success(&expected).max_requests(0).served(0..=0));

    let hash = run(&hit.dir, &["hash", "big.bin"]);
    assert_eq!(hash.code(), 0, "{}", hash.describe());
    assert!(
        hash.stdout.starts_with(&expected),
        "`rangefetch hash` printed another hash\n{}",
        hash.describe()
    );
    eprintln!(
        "64 MiB cache hit: {:.3} s; `rangefetch hash` of the same file: {:.3} s; ratio {:.2}",
        hit.elapsed.as_secs_f64(),
        hash.elapsed.as_secs_f64(),
        hit.elapsed.as_secs_f64() / hash.elapsed.as_secs_f64().max(1e-6)
    );
}
