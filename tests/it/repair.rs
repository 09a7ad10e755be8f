//! Repair of a checksum mismatch: a mirror that flips bytes is found and named and only its
//! stretches are fetched again, a cache that serves a corrupted copy is gone around with
//! `no-cache`, and a server that serves other bytes than the expected hash is a clear exit 3
//! once every stretch was fetched again and matched.

use rangefetch_testserver::{Fault, FaultRule, FileSpec, When};

use crate::support::{Expect, MIB, Scenario, start_server};

#[test]
fn a_mirror_that_flips_bytes_is_repaired_named_and_costs_under_twice_the_file() {
    let size = 32 * MIB;
    let file = FileSpec::new("/img.bin", size, 1201);
    let hash = file.sha256_hex();
    let good = start_server(vec![file.clone()], vec![]);
    // A byte flipped in every other MiB: whatever share of the file the mirror serves, some
    // of it is bad.
    let flips = (1..16)
        .map(|k| {
            FaultRule::always(Fault::FlipByte {
                offset: k * 2 * MIB + 7,
            })
        })
        .collect();
    let bad = start_server(vec![file], flips);
    let run = Scenario::url(good.url("/img.bin"))
        .args(&[
            &bad.url("/img.bin"),
            "-o",
            "img.bin",
            "--sha256",
            &hash,
            "-c",
            "4",
            "--chunk-size",
            "1MiB",
        ])
        .expect(Expect::success(&hash));
    let served = good.body_bytes_sent() + bad.body_bytes_sent();
    let first_pass_from_mirror = bad.body_bytes_sent();
    eprintln!(
        "repair, one flipping mirror: served {:.3}× the file",
        served as f64 / size as f64
    );
    assert!(
        first_pass_from_mirror > 0,
        "the mirror served nothing\n{}",
        run.describe()
    );
    assert!(
        served < 2 * size,
        "{served} bytes served for a {size}-byte file ({:.2}×, under 2× allowed)\n{}",
        served as f64 / size as f64,
        run.describe()
    );
    assert!(
        run.stderr.contains("repaired") && run.stderr.contains(&bad.url("/img.bin")),
        "the repair does not name the mirror that flipped bytes\n{}",
        run.describe()
    );
    assert!(
        !run.stderr
            .contains(&format!("from {}", good.url("/img.bin"))),
        "{}",
        run.describe()
    );
}

#[test]
fn a_cache_serving_a_corrupted_copy_is_gone_around_with_no_cache() {
    let size = 16 * MIB;
    let file = FileSpec::new("/img.bin", size, 1202);
    let hash = file.sha256_hex();
    // The server plays a cache holding a copy with one bad byte: every request it may answer
    // from that copy gets the bad byte; a `no-cache` one gets the origin's.
    let server = start_server(
        vec![file],
        vec![FaultRule::new(
            When::CacheMayAnswer,
            Fault::FlipByte { offset: MIB + 5 },
        )],
    );
    let run = Scenario::url(server.url("/img.bin"))
        .args(&[
            "-o",
            "img.bin",
            "--sha256",
            &hash,
            "--chunk-size",
            "1MiB",
            "--json",
        ])
        .expect(Expect::success(&hash).json());
    let no_cache: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|request| request.header("cache-control") == Some("no-cache"))
        .collect();
    assert!(
        !no_cache.is_empty(),
        "no request went around the cache\n{}",
        run.describe()
    );
    let served = server.body_bytes_sent();
    // The first pass, one repair request (4 MiB) holding the bad byte, and its third copy.
    assert!(
        served <= size + 5 * MIB,
        "{served} bytes for a {size}-byte file: the repair should stop once the hash matches\n{}",
        run.describe()
    );
    let repaired: serde_json::Value = run
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "repaired")
        .unwrap_or_else(|| panic!("no repaired event\n{}", run.describe()));
    let piece = &repaired["pieces"][0];
    let (start, end) = (piece["start"].as_u64(), piece["end"].as_u64());
    assert!(
        start
            .zip(end)
            .is_some_and(|(s, e)| s <= MIB + 5 && MIB + 5 < e),
        "the repaired stretch does not hold the bad byte: {repaired}"
    );
}

#[test]
fn a_server_serving_other_bytes_than_the_hash_is_exit_3_after_checking_every_stretch() {
    let size = 8 * MIB;
    let served_file = FileSpec::new("/img.bin", size, 1203);
    let other = FileSpec::new("/img.bin", size, 1204).sha256_hex();
    let server = start_server(vec![served_file], vec![]);
    let run = Scenario::url(server.url("/img.bin"))
        .args(&["-o", "img.bin", "--sha256", &other, "--chunk-size", "1MiB"])
        .expect(
            Expect::failure(3)
                .part_kept(false)
                .stderr_has("the server serves these bytes"),
        );
    let served = server.body_bytes_sent();
    assert!(
        served <= 2 * size + MIB,
        "{served} bytes: the repair may fetch the file once more, not more\n{}",
        run.describe()
    );
    // With a small budget it stops early and says what to do.
    let server = start_server(vec![FileSpec::new("/img.bin", size, 1203)], vec![]);
    Scenario::url(server.url("/img.bin"))
        .args(&["-o", "img.bin", "--sha256", &other, "--repair-budget", "1M"])
        .expect(Expect::failure(3).stderr_has("--repair-budget"));
    assert!(server.body_bytes_sent() <= size + MIB);
}
