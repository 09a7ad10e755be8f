//! The resume journal: what a later run may check of `<out>.part`.
//!
//! It records the source, the remote's size and validators, the chunk size,
//! and then, appended as the download runs, a line per block written (its
//! range and a CRC-32 of the bytes, taken from the bytes in hand just before
//! they were written) and now and then the SHA-256 state of the hashed
//! prefix. Nothing in it is trusted on resume: every recorded block is read
//! back and checked against its CRC, and the SHA-256 state is used only if
//! every block of its prefix checked out. So the journal needs no flush:
//! a `kill -9` leaves it and the page cache intact, and whatever a power cut
//! loses, the check finds.
//!
//! The codec is pure. The header is one unit, closed by a SHA-256 of its
//! lines, so a torn or edited header decodes to an error. Every appended
//! line carries its own CRC-32, and decoding stops at the first line that is
//! torn or fails its check: an append cut short by a crash loses that line
//! and nothing before it.
//!
//! ```text
//! rangefetch-journal 2
//! url http://example.org/disk.img
//! total 1073741824
//! chunk 8388608
//! etag "abc"
//! last-modified Tue, 15 Nov 1994 08:12:31 GMT
//! header <hex SHA-256 of the lines above>
//! block 0 262144 1c291ca3 ~6f1a09b2
//! block 262144 524288 0a3e4412 ~99c8e2d0
//! hashed 524288 <hex of the serialized SHA-256 state> ~5d1e77c1
//! etag-unstable ~2b3f… (only when the ETags flip between backends)
//! ```

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::range::{ByteRange, RangeSet, parse_decimal};

/// The format version this build writes and accepts.
pub const VERSION: u32 = 2;

const MAGIC: &str = "rangefetch-journal";

/// Refuse to decode anything larger: a real journal is at most a few
/// hundred KiB (a few thousand block lines).
pub const MAX_LEN: usize = 16 << 20;

/// One block the journal vouches was written: its range and the CRC-32 of
/// its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Where the block lies in the file.
    pub range: ByteRange,
    /// CRC-32 (IEEE) of the block's bytes.
    pub crc: u32,
}

/// A SHA-256 state the hasher reached: the length of the prefix it covers
/// and the serialized state after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashPoint {
    /// Length of the hashed prefix.
    pub hashed: u64,
    /// Serialized SHA-256 state after `hashed` bytes.
    pub state: Vec<u8>,
}

/// The decoded journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Journal {
    /// The URL the download was started with (credentials removed).
    pub url: String,
    /// Size of the remote file.
    pub total: u64,
    /// Chunk size of the plan.
    pub chunk_size: u64,
    /// The remote's ETag (strong or weak) when the download started.
    pub etag: Option<String>,
    /// The remote's Last-Modified when the download started.
    pub last_modified: Option<String>,
    /// Whether the remote's ETags were seen to flip between backends (a
    /// load-balanced farm), so that only `last_modified` pins the version.
    pub etag_unstable: bool,
    /// The blocks recorded as written, in the order recorded; disjoint.
    pub blocks: Vec<Block>,
    /// The SHA-256 states recorded, in the order recorded.
    pub hash_points: Vec<HashPoint>,
    /// Whether decoding stopped at an appended line that was cut short or
    /// failed its check (what followed it is ignored). Never encoded.
    pub torn: bool,
}

/// Why a journal cannot be used at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// Not a journal, or written by an incompatible version.
    #[error("not a rangefetch journal of version {VERSION}")]
    Version,
    /// The header's checksum line is missing or wrong: torn write or edit.
    #[error("journal header checksum does not match: it was truncated or altered")]
    Checksum,
    /// A header line could not be parsed.
    #[error("malformed journal line {line}")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// Fields contradict each other (a block past the end, blocks that
    /// overlap).
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

/// An appended line: `content ~crc`, newline-terminated.
fn checked_line(content: &str) -> String {
    format!("{content} ~{:08x}\n", crc32fast::hash(content.as_bytes()))
}

/// The content of an appended line whose CRC checks out.
fn unchecked(line: &str) -> Option<&str> {
    let (content, crc) = line.rsplit_once(" ~")?;
    let crc = u32::from_str_radix(crc, 16)
        .ok()
        .filter(|_| crc.len() == 8)?;
    (crc32fast::hash(content.as_bytes()) == crc).then_some(content)
}

impl Journal {
    /// A journal with these fixed fields and nothing recorded yet.
    pub fn new(url: String, total: u64, chunk_size: u64) -> Self {
        Self {
            url,
            total,
            chunk_size,
            etag: None,
            last_modified: None,
            etag_unstable: false,
            blocks: Vec::new(),
            hash_points: Vec::new(),
            torn: false,
        }
    }

