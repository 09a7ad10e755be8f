//! What a run must have done, and the one [`check`] of it: exit code, stderr, the output file
//! and its SHA-256, what is left beside it, stdout's hash line or `--json` summary, and what
//! the server sent. An API change means changing this file, not a hundred tests.

use std::ops::RangeInclusive;
use std::path::Path;

use rangefetch_testserver::RequestLog;

use super::binary::Run;
use super::files::{sha256_file, with_suffix};
/// What a run must have done; see [`check`]. Built from [`Expect::success`],
/// [`Expect::success_of_file`] or [`Expect::failure`], then narrowed with the other methods.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    /// The exit code.
    exit: i32,
    /// On success: the SHA-256 (lowercase hex) the output file must have.
    sha256: Option<String>,
    /// On success: the SHA-256 is the scenario's file's, filled in by
    /// [`Scenario::expect`](super::scenario::Scenario::expect).
    sha256_of_file: bool,
    /// Bounds on the file-content bytes the server sent during the run.
    served: Option<RangeInclusive<u64>>,
    /// At most this many requests reached the server.
    max_requests: Option<usize>,
    /// Every GET carried `Range`, and every GET after the first (the probe, which knows no
    /// validator yet) carried `If-Range`.
    ranged: bool,
    /// The bytes served during the run cover `[0, n)`.
    covers: Option<u64>,
    /// Substrings that stderr must contain (case-insensitive).
    stderr_has: Vec<String>,
    /// A `hint:` line must follow the error line.
    hint: bool,
    /// The run used `--json`: check the summary object instead of the hash line.
    json: bool,
    /// On success with `--json`: the summary's `verified`.
    verified: Option<bool>,
    /// On failure: the output file must still hold exactly these bytes (it existed before
    /// and must be untouched); without it, the output must not exist.
    previous: Option<Vec<u8>>,
    /// On failure: whether `<out>.part` and `<out>.part.state` must both remain (for resume)
    /// or both be gone; `None` does not look.
    part_kept: Option<bool>,
}

impl Expect {
    /// Exit 0 and an output file with this SHA-256.
    pub fn success(sha256: &str) -> Self {
        Self {
            exit: 0,
            sha256: Some(sha256.to_ascii_lowercase()),
            ..Self::default()
        }
    }

    /// Exit 0 and an output file with the SHA-256 of the file the scenario serves.
    pub fn success_of_file() -> Self {
        Self {
            exit: 0,
            sha256_of_file: true,
            ..Self::default()
        }
    }

    /// This non-zero exit code, and no output file.
    pub fn failure(exit: i32) -> Self {
        assert_ne!(exit, 0, "a failure has a non-zero exit code");
        Self {
            exit,
            ..Self::default()
        }
    }

    /// The server sent between these many file-content bytes during the run.
    pub fn served(self, bounds: RangeInclusive<u64>) -> Self {
        Self {
            served: Some(bounds),
            ..self
        }
    }

    /// At most `n` requests reached the server.
    pub fn max_requests(self, n: usize) -> Self {
        Self {
            max_requests: Some(n),
            ..self
        }
    }

    /// Every GET carried `Range`, and every one after the probe `If-Range`.
    pub fn ranged(self) -> Self {
        Self {
            ranged: true,
            ..self
        }
    }

    /// The bodies served during the run cover `[0, len)` without a gap.
    pub fn covers(self, len: u64) -> Self {
        Self {
            covers: Some(len),
            ..self
        }
    }

    /// stderr mentions `text` (case-insensitive); may be given several times.
    pub fn stderr_has(mut self, text: &str) -> Self {
        self.stderr_has.push(text.to_owned());
        self
    }

    /// A `hint:` line follows the error line.
    pub fn hint(self) -> Self {
        Self { hint: true, ..self }
    }

    /// The run used `--json`: its last stdout line is the summary.
    pub fn json(self) -> Self {
        Self { json: true, ..self }
    }

    /// The `--json` summary's `verified` is this.
    pub fn verified(self, verified: bool) -> Self {
        Self {
            verified: Some(verified),
            ..self
        }
    }

    /// On failure, the output file still holds exactly these bytes.
    pub fn previous(self, bytes: &[u8]) -> Self {
        Self {
            previous: Some(bytes.to_vec()),
            ..self
        }
    }

    /// On failure, `<out>.part` and its journal are both kept (or both gone).
    pub fn part_kept(self, kept: bool) -> Self {
        Self {
            part_kept: Some(kept),
            ..self
        }
    }

    /// Whether this expectation wants the SHA-256 of the scenario's file.
    pub(super) fn wants_sha256_of_file(&self) -> bool {
        self.sha256_of_file
    }

