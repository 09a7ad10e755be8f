//! Files and directories of a test: sizes, a fresh temporary directory, hashes of files and
//! bytes, and the files under a directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// The SHA-256 of a file someone expected, but that no test file ever has.
pub const WRONG_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A fresh temporary directory for one test's files.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rangefetch-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// `path` with `suffix` appended to its file name: `x.bin` → `x.bin.part`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The lowercase hex SHA-256 of a file, read in pieces.
pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path)
        .unwrap_or_else(|error| panic!("open {} to hash it: {error}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(&hasher.finalize())
}

/// The lowercase hex SHA-256 of bytes in memory.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Every regular file under `dir`, recursively (none if `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("read a directory entry");
            let file_type = entry.file_type().expect("stat a directory entry");
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if file_type.is_file() {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// The text of a file, or an empty string if it cannot be read (yet): the logs of a server
/// that another process writes.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The blocks a resume journal (`<out>.part.state`) records, as `(start, end)`, read from its
/// text (`block START END CRC ~LINECRC` lines); none if it cannot be read.
pub fn journal_blocks(journal: &Path) -> Vec<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string(journal) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.strip_prefix("block "))
        .filter_map(|rest| {
            let mut fields = rest.split(' ');
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect()
}

/// The bytes a resume journal records as written.
pub fn journal_recorded(journal: &Path) -> u64 {
    journal_blocks(journal)
        .iter()
        .map(|(start, end)| end - start)
        .sum()
}
