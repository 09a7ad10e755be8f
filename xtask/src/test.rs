//! `cargo xtask test`: every check CI runs, in order, stopping at the first
//! failure. `.ci/run` calls exactly this.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cmd::Cmd;
use crate::{Usage, fuzz, heading, hygiene, packages, parse_seconds, project_root};

const DEFAULT_FUZZ_SECONDS: u64 = 20;

/// One check; boxed so the list can be built from the options, then run in order.
type Step<'a> = Box<dyn Fn() -> Result<()> + 'a>;

#[derive(Debug)]
struct Options {
    fuzz: bool,
    doc: bool,
    fuzz_seconds: u64,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        fuzz: true,
        doc: true,
        fuzz_seconds: DEFAULT_FUZZ_SECONDS,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-fuzz" => options.fuzz = false,
            "--quick" => {
                options.fuzz = false;
                options.doc = false;
            }
            "--fuzz-seconds" => {
                options.fuzz_seconds = parse_seconds("--fuzz-seconds", args.next())?
            }
            other => return Err(Usage(format!("test: unknown option `{other}`")).into()),
        }
    }
    Ok(options)
}

/// `cargo xtask test [--quick] [--no-fuzz] [--fuzz-seconds N]`
pub fn run(args: &[String]) -> Result<ExitCode> {
    let options = parse(args)?;
    let root = project_root();
    let fuzz_dir = if options.fuzz {
        fuzz::fuzz_dir(&root)
    } else {
        None
    };

    let mut steps: Vec<(&str, Step)> = Vec::new();
    let mut skipped = Vec::new();
    steps.push((
        "system packages and toolchain",
        Box::new(|| ensure_tools(fuzz_dir.is_some())),
    ));
    steps.push((
        "format",
        Box::new(|| {
            Cmd::cargo()
                .dir(&root)
                .args(["fmt", "--all", "--check"])
                .run()
        }),
    ));
    steps.push((
        "clippy",
        Box::new(|| {
            Cmd::cargo()
                .dir(&root)
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ])
                .run()
        }),
    ));
    steps.push(("tests", Box::new(|| run_tests(&root))));
    if options.doc {
        steps.push((
            "doc",
            Box::new(|| {
                Cmd::cargo()
                    .dir(&root)
                    .env("RUSTDOCFLAGS", "-D warnings")
                    .args(["doc", "--workspace", "--no-deps", "--locked"])
                    .run()
            }),
        ));
    } else {
        skipped.push("doc");
    }
    steps.push((
        "benches compile",
        Box::new(|| {
            Cmd::cargo()
                .dir(&root)
                .args(["build", "--benches", "--locked"])
                .run()
        }),
    ));
    steps.push(("tree hygiene", Box::new(|| hygiene::check(&root))));
    match &fuzz_dir {
        Some(fuzz_dir) => steps.push((
            "fuzz smoke",
            Box::new(|| {
                fuzz::run_targets(fuzz_dir, options.fuzz_seconds, &[], fuzz::Progress::Quiet)
            }),
        )),
        None if options.fuzz => skipped.push("fuzz smoke (there is no fuzz/Cargo.toml)"),
        None => skipped.push("fuzz smoke"),
    }
    if !skipped.is_empty() {
        eprintln!("skipping: {}", skipped.join("; "));
    }

    let started = Instant::now();
    let n_steps = steps.len();
    let mut timings = Vec::new();
    for (step_idx, (title, step)) in steps.iter().enumerate() {
        heading(&format!("[{}/{n_steps}] {title}", step_idx + 1));
        let step_started = Instant::now();
        step().with_context(|| format!("step `{title}` failed"))?;
        timings.push((*title, step_started.elapsed()));
    }

    heading(&format!(
        "all {n_steps} steps passed in {}",
        minutes(started.elapsed())
    ));
    for (title, elapsed) in &timings {
        eprintln!("    {:>8}  {title}", minutes(*elapsed));
    }
    if !skipped.is_empty() {
        eprintln!("    skipped: {}", skipped.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

fn ensure_tools(fuzzing: bool) -> Result<()> {
    let mut requirements: Vec<_> = packages::FOR_TESTS.iter().collect();
    if fuzzing {
        requirements.extend(packages::FOR_FUZZ);
    }
    packages::ensure(&requirements)?;
    packages::ensure_rust_components()
}

/// cargo-nextest when installed (faster, clearer failure output), else
/// `cargo test`. nextest does not run doctests, so those run separately.
fn run_tests(root: &Path) -> Result<()> {
    // The examples are run by crates/core/tests/examples.rs; build them
    // first whatever the runner does by default.
    Cmd::cargo()
        .dir(root)
        .args(["build", "--workspace", "--examples", "--locked"])
        .run()?;
    if Cmd::cargo().args(["nextest", "--version"]).probe() {
        Cmd::cargo()
            .dir(root)
            .args(["nextest", "run", "--workspace", "--locked"])
            .run()?;
        Cmd::cargo()
            .dir(root)
            .args(["test", "--workspace", "--doc", "--locked"])
            .run()
    } else {
        eprintln!("(cargo-nextest is not installed: using cargo test)");
        Cmd::cargo()
            .dir(root)
            .args(["test", "--workspace", "--locked"])
            .run()
    }
}

fn minutes(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    format!("{}m{:02}s", seconds / 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn quick_skips_doc_and_fuzz() {
        let options = parse(&words(&["--quick"])).expect("valid flags");
        assert!(!options.doc && !options.fuzz);
    }

    #[test]
    fn defaults_run_everything() {
        let options = parse(&[]).expect("no flags");
        assert!(options.doc && options.fuzz);
        assert_eq!(options.fuzz_seconds, DEFAULT_FUZZ_SECONDS);
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let err = parse(&words(&["--fast"])).expect_err("unknown flag");
        assert!(err.is::<Usage>());
    }

    #[test]
    fn zero_fuzz_seconds_is_rejected() {
        let err = parse(&words(&["--fuzz-seconds", "0"])).expect_err("zero seconds");
        assert!(err.is::<Usage>());
    }
}
