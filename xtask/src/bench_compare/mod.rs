//! `cargo xtask bench-compare`: times rangefetch against aria2c, axel, wget2
//! and `curl | tee | sha256sum` on download + verify, on loopback servers it
//! starts itself (nginx unthrottled and with `limit_rate`, a flaky server,
//! the test server), and writes the medians, CPU, peak RSS, bytes served
//! (by the server's count) and ratios to `results.md` for the README's
//! performance section.
//!
//! The method is that of the reference harness the baseline was measured
//! with: every run downloads into a clean directory and verifies the hash,
//! tools alternate round by round, one warm-up round is not counted, and
//! the machine's other CPU use is recorded to flag contention.

mod data;
mod limits;
mod machine;
mod measure;
mod options;
mod report;
mod scenario;
mod served;
mod server;
mod size;
mod tool;
mod toolbox;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use self::data::DataFile;
use self::measure::Runner;
use self::options::{Request, Scenario, USAGE};
use self::report::Check;
use self::scenario::{Context, issue_sizes};
use self::server::Nginx;
use self::size::format_size;
use self::toolbox::Toolbox;
use crate::cmd::Cmd;
use crate::{heading, project_root};

/// `cargo xtask bench-compare [options]`
pub fn run(args: &[String]) -> Result<ExitCode> {
    let options = match options::parse(args)? {
        Request::Help => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Request::Bench(options) => options,
    };
    let root = project_root();
    let target = target_dir(&root);
    let out = match &options.out {
        Some(dir) => absolute(dir),
        None => target.join("bench-compare"),
    };
    let wants = |scenario: Scenario| options.scenarios.contains(&scenario);
    let needs_nginx = [
        Scenario::Fast,
        Scenario::Slow,
        Scenario::Small,
        Scenario::Mirrors,
        Scenario::Tmpfs,
        Scenario::Disk,
        Scenario::Rss,
        Scenario::Sweep,
    ]
    .into_iter()
    .any(wants);

    heading("tools");
    let toolbox = Toolbox::prepare(&options.tools, needs_nginx, options.install);
    for note in &toolbox.notes {
        eprintln!("note: {note}");
    }

    heading("build the release binaries");
    Cmd::cargo()
        .dir(&root)
        .args(["build", "--release"])
        .args(["-p", "rangefetch", "--bin", "rangefetch"])
        .args([
            "-p",
            "rangefetch-testserver",
            "--bin",
            "rangefetch-testserver",
        ])
        .run()?;
    let release = target.join("release");
    let rangefetch = release.join("rangefetch");
    let testserver = release.join("rangefetch-testserver");

    let data_dir = out.join("data");
    let log_dir = out.join("logs");
    let scratch_dir = out.join("scratch");
    // Logs describe this run only; the data is kept for the next one.
    let _ = fs::remove_dir_all(&log_dir);
    for dir in [&data_dir, &log_dir, &scratch_dir] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    heading("test data");
    let needs_big = [
        Scenario::Fast,
        Scenario::Sweep,
        Scenario::Tmpfs,
        Scenario::Disk,
    ]
    .into_iter()
    .any(wants);
    let needs_mid = needs_nginx || wants(Scenario::Flaky);
    let big = needs_big
        .then(|| DataFile::ensure(&data_dir, options.sizes.big, &rangefetch))
        .transpose()?;
    let mid = needs_mid
        .then(|| DataFile::ensure(&data_dir, options.sizes.mid, &rangefetch))
        .transpose()?;
    for file in big.iter().chain(&mid) {
        eprintln!("{}: sha256 {}", file.path.display(), file.sha256);
    }

    let nginx = match (&toolbox.nginx, mid.as_ref().or(big.as_ref())) {
        (Some(program), Some(probe)) => {
            heading("nginx");
            Some(Nginx::start(program, &data_dir, &out.join("nginx"), probe)?)
        }
        _ => None,
    };

    // Read against the disk: rangefetch alone flushes the file before it
    // publishes it, so no download of it can beat this.
    let disk_rate = if wants(Scenario::Fast) || wants(Scenario::Slow) {
        heading("disk: durable write rate");
        let rate = limits::durable_write_rate(&out.join("scratch"), options.sizes.mid)?;
        eprintln!("{:.0} MB/s written and flushed", rate / 1e6);
        Some(rate)
    } else {
        None
    };

    let runner = Runner {
        time_program: toolbox.time.clone(),
        rangefetch: rangefetch.clone(),
        download_dir: out.join("download"),
        scratch_dir,
        quiet_wait: options.quiet_wait,
    };
    let csv_path = out.join("runs.csv");
    let mut csv =
        File::create(&csv_path).with_context(|| format!("cannot create {}", csv_path.display()))?;
    writeln!(
        csv,
        "scenario,job,round,counted,ok,wall_s,cpu_s,peak_rss_mib,other_cpu_s,\
         last_byte_to_verified_s,retries,file_bytes,served_bytes,served_ratio,requests,failure"
    )?;
    let mut context = Context {
        options: &options,
        tools: &toolbox.tools,
        runner: &runner,
        rangefetch: &rangefetch,
        testserver: &testserver,
        log_dir: &log_dir,
        csv: &mut csv,
        nginx: nginx.as_ref(),
        big: big.as_ref(),
        mid: mid.as_ref(),
        data_dir: &data_dir,
        disk_rate,
    };
    let mut sections = Vec::new();
    for scenario in &options.scenarios {
        heading(&format!("scenario {}", scenario.name()));
        sections.push(context.run(*scenario)?);
    }
    drop(nginx);
    let _ = fs::remove_dir_all(&runner.download_dir);

    let mut programs: Vec<&str> = toolbox
        .tools
        .iter()
        .filter_map(|tool| tool.programs().first().copied())
        .collect();
    programs.push("sha256sum");
    if toolbox.nginx.is_some() {
        programs.push("nginx");
    }
    let mut text = String::from("# rangefetch bench-compare\n\n");
    for line in machine::describe(&root, &out, &rangefetch, &programs) {
        let _ = writeln!(text, "{line}");
    }
    let sizes = options.sizes;
    let _ = writeln!(
        text,
        "- sizes: BIG {}, MID {}, HUGE {}{}",
        format_size(sizes.big),
        format_size(sizes.mid),
        format_size(sizes.huge),
        if issue_sizes(sizes) {
            ""
        } else {
            " (not the issue's 2GiB, 512MiB, 4GiB: the targets are indicative only)"
        }
    );
    let _ = writeln!(
        text,
        "- method: {} counted run(s) per tool after {} warm-up, tools alternating round by round; \
         each run downloads into a clean directory and verifies the SHA-256. Wall = spawn to exit \
         of the whole command (hash check included); CPU = user + system of all its processes; \
         peak RSS = its largest single process (GNU time `%M`); other CPU = the machine's busy \
         time during the run minus the command's and the server's (a few tenths are loopback \
         softirq; about 1 s per wall second means a busy machine). MB = 10^6 bytes. \
         `÷ rangefetch` = the tool's median wall ÷ rangefetch's. Served ÷ size = body bytes \
         the server counted for the run (nginx: `$body_bytes_sent` summed over the run's \
         access-log lines, read once every connection closed; rangefetch-testserver: its own \
         counter of bytes written to sockets) ÷ the file's size, median (max) of the counted \
         runs; requests = the server's request count, HEAD and probes included.",
        options.runs, options.warmup
    );
    for note in &toolbox.notes {
        let _ = writeln!(text, "- note: {note}");
    }
    let mut checks: Vec<Check> = Vec::new();
    let mut rangefetch_failures = 0;
    for section in sections {
        let _ = write!(text, "\n{}", section.text);
        checks.extend(section.checks);
        rangefetch_failures += section.rangefetch_failures;
    }
    if !checks.is_empty() {
        text.push_str("\n## targets (issues 5, 13 and 19)\n\n");
        text.push_str(&Check::render(&checks));
    }

    let results = out.join("results.md");
    fs::write(&results, &text).with_context(|| format!("cannot write {}", results.display()))?;
    println!("{text}");
    eprintln!(
        "results: {}; every run: {}; tool output: {}",
        results.display(),
        csv_path.display(),
        log_dir.display()
    );
    if rangefetch_failures > 0 {
        eprintln!("bench-compare: {rangefetch_failures} rangefetch run(s) failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// cargo's target directory, honouring CARGO_TARGET_DIR (relative to the
/// caller's current directory, as cargo resolves it).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| absolute(Path::new(&dir)))
        .unwrap_or_else(|| root.join("target"))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}
