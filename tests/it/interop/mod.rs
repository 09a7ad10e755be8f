//! The interop matrix: rangefetch against real servers and caches installed from Debian
//! packages, each started on loopback with a configuration the test writes (nginx has its own
//! module, `nginx.rs`, and tinyproxy `proxy.rs`). For each: a fresh download, one interrupted
//! and resumed, a mirror pair, and the server's own quirks; every test asserts the file's
//! SHA-256, the exit code and what the server's own access log says was asked for. `quirks`
//! replays what the matrix found against the test server.

use std::path::Path;
use std::time::Duration;

use crate::support::relay::Relay;
use crate::support::servers::{AccessLog, Logged};
use crate::support::{Expect, Ran, Scenario, journal_recorded, with_suffix};

mod apache;
mod busybox;
mod caddy;
mod lighttpd;
mod python;
mod quirks;

/// Per-connection rate of the relay that keeps an interrupted download running long enough.
const SLOW: u64 = 1024 * 1024;

/// Runs `get url ARGS` in `dir` through `relay` until its resume journal records `bytes`,
/// then sends SIGINT and checks the interrupted exit: 130, a hint that
/// promises a resume, `.part` and journal kept.
fn interrupt(relay: &Relay, path: &str, dir: &Path, args: &[&str], bytes: u64) -> Ran {
    let mut running = Scenario::url(relay.url(path))
        .in_dir(dir)
        .args(args)
        .spawn();
    let state = with_suffix(running.out(), ".part.state");
    // Progress counted where it is kept, in the journal: bytes that passed the relay may still
    // sit in a socket buffer of a client the machine's load keeps from reading them.
    running.wait_until(
        "a resume journal recording the bytes",
        Duration::from_secs(60),
        || journal_recorded(&state) >= bytes,
    );
    running.signal(libc::SIGINT);
    running.expect(
        Expect::failure(130)
            .hint()
            .part_kept(true)
            .stderr_has("run the same command again to resume"),
    )
}

/// The run's `resumed_bytes` from its `--json` summary.
fn resumed_bytes(run: &Ran) -> u64 {
    run.json_summary()["resumed_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no resumed_bytes in the summary\n{}", run.describe()))
}

/// Asserts that every GET was a bounded range answered 206 (never `bytes=0-0`, never an
/// open-ended range) and that together they carried at least `size` bytes.
fn assert_ranged(entries: &[&Logged], size: u64, log: &str) {
    assert!(!entries.is_empty(), "no GET was logged:\n{log}");
    for entry in entries {
        let range = entry.range.as_deref().unwrap_or("");
        assert!(
            entry.status == 206
                && range.starts_with("bytes=")
                && !range.ends_with('-')
                && range != "bytes=0-0",
            "not a bounded 206: {entry:?}\n{log}"
        );
    }
    let bytes: u64 = entries.iter().map(|entry| entry.bytes).sum();
    assert!(
        bytes >= size,
        "the GETs carried {bytes} of {size} bytes:\n{log}"
    );
}
mod squid;
mod varnish;

/// The access-log entries of a rerun that resumed: from its resume probe (`bytes=0-1`, which
/// a fresh run never sends) on. Counting from the probe rather than from a count taken before
/// the rerun keeps a server that writes its log late (lighttpd buffers it, and on a busy
/// machine flushes it later than once a second) from lending the first run's entries to the
/// rerun; the log is read until the probe's line is there.
fn rerun_entries(log: &AccessLog) -> Vec<Logged> {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = log.since(0);
        if let Some(start) = all
            .iter()
            .rposition(|entry| entry.range.as_deref() == Some("bytes=0-1"))
        {
            return all[start..].to_vec();
        }
        assert!(
            std::time::Instant::now() < until,
            "no resume probe (bytes=0-1) in the log within 60 s: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
