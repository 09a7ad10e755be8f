//! Turns engine events into what a person or a program sees: a progress bar
//! on stderr, or JSON lines on stdout; and the summary of a finished `get`.
//! A batch (`get -i`) has a [`Batch`]: one overall bar and a line per active
//! file, or JSON lines that name their file.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rangefetch_core::{Event, Outcome, ServerDigest};
use serde_json::json;

/// How progress is shown.
pub enum Render {
    /// No bar (stderr is not a terminal), but notices still printed.
    Silent,
    /// Nothing at all (`--quiet`).
    Quiet,
    /// A progress bar on stderr.
    Bar(ProgressBar),
    /// JSON lines on stdout, progress at most a few times a second; every
    /// line carries `t_s`, seconds since the start.
    Json {
        started: Instant,
        last_progress: Mutex<Instant>,
        /// The digest the server stated, for the summary.
        server_digest: Mutex<Option<ServerDigest>>,
        /// In a batch: the file's line in the list, and its output path
        /// (given in the `started` event).
        file: Option<(usize, String)>,
    },
}

/// Where the expected hash came from, for the `--json` summary: the key
/// that signed the checksum file, if one did.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// Fingerprint (hex) of the key whose signature verified.
    pub signed_by: Option<String>,
    /// The signed file (a checksum file's path or URL).
    pub signed_file: Option<String>,
    /// The expected hash was the server's own digest (`--trust-server-digest`).
    pub from_server_digest: bool,
    /// What `image` picked from the simplestreams tree.
    pub image: Option<serde_json::Value>,
}

/// The start `t_s` counts from: the first call, which `main` makes before
/// anything else, so that every JSON line of a run shares one clock.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Starts the clock of `t_s` (later calls change nothing) and returns it.
pub fn start_clock() -> Instant {
    *STARTED.get_or_init(Instant::now)
}

/// `t_s`: seconds since [`start_clock`].
pub fn seconds_since_start() -> f64 {
    start_clock().elapsed().as_secs_f64()
}