    /// The expectation with the SHA-256 of the scenario's file filled in.
    pub(super) fn with_sha256_of_file(self, sha256: String) -> Self {
        Self {
            sha256: Some(sha256),
            sha256_of_file: false,
            ..self
        }
    }
}

/// Asserts everything `expect` says about a `get` run that wrote (or failed to write) `out`:
/// exit code; stderr (one `rangefetch: error:` line on failure, none on success); the output
/// file's presence and SHA-256; no `.part` or `.part.state` left after success; the `<hex>  <path>`
/// line or the `--json` summary on stdout; and what the server sent.
pub fn check(run: &Run, out: &Path, expect: &Expect) {
    let context = || run.describe();
    assert_exit(run, expect.exit, expect.hint);
    let stderr_lower = run.stderr.to_lowercase();
    for text in &expect.stderr_has {
        assert!(
            stderr_lower.contains(&text.to_lowercase()),
            "stderr does not mention {text:?}\n{}",
            context()
        );
    }
    let part = with_suffix(out, ".part");
    let state = with_suffix(out, ".part.state");
    if expect.exit == 0 {
        assert!(
            out.is_file(),
            "no output file at {}\n{}",
            out.display(),
            context()
        );
        let digest = sha256_file(out);
        let expected = expect.sha256.as_ref().unwrap_or_else(|| {
            panic!("Expect::success_of_file needs a scenario's file: run it with Scenario::expect")
        });
        assert_eq!(
            &digest,
            expected,
            "the output file has the wrong SHA-256\n{}",
            context()
        );
        assert!(
            !part.exists(),
            "{} is left after success\n{}",
            part.display(),
            context()
        );
        assert!(
            !state.exists(),
            "{} is left after success\n{}",
            state.display(),
            context()
        );
        if expect.json {
            let summary = run.json_summary();
            assert_eq!(
                summary["event"],
                "done",
                "summary: {summary}\n{}",
                context()
            );
            assert_eq!(summary["ok"], true, "summary: {summary}\n{}", context());
            assert_eq!(
                summary["sha256"].as_str(),
                Some(digest.as_str()),
                "summary: {summary}\n{}",
                context()
            );
            let len = std::fs::metadata(out).expect("stat the output").len();
            assert_eq!(
                summary["bytes"].as_u64(),
                Some(len),
                "summary: {summary}\n{}",
                context()
            );
            assert!(
                summary["verified"].is_boolean(),
                "summary without `verified`: {summary}\n{}",
                context()
            );
            if let Some(verified) = expect.verified {
                assert_eq!(
                    summary["verified"],
                    verified,
                    "summary: {summary}\n{}",
                    context()
                );
            }
        } else {
            let last = run
                .stdout
                .lines()
                .rev()
                .find(|line| !line.is_empty())
                .unwrap_or_else(|| panic!("stdout is empty after success\n{}", context()));
            let (hex, shown_path) = last.split_once("  ").unwrap_or_else(|| {
                panic!(
                    "the last stdout line is not `<hex>  <path>`: {last:?}\n{}",
                    context()
                )
            });
            assert_eq!(
                hex,
                digest,
                "stdout's hash is not the file's\n{}",
                context()
            );
            assert_eq!(
                run.dir.join(shown_path),
                out,
                "stdout names another path\n{}",
                context()
            );
        }
    } else {
        match &expect.previous {
            Some(previous) => {
                let now = std::fs::read(out).unwrap_or_else(|error| {
                    panic!(
                        "the earlier {} is gone ({error})\n{}",
                        out.display(),
                        context()
                    )
                });
                assert!(
                    &now == previous,
                    "the earlier {} was changed by a failed run\n{}",
                    out.display(),
                    context()
                );
            }
            None => assert!(
                !out.exists(),
                "{} exists after a failed run\n{}",
                out.display(),
                context()
            ),
        }
        match expect.part_kept {
            Some(true) => assert!(
                part.is_file() && state.is_file(),
                "{} and {} must be kept for resume (part: {}, state: {})\n{}",
                part.display(),
                state.display(),
                part.exists(),
                state.exists(),
                context()
            ),
            Some(false) => assert!(
                !part.exists() && !state.exists(),
                "{} or {} is left (part: {}, state: {})\n{}",
                part.display(),
                state.display(),
                part.exists(),
                state.exists(),
                context()
            ),
            None => {}
        }
        if expect.json {
            let summary = run.json_summary();
            assert_eq!(
                summary["event"],
                "done",
                "summary: {summary}\n{}",
                context()
            );
            assert_eq!(summary["ok"], false, "summary: {summary}\n{}", context());
            assert_eq!(
                summary["exit_code"].as_i64(),
                Some(i64::from(expect.exit)),
                "summary: {summary}\n{}",
                context()
            );
            assert!(
                summary["error"]
                    .as_str()
                    .is_some_and(|error| !error.is_empty()),
                "summary without an error text: {summary}\n{}",
                context()
            );
        }
    }
    check_served(run, expect);
}

