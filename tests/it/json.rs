//! `--json`: every stdout line is one JSON object; progress a few times a second; `retry`,
//! `remote-changed` and `mirror-dropped` events when those things happen; and a last `done`
//! line with the summary of docs/CONTRACT.md, or on failure the exit code, the error and its class.
//! Also the rest of what scripts and terminals read: `completions`, and no ANSI escapes on a
//! non-terminal stderr under `NO_COLOR`.

use std::path::Path;

use rangefetch_testserver::{Fault, FaultRule, FileSpec, TestServer, When, sha256_hex};
use serde_json::Value;

use crate::support::binary::spawn_env;
use crate::support::{
    Expect, KIB, MIB, Ran, Run, Scenario, WRONG_SHA256, closed_port, run, start_server, tempdir,
};

/// Every stdout line of `run`, each asserted to be a JSON object with a string `event`.
fn events(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|error| {
                panic!(
                    "a stdout line is not JSON ({error}): {line:?}\n{}",
                    run.describe()
                )
            });
            assert!(
                value.is_object() && value["event"].is_string(),
                "a stdout line is not an object with an `event`: {line}\n{}",
                run.describe()
            );
            value
        })
        .collect()
}

/// The events called `name`.
fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["event"] == name)
        .collect()
}

fn show(events: &[&Value]) -> String {
    events
        .iter()
        .map(|event| event.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that the last line, and only it, is the `done` event; returns it.
fn done(run: &Run, events: &[Value]) -> Value {
    let last = events
        .last()
        .unwrap_or_else(|| panic!("no JSON on stdout\n{}", run.describe()));
    assert_eq!(
        last["event"],
        "done",
        "the last line is not the summary: {last}\n{}",
        run.describe()
    );
    assert_eq!(
        named(events, "done").len(),
        1,
        "more than one `done` line\n{}",
        run.describe()
    );
    last.clone()
}

/// Asserts the summary of a successful run has every field of docs/CONTRACT.md, with sane values.
fn assert_success_summary(run: &Run, summary: &Value, out: &Path, size: u64, sha256: &str) {
    let context = || format!("summary: {summary}\n{}", run.describe());
    assert_eq!(summary["ok"], true, "{}", context());
    let path = summary["path"]
        .as_str()
        .unwrap_or_else(|| panic!("no `path` string: {}", context()));
    assert_eq!(
        run.dir.join(path),
        out,
        "the summary names another path: {}",
        context()
    );
    assert_eq!(summary["bytes"].as_u64(), Some(size), "{}", context());
    assert_eq!(summary["sha256"].as_str(), Some(sha256), "{}", context());
    assert!(summary["verified"].is_boolean(), "{}", context());
    assert!(
        summary["elapsed_s"]
            .as_f64()
            .is_some_and(|secs| secs >= 0.0),
        "no `elapsed_s` number: {}",
        context()
    );
    for field in ["retries", "resumed_bytes", "connections"] {
        assert!(summary[field].is_u64(), "no `{field}` count: {}", context());
    }
}

#[test]
fn progress_a_few_times_a_second_then_the_summary_last() {
    let size = 3 * MIB;
    let file = FileSpec::new("/img.bin", size, 81);
    let expected = file.sha256_hex();
    // Two connections of 1 MiB/s: about 1.5 s, long enough for several progress lines.
    let run = Scenario::new(file)
        .faults(vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: MIB,
        })])
        .args(&["--sha256", &expected, "-c", "2", "--chunk-size", "512KiB"])
        .args(&["--json"])
        .expect(Expect::success(&expected).json().verified(true));
    let events = events(&run);
    let summary = done(&run, &events);
    assert_success_summary(&run, &summary, &run.out, size, &expected);
    assert_eq!(summary["verified"], true);

    let progress = named(&events, "progress");
    assert!(
        progress.len() >= 2,
        "a {:.1?} download printed {} progress lines\n{}",
        run.elapsed,
        progress.len(),
        run.describe()
    );
    let mut last_bytes = 0;
    let mut last_t: Option<f64> = None;
    for event in &progress {
        let bytes = event["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("progress without `bytes`: {event}"));
        assert_eq!(event["total"].as_u64(), Some(size), "progress: {event}");
        assert!(
            event["rate_bps"].is_number(),
            "progress without `rate_bps`: {event}"
        );
        assert!(
            bytes >= last_bytes && bytes <= size,
            "progress bytes went from {last_bytes} to {bytes} (size {size}):\n{}",
            show(&progress)
        );
        last_bytes = bytes;
        let t = event["t_s"]
            .as_f64()
            .unwrap_or_else(|| panic!("progress without `t_s`: {event}"));
        if let Some(previous) = last_t {
            assert!(
                t - previous >= 0.15,
                "two progress lines {:.3} s apart: at most a few a second are allowed:\n{}",
                t - previous,
                show(&progress)
            );
        }
        last_t = Some(t);
    }
}