impl Render {
    /// `color` is false under `NO_COLOR` (settings.rs reads it).
    pub fn new(json: bool, quiet: bool, color: bool) -> Self {
        if json {
            let now = Instant::now();
            return Render::Json {
                started: start_clock(),
                last_progress: Mutex::new(now.checked_sub(Duration::from_secs(1)).unwrap_or(now)),
                server_digest: Mutex::new(None),
                file: None,
            };
        }
        if quiet {
            return Render::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            return Render::Silent;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
        Render::Bar(styled(bar, "", color))
    }

    pub fn event(&self, event: &Event) {
        match self {
            Render::Quiet => {}
            Render::Silent => {
                if let Some(line) = warning(event) {
                    eprintln!("{line}");
                }
            }
            Render::Bar(bar) => match event {
                Event::Started {
                    total,
                    resumed_bytes,
                    ..
                } => {
                    if let Some(total) = total {
                        bar.set_length(*total);
                    }
                    bar.set_position(*resumed_bytes);
                }
                Event::Progress {
                    bytes,
                    connections,
                    retries,
                    ..
                } => {
                    bar.set_position(*bytes);
                    bar.set_message(format!("{connections} conn, {retries} retries"));
                }
                Event::Retry { message, .. } => bar.println(format!("retrying: {message}")),
                Event::Notice { .. }
                | Event::MirrorDropped { .. }
                | Event::RemoteChanged { .. } => {
                    if let Some(line) = warning(event) {
                        bar.println(line);
                    }
                }
                Event::Downloaded { bytes } => {
                    bar.set_position(*bytes);
                    bar.set_message("verifying");
                }
                _ => {}
            },
            Render::Json {
                started,
                last_progress: last,
                server_digest,
                file,
            } => {
                let mut line = match event {
                    Event::Progress {
                        bytes,
                        total,
                        rate_bps,
                        connections,
                        retries,
                    } => {
                        let mut last = last
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if last.elapsed() < Duration::from_millis(200) {
                            return;
                        }
                        *last = Instant::now();
                        json!({"event": "progress", "bytes": bytes, "total": total, "rate_bps": rate_bps,
                               "connections": connections, "retries": retries})
                    }
                    Event::Started {
                        url,
                        total,
                        ranges,
                        resumed_bytes,
                    } => {
                        json!({"event": "started", "url": url, "total": total, "ranges": ranges,
                               "resumed_bytes": resumed_bytes})
                    }
                    Event::Retry {
                        range,
                        attempt,
                        class,
                        message,
                        delay,
                    } => json!({
                        "event": "retry", "start": range.start, "end": range.end, "attempt": attempt,
                        "class": class, "error": message, "delay_s": delay.as_secs_f64()}),
                    Event::Downloaded { bytes } => json!({"event": "downloaded", "bytes": bytes}),
                    Event::Repaired { pieces, fetched } => json!({
                        "event": "repaired", "fetched": fetched,
                        "pieces": pieces.iter().map(|piece| json!({
                            "start": piece.range.start, "end": piece.range.end,
                            "source": piece.source, "connection": piece.connection,
                            "attempt": piece.attempt})).collect::<Vec<_>>()}),
                    Event::Notice { message } => json!({"event": "notice", "message": message}),
                    Event::Verified {
                        sha256,
                        against_expected,
                    } => json!({"event": "verified",
                        "sha256": sha256.to_string(), "against_expected": against_expected}),
                    Event::RemoteChanged { reason } => {
                        json!({"event": "remote-changed", "reason": reason})
                    }
                    Event::MirrorDropped { url, reason } => {
                        json!({"event": "mirror-dropped", "url": url, "reason": reason})
                    }
                    Event::ServerDigest { sha256, header } => {
                        *server_digest
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(ServerDigest {
                                sha256: *sha256,
                                header: *header,
                            });
                        return;
                    }
                    _ => return,
                };
                if let Some(object) = line.as_object_mut() {
                    object.insert("t_s".into(), json!(started.elapsed().as_secs_f64()));
                    if let Some((line_no, path)) = file {
                        object.insert("file".into(), json!(line_no));
                        if matches!(event, Event::Started { .. }) {
                            object.insert("path".into(), json!(path));
                        }
                    }
                }
                print_json(&line);
            }
        }
    }

    /// The end of a successful `get`: the `--json` summary, or a line of
    /// figures on stderr (not with `--quiet`) and, always, `<hex>  <path>`
    /// on stdout: a hash even without an expected one (docs/CONTRACT.md,
    /// guarantee 4).
    pub fn done(&self, outcome: &Outcome, provenance: &Provenance) {
        if let Render::Json {
            started,
            server_digest,
            ..
        } = self
        {
            let server_digest = *server_digest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let server_digest = server_digest.map(|digest| {
                json!({"sha256": digest.sha256.to_string(), "header": digest.header.name()})
            });
            print_json(&json!({
                "event": "done", "ok": true, "path": outcome.path, "bytes": outcome.bytes,
                "sha256": outcome.sha256.to_string(), "verified": outcome.verified,
                "elapsed_s": outcome.elapsed.as_secs_f64(), "retries": outcome.retries,
                "resumed_bytes": outcome.resumed_bytes, "connections": outcome.connections,
                "already_present": outcome.already_present, "from_cache": outcome.from_cache,
                "server_digest": server_digest, "signed_by": provenance.signed_by,
                "signed_file": provenance.signed_file,
                "hash_from_server_digest": provenance.from_server_digest,
                "image": provenance.image,
                "t_s": started.elapsed().as_secs_f64(),
            }));
            return;
        }
        if !matches!(self, Render::Quiet) {
            eprintln!("{}", figures(outcome));
        }
        println!("{}  {}", outcome.sha256, outcome.path.display());
    }

    pub fn finish(&self) {
        if let Render::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// A bar in the house style: bytes, rate, eta; `prefix` names the file.
fn styled(bar: ProgressBar, prefix: &str, color: bool) -> ProgressBar {
    let template = if color {
        "{prefix}{bytes}/{total_bytes} [{bar:30.cyan/blue}] {binary_bytes_per_sec} eta {eta} {msg}"
    } else {
        "{prefix}{bytes}/{total_bytes} [{bar:30}] {binary_bytes_per_sec} eta {eta} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_owned());
    bar
}

/// `<path>: <bytes> in <secs> (<rate>), <n> connections, <n> retries, sha256 <hex> (<status>)`.
fn figures(outcome: &Outcome) -> String {
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    let status = if outcome.already_present {
        "already present, verified"
    } else if outcome.from_cache {
        "from the verified cache"
    } else if outcome.verified {
        "verified"
    } else {
        "not verified: no expected hash given"
    };
    let resumed = if outcome.resumed_bytes > 0 && !outcome.already_present {
        format!(
            ", {} bytes resumed from an earlier run",
            outcome.resumed_bytes
        )
    } else {
        String::new()
    };
    format!(
        "{}: {} bytes in {:.2} s ({:.1} MB/s), {} connections, {} retries{resumed}, sha256 {} ({status})",
        outcome.path.display(),
        outcome.bytes,
        secs,
        outcome.bytes.saturating_sub(outcome.resumed_bytes) as f64 / secs / 1e6,
        outcome.connections,
        outcome.retries,
        outcome.sha256,
    )
}

/// The stderr line for events a person should see even without a bar.
fn warning(event: &Event) -> Option<String> {
    match event {
        Event::Notice { message } => Some(format!("rangefetch: {message}")),
        Event::MirrorDropped { url, reason } => Some(format!(
            "rangefetch: warning: dropping mirror {url}: {reason}"
        )),
        Event::RemoteChanged { reason } => Some(format!("rangefetch: warning: {reason}")),
        _ => None,
    }
}

/// Prints one JSON line on stdout; a closed stdout is not worth a panic.
pub fn print_json(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// One file's end in a batch, for its line and the summaries.
pub struct FileResult {
    /// The entry's line in the list: the `file` of its JSON lines.
    pub line: usize,
    /// The output path.
    pub path: String,
    /// The first URL without credentials.
    pub url: String,
    pub outcome: Result<Outcome, FileFailure>,
}

/// Why a file of a batch failed.
pub struct FileFailure {
    pub code: u8,
    pub class: &'static str,
    /// The cause chain on one line.
    pub error: String,
}

impl FileResult {
    /// The file's object in the `--json` lines: its `file-done` event and
    /// its entry in the summary's `files`.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.outcome {
            Ok(outcome) => json!({
                "file": self.line, "path": self.path, "url": self.url, "ok": true,
                "bytes": outcome.bytes, "sha256": outcome.sha256.to_string(),
                "verified": outcome.verified, "elapsed_s": outcome.elapsed.as_secs_f64(),
                "retries": outcome.retries, "resumed_bytes": outcome.resumed_bytes,
                "connections": outcome.connections, "already_present": outcome.already_present,
                "from_cache": outcome.from_cache,
            }),
            Err(failure) => json!({
                "file": self.line, "path": self.path, "url": self.url, "ok": false,
                "exit_code": failure.code, "class": failure.class, "error": failure.error,
            }),
        }
    }
}

/// How a batch (`get -i`) shows itself: a [`FileView`] per running file,
/// plus, on a terminal, one overall bar above the files' bars.
pub struct Batch {
    json: bool,
    quiet: bool,
    color: bool,
    bars: Option<BatchBars>,
}

struct BatchBars {
    multi: MultiProgress,
    overall: ProgressBar,
    n_files: usize,
    /// Files finished, and of them failed.
    ended: Mutex<(usize, usize)>,
}

/// What one file of a batch renders its events through.
pub struct FileView {
    render: Render,
    /// The batch's overall bar, which this file's bytes advance.
    overall: Option<ProgressBar>,
    /// Bytes of this file already counted on the overall bar, and whether
    /// its size was added to the bar's length.
    counted: Mutex<(u64, bool)>,
}

impl Batch {
    /// `color` is false under `NO_COLOR`.
    pub fn new(json: bool, quiet: bool, color: bool, n_files: usize) -> Self {
        let bars = (!json && !quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            let overall = styled(multi.add(ProgressBar::new(0)), "all ", color);
            overall.set_message(format!("0/{n_files} files"));
            BatchBars {
                multi,
                overall,
                n_files,
                ended: Mutex::new((0, 0)),
            }
        });
        Self {
            json,
            quiet,
            color,
            bars,
        }
    }

    /// The view of a file that starts now: its own JSON lines, or a bar of
    /// its own under the overall one.
    pub fn file(&self, line: usize, path: &str) -> FileView {
        let render = if self.json {
            let now = Instant::now();
            Render::Json {
                started: start_clock(),
                last_progress: Mutex::new(now.checked_sub(Duration::from_secs(1)).unwrap_or(now)),
                server_digest: Mutex::new(None),
                file: Some((line, path.to_owned())),
            }
        } else if self.quiet {
            Render::Quiet
        } else if let Some(bars) = &self.bars {
            let bar = bars.multi.add(ProgressBar::new(0));
            Render::Bar(styled(bar, &format!("{} ", short_name(path)), self.color))
        } else {
            Render::Silent
        };
        FileView {
            render,
            overall: self.bars.as_ref().map(|bars| bars.overall.clone()),
            counted: Mutex::new((0, false)),
        }
    }

    /// A file ended: its bar goes, and its result is printed as `get`
    /// prints one (a `file-done` JSON line; or figures on stderr and
    /// `<hex>  <path>` on stdout; or the error).
    pub fn finished(&self, view: Option<&FileView>, result: &FileResult) {
        if let Some(FileView {
            render: Render::Bar(bar),
            ..
        }) = view
        {
            bar.finish_and_clear();
            if let Some(bars) = &self.bars {
                bars.multi.remove(bar);
            }
        }
        if self.json {
            let mut line = result.to_json();
            if let Some(object) = line.as_object_mut() {
                object.insert("event".into(), json!("file-done"));
                object.insert("t_s".into(), json!(seconds_since_start()));
            }
            print_json(&line);
        } else {
            let text = match &result.outcome {
                Ok(outcome) => {
                    let line = format!("{}  {}", outcome.sha256, outcome.path.display());
                    // Off the bars, which share a terminal with stdout.
                    match &self.bars {
                        Some(bars) => bars.multi.suspend(|| println!("{line}")),
                        None => println!("{line}"),
                    }
                    (!self.quiet).then(|| figures(outcome))
                }
                Err(failure) => Some(format!(
                    "rangefetch: error: {}: {}",
                    result.path, failure.error
                )),
            };
            if let Some(text) = text {
                self.eprint(&text);
            }
        }
        if let Some(bars) = &self.bars {
            let mut ended = bars
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ended.0 += 1;
            ended.1 += usize::from(result.outcome.is_err());
            let failed = match ended.1 {
                0 => String::new(),
                n => format!(", {n} failed"),
            };
            bars.overall
                .set_message(format!("{}/{} files{failed}", ended.0, bars.n_files));
        }
    }

    /// A line on stderr, above the bars when there are any.
    fn eprint(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// The end of the batch: the bars go; stderr gets a line of figures
    /// (not with `--quiet`) and one line per failed file, naming its line,
    /// path, URL and error (always). With `--json` and no failure the
    /// `done` line is printed here; a failed batch's comes with its error.
    pub fn summary(&self, results: &[FileResult], elapsed: Duration) {
        if let Some(bars) = &self.bars {
            bars.overall.finish_and_clear();
            let _ = bars.multi.clear();
        }
        let failed: Vec<&FileResult> = results.iter().filter(|r| r.outcome.is_err()).collect();
        let bytes: u64 = results
            .iter()
            .filter_map(|r| r.outcome.as_ref().ok())
            .map(|outcome| outcome.bytes)
            .sum();
        if !self.quiet || !failed.is_empty() {
            eprintln!(
                "rangefetch: {} files: {} done, {} failed; {bytes} bytes in {:.2} s",
                results.len(),
                results.len() - failed.len(),
                failed.len(),
                elapsed.as_secs_f64(),
            );
        }
        for result in &failed {
            if let Err(failure) = &result.outcome {
                eprintln!(
                    "rangefetch: failed: line {} {} ({}): {}",
                    result.line, result.path, result.url, failure.error
                );
            }
        }
        if self.json && failed.is_empty() {
            print_json(&json!({
                "event": "done", "ok": true, "files": results.iter().map(FileResult::to_json).collect::<Vec<_>>(),
                "n_files": results.len(), "failed": 0, "bytes": bytes,
                "elapsed_s": elapsed.as_secs_f64(), "t_s": seconds_since_start(),
            }));
        }
    }
}

impl FileView {
    pub fn event(&self, event: &Event) {
        self.render.event(event);
        let Some(overall) = &self.overall else {
            return;
        };
        let mut counted = self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = match event {
            Event::Started {
                total,
                resumed_bytes,
                ..
            } => {
                if let (Some(total), false) = (total, counted.1) {
                    overall.inc_length(*total);
                    counted.1 = true;
                }
                *resumed_bytes
            }
            Event::Progress { bytes, .. } | Event::Downloaded { bytes } => *bytes,
            _ => return,
        };
        // A restart (the remote changed) goes back to 0; the overall bar
        // only moves forward.
        if bytes > counted.0 {
            overall.inc(bytes - counted.0);
            counted.0 = bytes;
        }
    }
}

/// The last 24 characters of a path, for a bar's prefix.
fn short_name(path: &str) -> String {
    let n_chars = path.chars().count();
    if n_chars <= 24 {
        return format!("{path:<24}");
    }
    let tail: String = path.chars().skip(n_chars - 23).collect();
    format!("…{tail}")
}
