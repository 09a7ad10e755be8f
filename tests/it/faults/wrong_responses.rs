//! Wrong headers and wrong bodies: a `200` to a range request, a mislabelled `Content-Range`,
//! a wrong total, and a flipped byte, caught by `--sha256` and only by it.

use rangefetch_testserver::{Fault, FaultRule, FileSpec, RequestLog, When};

use super::{asked, asked_from, gets};
use crate::support::{Expect, MIB, Scenario, sha256_bytes, with_suffix};

#[test]
fn ignored_range_mid_download_still_gives_the_right_file() {
    let size = 4 * MIB;
    // The unwanted 200 pushes some of the whole file before the client hangs up; a restart
    // (if the engine takes the 200 for a change) costs one more file.
    let run = Scenario::new(FileSpec::new("/img.bin", size, 112))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(2 * MIB).times(1),
            Fault::IgnoreRange,
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=2 * size + MIB)
                .covers(size),
        );
    let ignored: Vec<&RequestLog> = gets(&run)
        .into_iter()
        .filter(|request| request.status == 200)
        .collect();
    assert_eq!(
        ignored.len(),
        1,
        "the scenario needs one 200 to a ranged request\n{}",
        run.describe()
    );
}

#[test]
fn server_that_always_ignores_range_gives_the_right_file() {
    let size = 3 * MIB + 5;
    // The probe's 200 is the whole file, streamed once.
    Scenario::new(FileSpec::new("/img.bin", size, 113))
        .faults(vec![FaultRule::always(Fault::IgnoreRange)])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size)
                .max_requests(1)
                .covers(size),
        );
}

#[test]
fn wrong_content_range_is_rejected_and_retried() {
    let size = 4 * MIB;
    // The right SHA-256 is the proof that no byte of the mislabelled body was written.
    let run = Scenario::new(FileSpec::new("/img.bin", size, 114))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::WrongContentRange { shift: 1 },
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size + MIB)
                .ranged()
                .covers(size),
        );
    let at_one_mib = asked_from(&run, MIB);
    assert_eq!(
        at_one_mib.len(),
        2,
        "the mislabelled range must be asked for again, in full\n{}",
        run.describe()
    );
    assert_eq!(asked(at_one_mib[1]), Some((MIB, Some(2 * MIB))));
    assert_eq!(at_one_mib[1].body_bytes, MIB, "\n{}", run.describe());
}

#[test]
fn wrong_total_never_gives_a_wrong_file() {
    let size = 4 * MIB;
    // Taken for a changed remote (start over) or a protocol error (retry the range): either
    // way the file is right, and at worst fetched twice.
    let run = Scenario::new(FileSpec::new("/img.bin", size, 115))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::WrongTotal { total: size + MIB },
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=2 * size + MIB)
                .covers(size),
        );
    assert!(
        asked_from(&run, MIB).len() >= 2,
        "the range with the wrong total was never asked for again\n{}",
        run.describe()
    );
}

#[test]
fn flipped_byte_with_sha256_exits_3_and_leaves_nothing() {
    let size = 4 * MIB;
    let file = FileSpec::new("/img.bin", size, 116);
    let expected = file.sha256_hex();
    let run = Scenario::new(file)
        .faults(vec![FaultRule::always(Fault::FlipByte {
            offset: 3 * MIB + 17,
        })])
        .args(&["--chunk-size", "1MiB", "--sha256", &expected])
        .expect(
            Expect::failure(3)
                .part_kept(false)
                // The first pass, then the repair's second copy of every stretch: the server
                // flips the byte on every response, so every copy agrees and nothing can fix it.
                .served(2 * size..=2 * size)
                .ranged()
                .stderr_has("checksum")
                .stderr_has("the server serves these bytes"),
        );
    assert!(!with_suffix(&run.out, ".part").exists());
}

/// Without `--sha256`, a corrupted byte goes unnoticed: the download "succeeds" and prints the
/// hash of the corrupted file. That printed hash differs from the true one — which is exactly
/// why `--sha256` (or `--sha256-sums`) matters: only an expected hash turns silent corruption
/// into exit 3.
#[test]
fn flipped_byte_without_sha256_prints_a_different_hash() {
    let size = 4 * MIB;
    let offset = 3 * MIB + 17;
    let file = FileSpec::new("/img.bin", size, 117);
    let true_hash = file.sha256_hex();
    let mut corrupted = rangefetch_testserver::content(117, 0..size);
    corrupted[offset as usize] ^= 0xFF;
    let corrupted_hash = sha256_bytes(&corrupted);
    assert_ne!(corrupted_hash, true_hash);
    // `check` also asserts that stdout's `<hex>  <path>` line is the file's (corrupted) hash.
    let run = Scenario::new(file)
        .faults(vec![FaultRule::always(Fault::FlipByte { offset })])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success(&corrupted_hash)
                .served(size..=size)
                .ranged()
                .covers(size),
        );
    assert!(
        !run.stdout.contains(&true_hash),
        "the true hash was printed for a corrupted file\n{}",
        run.describe()
    );
}
