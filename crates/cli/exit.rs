//! Exit codes and what a failure prints: every error of the engine, of the
//! command line or of local input becomes one code of docs/CONTRACT.md, one
//! `rangefetch: error:` line, a `hint:` line where one helps, and with
//! `--json` the final `done` object.

use std::io;
use std::path::Path;
use std::process::ExitCode;

use rangefetch_core::ErrorKind;
use serde_json::json;

use crate::render::{print_json, seconds_since_start};

/// Download failed: the network or the server, after the retries.
pub const DOWNLOAD: u8 = 1;
/// Usage or bad input.
pub const USAGE: u8 = 2;
/// Integrity: the bytes do not have the expected SHA-256.
pub const CHECKSUM: u8 = 3;
/// Local I/O error.
pub const IO: u8 = 4;
/// Interrupted by SIGINT or SIGTERM; partial state kept for resume.
pub const INTERRUPTED: u8 = 130;

/// A failure on its way to the user: what to print and which code to exit with.
pub struct Failure {
    code: u8,
    error: anyhow::Error,
    hint: Option<String>,
    /// More fields of the `--json` `done` line (a batch's `files`).
    json_fields: serde_json::Map<String, serde_json::Value>,
}

impl Failure {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
            hint: None,
            json_fields: serde_json::Map::new(),
        }
    }

    /// Whether the engine failed because the URL serves a Metalink
    /// document rather than the file (see `Error::serves_metalink`).
    pub fn serves_metalink(&self) -> bool {
        self.error
            .downcast_ref::<rangefetch_core::Error>()
            .is_some_and(rangefetch_core::Error::serves_metalink)
    }

    /// Adds fields to the `--json` `done` line this failure prints.
    pub fn json_fields(mut self, fields: serde_json::Map<String, serde_json::Value>) -> Self {
        self.json_fields = fields;
        self
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        self.code
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The whole cause chain on one line.
    pub fn message(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for cause in self.error.chain() {
            let text = cause.to_string();
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
        }
        parts.join(": ")
    }

    /// The `class` of the `--json` summary: the engine's own class where the
    /// engine failed, else the one the exit code stands for.
    pub fn class(&self) -> &'static str {
        if let Some(core) = self.error.downcast_ref::<rangefetch_core::Error>() {
            return core.kind().class();
        }
        class_of_code(self.code)
    }

    /// Prints the error line, the hint and (with `--json`) the `done` line,
    /// and gives the exit code.
    pub fn report(&self, json: bool) -> ExitCode {
        let message = self.message();
        eprintln!("rangefetch: error: {message}");
        if let Some(hint) = &self.hint {
            eprintln!("hint: {hint}");
        }
        if json {
            let mut done = json!({"event": "done", "ok": false, "exit_code": self.code,
                "error": message, "class": self.class(), "t_s": seconds_since_start()});
            if let Some(object) = done.as_object_mut() {
                object.extend(self.json_fields.clone());
            }
            print_json(&done);
        }
        ExitCode::from(self.code)
    }
}

fn class_of_code(code: u8) -> &'static str {
    match code {
        USAGE => "input",
        CHECKSUM => "integrity",
        IO => "io",
        INTERRUPTED => "cancelled",
        _ => "network",
    }
}

fn print_done_failure(code: u8, message: &str, class: &str) {
    print_json(
        &json!({"event": "done", "ok": false, "exit_code": code, "error": message,
                       "class": class, "t_s": seconds_since_start()}),
    );
}

/// A command line clap rejected (or `--help`, `--version`): clap prints its
/// own text; a usage error exits 2 and, when `--json` was asked for, still
/// ends stdout with the `done` line, so a script reading JSON always gets
/// one.
pub fn parse_error(error: &clap::Error, json: bool) -> ExitCode {
    let code = if error.use_stderr() { USAGE } else { 0 };
    let _ = error.print();
    if json && code != 0 {
        print_done_failure(code, &clap_message(error), class_of_code(code));
    }
    ExitCode::from(code)
}

/// Clap's first line, without its `error: ` prefix or styling.
fn clap_message(error: &clap::Error) -> String {
    let text = error.to_string();
    let first = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    let first = first.trim();
    first
        .strip_prefix("error:")
        .unwrap_or(first)
        .trim()
        .to_owned()
}

/// A local file `hash` or `verify` could not hash: an input the engine
/// refuses (an endless character device, signalled as
/// `io::ErrorKind::InvalidInput`) is bad input, anything else local I/O.
pub fn local_input(path: &Path, error: io::Error) -> Failure {
    let path = path.display();
    if error.kind() == io::ErrorKind::InvalidInput {
        Failure::new(USAGE, anyhow::anyhow!("cannot hash {path}: {error}"))
    } else {
        Failure::new(IO, anyhow::anyhow!("cannot read {path}: {error}"))
    }
}

/// Cancelled by a signal. The hint says what a rerun will reuse, which the
/// files beside the output tell: a journal (`<part>.state`) means a resume;
/// a part file without one (a server without byte ranges, one stream) is
/// nothing a rerun can continue from.
pub fn interrupted(part: &Path) -> Failure {
    let mut journal = part.as_os_str().to_owned();
    journal.push(".state");
    let failure = Failure::new(INTERRUPTED, anyhow::anyhow!("interrupted"));
    failure.hint(interrupted_hint(
        part,
        Path::new(&journal).is_file(),
        part.exists(),
    ))
}

fn interrupted_hint(part: &Path, journal: bool, part_exists: bool) -> String {
    let part = part.display();
    if journal {
        format!("partial data is kept in {part}; run the same command again to resume")
    } else if part_exists {
        format!(
            "nothing can be resumed: the download was one stream (the server serves no byte ranges), so running the command again starts from the beginning; {part} is not reused"
        )
    } else {
        "nothing was downloaded yet; running the command again starts from the beginning".to_owned()
    }
}