    /// The bytes the blocks cover.
    pub fn done(&self) -> RangeSet {
        let mut done = RangeSet::new();
        for block in &self.blocks {
            done.insert(block.range);
        }
        done
    }

    /// Encodes the header alone: what a new journal file starts with.
    /// Values holding a line break (which no valid header or URL can) are
    /// dropped rather than corrupting the format.
    pub fn encode_header(&self) -> Vec<u8> {
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
        let sum = hex(&Sha256::digest(body.as_bytes()));
        let _ = writeln!(body, "header {sum}");
        body.into_bytes()
    }

    /// The whole journal: its header, then every record as appended lines.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = self.encode_header();
        if self.etag_unstable {
            bytes.extend_from_slice(Self::encode_etag_unstable().as_bytes());
        }
        for block in &self.blocks {
            bytes.extend_from_slice(Self::encode_block(*block).as_bytes());
        }
        for point in &self.hash_points {
            bytes.extend_from_slice(Self::encode_hash_point(point).as_bytes());
        }
        bytes
    }

    /// The line that records `block`.
    pub fn encode_block(block: Block) -> String {
        checked_line(&format!(
            "block {} {} {:08x}",
            block.range.start, block.range.end, block.crc
        ))
    }

    /// The line that records a SHA-256 state.
    pub fn encode_hash_point(point: &HashPoint) -> String {
        checked_line(&format!("hashed {} {}", point.hashed, hex(&point.state)))
    }

    /// The line that records that the remote's ETags flip.
    pub fn encode_etag_unstable() -> String {
        checked_line("etag-unstable")
    }

    /// Decodes a journal: the header must be whole and unaltered; appended
    /// lines are taken up to the first one that is torn or fails its check.
    pub fn decode(bytes: &[u8]) -> Result<Self, JournalError> {
        if bytes.len() > MAX_LEN {
            return Err(JournalError::TooLarge);
        }
        let text = String::from_utf8_lossy(bytes);
        let first = text.lines().next().unwrap_or("");
        if first != format!("{MAGIC} {VERSION}") {
            return Err(JournalError::Version);
        }
        let header_at = text.find("\nheader ").ok_or(JournalError::Checksum)? + 1;
        let (head, rest) = text.split_at(header_at);
        let header_end = rest.find('\n').ok_or(JournalError::Checksum)?;
        let sum = rest
            .get("header ".len()..header_end)
            .ok_or(JournalError::Checksum)?;
        if sum != hex(&Sha256::digest(head.as_bytes())) {
            return Err(JournalError::Checksum);
        }
        let mut journal = Journal::new(String::new(), 0, 0);
        let (mut saw_url, mut saw_total, mut saw_chunk) = (false, false, false);
        for (idx, line) in head.lines().enumerate().skip(1) {
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
                _ => return Err(malformed),
            }
        }
        if !(saw_url && saw_total && saw_chunk) {
            return Err(JournalError::Inconsistent("a required field is missing"));
        }
        let records = &rest[header_end + 1..];
        let mut done = RangeSet::new();
        for line in records.split_inclusive('\n') {
            // A line without its newline is an append a crash cut short.
            let Some(content) = line.strip_suffix('\n').and_then(unchecked) else {
                journal.torn = true;
                break;
            };
            let mut fields = content.split(' ');
            match (fields.next(), fields.next(), fields.next(), fields.next()) {
                (Some("block"), Some(start), Some(end), Some(crc)) if fields.next().is_none() => {
                    let (Some(start), Some(end), Ok(crc)) = (
                        parse_decimal(start),
                        parse_decimal(end),
                        u32::from_str_radix(crc, 16),
                    ) else {
                        journal.torn = true;
                        break;
                    };
                    if end <= start || end > journal.total {
                        return Err(JournalError::Inconsistent(
                            "a block lies past the end of the file",
                        ));
                    }
                    let range = ByteRange::new(start, end);
                    if done.overlaps(range) {
                        return Err(JournalError::Inconsistent("two blocks overlap"));
                    }
                    done.insert(range);
                    journal.blocks.push(Block { range, crc });
                }
                (Some("hashed"), Some(hashed), Some(state), None) => {
                    let (Some(hashed), Some(state)) = (parse_decimal(hashed), unhex(state)) else {
                        journal.torn = true;
                        break;
                    };
                    if hashed == 0 || hashed > journal.total || state.is_empty() {
                        return Err(JournalError::Inconsistent("a hash state out of range"));
                    }
                    journal.hash_points.push(HashPoint { hashed, state });
                }
                (Some("etag-unstable"), None, None, None) => journal.etag_unstable = true,
                _ => {
                    journal.torn = true;
                    break;
                }
            }
        }
        Ok(journal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Journal {
        Journal {
            url: "http://127.0.0.1:8080/img.bin".into(),
            total: 1000,
            chunk_size: 100,
            etag: Some("\"v1\"".into()),
            last_modified: Some("Tue, 15 Nov 1994 08:12:31 GMT".into()),
            etag_unstable: false,
            blocks: vec![
                Block {
                    range: ByteRange::new(0, 100),
                    crc: 0xdead_beef,
                },
                Block {
                    range: ByteRange::new(200, 300),
                    crc: 7,
                },
            ],
            hash_points: vec![HashPoint {
                hashed: 64,
                state: vec![1, 2, 3, 255],
            }],
            torn: false,
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
        assert_eq!(Journal::decode(&farm.encode()), Ok(farm));
    }

    #[test]
    fn a_flipped_header_byte_is_rejected() {
        let journal = sample();
        let header = journal.encode_header();
        let bytes = journal.encode();
        for idx in 0..header.len() {
            let mut bad = bytes.clone();
            bad[idx] ^= 0x01;
            assert!(Journal::decode(&bad).is_err(), "flip at {idx} accepted");
        }
    }

    #[test]
    fn a_flipped_record_byte_drops_that_record_and_what_follows() {
        let journal = sample();
        let mut lines: Vec<String> = journal
            .blocks
            .iter()
            .map(|block| Journal::encode_block(*block))
            .collect();
        lines.extend(journal.hash_points.iter().map(Journal::encode_hash_point));
        let header = journal.encode_header();
        let bytes = journal.encode();
        let mut line_start = header.len();
        for (line_idx, line) in lines.iter().enumerate() {
            for idx in line_start..line_start + line.len() {
                let mut bad = bytes.clone();
                bad[idx] ^= 0x01;
                let decoded = Journal::decode(&bad).expect("the header is intact");
                let kept = decoded.blocks.len() + decoded.hash_points.len();
                assert_eq!(kept, line_idx, "flip at {idx} in record {line_idx}");
                assert!(decoded.torn, "flip at {idx} not reported");
                assert_eq!(decoded.blocks, journal.blocks[..decoded.blocks.len()]);
            }
            line_start += line.len();
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let text = String::from_utf8(sample().encode()).expect("utf8");
        let other = text.replacen("rangefetch-journal 2", "rangefetch-journal 1", 1);
        assert_eq!(
            Journal::decode(other.as_bytes()),
            Err(JournalError::Version)
        );
    }

    #[test]
    fn overlapping_blocks_are_inconsistent() {
        let mut journal = sample();
        journal.blocks.push(Block {
            range: ByteRange::new(250, 260),
            crc: 1,
        });
        assert!(matches!(
            Journal::decode(&journal.encode()),
            Err(JournalError::Inconsistent(_))
        ));
    }

    proptest! {
        #[test]
        fn roundtrip_and_truncation(
            total in 1u64..1 << 40,
            chunk in 1u64..1 << 30,
            cuts in proptest::collection::vec(0u64..1 << 40, 0..12),
            etag in proptest::option::of("[!#-~]{0,20}"),
            state in proptest::collection::vec(any::<u8>(), 1..120),
        ) {
            let mut points: Vec<u64> = cuts.into_iter().map(|c| c % (total + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let blocks: Vec<Block> = points
                .chunks(2)
                .filter_map(|pair| match pair {
                    [a, b] => Some(Block { range: ByteRange::new(*a, *b), crc: (*a as u32) ^ 0x5a5a }),
                    _ => None,
                })
                .collect();
            let hash_points = vec![HashPoint { hashed: total, state }];
            let journal = Journal { url: "https://h/x".into(), total, chunk_size: chunk, etag, last_modified: None, etag_unstable: false, blocks, hash_points, torn: false };
            let bytes = journal.encode();
            prop_assert_eq!(Journal::decode(&bytes), Ok(journal.clone()));
            let header_len = journal.encode_header().len();
            for cut in 0..bytes.len() {
                match Journal::decode(&bytes[..cut]) {
                    // A cut header is an error; a cut record list is a prefix of it.
                    Err(_) => prop_assert!(cut < header_len),
                    Ok(prefix) => {
                        prop_assert!(cut >= header_len);
                        prop_assert_eq!(&prefix.blocks[..], &journal.blocks[..prefix.blocks.len()]);
                        prop_assert!(prefix.hash_points.len() <= 1);
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Journal::decode(&bytes);
        }
    }
}