#[test]
fn a_reset_connection_is_a_retry_event_with_its_class() {
    let size = MIB;
    let file = FileSpec::new("/img.bin", size, 82);
    let expected = file.sha256_hex();
    let run = Scenario::new(file)
        .faults(vec![FaultRule::new(
            When::Nth(0),
            Fault::ResetAfter { bytes: 10_000 },
        )])
        .args(&["--sha256", &expected, "--chunk-size", "256KiB", "--json"])
        .expect(Expect::success(&expected).json().covers(size));
    let events = events(&run);
    let summary = done(&run, &events);
    assert_success_summary(&run, &summary, &run.out, size, &expected);
    let retries = named(&events, "retry");
    assert!(
        retries.iter().any(|retry| retry["class"] == "network"),
        "no `retry` event of class \"network\" after a reset; retries:\n{}\n{}",
        show(&retries),
        run.describe()
    );
    assert!(
        summary["retries"].as_u64().is_some_and(|n| n >= 1),
        "the summary counts no retry: {summary}"
    );
}

#[test]
fn a_file_changed_mid_download_is_a_remote_changed_event() {
    let size = MIB;
    let new_seed = 84;
    // The old bytes are discarded; what lands is the new version, whole.
    let new = sha256_hex(new_seed, size);
    let run = Scenario::new(FileSpec::new("/img.bin", size, 83))
        .faults(vec![FaultRule::always(Fault::ChangeContent {
            after_bytes_served: size / 3,
            new_seed,
            new_etag: "\"v2\"".to_owned(),
        })])
        .args(&["--chunk-size", "64KiB", "-c", "2", "--json"])
        .expect(Expect::success(&new).json());
    let events = events(&run);
    let summary = done(&run, &events);
    assert_success_summary(&run, &summary, &run.out, size, &new);
    let changed = named(&events, "remote-changed");
    assert!(
        !changed.is_empty(),
        "no `remote-changed` event although the file changed\n{}",
        run.describe()
    );
}

#[test]
fn a_mirror_of_another_size_is_a_mirror_dropped_event() {
    let size = 2 * MIB;
    let file = FileSpec::new("/img.bin", size, 85);
    let expected = file.sha256_hex();
    let other = TestServer::serve(FileSpec::new("/img.bin", size + 1, 85));
    let mirror = other.url("/img.bin");
    let run = Scenario::new(file)
        .args(&[&mirror, "--sha256", &expected, "--chunk-size", "256KiB"])
        .args(&["-c", "4", "--json"])
        .expect(Expect::success(&expected).json().verified(true));
    let events = events(&run);
    let summary = done(&run, &events);
    assert_success_summary(&run, &summary, &run.out, size, &expected);
    let dropped = named(&events, "mirror-dropped");
    assert!(
        dropped.iter().any(|event| event["url"]
            .as_str()
            .is_some_and(|url| url.contains(&other.addr().to_string()))),
        "no `mirror-dropped` event for {mirror}; events:\n{}\n{}",
        show(&dropped),
        run.describe()
    );
}

