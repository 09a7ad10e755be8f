//! `rangefetch get` through a real tinyproxy, checked from the proxy's own log: `--proxy`, the
//! `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` variables in either case, `NO_PROXY`/`no_proxy`
//! (which must send the requests direct), HTTPS tunnelled with `CONNECT`, proxy credentials
//! that work and never show in any message or JSON line, and a proxy that refuses or cannot be
//! reached: exit 1 with a hint naming the proxy, its credentials shown as `***`.

use rangefetch_testserver::{FileSpec, RequestLog, TestServer};

use crate::support::nginx::lines_with_status;
use crate::support::{
    Expect, MIB, Microsocks, Nginx, NginxOptions, Ran, Run, Scenario, TestPki, Tinyproxy,
    TinyproxyOptions, closed_port,
};

/// The size of the plain-HTTP file: several chunks of [`CHUNK`], so several requests.
const SIZE: u64 = 2 * MIB + 12_345;
const CHUNK: &str = "256KiB";

/// Proxy credentials of the tests; distinctive, so that finding them anywhere is no accident.
const USER: &str = "rfuser";
const PASSWORD: &str = "pw7Sekr1t";

fn plain_server() -> TestServer {
    TestServer::serve(FileSpec::new("/img.bin", SIZE, 17))
}

fn expected() -> String {
    FileSpec::new("/img.bin", SIZE, 17).sha256_hex()
}

/// The arguments every download here starts with: several chunks over four connections.
fn chunked(scenario: Scenario<'_>) -> Scenario<'_> {
    scenario.args(&["--chunk-size", CHUNK, "-c", "4"])
}

/// A TLS nginx serving `size` seeded bytes as `/img.bin`, and the file's SHA-256.
fn tls_nginx(pki: &TestPki, size: u64, seed: u64) -> (Nginx, String) {
    Nginx::serving("img.bin", size, seed, &NginxOptions::tls(pki))
}

/// Asserts that the plain-HTTP download of `server`'s `/img.bin` went through `proxy`: the
/// proxy logged absolute-form GETs for it, and every request the server saw carries
/// tinyproxy's `Via` header.
fn assert_went_through(proxy: &Tinyproxy, mark: usize, server: &TestServer, run: &Run) {
    let target = server.url("/img.bin");
    let requests = proxy.wait_for_request(mark, &format!("GET {target}"));
    let gets: Vec<&String> = requests
        .iter()
        .filter(|request| request.starts_with(&format!("GET {target} ")))
        .collect();
    let served = run.served.as_ref().expect("recorded against the server");
    assert!(
        !gets.is_empty() && !served.requests.is_empty(),
        "the proxy logged no `GET {target}`; its log since the run:\n{}\n{}",
        proxy.log_since(mark).join("\n"),
        run.describe()
    );
    let direct: Vec<&RequestLog> = served
        .requests
        .iter()
        .filter(|request| {
            !request
                .header("via")
                .is_some_and(|via| via.contains("tinyproxy"))
        })
        .collect();
    assert!(
        direct.is_empty(),
        "{} of {} requests reached the server without passing the proxy (no `Via: … tinyproxy`)\n{}",
        direct.len(),
        served.requests.len(),
        run.describe()
    );
    assert!(
        gets.len() >= served.requests.len(),
        "the server saw {} requests but the proxy logged only {} GETs for it:\n{}\n{}",
        served.requests.len(),
        gets.len(),
        requests.join("\n"),
        run.describe()
    );
}

/// Asserts that the run did not touch `proxy`, and that the server saw it direct.
fn assert_went_direct(proxy: &Tinyproxy, mark: usize, run: &Run) {
    // Give a late log line the chance to show up before concluding there is none.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let lines: Vec<String> = proxy
        .log_since(mark)
        .into_iter()
        // Only requests count: a bare connect may be the harness's own
        // readiness probe, logged late; a client using the proxy always
        // sends a request line.
        .filter(|line| line.contains("Request ("))
        .collect();
    assert!(
        lines.is_empty(),
        "the proxy saw connections although NO_PROXY excludes the host:\n{}\n{}",
        lines.join("\n"),
        run.describe()
    );
    let served = run.served.as_ref().expect("recorded against the server");
    assert!(
        !served.requests.is_empty()
            && served
                .requests
                .iter()
                .all(|request| request.header("via").is_none()),
        "the server should have seen the requests direct, without `Via`\n{}",
        run.describe()
    );
}

/// Asserts that neither stream of `run` contains `secret`.
fn assert_never_shown(run: &Run, secret: &str) {
    assert!(
        !run.stderr.contains(secret),
        "stderr shows the proxy password {secret:?}\n{}",
        run.describe()
    );
    assert!(
        !run.stdout.contains(secret),
        "stdout shows the proxy password {secret:?}:\n{}\n{}",
        run.stdout,
        run.describe()
    );
}

/// Asserts that each `--json` stdout line is a JSON object, and returns them.
fn json_lines(run: &Run) -> Vec<serde_json::Value> {
    run.stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|error| {
                panic!(
                    "a stdout line is not JSON ({error}): {line}\n{}",
                    run.describe()
                )
            });
            assert!(
                value.is_object(),
                "a stdout line is not an object: {line}\n{}",
                run.describe()
            );
            value
        })
        .collect()
}

