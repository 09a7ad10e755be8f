//! `cargo xtask`: the project's automation, written in Rust so it runs wherever
//! cargo does. Each subcommand lives in its own file; this one parses the
//! subcommand name and maps errors to exit codes.

mod bench_compare;
mod cmd;
mod demo;
mod fuzz;
mod hygiene;
mod man;
mod packages;
mod test;

use std::env;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--quick] [--no-fuzz] [--fuzz-seconds N]
        every check CI runs: system packages, fmt, clippy, tests, doc,
        bench build, tree hygiene, fuzz smoke (--quick skips doc and fuzz)
  fuzz [--seconds N] [TARGET...]
        run every (or the named) fuzz target for N seconds each (default 60)
  demo [URL [ARGS...]]
        build the release binary and download 1 GiB from a local flaky
        test server; with URL, run `rangefetch get URL ARGS...` instead
  man   write the manual page to target/man/rangefetch.1
  bench-compare [--quick] [--runs N] [--scenarios LIST] [--tools LIST] [--sizes B,M,H] [--out DIR]
        time rangefetch against aria2c, axel, wget2 and curl on loopback
        servers; writes target/bench-compare/results.md";

/// A mistake in the command line, reported with the usage text and exit code 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    match parse_args().and_then(|args| dispatch(&args)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            if err.is::<Usage>() {
                eprintln!("\n{USAGE}");
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn parse_args() -> Result<Vec<String>> {
    env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| anyhow::Error::new(Usage(format!("argument is not UTF-8: {arg:?}"))))
        })
        .collect()
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    match command.as_str() {
        "test" => test::run(rest),
        "fuzz" => fuzz::run(rest),
        "demo" => demo::run(rest),
        "bench-compare" => bench_compare::run(rest),
        "man" => man::run(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Usage(format!("unknown command `{other}`")).into()),
    }
}

/// The workspace root: every command runs from here, whatever the caller's
/// current directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest sits one directory below the workspace root")
        .to_path_buf()
}

/// Parses the value of a numeric flag such as `--seconds 20`.
pub fn parse_seconds(flag: &str, value: Option<&String>) -> Result<u64> {
    let value = value.ok_or_else(|| Usage(format!("{flag} needs a number of seconds")))?;
    let seconds: u64 = value.parse().map_err(|_| {
        Usage(format!(
            "{flag}: `{value}` is not a whole number of seconds"
        ))
    })?;
    if seconds == 0 {
        return Err(Usage(format!("{flag} must be at least 1")).into());
    }
    Ok(seconds)
}

/// Prints a step heading, so a CI log reads as a list of what ran.
pub fn heading(title: &str) {
    eprintln!("\n==> {title}");
}

/// cargo's target directory, honouring CARGO_TARGET_DIR.
pub fn target_dir(root: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    // cargo resolves a relative CARGO_TARGET_DIR against the directory it was
    // started in, which is the caller's current directory.
    if target.is_relative() {
        std::env::current_dir()
            .map(|cwd| cwd.join(&target))
            .unwrap_or(target)
    } else {
        target
    }
}
