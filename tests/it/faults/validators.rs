//! Validators: a remote that changes mid-download (the run restarts on the new version, never
//! mixing the two), and a CDN that answers an ETag `If-Range` with `200` (the run switches to
//! the date form without restarting).

use rangefetch_testserver::{Fault, FaultRule, FileSpec};

use super::{asked_from, covered_prefix, gets, http_date};
use crate::support::{Expect, MIB, Scenario};

/// The scenario of the change tests: 8 MiB that become new content (seed 119, ETag "v2")
/// once 3 MiB have been served; returns it with the old and the new file.
fn changing_file() -> (Scenario<'static>, FileSpec, FileSpec) {
    let size = 8 * MIB;
    let old = FileSpec::new("/img.bin", size, 118);
    let new = FileSpec::new("/img.bin", size, 119);
    let scenario =
        Scenario::new(old.clone()).faults(vec![FaultRule::always(Fault::ChangeContent {
            after_bytes_served: 3 * MIB,
            new_seed: 119,
            new_etag: "\"v2\"".to_owned(),
        })]);
    (scenario, old, new)
}

#[test]
fn content_change_mid_download_restarts_on_the_new_version() {
    let (scenario, old, new) = changing_file();
    let size = new.size;
    // Entirely the new content: never old bytes with new ones.
    let run = scenario.args(&["--chunk-size", "1MiB"]).expect(
        Expect::success(&new.sha256_hex())
            .served(size..=3 * size)
            .stderr_has("changed"),
    );
    assert_eq!(
        run.server()
            .file("/img.bin")
            .and_then(|file| file.etag)
            .as_deref(),
        Some("\"v2\""),
        "the scenario needs the change to have happened"
    );
    let requests = gets(&run);
    let old_etag = old.etag.clone().expect("FileSpec::new has an ETag");
    assert!(
        requests
            .iter()
            .any(|request| request.if_range.as_deref() == Some(old_etag.as_str())),
        "no request pinned the first version\n{}",
        run.describe()
    );
    // The restart is a new probe (no If-Range); from there on, every request pins "v2" and
    // their bodies alone cover the file.
    let restart = requests
        .iter()
        .rposition(|request| request.if_range.is_none())
        .expect("the first request is a probe");
    assert!(
        restart > 0,
        "the download was not restarted after the change\n{}",
        run.describe()
    );
    let after = &requests[restart..];
    assert!(
        after[1..]
            .iter()
            .all(|request| request.if_range.as_deref() == Some("\"v2\"")),
        "after the restart a request did not pin the new version\n{}",
        run.describe()
    );
    assert!(
        covered_prefix(after) >= size,
        "the requests after the restart do not cover the file\n{}",
        run.describe()
    );
}

#[test]
fn content_change_with_the_old_sha256_exits_3_and_leaves_nothing() {
    let (scenario, old, _new) = changing_file();
    scenario
        .args(&["--chunk-size", "1MiB", "--sha256", &old.sha256_hex()])
        .expect(Expect::failure(3).part_kept(false));
}

#[test]
fn ok_to_an_etag_if_range_switches_form_without_restarting() {
    // Up to four requests (the connections the engine starts with) can carry the ETag form
    // before the first 200 is seen, and each 200 pushes a few MB into the loopback socket
    // buffers before the client hangs up (2.7-4.3 MiB each seen on a busy machine): allow 6 MiB
    // for each. Reading a whole 200 body would cost 63 MiB more.
    let size = 64 * MIB;
    let per_full_body = 6 * MIB;
    let file = FileSpec::new("/img.bin", size, 120);
    let etag = file.etag.clone().expect("FileSpec::new has an ETag");
    let date = http_date(
        file.last_modified
            .expect("FileSpec::new has a Last-Modified"),
    );
    // `ranged`: the date form still works on this CDN, so no request needs to go without
    // If-Range (ARCHITECTURE.md: every ranged request carries If-Range).
    let run = Scenario::new(file)
        .faults(vec![FaultRule::always(Fault::OkOnEtagIfRange)])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size + 4 * per_full_body)
                .ranged()
                .covers(size),
        );
    assert!(
        !run.stderr.to_lowercase().contains("changed"),
        "an unchanged file was reported as changed\n{}",
        run.describe()
    );
    let requests = gets(&run);
    assert_eq!(
        asked_from(&run, 0).len(),
        1,
        "the download restarted from byte 0\n{}",
        run.describe()
    );
    let with_etag: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, request)| request.if_range.as_deref() == Some(etag.as_str()))
        .map(|(idx, _)| idx)
        .collect();
    // Each connection the engine starts with (at most 4) may send the ETag
    // form before the first answer reveals the server's bug; none after.
    assert!(
        (1..=4).contains(&with_etag.len()),
        "expected the ETag form of If-Range at most once per starting connection, got {}\n{}",
        with_etag.len(),
        run.describe()
    );
    let full_bodies = requests
        .iter()
        .filter(|request| request.status == 200)
        .count();
    assert_eq!(full_bodies, with_etag.len(), "\n{}", run.describe());
    let last_etag = *with_etag.last().expect("checked above");
    assert!(
        requests[last_etag + 1..]
            .iter()
            .all(|request| request.if_range.as_deref() == Some(date.as_str())),
        "after the switch every request must carry the date form of If-Range ({date})\n{}",
        run.describe()
    );
}
