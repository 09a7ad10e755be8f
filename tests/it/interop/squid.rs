//! Squid, as a forward proxy (`--proxy`) and as a reverse cache (`accel`, memory only) in
//! front of nginx: a fresh download each way, one interrupted and resumed through the proxy,
//! a mirror pair of the cache and its origin, and `range_offset_limit`: at 0 (the default)
//! ranges pass through to the origin; at -1 Squid answers a range miss by fetching the whole
//! file from the origin first, then serves every range from its cache (revalidating with the
//! origin, which answers 304).

use crate::support::relay::Relay;
use crate::support::servers::{AccessLog, Daemon, DaemonSpec, Logged, gets_of};
use crate::support::{Expect, MIB, Nginx, NginxOptions, Scenario, tempdir};

use super::{SLOW, assert_ranged, resumed_bytes};

/// How Squid is put in front of the origin.
enum Mode {
    /// A forward proxy: clients name the origin, Squid does not cache.
    Forward,
    /// A reverse cache for the origin on this port, with this `range_offset_limit`.
    Reverse {
        origin: u16,
        range_offset_limit: i64,
    },
}

fn squid(mode: &Mode) -> Daemon {
    let role = match mode {
        Mode::Forward => "cache deny all\n".to_owned(),
        Mode::Reverse {
            origin,
            range_offset_limit,
        } => format!(
            "cache_peer 127.0.0.1 parent {origin} 0 no-query originserver name=origin\n\
             cache_peer_access origin allow all_src\n\
             range_offset_limit {range_offset_limit}\n"
        ),
    };
    let accel = matches!(mode, Mode::Reverse { .. });
    Daemon::start(&DaemonSpec {
        program: "squid",
        package: "squid",
        configure: &move |dir, port| {
            let dir = dir.display();
            let listen = if accel {
                format!("http_port 127.0.0.1:{port} accel defaultsite=127.0.0.1 no-vhost")
            } else {
                format!("http_port 127.0.0.1:{port}")
            };
            let conf = format!(
                "{listen}
acl all_src src all
http_access allow all_src
{role}cache_mem 128 MB
maximum_object_size_in_memory 64 MB
maximum_object_size 64 MB
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
logformat ranges %>Hs %rm %rp \"%{{Range}}>h\" %<st
access_log stdio:{dir}/access.log ranges
coredump_dir {dir}
cache_effective_user proxy
pinger_enable off
shutdown_lifetime 0 seconds
"
            );
            std::fs::write(format!("{dir}/squid.conf"), conf).expect("write squid.conf");
            ["-N", "-f", &format!("{dir}/squid.conf")]
                .map(str::to_owned)
                .to_vec()
        },
        env: Vec::new(),
        log: Some("cache.log"),
    })
}

fn log(server: &Daemon) -> AccessLog {
    server.log("access.log")
}

fn origin_log(nginx: &Nginx) -> Vec<Logged> {
    nginx
        .access_log()
        .iter()
        .filter_map(|line| Logged::parse(line))
        .collect()
}

#[test]
fn forward_proxy_fresh_download() {
    let size = 16 * MIB;
    let (nginx, sha256) = Nginx::serving("img.bin", size, 1461, &NginxOptions::default());
    let proxy = squid(&Mode::Forward);
    Scenario::url(nginx.url("/img.bin"))
        .args(&["--proxy", &proxy.url(""), "--sha256", &sha256])
        .args(&["-c", "4", "--chunk-size", "2MiB"])
        .expect(Expect::success(&sha256));
    let entries = log(&proxy).since(0);
    let logged: Vec<&Logged> = entries.iter().filter(|e| e.method == "GET").collect();
    assert!(logged.len() >= 8, "squid logged:\n{}", log(&proxy).text());
    assert_ranged(
        &gets_of(&origin_log(&nginx), "/img.bin"),
        size,
        &nginx.access_log().join("\n"),
    );
}

