//! `Cmd`: one external command, echoed before it runs and failing loudly.
//!
//! Every step goes through here so the log shows exactly what ran (a reader
//! can paste it into a shell) and the first failure stops the task.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

/// A command line with its environment and working directory.
pub struct Cmd {
    /// What the echo shows: `cargo` rather than the full path in `$CARGO`.
    shown_program: String,
    program: OsString,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    dir: Option<PathBuf>,
    quiet_stdin: bool,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            shown_program: program.to_owned(),
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
            quiet_stdin: false,
        }
    }

    /// The cargo that runs this xtask (`$CARGO`), so a pinned toolchain stays pinned.
    pub fn cargo() -> Cmd {
        let mut cmd = Cmd::new("cargo");
        if let Some(cargo) = std::env::var_os("CARGO") {
            cmd.program = cargo;
        }
        cmd
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Cmd {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn dir(mut self, dir: &Path) -> Cmd {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Reads stdin from /dev/null, so the command can never stop at a prompt.
    pub fn no_stdin(mut self) -> Cmd {
        self.quiet_stdin = true;
        self
    }

    /// Runs with inherited stdio; fails unless it exits 0.
    pub fn run(&self) -> Result<()> {
        let status = self.status()?;
        if !status.success() {
            bail!("`{self}` failed ({})", describe(status));
        }
        Ok(())
    }

    /// Runs with inherited stdio and returns how it ended, success or not.
    pub fn status(&self) -> Result<ExitStatus> {
        self.echo();
        self.command()
            .status()
            .with_context(|| format!("cannot start `{}`", self.shown_program))
    }

    /// Runs with stdout captured (stderr still shown); fails unless it exits 0.
    pub fn read_stdout(&self) -> Result<String> {
        self.echo();
        let output = self
            .command()
            .stdout(Stdio::piped())
            .output()
            .with_context(|| format!("cannot start `{}`", self.shown_program))?;
        if !output.status.success() {
            bail!("`{self}` failed ({})", describe(output.status));
        }
        String::from_utf8(output.stdout).with_context(|| format!("`{self}` printed non-UTF-8"))
    }

    /// Runs silently and reports only whether it succeeded: for probes like
    /// `cargo nextest --version`, whose failure just means "not installed".
    pub fn probe(&self) -> bool {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// A `std::process::Command` for callers that need to manage the child
    /// themselves (the demo's server); echoes it like the others.
    pub fn spawnable(&self) -> Command {
        self.echo();
        self.command()
    }

    fn echo(&self) {
        eprintln!("$ {self}");
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command.envs(self.envs.iter().map(|(key, value)| (key, value)));
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        if self.quiet_stdin {
            command.stdin(Stdio::null());
        }
        command
    }
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(dir) = &self.dir {
            write!(f, "(cd {} && ", quote(&dir.display().to_string()))?;
        }
        for (key, value) in &self.envs {
            write!(f, "{key}={} ", quote(value))?;
        }
        f.write_str(&self.shown_program)?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        if self.dir.is_some() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// "exit code 3" or "killed by signal 9", for failure messages.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Quotes a word for the echo only when a shell would need it.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Finds an executable on PATH or in the sbin directories, which a non-root
/// PATH often lacks (Debian's nginx lives in /usr/sbin).
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let sbin_dirs = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(sbin_dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_quotes_only_what_a_shell_needs() {
        let cmd =
            Cmd::new("cargo")
                .env("RUSTDOCFLAGS", "-D warnings")
                .args(["doc", "--no-deps", "it's"]);
        assert_eq!(
            cmd.to_string(),
            r"RUSTDOCFLAGS='-D warnings' cargo doc --no-deps 'it'\''s'"
        );
    }

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-rangefetch").is_none());
    }
}