/// A failing `--json` run: every line JSON, the last a `done` with `ok: false`, the exit code,
/// an error text and this class.
fn json_failure(run: Ran, exit: i32, class: &str) {
    let run = run.expect(Expect::failure(exit).json());
    let events = events(&run);
    let summary = done(&run, &events);
    assert_eq!(
        summary["ok"],
        false,
        "summary: {summary}\n{}",
        run.describe()
    );
    assert_eq!(
        summary["exit_code"].as_i64(),
        Some(i64::from(exit)),
        "summary: {summary}\n{}",
        run.describe()
    );
    assert!(
        summary["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "summary without an error text: {summary}\n{}",
        run.describe()
    );
    assert_eq!(
        summary["class"].as_str(),
        Some(class),
        "summary: {summary}\n{}",
        run.describe()
    );
}

#[test]
fn connection_refused_is_class_network() {
    let url = format!("http://127.0.0.1:{}/img.bin", closed_port());
    let run = Scenario::url(url).args(&["--retries", "1", "--json"]).run();
    json_failure(run, 1, "network");
}

#[test]
fn not_found_is_class_http() {
    let run = Scenario::new(FileSpec::new("/img.bin", 1000, 86))
        .path("/missing.bin")
        .args(&["--json"])
        .run();
    json_failure(run, 1, "http");
}

#[test]
fn wrong_sha256_is_class_integrity() {
    let size = 200 * KIB;
    let run = Scenario::new(FileSpec::new("/img.bin", size, 87))
        .args(&["--sha256", WRONG_SHA256, "--json"])
        .run();
    json_failure(run, 3, "integrity");
}

#[test]
fn missing_output_directory_is_class_io() {
    let run = Scenario::new(FileSpec::new("/img.bin", 1000, 88))
        .args(&["-o", "no-such-dir/img.bin", "--json"])
        .run();
    json_failure(run, 4, "io");
}

#[test]
fn checksum_file_without_the_entry_is_class_input() {
    let sums = format!(
        "{}  other.bin\n{}  img.bin.sig\n",
        sha256_hex(1, 10),
        sha256_hex(2, 10)
    );
    let run = Scenario::new(FileSpec::new("/img.bin", 1000, 89))
        .local_file("SHA256SUMS", sums)
        .args(&["--sha256-sums", "SHA256SUMS", "--json"])
        .run();
    json_failure(run, 2, "input");
}

#[test]
fn completions_for_bash() {
    let dir = tempdir();
    let run = run(dir.path(), &["completions", "bash"]);
    assert_eq!(run.code(), 0, "{}", run.describe());
    assert!(
        run.stdout.contains("rangefetch") && run.stdout.contains("complete"),
        "not a bash completion script for rangefetch:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("--sha256") && run.stdout.contains("--cache-dir"),
        "the script does not complete the get flags:\n{}",
        run.stdout
    );
}

/// Asserts that stderr holds no ANSI escape sequence.
fn assert_no_ansi(run: &Run) {
    assert!(
        !run.stderr.contains('\u{1b}'),
        "an escape sequence on a non-terminal stderr under NO_COLOR: {:?}\n{}",
        run.stderr,
        run.describe()
    );
}

#[test]
fn no_color_and_a_pipe_mean_no_escape_codes() {
    let size = 600 * KIB;
    let file = FileSpec::new("/img.bin", size, 90);
    let expected = file.sha256_hex();
    let server = start_server(
        vec![file],
        vec![FaultRule::new(
            When::Nth(1),
            Fault::ResetAfter { bytes: 1000 },
        )],
    );
    let mirror = TestServer::serve(FileSpec::new("/img.bin", size + 1, 90));
    let mirror_url = mirror.url("/img.bin");
    let get = |path: &str| Scenario::on(&server, path).env("NO_COLOR", "1");

    // Success, with a retry and a dropped mirror to report on the way.
    let run = get("/img.bin")
        .args(&[&mirror_url, "--sha256", &expected, "--chunk-size", "64KiB"])
        .expect(Expect::success(&expected));
    assert_no_ansi(&run);

    // A failure with a hint.
    let run = get("/missing.bin").expect(Expect::failure(1).hint());
    assert_no_ansi(&run);

    // A usage error, reported by the argument parser.
    let run = get("/img.bin")
        .args(&["--sha256", "xyz"])
        .expect(Expect::failure(2));
    assert_no_ansi(&run);

    // A checksum mismatch, and `hash` and `verify`.
    let run = get("/img.bin")
        .args(&["--sha256", WRONG_SHA256])
        .expect(Expect::failure(3));
    assert_no_ansi(&run);
    std::fs::write(&run.out, b"some bytes").expect("write a file to check");
    for args in [
        vec!["hash", "img.bin", "absent.bin"],
        vec!["verify", "img.bin", "--sha256", WRONG_SHA256],
    ] {
        let run = spawn_env(&run.dir, &args, None, &[("NO_COLOR", "1")]).wait();
        assert_ne!(run.code(), 0, "{}", run.describe());
        assert_no_ansi(&run);
    }
}

#[test]
fn json_lines_stay_json_with_no_color() {
    // NO_COLOR must not change stdout's JSON either.
    let size = 100 * KIB;
    let file = FileSpec::new("/img.bin", size, 91);
    let expected = file.sha256_hex();
    let run = Scenario::new(file)
        .env("NO_COLOR", "1")
        .args(&["--sha256", &expected, "--json"])
        .expect(Expect::success(&expected).json());
    let events = events(&run);
    let summary = done(&run, &events);
    assert_success_summary(&run, &summary, &run.out, size, &expected);
    assert_no_ansi(&run);
}
