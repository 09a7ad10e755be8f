//! Versions are never mixed, whatever validators the server offers: a weak ETag is compared on
//! every response (and never sent in `If-Range`), a validator that disappears means another
//! version, a redirect to another origin mid-download is not spliced, a mirror that cannot be
//! shown to serve the same version is not mixed in without a hash, and a load-balanced farm
//! whose backends tag one file differently still downloads.

use rangefetch_testserver::{Fault, FaultRule, FileSpec, When};

use crate::faults::gets;
use crate::support::{Expect, MIB, Scenario, start_server};

/// 4 MiB without Last-Modified, so that the ETag alone pins the version.
fn etag_only(etag: &str, seed: u64) -> FileSpec {
    FileSpec::new("/img.bin", 4 * MIB, seed)
        .with_etag(Some(etag))
        .with_last_modified(None)
}

/// The content change of these tests: after 2 MiB have been served (the probe and the second
/// range of a one-connection run), the file becomes seed `new_seed` with `new_etag`.
fn change_after_two_ranges(new_seed: u64, new_etag: &str) -> FaultRule {
    FaultRule::always(Fault::ChangeContent {
        after_bytes_served: 2 * MIB,
        new_seed,
        new_etag: new_etag.to_owned(),
    })
}

#[test]
fn a_weak_etag_pins_the_version_and_never_goes_in_if_range() {
    let old = etag_only("W/\"w1\"", 301);
    let new = FileSpec::new("/img.bin", old.size, 302);
    let run = Scenario::new(old)
        .faults(vec![change_after_two_ranges(302, "W/\"w2\"")])
        .args(&["--chunk-size", "1MiB", "-c", "1"])
        .expect(Expect::success(&new.sha256_hex()).stderr_has("changed"));
    assert!(
        gets(&run).iter().all(|request| request.if_range.is_none()),
        "a weak ETag (or nothing) went into If-Range\n{}",
        run.describe()
    );
}

#[test]
fn a_validator_that_disappears_means_another_version() {
    let old = etag_only("\"v1\"", 303);
    let new = FileSpec::new("/img.bin", old.size, 304);
    // The new version comes without any ETag, through a proxy that drops `If-Range`: nothing
    // but the ETag's absence tells it apart.
    Scenario::new(old)
        .faults(vec![
            change_after_two_ranges(304, "\"v2\""),
            FaultRule::new(
                When::AfterN(2),
                Fault::RemoveHeader {
                    name: "ETag".into(),
                },
            ),
            FaultRule::new(When::AfterN(2), Fault::IgnoreIfRange),
        ])
        .args(&["--chunk-size", "1MiB", "-c", "1"])
        .expect(Expect::success(&new.sha256_hex()).stderr_has("disappeared"));
}

#[test]
fn a_redirect_to_another_origin_mid_download_is_not_spliced() {
    let size = 4 * MIB;
    // The other origin has other bytes under the very same validators.
    let other = start_server(vec![FileSpec::new("/img.bin", size, 306)], vec![]);
    let run = Scenario::new(FileSpec::new("/img.bin", size, 305))
        .faults(vec![
            FaultRule::new(
                When::AfterN(2),
                Fault::Redirect {
                    status: 302,
                    location: other.url("/img.bin"),
                },
            )
            .on_path("/img.bin"),
        ])
        .args(&["--chunk-size", "1MiB", "-c", "1"]);
    // Whole from one origin or the other, never a mix: here the restart lands on the other.
    run.expect(
        Expect::success(&FileSpec::new("/img.bin", size, 306).sha256_hex())
            .stderr_has("another origin"),
    );
}

#[test]
fn a_mirror_with_other_validators_is_not_mixed_in_without_a_hash() {
    let size = 8 * MIB;
    let mirror = start_server(
        vec![FileSpec::new("/img.bin", size, 308).with_etag(Some("\"mirror\""))],
        vec![],
    );
    let run = Scenario::new(FileSpec::new("/img.bin", size, 307))
        .args(&["--chunk-size", "1MiB", &mirror.url("/img.bin")])
        .expect(
            Expect::success_of_file()
                .served(size..=size)
                .stderr_has("not mixing"),
        );
    let mirror_bytes = mirror.body_bytes_sent();
    assert!(
        mirror_bytes <= 2,
        "the mirror served {mirror_bytes} bytes beyond its two-byte probe\n{}",
        run.describe()
    );
}

#[test]
fn a_farm_whose_etags_flip_between_backends_still_downloads() {
    let run = Scenario::new(FileSpec::new("/img.bin", 8 * MIB, 309))
        .faults(vec![FaultRule::always(Fault::EtagByConnection {
            etags: vec!["\"inode-1\"".into(), "\"inode-2\"".into()],
        })])
        .args(&["--chunk-size", "1MiB", "-c", "4"])
        .expect(Expect::success_of_file().stderr_has("different ETags"));
    let notices = run.stderr.matches("different ETags").count();
    assert_eq!(notices, 1, "the switch is said once\n{}", run.describe());
    assert!(
        !run.stderr.contains("starting over"),
        "a farm is not a changed file\n{}",
        run.describe()
    );
}

#[test]
fn without_any_validator_the_run_says_the_hash_protects_the_file() {
    let file = FileSpec::new("/img.bin", 2 * MIB, 310)
        .with_etag(None)
        .with_last_modified(None);
    let run = Scenario::new(file)
        .args(&["--chunk-size", "1MiB"])
        .expect(Expect::success_of_file().stderr_has("--sha256 is what protects"));
    assert_eq!(
        run.stderr.matches("cannot be detected").count(),
        1,
        "said once\n{}",
        run.describe()
    );
}
