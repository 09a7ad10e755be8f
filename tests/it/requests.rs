//! What goes out with the requests: `-H` headers and `--user-agent` on every request to the
//! URLs given, credentials never to another host a redirect leads to, no header value and no
//! signature of a signed URL in any output or in the journal, a newly signed URL resuming the
//! same object, and `--limit-rate` holding the whole download to its rate.

use std::time::Duration;

use rangefetch_testserver::{Fault, FaultRule, FileSpec, ServerConfig, TestServer};

use crate::support::{Expect, MIB, Scenario, journal_recorded, start_server, tempdir, with_suffix};

const SECRET: &str = "s3cr3t-t0ken-value";

#[test]
fn headers_reach_the_named_host_and_credentials_not_the_host_a_redirect_names() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 701);
    // The target is the same server under another name: `localhost` is another host to
    // the redirect rules than `127.0.0.1`.
    let target = TestServer::serve(file.clone());
    let location = format!("http://localhost:{}/img.bin", target.addr().port());
    let origin = start_server(
        vec![],
        vec![FaultRule::always(Fault::Redirect {
            status: 302,
            location,
        })],
    );
    let auth = format!("Authorization: Bearer {SECRET}");
    let cookie = format!("Cookie: session={SECRET}");
    let run = Scenario::url(origin.url("/img.bin"))
        .args(&[
            "-o",
            "img.bin",
            "-H",
            &auth,
            "-H",
            &cookie,
            "-H",
            "X-Trace: 42",
            "--user-agent",
            "vm-manager/3.1",
            "--chunk-size",
            "1MiB",
            "--sha256",
            &file.sha256_hex(),
            "--json",
        ])
        .expect(Expect::success(&file.sha256_hex()).json());
    let first = origin.requests();
    assert!(
        !first.is_empty(),
        "the origin saw no request\n{}",
        run.describe()
    );
    for request in &first {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {SECRET}").as_str())
        );
        assert_eq!(request.header("x-trace"), Some("42"));
        assert_eq!(request.header("user-agent"), Some("vm-manager/3.1"));
    }
    let redirected = target.requests();
    assert!(
        redirected.len() >= 4,
        "ranges went elsewhere\n{}",
        run.describe()
    );
    for request in &redirected {
        assert_eq!(
            request.header("authorization"),
            None,
            "credentials sent to the host a redirect named: {request:?}"
        );
        assert_eq!(
            request.header("cookie"),
            None,
            "cookie sent to another host: {request:?}"
        );
        assert_eq!(request.header("x-trace"), Some("42"), "{request:?}");
        assert_eq!(request.header("user-agent"), Some("vm-manager/3.1"));
    }
    assert!(
        !run.stdout.contains(SECRET) && !run.stderr.contains(SECRET),
        "a header value was printed\n{}",
        run.describe()
    );
}

#[test]
fn a_header_the_engine_sets_itself_is_refused_without_echoing_its_value() {
    let run = Scenario::new(FileSpec::new("/f.bin", MIB, 702))
        .args(&["-H", &format!("Range: bytes=0-{SECRET}")])
        .expect(Expect::failure(2).served(0..=0).stderr_has("range"));
    assert!(!run.stderr.contains(SECRET), "{}", run.describe());
}

#[test]
fn a_newly_signed_url_resumes_and_no_signature_is_shown_or_kept() {
    let size = 16 * MIB;
    let file = FileSpec::new("/obj.bin", size, 703);
    let expected = file.sha256_hex();
    let server = start_server(
        vec![file],
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 2 * MIB,
        })],
    );
    let dir = tempdir();
    let signed = |signature: &str, date: &str| {
        server.url(&format!(
            "/obj.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA{SECRET}&X-Amz-Date={date}&X-Amz-Expires=300&X-Amz-Signature={signature}{SECRET}"
        ))
    };
    let get = |url: String| {
        Scenario::url(url).in_dir(dir.path()).args(&[
            "-o",
            "obj.bin",
            "-c",
            "2",
            "--chunk-size",
            "1MiB",
            "--json",
        ])
    };
    let mut running = get(signed("aaaa", "20261202T000000Z")).spawn();
    let state = with_suffix(running.out(), ".part.state");
    running.wait_until("a journal recording 4 MiB", Duration::from_secs(60), || {
        journal_recorded(&state) >= 4 * MIB
    });
    running.signal(libc::SIGINT);
    let first = running.expect(Expect::failure(130).part_kept(true).json());
    let journal = std::fs::read_to_string(&state).expect("the journal is kept");
    assert!(
        !journal.contains(SECRET),
        "the journal holds a credential:\n{journal}"
    );
    assert!(
        !first.stdout.contains(SECRET) && !first.stderr.contains(SECRET),
        "a signature was printed\n{}",
        first.describe()
    );
    assert!(first.stdout.contains("REDACTED"), "{}", first.describe());
    let kept = journal_recorded(&state);

    server.set_faults(Default::default());
    let second = get(signed("bbbb", "20261202T001000Z"))
        .args(&["--sha256", &expected])
        .expect(Expect::success(&expected).json());
    assert!(
        !second.stdout.contains(SECRET) && !second.stderr.contains(SECRET),
        "{}",
        second.describe()
    );
    let resumed = resumed_bytes(&second.stdout);
    assert!(
        resumed >= kept.min(4 * MIB),
        "the newly signed URL did not resume: {resumed} bytes resumed of {kept} recorded\n{}",
        second.describe()
    );
}