/// Asserts the failure of a run whose proxy (`shown`, e.g. `127.0.0.1:PORT`) refused it or
/// could not be reached: exit 1, a hint naming the proxy (with its credentials as `***` when
/// the URL has some), and the password nowhere.
fn assert_proxy_failure(run: Ran, shown: &str, with_credentials: bool) -> Ran {
    let run = run.expect(Expect::failure(1).hint().json().stderr_has(shown));
    let hints: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("hint:"))
        .collect();
    assert!(
        hints.iter().any(|hint| hint.contains("proxy")
            && hint.contains(shown)
            && (!with_credentials || hint.contains("***"))),
        "no hint names the proxy {shown}{}\n{}",
        if with_credentials {
            " with its credentials as `***`"
        } else {
            ""
        },
        run.describe()
    );
    assert_never_shown(&run, PASSWORD);
    json_lines(&run);
    run
}

#[test]
fn proxy_flag_carries_plain_http_through_tinyproxy() {
    let server = plain_server();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let mark = proxy.log_mark();
    let expected = expected();
    let run = chunked(Scenario::on(&server, "/img.bin"))
        .args(&["--proxy", &proxy.url(), "--sha256", &expected])
        .expect(
            Expect::success(&expected)
                .ranged()
                .covers(SIZE)
                .served(SIZE..=2 * SIZE),
        );
    assert_went_through(&proxy, mark, &server, &run);
}

#[test]
fn https_through_the_proxy_uses_connect() {
    let pki = TestPki::generate();
    let (nginx, expected) = tls_nginx(&pki, 3 * MIB, 23);
    let proxy = Tinyproxy::start(&TinyproxyOptions {
        connect_ports: vec![nginx.port()],
        ..TinyproxyOptions::default()
    });
    let mark = proxy.log_mark();
    let ca = pki.ca_pem();
    let run = chunked(Scenario::url(nginx.url("/img.bin")))
        .args(&["--proxy", &proxy.url()])
        .args(&["--ca-cert", ca.to_str().expect("a UTF-8 temp path")])
        .args(&["--sha256", &expected])
        .expect(Expect::success(&expected));
    let tunnel = format!("CONNECT 127.0.0.1:{} ", nginx.port());
    let requests = proxy.wait_for_request(mark, &tunnel);
    assert!(
        requests.iter().any(|request| request.starts_with(&tunnel)),
        "the proxy logged no `{tunnel}`; its requests:\n{}\n{}",
        requests.join("\n"),
        run.describe()
    );
    assert!(
        requests
            .iter()
            .all(|request| request.starts_with("CONNECT ")),
        "HTTPS must be tunnelled, never sent to the proxy as a plain request:\n{}",
        requests.join("\n")
    );
    let log = nginx.access_log();
    assert!(
        !lines_with_status(&log, "206").is_empty(),
        "nginx logged no 206 through the tunnel:\n{}\n{}",
        log.join("\n"),
        run.describe()
    );
}

