//! The download tools compared and the exact command line of one timed run:
//! download to a file *and* verify its SHA-256, the way each tool is
//! normally used for that (the tool's own check where it has one, else
//! `sha256sum` afterwards or beside the transfer).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::server::Source;

/// A tool under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Rangefetch,
    Curl,
    Aria2c,
    Axel,
    Wget2,
}

impl Tool {
    pub const ALL: [Tool; 5] = [
        Tool::Rangefetch,
        Tool::Curl,
        Tool::Aria2c,
        Tool::Axel,
        Tool::Wget2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Rangefetch => "rangefetch",
            Tool::Curl => "curl",
            Tool::Aria2c => "aria2c",
            Tool::Axel => "axel",
            Tool::Wget2 => "wget2",
        }
    }

    pub fn parse(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|tool| tool.name() == name)
    }

    /// The programs a run needs on PATH (rangefetch is built, not installed).
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Tool::Rangefetch => &[],
            Tool::Curl => &["curl", "tee", "sha256sum", "bash"],
            Tool::Aria2c => &["aria2c"],
            Tool::Axel => &["axel", "sha256sum", "bash"],
            Tool::Wget2 => &["wget2", "sha256sum", "bash"],
        }
    }

    /// Whether the tool takes several URLs of one file as mirrors.
    pub fn takes_mirrors(self) -> bool {
        matches!(self, Tool::Rangefetch | Tool::Aria2c | Tool::Axel)
    }

    /// The Debian package that provides the tool.
    pub fn package(self) -> Option<&'static str> {
        match self {
            Tool::Rangefetch => None,
            Tool::Curl => Some("curl"),
            Tool::Aria2c => Some("aria2"),
            Tool::Axel => Some("axel"),
            Tool::Wget2 => Some("wget2"),
        }
    }
}

/// How a scenario wants the tools run.
#[derive(Clone, Debug, Default)]
pub struct Variant {
    /// Flags for rangefetch beyond URL, hash and output (`-c 16`,
    /// `--chunk-size 8MiB`); everything else stays at its default.
    pub rangefetch_flags: Vec<String>,
    /// JSON events from rangefetch instead of `-q`: they carry the time of the
    /// last byte and the retry count.
    pub rangefetch_json: bool,
    /// The link drops connections: curl runs in a resume loop, as anyone
    /// would script it, since `curl --retry` cannot get through (BASELINE.md).
    pub flaky: bool,
}

/// How a run's result is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// The tool compares the hash itself and fails on a mismatch; the file
    /// is hashed again outside the timed run, to be sure.
    ByTool,
    /// `sha256sum` prints the digest on stdout; it must equal the expected one.
    Stdout,
    /// A reference command that verifies nothing (a disk floor): its exit status only.
    ExitStatus,
}

/// One timed command: what runs, where the file lands, how it is checked.
#[derive(Clone, Debug)]
pub struct Job {
    /// The table row: the tool's name, or a variant such as `-c 4 --chunk-size 8MiB`.
    pub label: String,
    /// `None` for a reference command that is no download tool (`dd`).
    pub tool: Option<Tool>,
    pub program: String,
    pub args: Vec<String>,
    /// The command with `$URL`, `$HEX` and `$OUT` in place of the values, for the report.
    pub shown: String,
    pub output: PathBuf,
    pub verify: Verify,
    /// Whether stdout carries rangefetch's JSON events.
    pub json_events: bool,
    pub timeout: Duration,
    pub source: Source,
}

/// The tools' connection count wherever they take one: the figure the
/// reference baseline used, and rangefetch's `-c` in the slow scenario.
pub const CONNECTIONS: u16 = 16;

