//! `cargo xtask man`: writes the manual page, `target/man/rangefetch.1`,
//! rendered by the binary itself (clap_mangen) so it always matches the
//! flags.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;
use crate::project_root;

pub fn run(args: &[String]) -> Result<ExitCode> {
    if let Some(extra) = args.first() {
        bail!(crate::Usage(format!(
            "man takes no arguments, got `{extra}`"
        )));
    }
    let root = project_root();
    Cmd::cargo()
        .dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "rangefetch",
            "--bin",
            "rangefetch",
        ])
        .run()?;
    let binary = crate::target_dir(&root).join("release/rangefetch");
    let output = std::process::Command::new(&binary)
        .arg("man")
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "{} man failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dir = crate::target_dir(&root).join("man");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let page = dir.join("rangefetch.1");
    std::fs::write(&page, &output.stdout)
        .with_context(|| format!("cannot write {}", page.display()))?;
    println!(
        "wrote {} (view it with `man {}`)",
        page.display(),
        page.display()
    );
    Ok(ExitCode::SUCCESS)
}
