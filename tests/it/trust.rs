//! Trust from the publisher: digests the server states (`Repr-Digest`, `Digest`,
//! `X-Linked-ETag`) checked at the probe, before the file's body is fetched, and held against
//! the finished file; `--trust-server-digest`.

use rangefetch_testserver::{Fault, FaultRule, FileSpec};

use crate::support::{Expect, KIB, MIB, Scenario, WRONG_SHA256};

/// The probe asks for one chunk of this size: what a refused download may have been sent.
const CHUNK: u64 = 64 * KIB;

fn file() -> FileSpec {
    FileSpec::new("/image.img", 2 * MIB, 1501)
}

/// Standard base64 of the 32 bytes `hex` spells.
fn base64_of_hex(hex: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|idx| u8::from_str_radix(&hex[idx..idx + 2], 16).expect("hex digits"))
        .collect();
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (idx, byte)| {
            n | u32::from(*byte) << (16 - 8 * idx)
        });
        for idx in 0..4 {
            if idx <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * idx)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn header(name: &str, value: String) -> FaultRule {
    FaultRule::always(Fault::SetHeader {
        name: name.to_owned(),
        value,
    })
}

fn repr_digest(hex: &str) -> FaultRule {
    header("Repr-Digest", format!("sha-256=:{}:", base64_of_hex(hex)))
}

#[test]
fn base64_helper_matches_a_known_value() {
    assert_eq!(
        base64_of_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    );
}

#[test]
fn a_repr_digest_that_disagrees_with_the_expected_hash_fails_at_the_probe() {
    let expected = file().sha256_hex();
    let run = Scenario::new(file())
        .faults(vec![repr_digest(WRONG_SHA256)])
        .args(&["--sha256", &expected, "--chunk-size", "64KiB"])
        .expect(
            Expect::failure(3)
                .stderr_has(&expected)
                .stderr_has(WRONG_SHA256)
                .stderr_has("Repr-Digest")
                .served(0..=CHUNK)
                .max_requests(1),
        );
    let requests = run.server().requests();
    assert_eq!(
        requests.len(),
        1,
        "only the probe reached the server\n{}",
        run.describe()
    );
    assert!(
        requests[0].header("want-repr-digest").is_some(),
        "the probe asks for a digest\n{}",
        run.describe()
    );
}

#[test]
fn an_rfc3230_digest_that_agrees_lets_the_download_run() {
    let expected = file().sha256_hex();
    Scenario::new(file())
        .faults(vec![header(
            "Digest",
            format!(
                "MD5=AAAAAAAAAAAAAAAAAAAAAA==, SHA-256={}",
                base64_of_hex(&expected)
            ),
        )])
        .args(&["--sha256", &expected, "--json"])
        .expect(Expect::success_of_file().json().verified(true));
}

#[test]
fn without_an_expected_hash_the_file_is_held_to_the_linked_etag() {
    let size = 2 * MIB;
    let run = Scenario::new(file())
        .faults(vec![
            header("X-Linked-ETag", format!("\"{WRONG_SHA256}\"")),
            header("X-Linked-Size", size.to_string()),
        ])
        .args(&["--json"])
        .expect(Expect::failure(3).json().stderr_has(WRONG_SHA256));
    assert!(
        run.stdout.contains("X-Linked-ETag"),
        "a notice names the header\n{}",
        run.describe()
    );
}

#[test]
fn without_an_expected_hash_an_agreeing_digest_is_reported_in_the_summary() {
    let expected = file().sha256_hex();
    let run = Scenario::new(file())
        .faults(vec![repr_digest(&expected)])
        .args(&["--json"])
        .expect(Expect::success_of_file().json().verified(false));
    let summary = run.json_summary();
    assert_eq!(
        summary["server_digest"]["sha256"].as_str(),
        Some(expected.as_str()),
        "{summary}"
    );
    assert_eq!(
        summary["server_digest"]["header"], "Repr-Digest",
        "{summary}"
    );
}

#[test]
fn a_content_digest_of_a_range_is_not_the_files() {
    Scenario::new(file())
        .faults(vec![header(
            "Content-Digest",
            format!("sha-256=:{}:", base64_of_hex(WRONG_SHA256)),
        )])
        .args(&["--chunk-size", "64KiB"])
        .expect(Expect::success_of_file().ranged());
}

#[test]
fn trust_server_digest_recognises_an_output_in_place_without_fetching_it() {
    let spec = file();
    let mut bytes = vec![0u8; usize::try_from(spec.size).expect("small")];
    rangefetch_testserver::fill(1501, 0, &mut bytes);
    let run = Scenario::new(file())
        .faults(vec![repr_digest(&spec.sha256_hex())])
        .local_file("image.img", &bytes)
        .args(&["--trust-server-digest", "--json"])
        .expect(
            Expect::success_of_file()
                .json()
                .verified(true)
                .served(0..=1),
        );
    let summary = run.json_summary();
    assert_eq!(summary["already_present"], true, "{summary}");
    assert_eq!(summary["hash_from_server_digest"], true, "{summary}");
}

#[test]
fn trust_server_digest_makes_a_wrong_digest_the_expected_hash() {
    let run = Scenario::new(file())
        .faults(vec![repr_digest(WRONG_SHA256)])
        .args(&["--trust-server-digest"])
        .expect(Expect::failure(3).stderr_has(WRONG_SHA256));
    assert!(
        run.stderr.contains("--trust-server-digest"),
        "a notice says where the hash came from\n{}",
        run.describe()
    );
}