/// Builds the command of `tool` fetching `source` into `download_dir`.
pub fn job(
    tool: Tool,
    variant: &Variant,
    source: &Source,
    download_dir: &Path,
    rangefetch: &Path,
    timeout: Duration,
) -> Job {
    let output = download_dir.join(&source.file_name);
    let out = output.display().to_string();
    let url = source.url.clone();
    let hex = source.sha256.clone();
    let n = CONNECTIONS.to_string();
    // Shell lines take the URL and output as "$1" and "$2", so no quoting is needed.
    let shell = |script: &str| -> (String, Vec<String>) {
        let args = ["-c", script, "bash", &url, &out]
            .map(str::to_owned)
            .to_vec();
        ("bash".to_owned(), args)
    };
    let shown_shell = |script: &str| script.replace("\"$1\"", "$URL").replace("\"$2\"", "$OUT");
    // Mirrors follow the first URL; shown as $MIRROR, $MIRROR2, …
    let mirrors = &source.mirror_urls;
    let shown_mirrors: String = (0..mirrors.len())
        .map(|index| match index {
            0 => " $MIRROR".to_owned(),
            _ => format!(" $MIRROR{}", index + 1),
        })
        .collect();

    let (program, args, shown, verify) = match tool {
        Tool::Rangefetch => {
            let mut args = vec!["get".to_owned(), url.clone()];
            args.extend(mirrors.iter().cloned());
            args.extend([
                "--sha256".to_owned(),
                hex.clone(),
                "-o".to_owned(),
                out.clone(),
            ]);
            args.extend(variant.rangefetch_flags.iter().cloned());
            let quiet = if variant.rangefetch_json {
                "--json"
            } else {
                "-q"
            };
            args.push(quiet.to_owned());
            let mut shown = format!("rangefetch get $URL{shown_mirrors} --sha256 $HEX -o $OUT");
            for flag in &variant.rangefetch_flags {
                shown.push(' ');
                shown.push_str(flag);
            }
            shown.push(' ');
            shown.push_str(quiet);
            (
                rangefetch.display().to_string(),
                args,
                shown,
                Verify::ByTool,
            )
        }
        Tool::Curl if variant.flaky => {
            // Each try resumes where the file ends; a try that completes the
            // file exits 0 and the loop hands over to sha256sum.
            let script = r#"for try in $(seq 1 500); do curl -sS --fail -C - -o "$2" "$1" && exec sha256sum "$2"; done; exit 1"#;
            let (program, args) = shell(script);
            (program, args, shown_shell(script), Verify::Stdout)
        }
        Tool::Curl => {
            let script = r#"set -o pipefail; curl -sS --fail "$1" | tee "$2" | sha256sum"#;
            let (program, args) = shell(script);
            (program, args, shown_shell(script), Verify::Stdout)
        }
        Tool::Aria2c => {
            let directory = download_dir.display().to_string();
            let mut args = vec![
                "-q".to_owned(),
                format!("-x{n}"),
                format!("-s{n}"),
                "-k4M".to_owned(),
                "--file-allocation=none".to_owned(),
                format!("--checksum=sha-256={hex}"),
                "-d".to_owned(),
                directory,
                "-o".to_owned(),
                source.file_name.clone(),
                "--allow-overwrite=true".to_owned(),
                "--auto-file-renaming=false".to_owned(),
                "--summary-interval=0".to_owned(),
                url.clone(),
            ];
            args.extend(mirrors.iter().cloned());
            let shown = format!(
                "aria2c -q -x{n} -s{n} -k4M --file-allocation=none --checksum=sha-256=$HEX \
                 -d $(dirname $OUT) -o $(basename $OUT) --allow-overwrite=true \
                 --auto-file-renaming=false --summary-interval=0 $URL{shown_mirrors}"
            );
            ("aria2c".to_owned(), args, shown, Verify::ByTool)
        }
        Tool::Axel => {
            // Mirrors come after the output as "$3", "$4", …
            let mirror_args: String = (0..mirrors.len())
                .map(|index| format!(r#" "${}""#, index + 3))
                .collect();
            let script = format!(r#"axel -q -n {n} -o "$2" "$1"{mirror_args} && sha256sum "$2""#);
            let (program, mut args) = shell(&script);
            args.extend(mirrors.iter().cloned());
            let mut shown = shown_shell(&script);
            for index in 0..mirrors.len() {
                let name = shown_mirrors
                    .split_whitespace()
                    .nth(index)
                    .unwrap_or("$MIRROR");
                shown = shown.replace(&format!(r#""${}""#, index + 3), name);
            }
            (program, args, shown, Verify::Stdout)
        }
        Tool::Wget2 => {
            let script = format!(
                r#"wget2 -q --max-threads={n} --chunk-size=16M -O "$2" "$1" && sha256sum "$2""#
            );
            let (program, args) = shell(&script);
            (program, args, shown_shell(&script), Verify::Stdout)
        }
    };
    Job {
        label: row_label(tool, variant).to_owned(),
        tool: Some(tool),
        program,
        args,
        shown,
        output,
        verify,
        json_events: tool == Tool::Rangefetch && variant.rangefetch_json,
        timeout,
        source: source.clone(),
    }
}

/// A command timed beside the tools: `rangefetch hash` of a file, or a `dd`
/// floor; `argv` is the program and its arguments; `source` says what it
/// reads (its server, if any, is not counted).
pub fn command_job(
    label: &str,
    tool: Option<Tool>,
    mut argv: Vec<String>,
    shown: &str,
    verify: Verify,
    source: &Source,
    timeout: Duration,
) -> Job {
    let mut source = source.clone();
    source.counter = None;
    let program = if argv.is_empty() {
        String::new()
    } else {
        argv.remove(0)
    };
    Job {
        label: label.to_owned(),
        tool,
        program,
        args: argv,
        shown: shown.to_owned(),
        output: PathBuf::new(),
        verify,
        json_events: false,
        timeout,
        source,
    }
}

/// The table row of a tool: its name and how it verifies.
fn row_label(tool: Tool, variant: &Variant) -> &'static str {
    match tool {
        Tool::Rangefetch => "rangefetch",
        Tool::Curl if variant.flaky => "curl -C - loop + sha256sum",
        Tool::Curl => "curl | tee | sha256sum",
        Tool::Aria2c => "aria2c --checksum",
        Tool::Axel => "axel + sha256sum",
        Tool::Wget2 => "wget2 + sha256sum",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            url: "http://127.0.0.1:1/f.bin".to_owned(),
            file_name: "f.bin".to_owned(),
            size: 10,
            sha256: "ab".repeat(32),
            server_pids: Vec::new(),
            mirror_urls: Vec::new(),
            counter: None,
        }
    }

    #[test]
    fn shell_lines_take_url_and_output_as_arguments() {
        let job = job(
            Tool::Axel,
            &Variant::default(),
            &source(),
            Path::new("/d"),
            Path::new("/bin/rangefetch"),
            Duration::from_secs(1),
        );
        assert_eq!(job.program, "bash");
        assert_eq!(
            job.args[2..],
            ["bash", "http://127.0.0.1:1/f.bin", "/d/f.bin"]
        );
        assert_eq!(job.shown, "axel -q -n 16 -o $OUT $URL && sha256sum $OUT");
        assert_eq!(job.verify, Verify::Stdout);
    }

    #[test]
    fn rangefetch_keeps_default_flags_unless_asked() {
        let variant = Variant {
            rangefetch_flags: vec!["-c".to_owned(), "16".to_owned()],
            rangefetch_json: true,
            flaky: false,
        };
        let job = job(
            Tool::Rangefetch,
            &variant,
            &source(),
            Path::new("/d"),
            Path::new("/bin/rangefetch"),
            Duration::from_secs(1),
        );
        assert_eq!(
            job.shown,
            "rangefetch get $URL --sha256 $HEX -o $OUT -c 16 --json"
        );
        assert!(job.json_events);
        assert_eq!(job.args.last().map(String::as_str), Some("--json"));
    }

    #[test]
    fn mirrors_follow_the_first_url() {
        let mut mirrored = source();
        mirrored.mirror_urls = vec!["http://127.0.0.1:2/f.bin".to_owned()];
        let make = |tool| {
            job(
                tool,
                &Variant::default(),
                &mirrored,
                Path::new("/d"),
                Path::new("/bin/rangefetch"),
                Duration::from_secs(1),
            )
        };
        let rangefetch = make(Tool::Rangefetch);
        assert_eq!(
            rangefetch.args[..3],
            [
                "get",
                "http://127.0.0.1:1/f.bin",
                "http://127.0.0.1:2/f.bin"
            ]
        );
        assert!(
            rangefetch
                .shown
                .starts_with("rangefetch get $URL $MIRROR --sha256")
        );
        let aria2c = make(Tool::Aria2c);
        assert_eq!(
            aria2c.args.last().map(String::as_str),
            Some("http://127.0.0.1:2/f.bin")
        );
        let axel = make(Tool::Axel);
        assert_eq!(
            axel.args[2..],
            [
                "bash",
                "http://127.0.0.1:1/f.bin",
                "/d/f.bin",
                "http://127.0.0.1:2/f.bin"
            ]
        );
        assert_eq!(
            axel.shown,
            "axel -q -n 16 -o $OUT $URL $MIRROR && sha256sum $OUT"
        );
    }
}
