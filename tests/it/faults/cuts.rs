//! Cut-off responses: a reset, a clean close, a short body and random cuts of every response.
//! The retry asks for the rest of the range, from the byte where it stopped.

use rangefetch_testserver::{Fault, FaultRule, FileSpec, When};

use super::{asked, asked_from, gets};
use crate::support::{Expect, MIB, Scenario};

#[test]
fn reset_after_n_bytes_resumes_mid_range() {
    let size = 4 * MIB;
    let cut = 300_000;
    // A reset may swallow bytes still in the kernel's buffers, so the retry starts somewhere in
    // (MIB, MIB + cut]; every byte the server counted beyond the file is one of those.
    let run = Scenario::new(FileSpec::new("/img.bin", size, 101))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::ResetAfter { bytes: cut },
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size + cut)
                .ranged()
                .covers(size),
        );
    assert_eq!(
        asked_from(&run, MIB).len(),
        1,
        "the range at 1 MiB was asked for again from its first byte\n{}",
        run.describe()
    );
    let resumed: Vec<(u64, Option<u64>)> = gets(&run)
        .iter()
        .filter_map(|request| asked(request))
        .filter(|(first, _)| (MIB + 1..=MIB + cut).contains(first))
        .collect();
    assert_eq!(
        resumed.len(),
        1,
        "expected one retry starting inside the cut-off range, at the byte where it stopped\n{}",
        run.describe()
    );
    assert_eq!(
        resumed[0].1,
        Some(2 * MIB),
        "the retry must ask for exactly the rest of the range\n{}",
        run.describe()
    );
}

#[test]
fn close_after_n_bytes_resumes_at_the_missing_byte() {
    let size = 4 * MIB;
    let cut = 123_457;
    // A clean close delivers every byte sent: nothing is fetched twice.
    let run = Scenario::new(FileSpec::new("/img.bin", size, 102))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(2 * MIB).times(1),
            Fault::CloseAfter { bytes: cut },
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size)
                .ranged()
                .covers(size),
        );
    let cut_off = asked_from(&run, 2 * MIB);
    assert_eq!(cut_off.len(), 1, "\n{}", run.describe());
    assert_eq!(cut_off[0].body_bytes, cut, "\n{}", run.describe());
    let retry = asked_from(&run, 2 * MIB + cut);
    assert_eq!(
        retry.len(),
        1,
        "no retry from byte {} (where the body stopped)\n{}",
        2 * MIB + cut,
        run.describe()
    );
    assert_eq!(asked(retry[0]), Some((2 * MIB + cut, Some(3 * MIB))));
    assert_eq!(retry[0].status, 206);
}

#[test]
fn short_body_is_retried_from_the_missing_byte() {
    let size = 4 * MIB;
    let missing = 1000;
    let run = Scenario::new(FileSpec::new("/img.bin", size, 103))
        .faults(vec![FaultRule::new(
            When::RangeStartsAt(MIB).times(1),
            Fault::ShortBody { missing },
        )])
        .args(&["--chunk-size", "1MiB"])
        .expect(
            Expect::success_of_file()
                .served(size..=size)
                .ranged()
                .covers(size),
        );
    let retry = asked_from(&run, 2 * MIB - missing);
    assert_eq!(
        retry.len(),
        1,
        "the last {missing} bytes of the range were not asked for on their own\n{}",
        run.describe()
    );
    assert_eq!(asked(retry[0]), Some((2 * MIB - missing, Some(2 * MIB))));
    assert_eq!(retry[0].body_bytes, missing);
    assert_eq!(asked_from(&run, MIB).len(), 1, "\n{}", run.describe());
}

/// The issue's done-when: "Against the test server dropping every response after a random
/// 1–8 MB, a 256 MiB download finishes correct with total bytes served ≤ 1.1 × size."
#[test]
fn random_cuts_of_every_response_cost_at_most_a_tenth_more() {
    let size = 256 * MIB;
    let file = FileSpec::new("/big.bin", size, 104);
    let expected = file.sha256_hex();
    let run = Scenario::new(file)
        .faults(vec![FaultRule::always(Fault::CutRandom {
            min: 1_000_000,
            max: 8_000_000,
        })])
        .fault_seed(7)
        .args(&["--sha256", &expected])
        .expect(
            Expect::success(&expected)
                .served(size..=size + size / 10)
                .ranged()
                .covers(size),
        );
    // The script really did cut: more requests than the 32 chunks of 8 MiB.
    assert!(
        gets(&run).len() > 40,
        "too few requests for a script that cuts every response\n{}",
        run.describe()
    );
}
