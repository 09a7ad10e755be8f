//! Turns engine events into what a person or a program sees: a progress bar
//! on stderr, or JSON lines on stdout; and the summary of a finished `get`.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
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
            };
        }
        if quiet {
            return Render::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            return Render::Silent;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
        let template = if color {
            "{bytes}/{total_bytes} [{bar:30.cyan/blue}] {binary_bytes_per_sec} eta {eta} {msg}"
        } else {
            "{bytes}/{total_bytes} [{bar:30}] {binary_bytes_per_sec} eta {eta} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Render::Bar(bar)
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
