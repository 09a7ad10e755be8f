//! `cargo xtask bench-compare`: will time rangefetch against other download
//! tools on the same server and write the README's Performance figures.

use std::process::ExitCode;

use anyhow::Result;

/// Not written yet; exits 2 so that no script mistakes it for a result.
pub fn run(_args: &[String]) -> Result<ExitCode> {
    eprintln!("bench-compare: not yet implemented: see issue 5");
    Ok(ExitCode::from(2))
}
