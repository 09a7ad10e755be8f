//! `cargo xtask fuzz`: runs every (or the named) cargo-fuzz target for a fixed
//! time. `cargo xtask test` uses the same helper for its short fuzz smoke.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cmd::Cmd;
use crate::{Usage, heading, packages, parse_seconds, project_root};

/// The `-s` sanitizer for `cargo fuzz`. `none` is the safe default on the
/// stable toolchain with `RUSTC_BOOTSTRAP=1`: AddressSanitizer needs
/// `-Zsanitizer`, which needs a nightly-capable std and is not needed to find
/// panics in safe parsers. Revisit if fuzz/README.md says otherwise.
pub const FUZZ_SANITIZER: &str = "none";

const DEFAULT_SECONDS: u64 = 60;

/// How much of libFuzzer's progress to show.
#[derive(Clone, Copy)]
pub enum Progress {
    /// Every new-coverage line: for watching a long run.
    Full,
    /// Only warnings and crashes (`-verbosity=0`), so CI logs stay readable.
    Quiet,
}

/// `cargo xtask fuzz [--seconds N] [TARGET...]`
pub fn run(args: &[String]) -> Result<ExitCode> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = parse_seconds("--seconds", args.next())?,
            flag if flag.starts_with('-') => {
                return Err(Usage(format!("fuzz: unknown option `{flag}`")).into());
            }
            target => targets.push(target.to_owned()),
        }
    }
    let root = project_root();
    let Some(fuzz_dir) = fuzz_dir(&root) else {
        bail!(
            "no fuzz project: {} does not exist",
            root.join("fuzz/Cargo.toml").display()
        );
    };
    let requirements: Vec<_> = packages::FOR_FUZZ.iter().collect();
    packages::ensure(&requirements)?;
    run_targets(&fuzz_dir, seconds, &targets, Progress::Full)?;
    Ok(ExitCode::SUCCESS)
}

/// The cargo-fuzz project directory, if the repository has one.
pub fn fuzz_dir(root: &Path) -> Option<PathBuf> {
    let dir = root.join("fuzz");
    dir.join("Cargo.toml").is_file().then_some(dir)
}

/// Builds all fuzz targets, then runs each of `only` (all when empty) for
/// `seconds`. Any crash fails the run; libFuzzer saves its input under
/// fuzz/artifacts/ for `cargo fuzz run TARGET ARTIFACT` to replay.
pub fn run_targets(
    fuzz_dir: &Path,
    seconds: u64,
    only: &[String],
    progress: Progress,
) -> Result<()> {
    ensure_cargo_fuzz()?;
    let all_targets = list_targets(fuzz_dir)?;
    let unknown: Vec<&str> = only
        .iter()
        .filter(|target| !all_targets.contains(target))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        bail!(
            "no such fuzz target(s): {}; the targets are: {}",
            unknown.join(", "),
            all_targets.join(", ")
        );
    }
    let targets = if only.is_empty() {
        &all_targets[..]
    } else {
        only
    };
    if targets.is_empty() {
        bail!(
            "`cargo fuzz list` found no fuzz targets in {}",
            fuzz_dir.display()
        );
    }

    // One build of every target first: a compile error shows up before any
    // fuzzing time is spent, and the runs below reuse its artifacts.
    cargo_fuzz(fuzz_dir, "build").run()?;
    for (target_idx, target) in targets.iter().enumerate() {
        heading(&format!(
            "fuzz {target} for {seconds} s ({}/{})",
            target_idx + 1,
            targets.len()
        ));
        let mut libfuzzer_args = vec![format!("-max_total_time={seconds}")];
        if let Progress::Quiet = progress {
            libfuzzer_args.push("-verbosity=0".to_owned());
        }
        cargo_fuzz(fuzz_dir, "run")
            .arg(target.as_str())
            .arg("--")
            .args(libfuzzer_args)
            .run()?;
        eprintln!("fuzz {target}: no crash in {seconds} s");
    }
    Ok(())
}

/// `cargo fuzz <subcommand>` with the flags every build and run share, so
/// that `run` reuses what `build` compiled.
fn cargo_fuzz(fuzz_dir: &Path, subcommand: &str) -> Cmd {
    Cmd::cargo()
        .env("RUSTC_BOOTSTRAP", "1")
        .dir(fuzz_dir)
        .args(["fuzz", subcommand, "-s", FUZZ_SANITIZER])
        // Overflow checks catch the classic parser bug (an offset or length
        // that wraps) as a crash rather than a silently wrong value.
        .arg("--debug-assertions")
}

fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let listed = Cmd::cargo()
        .env("RUSTC_BOOTSTRAP", "1")
        .dir(fuzz_dir)
        .args(["fuzz", "list"])
        .read_stdout()?;
    Ok(listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn ensure_cargo_fuzz() -> Result<()> {
    if Cmd::cargo().args(["fuzz", "--version"]).probe() {
        return Ok(());
    }
    eprintln!("cargo-fuzz is not installed; installing it (a few minutes)");
    Cmd::cargo()
        .args(["install", "cargo-fuzz", "--locked"])
        .no_stdin()
        .run()
}
