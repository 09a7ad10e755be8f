//! `rangefetch get` over HTTPS against a real nginx whose certificate comes from a CA generated
//! in the test: `--ca-cert` makes it trusted; without it the run fails at once with a
//! certificate error and a hint (a certificate is not a network hiccup, so it is not retried);
//! a `--ca-cert` file that is not a PEM certificate is bad input.

use std::time::Duration;

use rangefetch_testserver::FileSpec;

use crate::support::nginx::lines_with_status;
use crate::support::{Expect, MIB, Nginx, NginxOptions, Scenario, TestPki};

/// A certificate error must come back well within this: no retries, no backoff.
const NO_RETRY_BOUND: Duration = Duration::from_secs(5);

/// Serves a 3 MiB file over TLS; returns the certificates, nginx and the file's SHA-256.
fn tls_server() -> (TestPki, Nginx, String) {
    let pki = TestPki::generate();
    let (nginx, expected) = Nginx::serving("img.bin", 3 * MIB, 41, &NginxOptions::tls(&pki));
    (pki, nginx, expected)
}

#[test]
fn ca_cert_makes_a_private_ca_trusted() {
    let (pki, nginx, expected) = tls_server();
    let ca = pki.ca_pem();
    let ca = ca.to_str().expect("a UTF-8 temp path");
    for url in [nginx.url("/img.bin"), nginx.localhost_url("/img.bin")] {
        let log_before = nginx.access_log().len();
        let run = Scenario::url(url.clone())
            .args(&["--ca-cert", ca, "--sha256", &expected])
            .args(&["--chunk-size", "1MiB", "-c", "3"])
            .expect(Expect::success(&expected));
        let log: Vec<String> = nginx.access_log()[log_before..].to_vec();
        let partial = lines_with_status(&log, "206");
        assert!(
            !partial.is_empty(),
            "nginx logged no 206 for {url}:\n{}\n{}",
            log.join("\n"),
            run.describe()
        );
        let served: u64 = partial
            .iter()
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(
            served >= 3 * MIB,
            "nginx's 206 responses for {url} carried only {served} bytes:\n{}",
            log.join("\n")
        );
    }
}

#[test]
fn without_ca_cert_a_private_ca_is_a_certificate_error_that_is_not_retried() {
    let (_pki, nginx, expected) = tls_server();
    let run = Scenario::url(nginx.url("/img.bin"))
        .args(&["--sha256", &expected, "--json"])
        .expect(
            Expect::failure(1)
                .json()
                .hint()
                .stderr_has("certificate")
                .part_kept(false),
        );
    let hints: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.starts_with("hint:"))
        .collect();
    assert!(
        hints.iter().any(|hint| hint.contains("--ca-cert")),
        "the hint does not mention --ca-cert\n{}",
        run.describe()
    );
    assert!(
        run.elapsed < NO_RETRY_BOUND,
        "a certificate error took {:.2?}: it must not be retried\n{}",
        run.elapsed,
        run.describe()
    );
    let retries: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.contains("\"event\":\"retry\""))
        .collect();
    assert!(
        retries.is_empty(),
        "a certificate error was retried:\n{}\n{}",
        retries.join("\n"),
        run.describe()
    );
    let log = nginx.access_log();
    assert!(
        log.is_empty(),
        "nginx completed requests although the client cannot trust it:\n{}\n{}",
        log.join("\n"),
        run.describe()
    );
}

/// `--ca-cert FILE` where FILE is not a usable PEM certificate: exit 2 before any request.
fn bad_ca_cert(contents: Option<&str>) {
    let mut scenario = Scenario::new(FileSpec::new("/img.bin", 1000, 6));
    if let Some(contents) = contents {
        scenario = scenario.local_file("ca.pem", contents);
    }
    scenario
        .args(&["--ca-cert", "ca.pem"])
        .expect(Expect::failure(2).part_kept(false).max_requests(0));
}

#[test]
fn ca_cert_that_is_not_pem_is_bad_input() {
    bad_ca_cert(Some("this is not a certificate\n"));
}

#[test]
fn ca_cert_with_a_broken_pem_block_is_bad_input() {
    bad_ca_cert(Some(
        "-----BEGIN CERTIFICATE-----\nnot base64 at all !!!\n-----END CERTIFICATE-----\n",
    ));
}

#[test]
fn ca_cert_that_is_an_empty_file_is_bad_input() {
    bad_ca_cert(Some(""));
}

#[test]
fn ca_cert_that_does_not_exist_is_bad_input() {
    bad_ca_cert(None);
}