#[test]
fn forward_proxy_interrupted_and_resumed() {
    let size = 16 * MIB;
    let (nginx, sha256) = Nginx::serving("img.bin", size, 1462, &NginxOptions::default());
    let proxy = squid(&Mode::Forward);
    let dir = tempdir();
    let throttled_proxy = Relay::start(proxy.port(), Some(SLOW));
    // The throttle sits between rangefetch and the proxy; the origin is named through a
    // relay of its own so that the URL is a plain one the proxy forwards.
    let origin = Relay::start(nginx.port(), None);
    let args = [
        "--proxy",
        &throttled_proxy.url(""),
        "--sha256",
        &sha256,
        "-c",
        "2",
        "--chunk-size",
        "1MiB",
        "--json",
    ];
    let mut running = Scenario::url(origin.url("/img.bin"))
        .in_dir(dir.path())
        .args(&args)
        .spawn();
    let state = crate::support::with_suffix(running.out(), ".part.state");
    running.wait_until(
        "journal and progress",
        std::time::Duration::from_secs(60),
        || state.is_file() && throttled_proxy.bytes_sent() >= size / 4,
    );
    running.signal(libc::SIGINT);
    running.expect(
        Expect::failure(130)
            .hint()
            .part_kept(true)
            .stderr_has("to resume"),
    );
    throttled_proxy.set_rate(None);
    let mark = log(&proxy).since(0).len();
    let second = Scenario::url(origin.url("/img.bin"))
        .in_dir(dir.path())
        .args(&args)
        .expect(Expect::success(&sha256).json());
    let resumed = resumed_bytes(&second);
    assert!(
        resumed >= size / 8,
        "resumed {resumed}\n{}",
        second.describe()
    );
    let rerun = log(&proxy).since(mark);
    assert!(
        rerun
            .iter()
            .all(|entry| entry.range.as_deref() != Some("bytes=0-0")),
        "{}",
        log(&proxy).text()
    );
    assert!(
        rerun
            .iter()
            .any(|entry| entry.range.as_deref() == Some("bytes=0-1")),
        "no two-byte resume probe through the proxy:\n{}",
        log(&proxy).text()
    );
}

#[test]
fn reverse_cache_passes_ranges_through_by_default() {
    let size = 16 * MIB;
    let (nginx, sha256) = Nginx::serving("img.bin", size, 1463, &NginxOptions::default());
    let cache = squid(&Mode::Reverse {
        origin: nginx.port(),
        range_offset_limit: 0,
    });
    Scenario::url(cache.url("/img.bin"))
        .args(&["--sha256", &sha256, "-c", "4", "--chunk-size", "2MiB"])
        .expect(Expect::success(&sha256));
    let entries = log(&cache).since(0);
    assert_ranged(&gets_of(&entries, "/img.bin"), size, &log(&cache).text());
    assert_ranged(
        &gets_of(&origin_log(&nginx), "/img.bin"),
        size,
        &nginx.access_log().join("\n"),
    );
}

#[test]
fn reverse_cache_with_range_offset_limit_fetches_the_whole_file_then_serves_ranges() {
    let size = 16 * MIB;
    let (nginx, sha256) = Nginx::serving("img.bin", size, 1464, &NginxOptions::default());
    let cache = squid(&Mode::Reverse {
        origin: nginx.port(),
        range_offset_limit: -1,
    });
    let args = ["--sha256", &sha256, "-c", "4", "--chunk-size", "2MiB"];
    Scenario::url(cache.url("/img.bin"))
        .args(&args)
        .expect(Expect::success(&sha256));
    let origin = origin_log(&nginx);
    let origin_gets = gets_of(&origin, "/img.bin");
    assert!(
        origin_gets
            .iter()
            .any(|entry| entry.range.is_none() && entry.status == 200),
        "squid did not fetch the whole file for a range:\n{}",
        nginx.access_log().join("\n")
    );
    let entries = log(&cache).since(0);
    assert_ranged(&gets_of(&entries, "/img.bin"), size, &log(&cache).text());
    // A second download is the cache's alone.
    let origin_mark = origin_gets.len();
    let mark = entries.len();
    let dir = tempdir();
    Scenario::url(cache.url("/img.bin"))
        .in_dir(dir.path())
        .args(&args)
        .expect(Expect::success(&sha256));
    let again = log(&cache).since(mark);
    assert_ranged(&gets_of(&again, "/img.bin"), size, &log(&cache).text());
    // Squid revalidates (the origin sends no freshness): the origin answers 304s and sends
    // no byte of the file again.
    let origin_again = origin_log(&nginx);
    let revalidations = &gets_of(&origin_again, "/img.bin")[origin_mark..];
    assert!(
        revalidations
            .iter()
            .all(|entry| entry.status == 304 && entry.bytes == 0),
        "the origin sent the file again:\n{}",
        nginx.access_log().join("\n")
    );
}

#[test]
fn mirror_pair_of_the_cache_and_its_origin() {
    let size = 16 * MIB;
    let (nginx, sha256) = Nginx::serving("img.bin", size, 1465, &NginxOptions::default());
    let cache = squid(&Mode::Reverse {
        origin: nginx.port(),
        range_offset_limit: 0,
    });
    Scenario::url(cache.url("/img.bin"))
        .args(&[&nginx.url("/img.bin"), "--sha256", &sha256, "-c", "4"])
        .args(&["--chunk-size", "1MiB"])
        .expect(Expect::success(&sha256));
    let through_cache = log(&cache).since(0);
    assert!(
        gets_of(&through_cache, "/img.bin")
            .iter()
            .any(|entry| entry.status == 206 && entry.bytes >= MIB),
        "the cache served no chunk:\n{}",
        log(&cache).text()
    );
    // The origin served the cache's misses and the mirror's own ranges: more than the file.
    let origin: u64 = gets_of(&origin_log(&nginx), "/img.bin")
        .iter()
        .map(|e| e.bytes)
        .sum();
    assert!(origin >= size, "{}", nginx.access_log().join("\n"));
}
