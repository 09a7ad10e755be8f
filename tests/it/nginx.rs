//! `rangefetch` against a real nginx, whose range handling was not written by us: a large file
//! over many connections, the same under nginx's per-connection `limit_rate`, and `hash` and
//! `verify` on what nginx serves.

use crate::support::{Expect, MIB, Nginx, NginxOptions, Scenario, assert_exit, run};

/// The access log's entries for `uri` with this status.
fn log_entries(nginx: &Nginx, uri: &str, status: &str) -> Vec<String> {
    nginx
        .access_log()
        .into_iter()
        .filter(|line| {
            let mut fields = line.split(' ');
            fields.next() == Some(status) && fields.nth(1) == Some(uri)
        })
        .collect()
}

/// Sum of the body bytes in the log entries (the last field).
fn logged_bytes(entries: &[String]) -> u64 {
    entries
        .iter()
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|bytes| bytes.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no byte count in access log line {line:?}"))
        })
        .sum()
}

#[test]
fn large_file_over_8_connections() {
    let size = 64 * MIB;
    let (nginx, expected) = Nginx::serving("big.bin", size, 21, &NginxOptions::default());
    Scenario::url(nginx.url("/big.bin"))
        .args(&["--sha256", &expected, "-c", "8", "--chunk-size", "4MiB"])
        .expect(Expect::success(&expected));
    let partial = log_entries(&nginx, "/big.bin", "206");
    assert!(
        partial.len() >= 8,
        "16 chunks should take at least 8 ranged requests, nginx logged:\n{}",
        nginx.access_log().join("\n")
    );
    let served = logged_bytes(&partial);
    assert!(
        served >= size && served <= size + 8 * MIB,
        "nginx sent {served} body bytes in 206 responses for a {size}-byte file:\n{}",
        nginx.access_log().join("\n")
    );
    assert!(
        partial
            .iter()
            .all(|line| line.contains("\"bytes=") && !line.contains("\"bytes=0-\"")),
        "every 206 answered a bounded range:\n{}",
        partial.join("\n")
    );
}

#[test]
fn rate_limited_nginx_with_4_connections() {
    let size = 32 * MIB;
    let (nginx, expected) = Nginx::serving(
        "slow.bin",
        size,
        22,
        &NginxOptions {
            limit_rate: Some("20m".to_owned()),
            ..NginxOptions::default()
        },
    );
    Scenario::url(nginx.url("/slow.bin"))
        .args(&["--sha256", &expected, "-c", "4", "--chunk-size", "4MiB"])
        .expect(Expect::success(&expected));
    let partial = log_entries(&nginx, "/slow.bin", "206");
    assert!(
        partial.len() >= 4,
        "8 chunks should take at least 4 ranged requests, nginx logged:\n{}",
        nginx.access_log().join("\n")
    );
}

#[test]
fn hash_and_verify_agree_with_a_reference_sha256() {
    let (nginx, expected) = Nginx::serving("ref.bin", 5 * MIB + 3, 23, &NginxOptions::default());
    let fetched = Scenario::url(nginx.url("/ref.bin")).expect(Expect::success(&expected));
    let dir = &fetched.dir;

    let hashed = run(dir, &["hash", "ref.bin"]);
    assert_exit(&hashed, 0, false);
    assert_eq!(
        hashed.stdout.trim_end(),
        format!("{expected}  ref.bin"),
        "\n{}",
        hashed.describe()
    );

    let verified = run(dir, &["verify", "ref.bin", "--sha256", &expected]);
    assert_exit(&verified, 0, false);

    // The checksum file served by nginx too, as a mirror would publish it.
    std::fs::write(
        nginx.root().join("SHA256SUMS"),
        format!("{}  other.bin\n{expected}  ref.bin\n", "a".repeat(64)),
    )
    .expect("write SHA256SUMS");
    let verified = run(
        dir,
        &[
            "verify",
            "ref.bin",
            "--sha256-sums",
            &nginx.url("/SHA256SUMS"),
        ],
    );
    assert_exit(&verified, 0, false);

    let mismatch = run(dir, &["verify", "ref.bin", "--sha256", &"b".repeat(64)]);
    assert_exit(&mismatch, 3, false);
}
