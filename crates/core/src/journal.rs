//! The resume journal: what a later run may trust of `<out>.part`.
//!
//! It records the source, the remote's size and validators, the chunk size,
//! the ranges durably written, and the SHA-256 state of the hashed prefix so
//! a resume neither re-downloads nor re-hashes. The codec is pure: a small
//! line-based text format (readable when debugging a user's report), with a
//! version line first and a SHA-256 of everything before it last, so a torn
//! or edited journal decodes to an error and is never half-trusted.
//!
//! ```text
//! rangefetch-journal 1
//! url http://example.org/disk.img
//! total 1073741824
//! chunk 8388608
//! etag "abc"
//! last-modified Tue, 15 Nov 1994 08:12:31 GMT
//! etag-unstable                  (only when the ETags flip between backends)
//! hashed 16777216 <hex of the serialized SHA-256 state>
//! done 0 16777216
//! done 33554432 41943040
//! sum <hex SHA-256 of all lines above>
//! ```
//!
//! Writing it safely (temp file, fsync, rename, fsync the directory) and only
//! after the data it describes is flushed is the caller's job; see
//! [`crate::download`].

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::range::{ByteRange, RangeSet, parse_decimal};

/// The format version this build writes and accepts.
pub const VERSION: u32 = 1;

const MAGIC: &str = "rangefetch-journal";

/// Refuse to decode anything larger: a real journal is a few KiB.
pub const MAX_LEN: usize = 4 << 20;

/// The decoded journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Journal {
    /// The URL the download was started with (credentials removed).
    pub url: String,
    /// Size of the remote file.
    pub total: u64,
    /// Chunk size of the plan.
    pub chunk_size: u64,
    /// The remote's strong ETag when the download started.
    pub etag: Option<String>,
    /// The remote's Last-Modified when the download started.
    pub last_modified: Option<String>,
    /// Whether the remote's ETags were seen to flip between backends (a
    /// load-balanced farm), so that only `last_modified` pins the version.
    pub etag_unstable: bool,
    /// Bytes durably written, sorted and disjoint.
    pub done: RangeSet,
    /// Length of the prefix whose hash state is recorded.
    pub hashed: u64,
    /// Serialized SHA-256 state after `hashed` bytes (empty when `hashed` is 0).
    pub hash_state: Vec<u8>,
}