/// Maps an engine error to an exit code and a hint. `proxy` is the proxy
/// the download went through, credentials removed, for the hints that name
/// it.
pub fn from_core(error: rangefetch_core::Error, proxy: Option<&str>) -> Failure {
    let kind = error.kind();
    let status = error.status();
    let retryable_network = kind == ErrorKind::Network && error.is_retryable();
    let certificate = kind == ErrorKind::Certificate;
    let code = match kind {
        ErrorKind::ChecksumMismatch => CHECKSUM,
        ErrorKind::Io => IO,
        ErrorKind::InvalidInput => USAGE,
        ErrorKind::Cancelled => INTERRUPTED,
        _ => DOWNLOAD,
    };
    let failure = Failure::new(code, error);
    match (kind, status) {
        (ErrorKind::ChecksumMismatch, _) => failure.hint(
            "the received bytes were discarded; check the expected hash, or the mirror or proxy you are using (a repair fetches bad stretches again within --repair-budget)",
        ),
        (ErrorKind::HttpStatus(_), Some(404 | 410)) => failure.hint("check the URL: the server has no such file"),
        (ErrorKind::HttpStatus(_), Some(407)) => failure.hint(match proxy {
            Some(proxy) => format!("proxy {proxy} wants credentials: put them in the proxy URL (http://user:password@host:port)"),
            None => "a proxy on the way wants credentials: set --proxy http://user:password@host:port".to_owned(),
        }),
        // Over a plain-HTTP proxy the proxy itself may answer 401 to wrong
        // credentials; name both suspects.
        (ErrorKind::HttpStatus(_), Some(401)) if proxy.is_some() => failure.hint(format!(
            "authentication failed: check the credentials for proxy {}, or whether the server needs its own",
            proxy.unwrap_or_default()
        )),
        (ErrorKind::HttpStatus(_), Some(403 | 401)) => {
            failure.hint("the server refused access; a signed URL may have expired")
        }
        _ if kind == ErrorKind::Network && failure.message().contains("offers no HTTP/1.1") => failure.hint(
            "the server (or a proxy in front of it) accepts HTTP/2 only; rangefetch fetches over HTTP/1.1: ask for HTTP/1.1 to be enabled, or use another mirror",
        ),
        _ if certificate => failure.hint("pass --ca-cert PEM for a private CA or a TLS-inspecting proxy"),
        _ if retryable_network => match proxy {
            Some(proxy) => failure.hint(format!("the download went through proxy {proxy}; check that it is reachable")),
            None => failure.hint("check the network; behind a proxy, set --proxy or HTTPS_PROXY"),
        },
        (ErrorKind::Io, _) => failure.hint("check free space and permissions of the output directory"),
        _ => failure,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::args::Cli;

    fn clap_error(line: &[&str]) -> clap::Error {
        match Cli::try_parse_from(line) {
            Ok(cli) => panic!("{line:?} should not parse: {cli:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn usage_errors_give_clap_first_line_without_prefix() {
        let unknown = clap_error(&["rangefetch", "get", "http://h/f", "--no-such-flag"]);
        let message = clap_message(&unknown);
        assert!(message.contains("--no-such-flag"), "{message}");
        assert!(!message.starts_with("error"), "{message}");
        assert!(
            !message.contains('\n') && !message.contains('\u{1b}'),
            "{message:?}"
        );
        let bad_hash = clap_error(&["rangefetch", "get", "http://h/f", "--sha256", "xyz"]);
        assert!(clap_message(&bad_hash).contains("--sha256"));
        assert!(bad_hash.use_stderr());
    }

    #[test]
    fn refused_input_is_a_usage_error_and_other_read_errors_are_io() {
        let refused = io::Error::new(io::ErrorKind::InvalidInput, "an endless device");
        let failure = local_input(Path::new("/dev/zero"), refused);
        assert_eq!((failure.code, failure.class()), (USAGE, "input"));
        assert_eq!(
            failure.message(),
            "cannot hash /dev/zero: an endless device"
        );
        let missing = io::Error::new(io::ErrorKind::NotFound, "no such file");
        let failure = local_input(Path::new("absent"), missing);
        assert_eq!((failure.code, failure.class()), (IO, "io"));
    }

    #[test]
    fn the_interrupt_hint_says_what_a_rerun_reuses() {
        let part = Path::new("img.bin.part");
        assert!(
            interrupted_hint(part, true, true).contains("run the same command again to resume")
        );
        let single_stream = interrupted_hint(part, false, true);
        assert!(
            single_stream.contains("nothing can be resumed"),
            "{single_stream}"
        );
        assert!(!single_stream.contains("to resume"), "{single_stream}");
        let nothing = interrupted_hint(part, false, false);
        assert!(nothing.contains("nothing was downloaded yet"), "{nothing}");
    }

    #[test]
    fn engine_kinds_map_to_the_contract_codes() {
        for (kind, code) in [
            (ErrorKind::ChecksumMismatch, CHECKSUM),
            (ErrorKind::Io, IO),
            (ErrorKind::InvalidInput, USAGE),
            (ErrorKind::Cancelled, INTERRUPTED),
            (ErrorKind::Network, DOWNLOAD),
            (ErrorKind::Certificate, DOWNLOAD),
            (ErrorKind::HttpStatus(404), DOWNLOAD),
        ] {
            let failure = from_core(rangefetch_core::Error::new(kind, "x"), None);
            assert_eq!(failure.code, code, "{kind:?}");
            assert_eq!(failure.class(), kind.class(), "{kind:?}");
        }
    }
}