#[test]
fn http_proxy_variable_in_either_case() {
    let server = plain_server();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let proxy_url = proxy.url();
    let expected = expected();
    for name in ["HTTP_PROXY", "http_proxy"] {
        let mark = proxy.log_mark();
        let run = chunked(Scenario::on(&server, "/img.bin"))
            .args(&["--sha256", &expected])
            .env(name, &proxy_url)
            .expect(Expect::success(&expected).covers(SIZE));
        assert_went_through(&proxy, mark, &server, &run);
    }
}

#[test]
fn all_proxy_variable_in_either_case() {
    let server = plain_server();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let proxy_url = proxy.url();
    let expected = expected();
    for name in ["ALL_PROXY", "all_proxy"] {
        let mark = proxy.log_mark();
        let run = chunked(Scenario::on(&server, "/img.bin"))
            .args(&["--sha256", &expected])
            .env(name, &proxy_url)
            .expect(Expect::success(&expected).covers(SIZE));
        assert_went_through(&proxy, mark, &server, &run);
    }
}

#[test]
fn no_proxy_in_either_case_sends_requests_direct() {
    let server = plain_server();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let proxy_url = proxy.url();
    let expected = expected();
    for (proxy_var, no_proxy_var, no_proxy) in [
        ("HTTP_PROXY", "NO_PROXY", "127.0.0.1"),
        ("http_proxy", "no_proxy", "127.0.0.1"),
        // Lower-case no_proxy beside upper-case HTTP_PROXY, as many systems set them.
        ("HTTP_PROXY", "no_proxy", "example.com,127.0.0.1"),
        ("ALL_PROXY", "NO_PROXY", "localhost, 127.0.0.1"),
    ] {
        let mark = proxy.log_mark();
        let run = chunked(Scenario::on(&server, "/img.bin"))
            .args(&["--sha256", &expected])
            .env(proxy_var, &proxy_url)
            .env(no_proxy_var, no_proxy)
            .expect(Expect::success(&expected).covers(SIZE));
        assert_went_direct(&proxy, mark, &run);
    }
}

#[test]
fn no_proxy_for_another_host_still_uses_the_proxy() {
    let server = plain_server();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let expected = expected();
    let mark = proxy.log_mark();
    let run = chunked(Scenario::on(&server, "/img.bin"))
        .args(&["--sha256", &expected])
        .env("HTTP_PROXY", &proxy.url())
        .env("NO_PROXY", "example.com,.internal")
        .expect(Expect::success(&expected).covers(SIZE));
    assert_went_through(&proxy, mark, &server, &run);
}

#[test]
fn https_proxy_variable_tunnels_an_https_url() {
    let pki = TestPki::generate();
    let (nginx, expected) = tls_nginx(&pki, MIB + 7, 29);
    let proxy = Tinyproxy::start(&TinyproxyOptions {
        connect_ports: vec![nginx.port()],
        ..TinyproxyOptions::default()
    });
    let proxy_url = proxy.url();
    let ca = pki.ca_pem();
    let ca = ca.to_str().expect("a UTF-8 temp path");
    for name in ["HTTPS_PROXY", "https_proxy"] {
        let mark = proxy.log_mark();
        let log_before = nginx.access_log().len();
        let run = chunked(Scenario::url(nginx.url("/img.bin")))
            .args(&["--ca-cert", ca, "--sha256", &expected])
            .env(name, &proxy_url)
            .expect(Expect::success(&expected));
        let tunnel = format!("CONNECT 127.0.0.1:{} ", nginx.port());
        let requests = proxy.wait_for_request(mark, &tunnel);
        assert!(
            requests.iter().any(|request| request.starts_with(&tunnel)),
            "with {name} set, the proxy logged no `{tunnel}`; its requests:\n{}\n{}",
            requests.join("\n"),
            run.describe()
        );
        assert!(
            nginx.access_log().len() > log_before,
            "nginx saw no request through the tunnel\n{}",
            run.describe()
        );
    }
}