/// Why a journal cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// Not a journal, or written by an incompatible version.
    #[error("not a rangefetch journal of version {VERSION}")]
    Version,
    /// The checksum line is missing or wrong: torn write or edit.
    #[error("journal checksum does not match: it was truncated or altered")]
    Checksum,
    /// A line could not be parsed.
    #[error("malformed journal line {line}")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// Fields contradict each other (a range past the end, a hash state
    /// beyond the written prefix).
    #[error("inconsistent journal: {0}")]
    Inconsistent(&'static str),
    /// Larger than any real journal.
    #[error("journal larger than {MAX_LEN} bytes")]
    TooLarge,
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2048 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

fn single_line(value: &str) -> bool {
    !value.contains(['\n', '\r'])
}

impl Journal {
    /// Encodes the journal. Values holding a line break (which no valid
    /// header or URL can) are dropped rather than corrupting the format.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = String::new();
        let _ = writeln!(body, "{MAGIC} {VERSION}");
        let url = if single_line(&self.url) {
            self.url.as_str()
        } else {
            ""
        };
        let _ = writeln!(body, "url {url}");
        let _ = writeln!(body, "total {}", self.total);
        let _ = writeln!(body, "chunk {}", self.chunk_size);
        if let Some(etag) = self.etag.as_deref().filter(|v| single_line(v)) {
            let _ = writeln!(body, "etag {etag}");
        }
        if let Some(date) = self.last_modified.as_deref().filter(|v| single_line(v)) {
            let _ = writeln!(body, "last-modified {date}");
        }
        if self.etag_unstable {
            let _ = writeln!(body, "etag-unstable");
        }
        let _ = writeln!(body, "hashed {} {}", self.hashed, hex(&self.hash_state));
        for range in self.done.ranges() {
            let _ = writeln!(body, "done {} {}", range.start, range.end);
        }
        let sum = hex(&Sha256::digest(body.as_bytes()));
        let _ = writeln!(body, "sum {sum}");
        body.into_bytes()
    }

    /// Decodes and checks a journal.
    pub fn decode(bytes: &[u8]) -> Result<Self, JournalError> {
        if bytes.len() > MAX_LEN {
            return Err(JournalError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| JournalError::Version)?;
        let first = text.lines().next().unwrap_or("");
        if first != format!("{MAGIC} {VERSION}") {
            return Err(JournalError::Version);
        }
        // The checksum covers every byte before the final `sum` line.
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or(JournalError::Checksum)?;
        let (body, sum_line) = text.split_at(body_end);
        let sum = sum_line
            .strip_prefix("sum ")
            .and_then(|s| s.strip_suffix('\n'))
            .ok_or(JournalError::Checksum)?;
        if sum != hex(&Sha256::digest(body.as_bytes())) {
            return Err(JournalError::Checksum);
        }
        let mut journal = Journal {
            url: String::new(),
            total: 0,
            chunk_size: 0,
            etag: None,
            last_modified: None,
            etag_unstable: false,
            done: RangeSet::new(),
            hashed: 0,
            hash_state: Vec::new(),
        };
        let (mut saw_url, mut saw_total, mut saw_chunk, mut saw_hashed) =
            (false, false, false, false);
        let mut last_end = 0u64;
        for (idx, line) in body.lines().enumerate().skip(1) {
            let malformed = JournalError::Malformed { line: idx + 1 };
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "url" => {
                    journal.url = value.to_owned();
                    saw_url = true;
                }
                "total" => {
                    journal.total = parse_decimal(value).ok_or(malformed)?;
                    saw_total = true;
                }
                "chunk" => {
                    journal.chunk_size = parse_decimal(value).ok_or(malformed)?;
                    saw_chunk = true;
                }
                "etag" => journal.etag = Some(value.to_owned()),
                "last-modified" => journal.last_modified = Some(value.to_owned()),
                "etag-unstable" if value.is_empty() => journal.etag_unstable = true,
                "hashed" => {
                    let (count, state) = value.split_once(' ').unwrap_or((value, ""));
                    journal.hashed = parse_decimal(count).ok_or(malformed.clone())?;
                    journal.hash_state = unhex(state).ok_or(malformed)?;
                    saw_hashed = true;
                }
                "done" => {
                    let (start, end) = value.split_once(' ').ok_or(malformed.clone())?;
                    let start = parse_decimal(start).ok_or(malformed.clone())?;
                    let end = parse_decimal(end).ok_or(malformed.clone())?;
                    // Ranges are written sorted and disjoint; anything else
                    // was not written by us.
                    if end <= start || start < last_end {
                        return Err(malformed);
                    }
                    last_end = end;
                    journal.done.insert(ByteRange::new(start, end));
                }
                _ => return Err(malformed),
            }
        }
        if !(saw_url && saw_total && saw_chunk && saw_hashed) {
            return Err(JournalError::Inconsistent("a required field is missing"));
        }
        if last_end > journal.total {
            return Err(JournalError::Inconsistent(
                "a written range lies past the end of the file",
            ));
        }
        if journal.hashed > journal.done.prefix_end() {
            return Err(JournalError::Inconsistent(
                "hash state covers bytes not written",
            ));
        }
        if (journal.hashed == 0) != journal.hash_state.is_empty() {
            return Err(JournalError::Inconsistent(
                "hash state and hashed length disagree",
            ));
        }
        Ok(journal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Journal {
        let mut done = RangeSet::new();
        done.insert(ByteRange::new(0, 100));
        done.insert(ByteRange::new(200, 300));
        Journal {
            url: "http://127.0.0.1:8080/img.bin".into(),
            total: 1000,
            chunk_size: 100,
            etag: Some("\"v1\"".into()),
            last_modified: Some("Tue, 15 Nov 1994 08:12:31 GMT".into()),
            etag_unstable: false,
            done,
            hashed: 64,
            hash_state: vec![1, 2, 3, 255],
        }
    }

    #[test]
    fn roundtrip() {
        let journal = sample();
        assert_eq!(Journal::decode(&journal.encode()), Ok(journal));
        let farm = Journal {
            etag_unstable: true,
            ..sample()
        };
        assert!(String::from_utf8_lossy(&farm.encode()).contains("\netag-unstable\n"));
        assert_eq!(Journal::decode(&farm.encode()), Ok(farm));
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let bytes = sample().encode();
        for idx in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[idx] ^= 0x01;
            assert!(Journal::decode(&bad).is_err(), "flip at {idx} accepted");
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let text = String::from_utf8(sample().encode()).expect("utf8");
        let other = text.replacen("rangefetch-journal 1", "rangefetch-journal 2", 1);
        assert_eq!(
            Journal::decode(other.as_bytes()),
            Err(JournalError::Version)
        );
    }

    proptest! {
        #[test]
        fn roundtrip_and_truncation(
            total in 0u64..1 << 40,
            chunk in 1u64..1 << 30,
            cuts in proptest::collection::vec(0u64..1 << 40, 0..12),
            etag in proptest::option::of("[!#-~]{0,20}"),
            state in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut points: Vec<u64> = cuts.into_iter().map(|c| c % (total + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut done = RangeSet::new();
            for pair in points.chunks(2) {
                if let [a, b] = pair { done.insert(ByteRange::new(*a, *b)); }
            }
            let hashed = if state.is_empty() { 0 } else { done.prefix_end() };
            let state = if hashed == 0 { Vec::new() } else { state };
            let journal = Journal { url: "https://h/x".into(), total, chunk_size: chunk, etag, last_modified: None, etag_unstable: false, done, hashed, hash_state: state };
            let bytes = journal.encode();
            prop_assert_eq!(Journal::decode(&bytes), Ok(journal));
            for cut in 0..bytes.len() {
                prop_assert!(Journal::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Journal::decode(&bytes);
        }
    }
}
