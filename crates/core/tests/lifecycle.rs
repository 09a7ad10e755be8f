//! The engine's lifecycle as an embedder meets it, on a `current_thread` runtime (which is
//! all `run()` needs): dropping a running download's future stops everything it started;
//! a second `run()` of one `Download` reports its own figures; probe retries count like any
//! other.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rangefetch_core::{Download, Event};
use rangefetch_testserver::{
    Fault, FaultRule, FaultScript, FileSpec, ServerConfig, TestServer, When,
};

const MIB: u64 = 1 << 20;

fn server(file: FileSpec, rules: Vec<FaultRule>) -> TestServer {
    TestServer::start(ServerConfig {
        files: vec![file],
        faults: FaultScript::new(rules),
    })
}

/// Open descriptors of this process that name `path` (Linux's `/proc/self/fd`).
fn open_handles_to(path: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        panic!("this test reads /proc/self/fd, which needs Linux");
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| target == path)
        .count()
}

/// The journal as it is now: its inode (a rewrite replaces the file) and its bytes (an append
/// grows them).
fn journal_identity(state: &Path) -> Option<(u64, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(state).ok()?;
    Some((meta.ino(), std::fs::read(state).ok()?))
}

#[tokio::test]
async fn dropping_the_future_stops_every_task_write_and_handle() {
    let file = FileSpec::new("/img.bin", 64 * MIB, 401);
    let server = server(
        file,
        vec![FaultRule::always(Fault::Throttle { bytes_per_sec: MIB })],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("img.bin");
    let part = rangefetch_core::part_path(&out);
    let state = rangefetch_core::state_path(&out);
    let events = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&events);
    let download = Download::builder(server.url("/img.bin"))
        .output(&out)
        .chunk_size(MIB)
        .connections(2)
        .on_event(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .expect("build");
    {
        let run = download.run();
        tokio::pin!(run);
        let journal_written = async {
            while !state.is_file() || events.load(Ordering::Relaxed) < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            result = &mut run => panic!("the throttled download ended early: {result:?}"),
            () = journal_written => {}
        }
        // `run` is dropped here, mid-download.
    }
    // The aborted connections are dropped at their next turn on this runtime, each recording
    // the block it was writing (what it holds is on disk, and a re-run can use it); after
    // that, nothing may happen.
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    let events_at_drop = events.load(Ordering::Relaxed);
    let journal_at_drop = journal_identity(&state);
    // Anything still running would show within a few progress periods (250 ms) or blocks
    // (32 KiB at 1 MiB/s, 31 ms); this runtime has nothing else to do meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        events.load(Ordering::Relaxed),
        events_at_drop,
        "events kept coming after the download was dropped"
    );
    assert_eq!(
        journal_identity(&state),
        journal_at_drop,
        "the journal was rewritten after the download was dropped"
    );
    // The hasher thread finishes the window it is on, then closes its handle.
    let canonical = part
        .canonicalize()
        .expect("the part file is kept for resume");
    let until = Instant::now() + Duration::from_secs(30);
    while open_handles_to(&canonical) > 0 {
        assert!(
            Instant::now() < until,
            "{} handles to the part file stay open after the drop",
            open_handles_to(&canonical)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !dir.path().join("img.bin.part.lock").exists(),
        "the output lock outlived the download"
    );
}

#[tokio::test]
async fn a_second_run_reports_its_own_peak_connections() {
    let server = server(FileSpec::new("/img.bin", 32 * MIB, 402), vec![]);
    let dir = tempfile::tempdir().expect("tempdir");
    let download = Download::builder(server.url("/img.bin"))
        .output(dir.path().join("img.bin"))
        .chunk_size(MIB)
        .connections(8)
        .build()
        .expect("build");
    let first = download.run().await.expect("first run");
    assert!(first.connections >= 2, "{first:?}");
    // The same Download again, now for a file of one chunk: one connection at most.
    server.replace_file(FileSpec::new("/img.bin", 1000, 403));
    let second = download.run().await.expect("second run");
    assert_eq!(second.bytes, 1000);
    assert_eq!(second.connections, 1, "{second:?}");
}

#[tokio::test]
async fn probe_retries_name_the_probed_range_and_count() {
    let server = server(
        FileSpec::new("/img.bin", 4 * MIB, 404),
        vec![FaultRule::new(
            When::FirstN(2),
            Fault::Status {
                code: 503,
                retry_after: None,
            },
        )],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let retries = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&retries);
    let outcome = Download::builder(server.url("/img.bin"))
        .output(dir.path().join("img.bin"))
        .chunk_size(MIB)
        .on_event(move |event| {
            if let Event::Retry { range, .. } = event {
                seen.lock().expect("lock").push((range.start, range.end));
            }
        })
        .build()
        .expect("build")
        .run()
        .await
        .expect("the third probe succeeds");
    assert_eq!(outcome.retries, 2, "{outcome:?}");
    let retries = retries.lock().expect("lock").clone();
    assert_eq!(retries, vec![(0, MIB), (0, MIB)]);
}
