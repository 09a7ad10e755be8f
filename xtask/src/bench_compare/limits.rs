//! Physical limits measured in the same run as the tools, so that figures
//! can be read against them on a shared, noisy machine: how fast the disk
//! takes bytes durably (rangefetch alone `fsync`s before it publishes a
//! file), and how fast one core hashes (`openssl speed`) against
//! `rangefetch hash` of a file in the page cache.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::data::DataFile;
use crate::cmd::{Cmd, describe};

/// The buffer of the durable-write measurement: as large as rangefetch's
/// writeback block, so that neither side wins by system-call count.
const WRITE_BUFFER: usize = 4 << 20;

/// Bytes per second the disk takes durably: `bytes` written to a new file in
/// `dir` and flushed with `fsync`, the better of two tries.
pub fn durable_write_rate(dir: &Path, bytes: u64) -> Result<f64> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("durable-write.bin");
    // Not zeros: a device or filesystem may treat those specially.
    let buffer: Vec<u8> = (0..WRITE_BUFFER).map(|i| (i * 131 % 251) as u8).collect();
    let mut best: Option<Duration> = None;
    for _ in 0..2 {
        let _ = fs::remove_file(&path);
        let started = Instant::now();
        let mut file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut left = bytes;
        while left > 0 {
            let len = left.min(WRITE_BUFFER as u64) as usize;
            file.write_all(&buffer[..len])
                .with_context(|| format!("cannot write {}", path.display()))?;
            left -= len as u64;
        }
        file.sync_all()
            .with_context(|| format!("cannot flush {}", path.display()))?;
        let took = started.elapsed();
        best = Some(best.map_or(took, |best| best.min(took)));
    }
    let _ = fs::remove_file(&path);
    let best = best.unwrap_or_default().as_secs_f64();
    if best <= 0.0 {
        bail!("the durable write took no time");
    }
    Ok(bytes as f64 / best)
}

/// The filesystem `dir` (which must exist) is on, as findmnt names it (`tmpfs`, `ext4`).
pub fn filesystem_type(dir: &Path) -> Option<String> {
    let dir = dir.display().to_string();
    // findmnt prints one line per mount stacked on that point; the first is the one in use.
    let first = |text: String| text.lines().next().map(|line| line.trim().to_owned());
    if let Some(found) = Cmd::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "-T", &dir])
        .read_stdout()
        .ok()
        .and_then(first)
        .filter(|found| !found.is_empty())
    {
        return Some(found);
    }
    Cmd::new("stat")
        .args(["-f", "-c", "%T", &dir])
        .read_stdout()
        .ok()
        .and_then(first)
}

/// One core's SHA-256 speed by `openssl speed -evp sha256` on 16 KiB
/// blocks, in bytes per second; `None` without openssl.
pub fn openssl_sha256_rate() -> Option<f64> {
    let output = Cmd::new("openssl")
        .args([
            "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "3",
        ])
        .read_stdout()
        .ok()?;
    parse_openssl_speed(&output)
}

/// The last figure of the `sha256` result line, in units of 1000 bytes per
/// second (e.g. `sha256   1381384.19k`).
fn parse_openssl_speed(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with("sha256"))?;
    let figure = line.split_whitespace().last()?;
    let thousands: f64 = figure.strip_suffix('k')?.parse().ok()?;
    Some(thousands * 1000.0)
}

/// `rangefetch hash FILE`, best of three after one read that puts the file
/// in the page cache; bytes per second.
pub fn rangefetch_hash_rate(rangefetch: &Path, file: &DataFile) -> Result<f64> {
    let hash = || -> Result<Duration> {
        let started = Instant::now();
        let output = std::process::Command::new(rangefetch)
            .arg("hash")
            .arg(&file.path)
            .output()
            .with_context(|| format!("cannot run {}", rangefetch.display()))?;
        let took = started.elapsed();
        if !output.status.success() {
            bail!("rangefetch hash {}", describe(output.status));
        }
        let printed = String::from_utf8_lossy(&output.stdout);
        if !printed.starts_with(&file.sha256) {
            bail!(
                "rangefetch hash printed {printed:?}, expected {}",
                file.sha256
            );
        }
        Ok(took)
    };
    hash()?;
    let mut best = hash()?;
    for _ in 0..2 {
        best = best.min(hash()?);
    }
    Ok(file.size as f64 / best.as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_speed_output_is_read_from_its_last_sha256_line() {
        let output = "version: 3.0.15\nbuilt on: ...\n\
                      The 'numbers' are in 1000s of bytes per second processed.\n\
                      type          16384 bytes\n\
                      sha256          1381384.19k\n";
        let rate = parse_openssl_speed(output).expect("a rate");
        assert!((rate - 1_381_384_190.0).abs() < 1.0, "{rate}");
        assert_eq!(parse_openssl_speed("no figures here"), None);
        assert_eq!(parse_openssl_speed("sha256 fast"), None);
    }
}
