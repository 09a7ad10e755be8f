//! Trust from the publisher: digests the server states (`Repr-Digest`, `Digest`,
//! `X-Linked-ETag`) checked at the probe, before the file's body is fetched, and held against
//! the finished file; `--trust-server-digest`; checksum files used only once their OpenPGP
//! signature verifies (`--signature`, `--keyring`), checked before the image is requested.

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, DetachedSignature, EncryptionCaps, KeyType,
    SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::ser::Serialize as _;
use pgp::types::{KeyDetails as _, Password};
use rangefetch_testserver::{Fault, FaultRule, FileSpec};

use crate::support::{Expect, KIB, MIB, Scenario, WRONG_SHA256, assert_exit, run, tempdir};

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

/// A signing key made for the test: RSA 2048 or Ed25519.
fn signing_key(key_type: KeyType) -> SignedSecretKey {
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(key_type)
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id("Image Signing Key <images@example.org>".into());
    params
        .build()
        .expect("key params")
        .generate(rand::thread_rng())
        .expect("generate a key")
}

fn fingerprint(key: &SignedSecretKey) -> String {
    format!("{:X}", key.fingerprint())
}

/// The public key, armored or binary (as Debian's keyrings are).
fn public_key(key: &SignedSecretKey, armored: bool) -> Vec<u8> {
    let public: SignedPublicKey = key.to_public_key();
    if armored {
        public
            .to_armored_bytes(ArmorOptions::default())
            .expect("armor the key")
    } else {
        public.to_bytes().expect("serialise the key")
    }
}

/// A detached binary signature of `data`.
fn detached(key: &SignedSecretKey, data: &[u8]) -> Vec<u8> {
    DetachedSignature::sign_binary_data(
        rand::thread_rng(),
        &key.primary_key,
        &Password::empty(),
        HashAlgorithm::Sha256,
        data,
    )
    .expect("sign")
    .to_bytes()
    .expect("serialise the signature")
}

fn sums_for(hash: &str) -> String {
    format!("{WRONG_SHA256}  other.img\n{hash}  image.img\n")
}

#[test]
fn a_good_detached_signature_lets_get_use_the_checksum_file_and_names_the_key() {
    let key = signing_key(KeyType::Rsa(2048));
    let sums = sums_for(&file().sha256_hex());
    let run = Scenario::new(file())
        .local_file("SHA256SUMS", &sums)
        .local_file("SHA256SUMS.gpg", detached(&key, sums.as_bytes()))
        .local_file("keys.asc", public_key(&key, true))
        .args(&[
            "--sha256-sums",
            "SHA256SUMS",
            "--signature",
            "SHA256SUMS.gpg",
            "--keyring",
            "keys.asc",
            "--json",
        ])
        .expect(Expect::success_of_file().json().verified(true));
    let summary = run.json_summary();
    assert_eq!(
        summary["signed_by"].as_str(),
        Some(fingerprint(&key).as_str()),
        "{summary}"
    );
    assert_eq!(summary["signed_file"], "SHA256SUMS", "{summary}");
}

#[test]
fn a_tampered_checksum_file_fails_before_the_image_is_requested() {
    let key = signing_key(KeyType::Ed25519Legacy);
    let signed = sums_for(WRONG_SHA256);
    // The mirror "fixed" the hash after signing: the signature no longer covers it.
    let tampered = sums_for(&file().sha256_hex());
    Scenario::new(file())
        .local_file("SHA256SUMS", &tampered)
        .local_file("SHA256SUMS.gpg", detached(&key, signed.as_bytes()))
        .local_file("keys.gpg", public_key(&key, false))
        .args(&[
            "--sha256-sums",
            "SHA256SUMS",
            "--signature",
            "SHA256SUMS.gpg",
            "--keyring",
            "keys.gpg",
        ])
        .expect(
            Expect::failure(3)
                .stderr_has("checksum file SHA256SUMS is not trusted")
                .stderr_has("bad signature")
                .max_requests(0),
        );
}