#[test]
fn proxy_credentials_work_and_are_never_shown() {
    let server = plain_server();
    let proxy = Tinyproxy::start(&TinyproxyOptions {
        basic_auth: Some((USER.to_owned(), PASSWORD.to_owned())),
        ..TinyproxyOptions::default()
    });
    let proxy_url = proxy.url_with_credentials(USER, PASSWORD);
    let expected = expected();

    let mark = proxy.log_mark();
    let run = chunked(Scenario::on(&server, "/img.bin"))
        .args(&["--proxy", &proxy_url, "--sha256", &expected, "--json"])
        .expect(
            Expect::success(&expected)
                .json()
                .verified(true)
                .covers(SIZE),
        );
    assert_went_through(&proxy, mark, &server, &run);
    assert_never_shown(&run, PASSWORD);
    json_lines(&run);

    // The same credentials from the environment, with the human-readable output.
    let mark = proxy.log_mark();
    let run = chunked(Scenario::on(&server, "/img.bin"))
        .args(&["--sha256", &expected])
        .env("HTTP_PROXY", &proxy_url)
        .expect(Expect::success(&expected).covers(SIZE));
    assert_went_through(&proxy, mark, &server, &run);
    assert_never_shown(&run, PASSWORD);
}

#[test]
fn proxy_credentials_work_for_an_https_tunnel() {
    let pki = TestPki::generate();
    let (nginx, expected) = tls_nginx(&pki, MIB + 3, 31);
    let proxy = Tinyproxy::start(&TinyproxyOptions {
        connect_ports: vec![nginx.port()],
        basic_auth: Some((USER.to_owned(), PASSWORD.to_owned())),
    });
    let mark = proxy.log_mark();
    let ca = pki.ca_pem();
    let run = chunked(Scenario::url(nginx.url("/img.bin")))
        .args(&["--proxy", &proxy.url_with_credentials(USER, PASSWORD)])
        .args(&["--ca-cert", ca.to_str().expect("a UTF-8 temp path")])
        .args(&["--sha256", &expected, "--json"])
        .expect(Expect::success(&expected).json());
    let tunnel = format!("CONNECT 127.0.0.1:{} ", nginx.port());
    let requests = proxy.wait_for_request(mark, &tunnel);
    assert!(
        requests.iter().any(|request| request.starts_with(&tunnel)),
        "the proxy logged no `{tunnel}`; its log:\n{}\n{}",
        proxy.log_since(mark).join("\n"),
        run.describe()
    );
    assert_never_shown(&run, PASSWORD);
}

#[test]
fn proxy_refusing_the_credentials_fails_with_a_hint_naming_it() {
    let server = plain_server();
    let proxy = Tinyproxy::start(&TinyproxyOptions {
        basic_auth: Some((USER.to_owned(), "the-right-one".to_owned())),
        ..TinyproxyOptions::default()
    });
    let shown = format!("127.0.0.1:{}", proxy.port());
    // tinyproxy answers wrong credentials with 401 and missing ones with 407; either way it is
    // the proxy, not the server, that refuses.
    for (proxy_url, with_credentials) in [
        (proxy.url_with_credentials(USER, PASSWORD), true),
        (proxy.url(), false),
    ] {
        let run = chunked(Scenario::on(&server, "/img.bin"))
            .args(&["--proxy", &proxy_url, "--retries", "1", "--json"])
            .run();
        let run = assert_proxy_failure(run, &shown, with_credentials);
        let served = run.served.as_ref().expect("recorded against the server");
        assert!(
            served.requests.is_empty(),
            "a request got past a proxy that refused it\n{}",
            run.describe()
        );
    }
}

#[test]
fn proxy_refusing_a_tunnel_fails_with_a_hint_naming_it() {
    let pki = TestPki::generate();
    let (nginx, expected) = tls_nginx(&pki, 1000, 37);
    // No ConnectPort for nginx's port: tinyproxy answers the CONNECT with 403.
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let ca = pki.ca_pem();
    let run = chunked(Scenario::url(nginx.url("/img.bin")))
        .args(&["--proxy", &proxy.url_with_credentials(USER, PASSWORD)])
        .args(&["--ca-cert", ca.to_str().expect("a UTF-8 temp path")])
        .args(&["--sha256", &expected, "--retries", "1", "--json"])
        .run();
    assert_proxy_failure(run, &format!("127.0.0.1:{}", proxy.port()), true);
    assert!(
        nginx.access_log().is_empty(),
        "a request got past a proxy that refused the tunnel:\n{}",
        nginx.access_log().join("\n")
    );
}

