//! The results' header: when, on what machine, with which versions, so a
//! table in the README can say where its numbers came from.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// `- key: value` lines describing the date, machine, tree and tool versions.
pub fn describe(root: &Path, out: &Path, rangefetch: &Path, programs: &[&str]) -> Vec<String> {
    let mut lines = Vec::new();
    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    lines.push(format!("- date: {date}"));
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("flags")?.split_once(':'))
        .map(|(_, flags)| {
            flags
                .split_whitespace()
                .filter(|flag| ["sha_ni", "avx2", "avx512f", "aes"].contains(flag))
                .collect()
        })
        .unwrap_or_default();
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| {
            let kib: u64 = meminfo
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB RAM", kib as f64 / f64::from(1 << 20)))
        })
        .unwrap_or_default();
    lines.push(format!(
        "- machine: {cores} cores (nproc), {model} ({}), {memory}",
        flags.join(" ")
    ));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|release| {
            release
                .lines()
                .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                .map(|name| name.trim_matches('"').to_owned())
        })
        .unwrap_or_default();
    lines.push(format!("- system: {os}, kernel {}", kernel.trim()));
    // findmnt names ext4 as such; `stat -f` reports every ext as ext2/ext3.
    let out_arg = out.display().to_string();
    let filesystem = first_line("findmnt", &["-n", "-o", "FSTYPE", "-T", &out_arg])
        .or_else(|| first_line("stat", &["-f", "-c", "%T", &out_arg]))
        .unwrap_or_else(|| "?".to_owned());
    lines.push(format!(
        "- out dir: {} ({filesystem}); rangefetch flushes each file to the disk (`fsync`) \
         before it publishes it, the other tools leave theirs in the page cache",
        out.display()
    ));
    let root_arg = root.display().to_string();
    let commit = first_line("git", &["-C", &root_arg, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["-C", &root_arg, "status", "--porcelain"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| !output.stdout.is_empty());
    let rangefetch_version = first_line(&rangefetch.display().to_string(), &["--version"]);
    lines.push(format!(
        "- rangefetch: {} (commit {}{})",
        rangefetch_version.unwrap_or_default(),
        commit.unwrap_or_else(|| "?".to_owned()),
        if dirty { ", with local changes" } else { "" }
    ));
    let versions: Vec<String> = programs
        .iter()
        .filter_map(|program| version(program))
        .collect();
    lines.push(format!("- versions: {}", versions.join("; ")));
    lines
}

/// A short version string: the first line of `--version` (or nginx's `-v`),
/// cut before any build details.
fn version(program: &str) -> Option<String> {
    let line = if program == "nginx" {
        // nginx prints `nginx version: nginx/1.22.1` on stderr.
        let output = Command::new(crate::cmd::find_program("nginx")?)
            .arg("-v")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .next()?
            .trim_start_matches("nginx version: ")
            .to_owned()
    } else {
        first_line(program, &["--version"])?
    };
    Some(short_version(&line).to_owned())
}

/// `curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/…` → `curl 7.88.1`, and
/// `GNU Wget2 1.99.1 - multithreaded …` → `GNU Wget2 1.99.1`; but
/// `sha256sum (GNU coreutils) 9.1` stays whole: its number comes last.
fn short_version(line: &str) -> &str {
    let line = line.split(" - ").next().unwrap_or(line);
    let short = match line.split_once(" (") {
        Some((name, _)) if name.split_whitespace().any(looks_like_version) => name,
        _ => line,
    };
    short.trim()
}

/// `7.88.1`, `2.17.11`: a digit first, and a dot.
fn looks_like_version(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.')
}

/// The first line a command prints on stdout, if it runs and succeeds.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .map(|line| line.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_lose_their_build_details() {
        assert_eq!(
            short_version("curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 OpenSSL/3.0.15"),
            "curl 7.88.1"
        );
        assert_eq!(
            short_version("GNU Wget2 1.99.1 - multithreaded metalink/file/website downloader"),
            "GNU Wget2 1.99.1"
        );
        assert_eq!(short_version("Axel 2.17.11 (linux-gnu)"), "Axel 2.17.11");
        assert_eq!(
            short_version("sha256sum (GNU coreutils) 9.1"),
            "sha256sum (GNU coreutils) 9.1"
        );
    }
}
