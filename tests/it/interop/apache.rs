//! Apache httpd (`apache2 -X`, one process in the foreground): a fresh download, one
//! interrupted and resumed, a mirror pair, and its quirks — ETags that include the inode
//! (`FileETag INode MTime Size`), so two instances serving copies of one file (same size, same
//! mtime) tag it differently, behind a balancer as well as as mirrors; and mod_deflate forced
//! on the file's type (`force-gzip`), which gzips even a ranged request for identity.

use std::path::Path;

use crate::support::relay::Relay;
use crate::support::servers::{AccessLog, Daemon, DaemonSpec, gets_of, served_root, write_served};
use crate::support::{Expect, MIB, Scenario, tempdir};

use super::{SLOW, assert_ranged, interrupt, rerun_entries, resumed_bytes};

fn apache(root: &Path, force_gzip: bool) -> Daemon {
    let root = root.display().to_string();
    Daemon::start(&DaemonSpec {
        program: "apache2",
        package: "apache2",
        configure: &move |dir, port| {
            let modules = "/usr/lib/apache2/modules";
            let deflate = if force_gzip {
                format!(
                    "LoadModule filter_module {modules}/mod_filter.so\n\
                     LoadModule deflate_module {modules}/mod_deflate.so\n\
                     LoadModule env_module {modules}/mod_env.so\n\
                     AddOutputFilterByType DEFLATE application/octet-stream\n\
                     SetEnv force-gzip 1\n"
                )
            } else {
                String::new()
            };
            let conf = format!(
                r#"ServerRoot "{dir}"
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
ServerName localhost
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule mime_module {modules}/mod_mime.so
TypesConfig /dev/null
AddType application/octet-stream .bin
User www-data
Group www-data
DocumentRoot "{root}"
<Directory "{root}">
  Require all granted
</Directory>
ErrorLog {dir}/error.log
LogFormat "%>s %m %U \"%{{Range}}i\" %B" ranges
CustomLog {dir}/access.log ranges
FileETag INode MTime Size
{deflate}"#,
                dir = dir.display()
            );
            std::fs::write(dir.join("httpd.conf"), conf).expect("write httpd.conf");
            vec![
                "-X".into(),
                "-f".into(),
                dir.join("httpd.conf").display().to_string(),
            ]
        },
        env: Vec::new(),
        log: Some("error.log"),
    })
}

fn log(server: &Daemon) -> AccessLog {
    server.log("access.log")
}

/// Two instances serving copies of one seeded file: same bytes, size and mtime, other inodes.
fn two_instances(size: u64, seed: u64) -> (Daemon, Daemon, String, [tempfile::TempDir; 2]) {
    let (root, sha256) = served_root("img.bin", size, seed);
    let copy = tempdir();
    write_served(copy.path(), "img.bin", size, seed);
    let (first, second) = (apache(root.path(), false), apache(copy.path(), false));
    (first, second, sha256, [root, copy])
}

#[test]
fn fresh_download() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1431);
    let server = apache(root.path(), false);
    Scenario::url(server.url("/img.bin"))
        .args(&["--sha256", &sha256, "-c", "4", "--chunk-size", "2MiB"])
        .expect(Expect::success(&sha256));
    let entries = log(&server).since(0);
    assert_ranged(&gets_of(&entries, "/img.bin"), size, &log(&server).text());
}

#[test]
fn interrupted_and_resumed() {
    let size = 16 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1432);
    let server = apache(root.path(), false);
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
    let gets = gets_of(entries, "/img.bin");
    let fetched: u64 = gets.iter().map(|entry| entry.bytes).sum();
    assert!(
        fetched <= size - resumed + 2 * MIB,
        "the rerun fetched {fetched} bytes with {resumed} resumed:\n{}",
        log(&server).text()
    );
    assert_eq!(
        gets[0].range.as_deref(),
        Some("bytes=0-1"),
        "the resume probe"
    );
}

#[test]
fn mirror_pair_with_inode_etags_mixes_only_with_a_hash() {
    let size = 16 * MIB;
    let (first, second, sha256, _roots) = two_instances(size, 1433);
    // Without a hash the mirror's other ETag keeps it out.
    let run = Scenario::url(first.url("/img.bin"))
        .args(&[&second.url("/img.bin"), "-c", "4", "--chunk-size", "1MiB"])
        .expect(Expect::success(&sha256).stderr_has("not mixing"));
    let mirror = log(&second).since(0);
    assert!(
        gets_of(&mirror, "/img.bin")
            .iter()
            .all(|entry| entry.bytes <= 2),
        "the mirror served more than its probe without a hash:\n{}\n{}",
        log(&second).text(),
        run.describe()
    );
    // With one, both serve chunks.
    let (first_mark, second_mark) = (log(&first).mark(), log(&second).mark());
    Scenario::url(first.url("/img.bin"))
        .args(&[&second.url("/img.bin"), "--sha256", &sha256, "-c", "4"])
        .args(&["--chunk-size", "1MiB"])
        .expect(Expect::success(&sha256));
    for (server, mark) in [(&first, first_mark), (&second, second_mark)] {
        let entries = log(server).since(mark);
        assert!(
            gets_of(&entries, "/img.bin")
                .iter()
                .any(|entry| entry.status == 206 && entry.bytes >= MIB),
            "an instance served no chunk:\n{}",
            log(server).text()
        );
    }
}

#[test]
fn a_balancer_over_two_instances_pins_by_last_modified() {
    let size = 16 * MIB;
    let (first, second, sha256, _roots) = two_instances(size, 1434);
    let balancer = Relay::farm(vec![first.port(), second.port()], None);
    let run = Scenario::url(balancer.url("/img.bin"))
        .args(&["-c", "4", "--chunk-size", "1MiB"])
        .expect(Expect::success(&sha256).stderr_has("different ETags"));
    assert!(
        !run.stderr.contains("starting over"),
        "a farm is not a changed file\n{}",
        run.describe()
    );
    // Both instances were asked; the one whose inode is not in the pinned ETag answered
    // the ETag `If-Range` with its whole file (200), which was never written: the engine
    // pinned by the date from then on.
    let (first_log, second_log) = (log(&first).since(0), log(&second).since(0));
    let (first_gets, second_gets) = (
        gets_of(&first_log, "/img.bin"),
        gets_of(&second_log, "/img.bin"),
    );
    assert!(
        !first_gets.is_empty() && !second_gets.is_empty(),
        "the balancer reached one instance only\n{}\n{}",
        log(&first).text(),
        log(&second).text()
    );
    assert!(
        first_gets
            .iter()
            .chain(&second_gets)
            .any(|entry| entry.status == 200),
        "no instance refused the other's ETag: the quirk did not show\n{}\n{}",
        log(&first).text(),
        log(&second).text()
    );
}

#[test]
fn forced_gzip_is_decoded_as_one_stream_and_no_encoded_range_is_written() {
    let size = 8 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1435);
    let server = apache(root.path(), true);
    Scenario::url(server.url("/img.bin"))
        .args(&["--sha256", &sha256, "--chunk-size", "1MiB"])
        .expect(Expect::success(&sha256).stderr_has("gzip-encoded"));
    let entries = log(&server).since(0);
    let gets = gets_of(&entries, "/img.bin");
    // The probe's answer is the gzipped whole file, which is the one stream: nothing else.
    assert_eq!(gets.len(), 1, "{}", log(&server).text());
    assert_eq!(gets[0].status, 200, "{}", log(&server).text());
}