#[test]
fn unreachable_proxy_fails_fast_with_a_hint_naming_it_without_credentials() {
    let server = plain_server();
    let port = closed_port();
    let proxy_url = format!("http://{USER}:{PASSWORD}@127.0.0.1:{port}");
    let shown = format!("127.0.0.1:{port}");

    let run = chunked(Scenario::on(&server, "/img.bin"))
        .args(&["--proxy", &proxy_url, "--retries", "1", "--json"])
        .run();
    let run = assert_proxy_failure(run, &shown, true);
    let served = run.served.as_ref().expect("recorded against the server");
    assert!(
        served.requests.is_empty(),
        "a request reached the server although the proxy is down\n{}",
        run.describe()
    );

    // The same proxy from the environment: the hint names it too.
    let run = chunked(Scenario::on(&server, "/img.bin"))
        .args(&["--retries", "1", "--json"])
        .env("HTTP_PROXY", &proxy_url)
        .run();
    assert_proxy_failure(run, &shown, true);
}

#[test]
fn unreachable_https_proxy_from_the_environment_is_named_in_the_hint() {
    let port = closed_port();
    let proxy_url = format!("http://{USER}:{PASSWORD}@127.0.0.1:{port}");
    let shown = format!("127.0.0.1:{port}");
    // Nothing listens at the origin either; the proxy is what fails first.
    let origin = format!("https://127.0.0.1:{}/img.bin", closed_port());
    let run = chunked(Scenario::url(origin))
        .args(&["--retries", "1", "--json"])
        .env("HTTPS_PROXY", &proxy_url)
        .run();
    assert_proxy_failure(run, &shown, true);
}

#[test]
fn socks5h_leaves_the_name_to_the_proxy() {
    let server = plain_server();
    let socks = Microsocks::start(None);
    let url = format!("http://localhost:{}/img.bin", server.addr().port());
    chunked(Scenario::url(url))
        .args(&["--proxy", &socks.url("socks5h", None), "-o", "img.bin"])
        .expect(Expect::success(&expected()));
    let target = format!("localhost:{}", server.addr().port());
    let seen = socks.wait_for_connection(&target);
    assert!(
        !seen.is_empty() && seen.iter().all(|t| *t == target),
        "socks5h must hand the proxy the name, not an address: {seen:?}"
    );
}

#[test]
fn socks5_from_all_proxy_with_credentials_never_shown() {
    let server = plain_server();
    let socks = Microsocks::start(Some((USER, PASSWORD)));
    let proxy = socks.url("socks5", Some((USER, PASSWORD)));
    let ran = chunked(Scenario::url(server.url("/img.bin")))
        .env("ALL_PROXY", &proxy)
        .args(&["--json"])
        .expect(Expect::success(&expected()).json());
    let target = format!("127.0.0.1:{}", server.addr().port());
    let seen = socks.wait_for_connection(&target);
    assert!(
        seen.len() >= 2 && seen.iter().all(|t| *t == target),
        "the ranges did not go through the SOCKS proxy: {seen:?}\n{}",
        ran.describe()
    );
    assert!(
        !ran.stdout.contains(PASSWORD) && !ran.stderr.contains(PASSWORD),
        "{}",
        ran.describe()
    );
    // The same proxy with a wrong password refuses: exit 1, the password not shown.
    let wrong = socks.url("socks5", Some((USER, "not-the-password")));
    let refused = chunked(Scenario::url(server.url("/img.bin")))
        .args(&["--proxy", &wrong])
        .expect(Expect::failure(1));
    assert!(
        !refused.stderr.contains("not-the-password"),
        "{}",
        refused.describe()
    );
}

#[test]
fn a_list_takes_each_files_proxy_from_the_environment() {
    // With -i there is no URL operand: the proxy variables apply per file, by its URL.
    let server = plain_server();
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let dir = crate::support::tempdir();
    let list = format!("{}  {} one.bin\n", expected(), server.url("/img.bin"));
    std::fs::write(dir.path().join("list.txt"), list).expect("write the list");
    let mark = proxy.log_mark();
    let run = crate::support::binary::spawn_env(
        dir.path(),
        &["get", "-i", "list.txt", "--chunk-size", CHUNK],
        Some(&server),
        &[("HTTP_PROXY", &proxy.url())],
    )
    .wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert_went_through(&proxy, mark, &server, &run);
}