/// `resumed_bytes` of the `started` event in `--json` output.
fn resumed_bytes(stdout: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "started")
        .and_then(|event| event["resumed_bytes"].as_u64())
        .unwrap_or(0)
}

#[test]
fn limit_rate_holds_eight_connections_to_the_rate() {
    // 32 MiB at 4 MiB/s is 8 s, whatever the connections; the kernel's receive buffers let
    // a few hundred KiB through early, hence the tolerance.
    let size = 32 * MIB;
    let run = Scenario::new(FileSpec::new("/big.bin", size, 704))
        .args(&["-c", "8", "--limit-rate", "4M", "--chunk-size", "1MiB"])
        .expect(Expect::success_of_file());
    let secs = run.elapsed.as_secs_f64();
    assert!(
        (7.2..=8.8).contains(&secs),
        "32 MiB at --limit-rate 4M took {secs:.2} s (8 s ± 10 % expected)\n{}",
        run.describe()
    );
}

#[test]
fn a_batch_limit_is_shared_by_files_running_at_once_started_from_the_library() {
    // Two downloads given one RateLimit share it: together they take as long as their
    // bytes at the rate, not half of it.
    let a = TestServer::start(ServerConfig {
        files: vec![
            FileSpec::new("/a.bin", 8 * MIB, 705),
            FileSpec::new("/b.bin", 8 * MIB, 706),
        ],
        ..ServerConfig::default()
    });
    let dir = tempdir();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let limit = rangefetch_core::RateLimit::new(4 << 20);
    let started = std::time::Instant::now();
    runtime.block_on(async {
        let download = |path: &str| {
            let config = rangefetch_core::Config::default()
                .connections(4)
                .chunk_size(MIB)
                .rate_limit(limit.clone());
            rangefetch_core::Download::builder(a.url(path))
                .config(config)
                .output(dir.path().join(path.trim_start_matches('/')))
                .build()
                .expect("build")
        };
        let (one, two) = (download("/a.bin"), download("/b.bin"));
        let (x, y) = tokio::join!(one.run(), two.run());
        x.expect("a.bin");
        y.expect("b.bin");
    });
    let secs = started.elapsed().as_secs_f64();
    assert!(
        (3.6..=4.6).contains(&secs),
        "16 MiB at a shared 4 MiB/s took {secs:.2} s (4 s expected)"
    );
}

#[test]
fn the_dragonfly_flavor_prefetches_keys_by_content_and_keeps_to_its_pieces() {
    let size = 32 * MIB;
    let file = FileSpec::new("/model.bin", size, 707);
    let hash = file.sha256_hex();
    let run = Scenario::new(file)
        .args(&[
            "--proxy-flavor",
            "dragonfly",
            "--sha256",
            &hash,
            "-c",
            "16",
            "--chunk-size",
            "1MiB",
            "--json",
        ])
        .expect(Expect::success_of_file().json());
    let requests = run.server().requests();
    let task_id = format!("sha256:{hash}");
    for request in &requests {
        assert_eq!(
            request.header("x-dragonfly-prefetch"),
            Some("true"),
            "{request:?}"
        );
        assert_eq!(
            request.header("x-dragonfly-content-for-calculating-task-id"),
            Some(task_id.as_str())
        );
        let start: Option<u64> = request
            .range
            .as_deref()
            .and_then(|range| range.strip_prefix("bytes="))
            .and_then(|range| range.split('-').next())
            .and_then(|start| start.parse().ok());
        if let Some(start) = start {
            assert_eq!(
                start % (4 * MIB),
                0,
                "a range off Dragonfly's 4 MiB pieces: {request:?}"
            );
        }
    }
    let done: serde_json::Value = run
        .stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .expect("a done line");
    let connections = done["connections"].as_u64().expect("connections");
    assert!(
        connections <= 8,
        "{connections} connections to one dfdaemon"
    );
}

#[test]
fn a_dragonfly_error_type_is_named_in_the_error() {
    let run = Scenario::new(FileSpec::new("/gone.bin", MIB, 708))
        .faults(vec![
            FaultRule::always(Fault::Status {
                code: 502,
                retry_after: None,
            }),
            FaultRule::always(Fault::SetHeader {
                name: "X-Dragonfly-Error-Type".to_owned(),
                value: "backend".to_owned(),
            }),
        ])
        .args(&["--proxy-flavor", "dragonfly", "--retries", "0"])
        .expect(Expect::failure(1));
    assert!(
        run.stderr.contains("Dragonfly error type backend"),
        "{}",
        run.describe()
    );
}