fn check_served(run: &Run, expect: &Expect) {
    let wants_server = expect.served.is_some()
        || expect.max_requests.is_some()
        || expect.ranged
        || expect.covers.is_some();
    if !wants_server {
        return;
    }
    let served = run
        .served
        .as_ref()
        .expect("server expectations need a run recorded against a server");
    if let Some(bounds) = &expect.served {
        assert!(
            bounds.contains(&served.body_bytes),
            "the server sent {} body bytes, expected {bounds:?}\n{}",
            served.body_bytes,
            run.describe()
        );
    }
    if let Some(max) = expect.max_requests {
        assert!(
            served.requests.len() <= max,
            "{} requests reached the server, expected at most {max}\n{}",
            served.requests.len(),
            run.describe()
        );
    }
    if expect.ranged {
        let gets: Vec<&RequestLog> = served
            .requests
            .iter()
            .filter(|request| request.method == "GET")
            .collect();
        assert!(
            !gets.is_empty(),
            "no GET reached the server\n{}",
            run.describe()
        );
        for (idx, request) in gets.iter().enumerate() {
            assert!(
                request.range.is_some(),
                "GET #{idx} has no Range header\n{}",
                run.describe()
            );
            assert!(
                idx == 0 || request.if_range.is_some(),
                "GET #{idx} has a Range but no If-Range header\n{}",
                run.describe()
            );
        }
    }
    if let Some(len) = expect.covers {
        let mut spans: Vec<(u64, u64)> = served
            .requests
            .iter()
            .filter(|request| request.method == "GET" && request.body_bytes > 0)
            .filter_map(|request| {
                let start = match request.status {
                    200 => Some(0),
                    206 => request.range.as_deref().and_then(range_start),
                    _ => None,
                }?;
                Some((start, start + request.body_bytes))
            })
            .collect();
        spans.sort_unstable();
        let mut covered_to = 0;
        for (start, end) in spans {
            if start > covered_to {
                break;
            }
            covered_to = covered_to.max(end);
        }
        assert!(
            covered_to >= len,
            "the bytes served cover only [0, {covered_to}) of [0, {len})\n{}",
            run.describe()
        );
    }
}

/// The first byte of a `bytes=a-b` or `bytes=a-` header.
fn range_start(header: &str) -> Option<u64> {
    header
        .strip_prefix("bytes=")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Asserts the exit code, and that stderr says one clear thing: on failure, exactly one
/// `rangefetch: error:` line followed only by `hint:` lines (or clap's `error:` first line for
/// a usage error); on success, no error line at all.
pub fn assert_exit(run: &Run, exit: i32, hint: bool) {
    assert_eq!(run.code(), exit, "unexpected exit code\n{}", run.describe());
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let error_lines: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.starts_with("rangefetch: error:"))
        .map(|(idx, _)| idx)
        .collect();
    if exit == 0 {
        assert!(
            error_lines.is_empty() && !lines.iter().any(|line| line.starts_with("error:")),
            "an error line on stderr after success\n{}",
            run.describe()
        );
        return;
    }
    assert!(
        !lines.is_empty(),
        "stderr is empty after a failure\n{}",
        run.describe()
    );
    if exit == 2 && error_lines.is_empty() {
        // A usage error found by the argument parser (clap).
        assert!(
            lines[0].starts_with("error:") && lines[0].len() > "error:".len() + 5,
            "a usage error must start with a clear `error:` line\n{}",
            run.describe()
        );
        return;
    }
    assert_eq!(
        error_lines.len(),
        1,
        "stderr must have exactly one `rangefetch: error:` line\n{}",
        run.describe()
    );
    let error_idx = error_lines[0];
    let message = lines[error_idx]["rangefetch: error:".len()..].trim();
    assert!(
        message.len() > 5,
        "the error line says nothing\n{}",
        run.describe()
    );
    let after = &lines[error_idx + 1..];
    assert!(
        after.iter().all(|line| line.starts_with("hint:")),
        "only `hint:` lines may follow the error line\n{}",
        run.describe()
    );
    if hint {
        assert!(
            !after.is_empty(),
            "a `hint:` line must follow the error line\n{}",
            run.describe()
        );
    }
}
