//! Every byte fetched once: what the server sends, counted by the server, stays within a hair
//! of the file's size on a clean link, and close to it on a flaky one. The tail is cut into
//! small pieces as the work runs out, so idle connections take pending pieces instead of
//! stealing (a steal throws away whatever of the victim's range the server already sent).

use rangefetch_testserver::{Fault, FaultRule, FileSpec};

use crate::support::{Expect, MIB, Scenario};

#[test]
fn a_clean_64_mib_download_over_8_connections_fetches_at_most_1_01x() {
    let size = 64 * MIB;
    Scenario::new(FileSpec::new("/img.bin", size, 501))
        .args(&["-c", "8"])
        .expect(Expect::success_of_file().served(size..=size + size / 100));
}

#[test]
fn a_clean_16_mib_download_over_16_connections_fetches_at_most_1_03x() {
    let size = 16 * MIB;
    Scenario::new(FileSpec::new("/img.bin", size, 502))
        .args(&["-c", "16", "--chunk-size", "1MiB"])
        .expect(Expect::success_of_file().served(size..=size + size * 3 / 100));
}

#[test]
fn a_flaky_download_fetches_at_most_1_05x() {
    // Every response closed after 1–4 MiB, on 8 connections: each retry asks for the rest of
    // its range, so nothing is fetched twice.
    let size = 64 * MIB;
    Scenario::new(FileSpec::new("/img.bin", size, 503))
        .faults(vec![FaultRule::always(Fault::CutRandom {
            min: MIB,
            max: 4 * MIB,
        })])
        .fault_seed(7)
        .args(&["-c", "8", "--retries", "50"])
        .expect(Expect::success_of_file().served(size..=size + size * 5 / 100));
}
