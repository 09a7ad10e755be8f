//! The test files nginx and the flaky server serve: random bytes under the
//! out directory (never in git), created once and reused, each with its
//! SHA-256 computed once by `rangefetch hash` and kept beside it.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::size::format_size;
use crate::cmd::describe;

/// A random file on disk and its digest.
#[derive(Clone, Debug)]
pub struct DataFile {
    pub path: PathBuf,
    /// The name in URLs and for the downloaded copy, e.g. `random-2GiB.bin`.
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
}

impl DataFile {
    /// `DIR/random-<size>.bin`, created from /dev/urandom unless a file of that
    /// size is already there; its digest is read from `<file>.sha256` or computed.
    pub fn ensure(dir: &Path, size: u64, rangefetch: &Path) -> Result<DataFile> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let file_name = format!("random-{}.bin", format_size(size));
        let path = dir.join(&file_name);
        let digest_path = dir.join(format!("{file_name}.sha256"));
        let present = fs::metadata(&path).is_ok_and(|meta| meta.len() == size);
        if !present {
            // A new file invalidates any old digest.
            let _ = fs::remove_file(&digest_path);
            create_random(&path, size)?;
        }
        // A digest older than its file belongs to an earlier file of that size.
        let modified = |path: &Path| fs::metadata(path).and_then(|meta| meta.modified()).ok();
        let digest_current = matches!(
            (modified(&digest_path), modified(&path)),
            (Some(digest), Some(file)) if digest >= file
        );
        let sha256 = match fs::read_to_string(&digest_path) {
            Ok(text) if digest_current && is_sha256_hex(text.trim()) => text.trim().to_owned(),
            _ => {
                eprintln!("hashing {}", path.display());
                let sha256 = hash(rangefetch, &path)?;
                fs::write(&digest_path, format!("{sha256}\n"))
                    .with_context(|| format!("cannot write {}", digest_path.display()))?;
                sha256
            }
        };
        Ok(DataFile {
            path,
            file_name,
            size,
            sha256,
        })
    }
}

/// Writes `size` bytes from /dev/urandom to a temporary name, then renames,
/// so that an interrupted run leaves no short file to be mistaken for data.
fn create_random(path: &Path, size: u64) -> Result<()> {
    eprintln!(
        "creating {} ({} of random bytes; kept for later runs)",
        path.display(),
        format_size(size)
    );
    let partial = path.with_extension("bin.partial");
    let mut random = File::open("/dev/urandom").context("cannot open /dev/urandom")?;
    let mut file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let step = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        random
            .read_exact(&mut buffer[..step])
            .context("cannot read /dev/urandom")?;
        file.write_all(&buffer[..step])
            .with_context(|| format!("cannot write {}", partial.display()))?;
        left -= step as u64;
    }
    drop(file);
    fs::rename(&partial, path).with_context(|| format!("cannot rename to {}", path.display()))
}

/// `rangefetch hash PATH`, which prints `<hex>  <path>` like sha256sum; not
/// echoed, since every run with a tool's own check calls it once more.
pub fn hash(rangefetch: &Path, path: &Path) -> Result<String> {
    let output = Command::new(rangefetch)
        .arg("hash")
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start `rangefetch hash`")?;
    if !output.status.success() {
        bail!(
            "`rangefetch hash {}` failed ({})",
            path.display(),
            describe(output.status)
        );
    }
    let line = String::from_utf8_lossy(&output.stdout);
    match line.split_whitespace().next() {
        Some(hex) if is_sha256_hex(hex) => Ok(hex.to_ascii_lowercase()),
        _ => bail!("`rangefetch hash` printed `{}`, not a digest", line.trim()),
    }
}

/// Whether a word is 64 hex digits.
pub fn is_sha256_hex(word: &str) -> bool {
    word.len() == 64 && word.bytes().all(|byte| byte.is_ascii_hexdigit())
}
