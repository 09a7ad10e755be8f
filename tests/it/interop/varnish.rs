//! Varnish (`varnishd -F`, memory storage) in front of nginx: a fresh download (a miss, which
//! Varnish fetches whole from the origin) and a second one served from the cache alone, one
//! interrupted and resumed, a mirror pair of the cache and its origin, and its quirk: an
//! origin that gzips the file makes every miss a stream of unknown length, which Varnish
//! answers with `200` whatever the range, so the first download is one stream and the next,
//! a hit, is ranged again. What Varnish answered is seen in the run (`--json`'s `started`);
//! what it asked for, in the origin's access log.

use std::path::Path;

use crate::support::relay::Relay;
use crate::support::servers::{AccessLog, Daemon, DaemonSpec, Logged, gets_of, served_root};
use crate::support::{Expect, MIB, Nginx, NginxOptions, Ran, Scenario, tempdir};

use super::{SLOW, interrupt, resumed_bytes};

fn varnish(origin: u16) -> Daemon {
    Daemon::start(&DaemonSpec {
        program: "varnishd",
        package: "varnish",
        configure: &move |dir, port| {
            [
                "-F",
                "-a",
                &format!("127.0.0.1:{port}"),
                "-b",
                &format!("127.0.0.1:{origin}"),
                "-n",
                &dir.join("work").display().to_string(),
                "-s",
                "malloc,128m",
                "-T",
                "none",
            ]
            .map(str::to_owned)
            .to_vec()
        },
        env: Vec::new(),
        log: None,
    })
}

/// nginx gzipping the file's type for clients that accept it (Varnish does, on a miss).
fn gzip_origin(root: &Path) -> Daemon {
    let root = root.display().to_string();
    Daemon::start(&DaemonSpec {
        program: "nginx",
        package: "nginx-light",
        configure: &move |dir, port| {
            let dir = dir.display();
            let conf = format!(
                "daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format ranges '$status $request_method $uri \"$http_range\" $body_bytes_sent';
    access_log {dir}/access.log ranges;
    client_body_temp_path {dir}/tmp-client_body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    default_type application/octet-stream;
    gzip on;
    gzip_types application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"
            );
            std::fs::write(format!("{dir}/nginx.conf"), conf).expect("write nginx.conf");
            [
                "-p",
                &dir.to_string(),
                "-e",
                &format!("{dir}/error.log"),
                "-c",
            ]
            .map(str::to_owned)
            .into_iter()
            .chain([format!("{dir}/nginx.conf")])
            .collect()
        },
        env: Vec::new(),
        log: Some("error.log"),
    })
}

fn origin_log(nginx: &Nginx) -> Vec<Logged> {
    nginx
        .access_log()
        .iter()
        .filter_map(|line| Logged::parse(line))
        .collect()
}

fn started_ranged(run: &Ran) -> bool {
    let started = run
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "started")
        .unwrap_or_else(|| panic!("no started event\n{}", run.describe()));
    started["ranges"] == true
}

#[test]
fn a_miss_then_a_hit_the_hit_served_by_the_cache_alone() {
    let size = 16 * MIB;
    let (nginx, sha256) = Nginx::serving("img.bin", size, 1471, &NginxOptions::default());
    let cache = varnish(nginx.port());
    let args = [
        "--sha256",
        &sha256,
        "-c",
        "4",
        "--chunk-size",
        "2MiB",
        "--json",
    ];
    let first = Scenario::url(cache.url("/img.bin"))
        .args(&args)
        .expect(Expect::success(&sha256).json());
    assert!(started_ranged(&first), "\n{}", first.describe());
    let origin = origin_log(&nginx);
    let whole: Vec<&Logged> = gets_of(&origin, "/img.bin")
        .into_iter()
        .filter(|entry| entry.status == 200 && entry.range.is_none())
        .collect();
    assert_eq!(whole.len(), 1, "{}", nginx.access_log().join("\n"));
    let mark = origin.len();
    let second = Scenario::url(cache.url("/img.bin"))
        .args(&args)
        .expect(Expect::success(&sha256).json());
    assert!(started_ranged(&second), "\n{}", second.describe());
    assert_eq!(
        origin_log(&nginx).len(),
        mark,
        "a hit reached the origin:\n{}",
        nginx.access_log().join("\n")
    );
}

#[test]
fn a_gzipping_origin_makes_a_miss_answer_200_and_the_hit_is_ranged() {
    let size = 8 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1472);
    let origin = gzip_origin(root.path());
    let cache = varnish(origin.port());
    let args = [
        "--sha256",
        &sha256,
        "-c",
        "4",
        "--chunk-size",
        "1MiB",
        "--json",
    ];
    let miss = Scenario::url(cache.url("/img.bin"))
        .args(&args)
        .expect(Expect::success(&sha256).json());
    assert!(
        !started_ranged(&miss),
        "the miss was served ranged: the quirk did not show\n{}",
        miss.describe()
    );
    let origin_log: AccessLog = origin.log("access.log");
    let fetched = origin_log.since(0);
    assert_eq!(
        gets_of(&fetched, "/img.bin").len(),
        1,
        "{}",
        origin_log.text()
    );
    let dir = tempdir();
    let hit = Scenario::url(cache.url("/img.bin"))
        .in_dir(dir.path())
        .args(&args)
        .expect(Expect::success(&sha256).json());
    assert!(
        started_ranged(&hit),
        "the hit was not ranged\n{}",
        hit.describe()
    );
}

#[test]
fn interrupted_and_resumed() {
    let size = 16 * MIB;
    let (nginx, sha256) = Nginx::serving("img.bin", size, 1473, &NginxOptions::default());
    let cache = varnish(nginx.port());
    let relay = Relay::start(cache.port(), Some(SLOW));
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
    let rerun: Vec<_> = relay.requests();
    assert!(
        rerun
            .iter()
            .any(|request| request.range.as_deref() == Some("bytes=0-1")),
        "no two-byte resume probe: {rerun:#?}"
    );
}

#[test]
fn mirror_pair_of_the_cache_and_its_origin() {
    let size = 16 * MIB;
    let (nginx, sha256) = Nginx::serving("img.bin", size, 1474, &NginxOptions::default());
    let cache = varnish(nginx.port());
    let relay = Relay::start(cache.port(), None);
    Scenario::url(relay.url("/img.bin"))
        .args(&[&nginx.url("/img.bin"), "-c", "4", "--chunk-size", "1MiB"])
        .expect(Expect::success(&sha256));
    // Varnish passes the origin's ETag on, so the two are one version even without a hash.
    let through_cache = relay.requests();
    assert!(
        through_cache.len() >= 2,
        "the cache served no chunk: {through_cache:#?}"
    );
    let direct = origin_log(&nginx);
    assert!(
        gets_of(&direct, "/img.bin")
            .iter()
            .any(|entry| entry.status == 206 && entry.range.is_some()),
        "the origin as a mirror served no range:\n{}",
        nginx.access_log().join("\n")
    );
}
