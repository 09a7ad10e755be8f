//! The portable fallbacks of `sys` (no `posix_fallocate`, `sync_file_range`, `MAP_POPULATE`,
//! `FICLONE` or `statvfs`), switched on for this whole process — which is why this is a test
//! binary of its own — so that the paths other platforms take run on Linux too.

use rangefetch_core::Cache;
use rangefetch_core::{Download, Sha256Hex};
use rangefetch_testserver::{
    Fault, FaultRule, FaultScript, FileSpec, ServerConfig, TestServer, When,
};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn a_download_resume_and_cache_work_on_the_portable_paths() {
    rangefetch_core::internals::set_portable(true);
    let file = FileSpec::new("/img.bin", 8 * MIB, 410);
    let expected = Sha256Hex::parse(&file.sha256_hex()).expect("hex");
    let server = TestServer::start(ServerConfig {
        files: vec![file],
        // A cut mid-range: the retry writes at an offset into a preallocated file.
        faults: FaultScript::new(vec![FaultRule::new(
            When::RangeStartsAt(2 * MIB).times(1),
            Fault::CloseAfter { bytes: 300_000 },
        )]),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_dir = dir.path().join("cache");
    let cache = Cache::open(&cache_dir, None).expect("open the cache");
    let out = dir.path().join("img.bin");
    let outcome = Download::builder(server.url("/img.bin"))
        .output(&out)
        .chunk_size(MIB)
        .sha256(expected)
        .cache(cache.clone())
        .build()
        .expect("build")
        .run()
        .await
        .expect("download on the portable paths");
    assert!(outcome.verified);
    assert_eq!(rangefetch_core::hash_file(&out).expect("hash"), expected);
    // The cache placed without reflink (unsupported here) and still verified.
    let again = dir.path().join("again.bin");
    cache
        .place(&expected, &again)
        .expect("place from the cache");
    assert_eq!(rangefetch_core::hash_file(&again).expect("hash"), expected);
    rangefetch_core::internals::set_portable(false);
}
