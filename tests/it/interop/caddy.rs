//! Caddy (`caddy run` with a Caddyfile, no admin endpoint, no automatic HTTPS, any Host so
//! that the relay's port is served and logged too): a fresh
//! download, one interrupted and resumed, and a mirror pair of two instances, which Caddy's
//! ETag (a hash of mtime and size) lets mix even without a hash. Its access log is JSON.
//! Caddy refuses an HTTP/2-only server (`protocols h2` needs `h1`), so the HTTP/2-only error
//! is unit-tested in core's `transport` instead.

use std::path::Path;

use crate::support::relay::Relay;
use crate::support::servers::{AccessLog, Daemon, DaemonSpec, gets_of, served_root, write_served};
use crate::support::{Expect, MIB, Scenario, tempdir};

use super::{SLOW, assert_ranged, interrupt, rerun_entries, resumed_bytes};

fn caddy(root: &Path) -> Daemon {
    let root = root.display().to_string();
    // Caddy keeps state under $HOME and the XDG directories: all of it goes into the
    // server's own directory.
    Daemon::start(&DaemonSpec {
        program: "caddy",
        package: "caddy",
        configure: &move |dir, port| {
            let dir = dir.display();
            let conf = format!(
                "{{
	admin off
	auto_https off
	storage file_system {dir}/storage
}}
http://:{port} {{
	bind 127.0.0.1
	root * {root}
	file_server
	log {{
		output file {dir}/access.log
		format json
	}}
}}
"
            );
            std::fs::write(format!("{dir}/Caddyfile"), conf).expect("write the Caddyfile");
            [
                "run",
                "--config",
                &format!("{dir}/Caddyfile"),
                "--adapter",
                "caddyfile",
            ]
            .map(str::to_owned)
            .to_vec()
        },
        env: vec![
            ("HOME".into(), "{dir}".into()),
            ("XDG_DATA_HOME".into(), "{dir}".into()),
            ("XDG_CONFIG_HOME".into(), "{dir}".into()),
        ],
        log: None,
    })
}

fn log(server: &Daemon) -> AccessLog {
    server.log("access.log").caddy_json()
}

#[test]
fn fresh_download() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1441);
    let server = caddy(root.path());
    Scenario::url(server.url("/img.bin"))
        .args(&["--sha256", &sha256, "-c", "4", "--chunk-size", "2MiB"])
        .expect(Expect::success(&sha256));
    let entries = log(&server).since(0);
    assert_ranged(&gets_of(&entries, "/img.bin"), size, &log(&server).text());
}

#[test]
fn interrupted_and_resumed() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1442);
    let server = caddy(root.path());
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
    assert!(
        resumed >= size / 8,
        "resumed {resumed}\n{}",
        second.describe()
    );
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
fn mirror_pair_of_two_instances_mixes_without_a_hash() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1443);
    let copy = tempdir();
    write_served(copy.path(), "img.bin", size, 1443);
    let (first, second) = (caddy(root.path()), caddy(copy.path()));
    Scenario::url(first.url("/img.bin"))
        .args(&[&second.url("/img.bin"), "-c", "4", "--chunk-size", "1MiB"])
        .expect(Expect::success(&sha256));
    for server in [&first, &second] {
        let entries = log(server).since(0);
        assert!(
            gets_of(&entries, "/img.bin")
                .iter()
                .any(|entry| entry.status == 206 && entry.bytes >= MIB),
            "an instance served no chunk:\n{}",
            log(server).text()
        );
    }
}
