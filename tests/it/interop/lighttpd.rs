//! lighttpd: a fresh download, one interrupted and resumed, and a mirror pair of two
//! instances serving copies of one file (whose ETags differ: lighttpd's hash inode and mtime).
//! Its access log is buffered and written out once a second.

use std::path::Path;
use std::time::Duration;

use crate::support::relay::Relay;
use crate::support::servers::{Daemon, DaemonSpec, gets_of, served_root, write_served};
use crate::support::{Expect, MIB, Scenario, tempdir};

use super::{SLOW, assert_ranged, interrupt, rerun_entries, resumed_bytes};

fn lighttpd(root: &Path) -> Daemon {
    let root = root.to_owned();
    Daemon::start(&DaemonSpec {
        program: "lighttpd",
        package: "lighttpd",
        configure: &move |dir, port| {
            let conf = format!(
                r#"server.document-root = "{root}"
server.port = {port}
server.bind = "127.0.0.1"
server.errorlog = "{dir}/error.log"
server.pid-file = "{dir}/lighttpd.pid"
server.modules = ("mod_accesslog")
accesslog.filename = "{dir}/access.log"
accesslog.format = "%>s %m %U \"%{{Range}}i\" %b"
static-file.etags = "enable"
mimetype.assign = (".bin" => "application/octet-stream")
"#,
                root = root.display(),
                dir = dir.display()
            );
            std::fs::write(dir.join("lighttpd.conf"), conf).expect("write lighttpd.conf");
            vec![
                "-D".into(),
                "-f".into(),
                dir.join("lighttpd.conf").display().to_string(),
            ]
        },
        env: Vec::new(),
        log: Some("error.log"),
    })
}

fn log(server: &Daemon) -> crate::support::servers::AccessLog {
    server
        .log("access.log")
        .flushed_every(Duration::from_secs(1))
}

#[test]
fn fresh_download() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1411);
    let server = lighttpd(root.path());
    Scenario::url(server.url("/img.bin"))
        .args(&["--sha256", &sha256, "-c", "4", "--chunk-size", "2MiB"])
        .expect(Expect::success(&sha256));
    let entries = log(&server).since(0);
    assert_ranged(&gets_of(&entries, "/img.bin"), size, &log(&server).text());
}

#[test]
fn interrupted_and_resumed() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1412);
    let server = lighttpd(root.path());
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
    let second = Scenario::url(relay.url("/img.bin"))
        .in_dir(dir.path())
        .args(&args)
        .expect(Expect::success(&sha256).json());
    let resumed = resumed_bytes(&second);
    assert!(resumed > 0, "nothing was resumed\n{}", second.describe());
    let rerun = rerun_entries(&log(&server));
    let entries = &rerun[..];
    let fetched: u64 = gets_of(entries, "/img.bin").iter().map(|e| e.bytes).sum();
    assert!(
        fetched <= size - resumed + 2 * MIB,
        "the rerun fetched {fetched} bytes with {resumed} resumed:\n{}",
        log(&server).text()
    );
}

#[test]
fn mirror_pair_of_two_instances() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1413);
    let copy = tempdir();
    write_served(copy.path(), "img.bin", size, 1413);
    let (first, second) = (lighttpd(root.path()), lighttpd(copy.path()));
    Scenario::url(first.url("/img.bin"))
        .args(&[&second.url("/img.bin"), "--sha256", &sha256, "-c", "4"])
        .args(&["--chunk-size", "1MiB"])
        .expect(Expect::success(&sha256));
    for server in [&first, &second] {
        let entries = log(server).since(0);
        let gets = gets_of(&entries, "/img.bin");
        assert!(
            gets.iter()
                .any(|entry| entry.status == 206 && entry.bytes >= MIB),
            "a mirror served no chunk:\n{}",
            log(server).text()
        );
    }
}