#[test]
fn a_signature_by_a_key_outside_the_keyring_fails_before_the_image_is_requested() {
    let (trusted, stranger) = (
        signing_key(KeyType::Ed25519Legacy),
        signing_key(KeyType::Ed25519Legacy),
    );
    let sums = sums_for(&file().sha256_hex());
    Scenario::new(file())
        .local_file("SHA256SUMS", &sums)
        .local_file("SHA256SUMS.sign", detached(&stranger, sums.as_bytes()))
        .local_file("keys.gpg", public_key(&trusted, false))
        .args(&[
            "--sha256-sums",
            "SHA256SUMS",
            "--signature",
            "SHA256SUMS.sign",
            "--keyring",
            "keys.gpg",
        ])
        .expect(
            Expect::failure(3)
                .stderr_has("unknown key")
                .stderr_has(&fingerprint(&stranger))
                .max_requests(0),
        );
}

#[test]
fn an_unsigned_or_unsignatured_checksum_file_is_refused_with_a_keyring() {
    let key = signing_key(KeyType::Ed25519Legacy);
    let sums = sums_for(&file().sha256_hex());
    Scenario::new(file())
        .local_file("SHA256SUMS", &sums)
        .local_file("keys.asc", public_key(&key, true))
        .args(&["--sha256-sums", "SHA256SUMS", "--keyring", "keys.asc"])
        .expect(
            Expect::failure(3)
                .stderr_has("not clearsigned")
                .max_requests(0),
        );
    Scenario::new(file())
        .local_file("SHA256SUMS", &sums)
        .local_file("keys.asc", public_key(&key, true))
        .args(&[
            "--sha256-sums",
            "SHA256SUMS",
            "--signature",
            "SHA256SUMS.gpg",
            "--keyring",
            "keys.asc",
        ])
        .expect(
            Expect::failure(3)
                .stderr_has("signature SHA256SUMS.gpg is missing")
                .max_requests(0),
        );
}

#[test]
fn verify_reads_the_signed_part_of_a_clearsigned_checksum_file() {
    let key = signing_key(KeyType::Rsa(2048));
    let dir = tempdir();
    let mut bytes = vec![0u8; 100_000];
    rangefetch_testserver::fill(7, 0, &mut bytes);
    std::fs::write(dir.path().join("image.img"), &bytes).expect("write the image");
    let good = crate::support::sha256_bytes(&bytes);
    let clearsigned = CleartextSignedMessage::sign(
        rand::thread_rng(),
        &sums_for(&good),
        &key.primary_key,
        &Password::empty(),
    )
    .expect("clearsign")
    .to_armored_bytes(ArmorOptions::default())
    .expect("armor");
    std::fs::write(dir.path().join("SHA256SUMS"), &clearsigned).expect("write sums");
    std::fs::write(dir.path().join("keys.gpg"), public_key(&key, false)).expect("write keys");
    let args = [
        "verify",
        "image.img",
        "--sha256-sums",
        "SHA256SUMS",
        "--keyring",
        "keys.gpg",
    ];
    let ok = run(dir.path(), &args);
    assert_exit(&ok, 0, false);
    assert!(ok.stdout.contains("image.img: OK"), "{}", ok.describe());
    assert!(ok.stderr.contains(&fingerprint(&key)), "{}", ok.describe());
    // An entry added after the signed part is never read: such a file is refused whole.
    let mut smuggled = clearsigned.clone();
    smuggled.extend_from_slice(format!("{WRONG_SHA256}  image.img\n").as_bytes());
    std::fs::write(dir.path().join("SHA256SUMS"), &smuggled).expect("write sums");
    let smuggling = run(dir.path(), &args);
    assert_exit(&smuggling, 3, true);
    assert!(
        smuggling.stderr.contains("SHA256SUMS is not trusted"),
        "{}",
        smuggling.describe()
    );
    std::fs::write(dir.path().join("SHA256SUMS"), &clearsigned).expect("write sums");
    let other = signing_key(KeyType::Ed25519Legacy);
    std::fs::write(dir.path().join("keys.gpg"), public_key(&other, false)).expect("write keys");
    let refused = run(dir.path(), &args);
    assert_exit(&refused, 3, true);
    assert!(
        refused.stderr.contains("unknown key"),
        "{}",
        refused.describe()
    );
}
