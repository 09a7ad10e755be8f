//! busybox httpd, which reads a range's last position of 0 as "to the end": `bytes=0-0` gets
//! the whole file (as a `206` with `Content-Range: bytes 0-N/N` in Debian's build, a `200` in
//! others). The probes that want no body ask for `bytes=0-1`; these tests hold the engine to
//! it on the real server, through a relay that records the request heads (busybox's own log
//! has no `Range`): a fresh download, one interrupted and resumed, and a mirror pair.

use std::path::Path;

use crate::support::relay::{Relay, Relayed};
use crate::support::servers::{Daemon, DaemonSpec, served_root, write_served};
use crate::support::{Expect, MIB, Scenario, tempdir};

use super::{SLOW, interrupt, resumed_bytes};

fn busybox(root: &Path) -> Daemon {
    let root = root.display().to_string();
    Daemon::start(&DaemonSpec {
        program: "busybox",
        package: "busybox",
        configure: &move |_dir, port| {
            [
                "httpd",
                "-f",
                "-vv",
                "-p",
                &format!("127.0.0.1:{port}"),
                "-h",
                &root,
            ]
            .map(str::to_owned)
            .to_vec()
        },
        env: Vec::new(),
        log: None,
    })
}

/// Every GET went out with a bounded range, and none asked for `bytes=0-0`.
fn assert_no_one_byte_probe(requests: &[Relayed]) {
    assert!(!requests.is_empty(), "nothing went through the relay");
    for request in requests {
        let range = request.range.as_deref().unwrap_or("");
        assert!(
            range.starts_with("bytes=") && !range.ends_with('-') && range != "bytes=0-0",
            "{request:?}\nall: {requests:#?}"
        );
    }
}

#[test]
fn fresh_download() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1421);
    let server = busybox(root.path());
    let relay = Relay::start(server.port(), None);
    Scenario::url(relay.url("/img.bin"))
        .args(&["--sha256", &sha256, "-c", "4", "--chunk-size", "2MiB"])
        .expect(Expect::success(&sha256));
    let requests = relay.requests();
    assert_no_one_byte_probe(&requests);
    assert!(requests.len() >= 8, "16 MiB in 2 MiB chunks: {requests:#?}");
}

#[test]
fn interrupted_and_resumed() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1422);
    let server = busybox(root.path());
    let relay = Relay::start(server.port(), Some(SLOW));
    let dir = tempdir();
    let args = [
        "--sha256",
        &sha256,
        "-c",
        "2",
        "--chunk-size",
        "1MiB",
        "--json",
    ];
    interrupt(&relay, "/img.bin", dir.path(), &args, size / 4);
    relay.set_rate(None);
    let mark = relay.requests().len();
    let second = Scenario::url(relay.url("/img.bin"))
        .in_dir(dir.path())
        .args(&args)
        .expect(Expect::success(&sha256).json());
    assert!(
        resumed_bytes(&second) >= size / 8,
        "the rerun resumed too little\n{}",
        second.describe()
    );
    let rerun = &relay.requests()[mark..];
    assert_eq!(
        rerun[0].range.as_deref(),
        Some("bytes=0-1"),
        "the resume probe: {rerun:#?}"
    );
    assert_no_one_byte_probe(rerun);
}

#[test]
fn mirror_pair_of_two_instances() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1423);
    let copy = tempdir();
    write_served(copy.path(), "img.bin", size, 1423);
    let (first, second) = (busybox(root.path()), busybox(copy.path()));
    let (first_relay, second_relay) = (
        Relay::start(first.port(), None),
        Relay::start(second.port(), None),
    );
    // Without --sha256: busybox's ETag is the mtime and size, the same on both copies, so
    // the mirror is mixed in only if its probe shows it serves ranges.
    let run = Scenario::url(first_relay.url("/img.bin"))
        .args(&[
            &second_relay.url("/img.bin"),
            "-c",
            "4",
            "--chunk-size",
            "1MiB",
        ])
        .expect(Expect::success(&sha256));
    let mirror = second_relay.requests();
    assert_eq!(
        mirror[0].range.as_deref(),
        Some("bytes=0-1"),
        "the mirror probe: {mirror:#?}"
    );
    assert!(
        mirror.len() >= 2,
        "the mirror served no chunk: {mirror:#?}\n{}",
        run.describe()
    );
    assert_no_one_byte_probe(&mirror);
    assert_no_one_byte_probe(&first_relay.requests());
}
