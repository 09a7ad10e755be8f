//! Reference piece hashes, as a publisher states them (a Metalink's
//! `<pieces length=".." type="sha-256">`): the file cut into pieces of one
//! `length` (the last one shorter), each with its digest. With them a piece
//! can be checked the moment its bytes are complete, so a bad one is fetched
//! again at once instead of failing the whole-file hash at the end.
//!
//! Pure: no I/O. The fetch path asks [`PieceHashes::piece_of`] which piece an
//! offset falls in, [`PieceHashes::range_of`] which bytes make a piece,
//! [`PieceHashes::complete_in`] which pieces a written range finishes, and
//! [`PieceProgress`] which pieces blocks written in any order complete, and
//! [`PieceHashes::check`] (bytes in hand) or [`PieceHasher`] +
//! [`PieceHashes::matches`] (bytes hashed as they stream past) whether a
//! piece is right.

use std::ops::Range;

use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::range::ByteRange;

/// The hash function of a piece list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PieceAlgorithm {
    /// SHA-256 (`sha-256` in Metalink 4, `sha256` in Metalink 3).
    Sha256,
    /// SHA-1 (`sha-1`, `sha1`): weak against a forger, still fine to find a
    /// corrupted piece; the whole-file SHA-256 stays the verdict.
    Sha1,
}

impl PieceAlgorithm {
    /// The algorithm a Metalink `type` names (`sha-256`, `sha256`, `sha-1`,
    /// `sha1`, ASCII case ignored); `None` for any other.
    pub fn from_name(name: &str) -> Option<Self> {
        match normalize_hash_name(name).as_str() {
            "sha256" => Some(Self::Sha256),
            "sha1" => Some(Self::Sha1),
            _ => None,
        }
    }

    /// Bytes in one digest: 32 for SHA-256, 20 for SHA-1.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha1 => 20,
        }
    }

    /// The Metalink 4 name: `sha-256`, `sha-1`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha-256",
            Self::Sha1 => "sha-1",
        }
    }
}

/// A hash name without case or dashes: `SHA-256` and `sha256` are one.
pub(crate) fn normalize_hash_name(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Why a piece list cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PieceError {
    /// A piece length of zero.
    #[error("a piece length of 0 bytes")]
    ZeroLength,
    /// No digest at all.
    #[error("no piece digest")]
    Empty,
    /// A digest of the wrong size for the algorithm.
    #[error("piece {index}: a {algorithm} digest has {expected} bytes, not {found}")]
    DigestLength {
        /// The piece.
        index: usize,
        /// The algorithm's name.
        algorithm: &'static str,
        /// Bytes a digest of it has.
        expected: usize,
        /// Bytes this one has.
        found: usize,
    },
    /// More digests (or fewer) than a file of that size has pieces.
    #[error(
        "{found} piece digests for a file of {total} bytes in pieces of {length}: it has {expected} pieces"
    )]
    Count {
        /// The file's size.
        total: u64,
        /// The piece length.
        length: u64,
        /// Pieces the file has.
        expected: u64,
        /// Digests given.
        found: usize,
    },
}

/// The digests of a file's pieces: piece `i` is bytes
/// `[i * length, min((i + 1) * length, total))`.
///
/// Built by [`PieceHashes::new`], which checks every digest's size; whether
/// the number of digests fits a file's size is [`PieceHashes::fit`] (a
/// Metalink parser calls it when the Metalink states the size; otherwise
/// call it with the size the server reports before using the list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceHashes {
    length: u64,
    algorithm: PieceAlgorithm,
    digests: Vec<Box<[u8]>>,
}

impl PieceHashes {
    /// A piece list: `length` bytes a piece (not 0), one digest a piece, in
    /// order, each `algorithm.digest_len()` bytes.
    pub fn new(
        length: u64,
        algorithm: PieceAlgorithm,
        digests: Vec<Box<[u8]>>,
    ) -> Result<Self, PieceError> {
        if length == 0 {
            return Err(PieceError::ZeroLength);
        }
        if digests.is_empty() {
            return Err(PieceError::Empty);
        }
        let expected = algorithm.digest_len();
        if let Some((index, digest)) = digests
            .iter()
            .enumerate()
            .find(|(_, digest)| digest.len() != expected)
        {
            return Err(PieceError::DigestLength {
                index,
                algorithm: algorithm.name(),
                expected,
                found: digest.len(),
            });
        }
        Ok(Self {
            length,
            algorithm,
            digests,
        })
    }

    /// Bytes in every piece but the last.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The hash function.
    pub fn algorithm(&self) -> PieceAlgorithm {
        self.algorithm
    }

    /// The digests, piece 0 first.
    pub fn digests(&self) -> &[Box<[u8]>] {
        &self.digests
    }

    /// How many pieces (digests) there are.
    pub fn count(&self) -> usize {
        self.digests.len()
    }

    /// Pieces a file of `total` bytes has in pieces of `length`
    /// (`ceil(total / length)`; 0 for an empty file).
    pub fn pieces_for(total: u64, length: u64) -> u64 {
        if length == 0 {
            return 0;
        }
        total.div_ceil(length)
    }

    /// Whether this list describes a file of `total` bytes: exactly one
    /// digest for each of its pieces. Use the list for no file it does not
    /// fit.
    pub fn fit(&self, total: u64) -> Result<(), PieceError> {
        let expected = Self::pieces_for(total, self.length);
        if u64::try_from(self.digests.len()).ok() == Some(expected) {
            Ok(())
        } else {
            Err(PieceError::Count {
                total,
                length: self.length,
                expected,
                found: self.digests.len(),
            })
        }
    }

    /// The piece that holds byte `offset`, `None` past the last piece.
    pub fn piece_of(&self, offset: u64) -> Option<usize> {
        let index = usize::try_from(offset / self.length).ok()?;
        (index < self.digests.len()).then_some(index)
    }

    /// The bytes of piece `index` in a file of `total` bytes:
    /// `[index * length, min((index + 1) * length, total))`. `None` when
    /// there is no such piece, or it would start at or past `total`.
    pub fn range_of(&self, index: usize, total: u64) -> Option<ByteRange> {
        if index >= self.digests.len() {
            return None;
        }
        let start = u64::try_from(index).ok()?.checked_mul(self.length)?;
        if start >= total {
            return None;
        }
        let end = start.saturating_add(self.length).min(total);
        Some(ByteRange::new(start, end))
    }

    /// The pieces `range` covers whole, in a file of `total` bytes (the
    /// last piece ends at `total`): those whose bytes it alone completes.
    /// Empty when it covers none.
    pub fn complete_in(&self, range: ByteRange, total: u64) -> Range<usize> {
        let end = range.end.min(total);
        if range.start >= end {
            return 0..0;
        }
        let first = range.start.div_ceil(self.length);
        let last = if end == total {
            Self::pieces_for(total, self.length)
        } else {
            end / self.length
        };
        let clamp =
            |n: u64| usize::try_from(n).map_or(self.digests.len(), |n| n.min(self.digests.len()));
        let (first, last) = (clamp(first), clamp(last));
        if first < last { first..last } else { 0..0 }
    }

    /// Whether `bytes`, the whole of piece `index`, have its digest.
    /// `false` for a piece that does not exist.
    pub fn check(&self, index: usize, bytes: &[u8]) -> bool {
        let mut hasher = PieceHasher::new(self.algorithm);
        hasher.update(bytes);
        self.matches(index, &hasher.finish())
    }

    /// Whether `digest` (a [`PieceHasher`]'s result) is piece `index`'s.
    pub fn matches(&self, index: usize, digest: &[u8]) -> bool {
        self.digests
            .get(index)
            .is_some_and(|expected| **expected == *digest)
    }
}

/// Which pieces are complete, as written ranges come in any order: report
/// each written range once ([`PieceProgress::wrote`]) and get back the
/// pieces it completed, each exactly once, to read back and
/// [`check`](PieceHashes::check). A piece that failed its check and is
/// fetched again starts over with [`PieceProgress::reset`].
///
/// Every byte must be reported once between resets (the plan's invariant:
/// a byte is claimed before it is written, and written once); a byte
/// reported twice would count twice.
#[derive(Clone, Debug)]
pub struct PieceProgress {
    length: u64,
    total: u64,
    /// Bytes of each piece not yet written.
    missing: Vec<u64>,
}

impl PieceProgress {
    /// Nothing written yet of a file of `total` bytes cut as `pieces` says
    /// (use only a list that [fits](PieceHashes::fit) `total`).
    pub fn new(pieces: &PieceHashes, total: u64) -> Self {
        let count = usize::try_from(PieceHashes::pieces_for(total, pieces.length))
            .unwrap_or(usize::MAX)
            .min(pieces.count());
        let mut progress = Self {
            length: pieces.length,
            total,
            missing: vec![0; count],
        };
        for index in 0..count {
            progress.reset(index);
        }
        progress
    }

    /// Records that `range` was written; returns the pieces it completed,
    /// in order. Bytes past the file are ignored.
    pub fn wrote(&mut self, range: ByteRange) -> Vec<usize> {
        let end = range.end.min(self.total);
        let mut completed = Vec::new();
        if range.start >= end {
            return completed;
        }
        let first = range.start / self.length;
        let last = (end - 1) / self.length;
        for piece in first..=last {
            let Ok(index) = usize::try_from(piece) else {
                break;
            };
            let Some(missing) = self.missing.get_mut(index) else {
                break;
            };
            let piece_start = piece * self.length;
            let piece_end = piece_start.saturating_add(self.length).min(self.total);
            let overlap = end.min(piece_end) - range.start.max(piece_start);
            if *missing > 0 {
                *missing = missing.saturating_sub(overlap);
                if *missing == 0 {
                    completed.push(index);
                }
            }
        }
        completed
    }

    /// Piece `index` counts as unwritten again (its bytes are fetched anew).
    pub fn reset(&mut self, index: usize) {
        let Ok(piece) = u64::try_from(index) else {
            return;
        };
        let start = piece.saturating_mul(self.length);
        let end = start.saturating_add(self.length).min(self.total);
        if let Some(missing) = self.missing.get_mut(index) {
            *missing = end.saturating_sub(start);
        }
    }

    /// Whether every piece is complete.
    pub fn is_complete(&self) -> bool {
        self.missing.iter().all(|missing| *missing == 0)
    }
}

/// A piece's digest computed as its bytes stream past: `update` with each
/// chunk in order, then `finish` and [`PieceHashes::matches`].
#[derive(Clone, Debug)]
pub struct PieceHasher(Inner);

#[derive(Clone, Debug)]
enum Inner {
    Sha256(Sha256),
    Sha1(Sha1),
}

impl PieceHasher {
    /// A hasher for `algorithm`.
    pub fn new(algorithm: PieceAlgorithm) -> Self {
        Self(match algorithm {
            PieceAlgorithm::Sha256 => Inner::Sha256(Sha256::new()),
            PieceAlgorithm::Sha1 => Inner::Sha1(Sha1::new()),
        })
    }

    /// Feeds the next bytes of the piece.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Inner::Sha256(hasher) => hasher.update(bytes),
            Inner::Sha1(hasher) => hasher.update(bytes),
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Box<[u8]> {
        match self.0 {
            Inner::Sha256(hasher) => hasher.finalize().to_vec().into_boxed_slice(),
            Inner::Sha1(hasher) => hasher.finalize().to_vec().into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest_of(algorithm: PieceAlgorithm, bytes: &[u8]) -> Box<[u8]> {
        let mut hasher = PieceHasher::new(algorithm);
        hasher.update(bytes);
        hasher.finish()
    }

    /// The piece list of `file` in pieces of `length`.
    fn pieces(file: &[u8], length: usize, algorithm: PieceAlgorithm) -> PieceHashes {
        let digests = file
            .chunks(length)
            .map(|chunk| digest_of(algorithm, chunk))
            .collect();
        PieceHashes::new(length as u64, algorithm, digests).expect("a valid list")
    }

    #[test]
    fn known_digests() {
        // FIPS 180 test vectors for "abc".
        assert_eq!(
            hex(&digest_of(PieceAlgorithm::Sha256, b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&digest_of(PieceAlgorithm::Sha1, b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn names() {
        assert_eq!(
            PieceAlgorithm::from_name("SHA-256"),
            Some(PieceAlgorithm::Sha256)
        );
        assert_eq!(
            PieceAlgorithm::from_name("sha256"),
            Some(PieceAlgorithm::Sha256)
        );
        assert_eq!(
            PieceAlgorithm::from_name("sha1"),
            Some(PieceAlgorithm::Sha1)
        );
        assert_eq!(PieceAlgorithm::from_name("md5"), None);
    }

    #[test]
    fn a_bad_list_is_refused() {
        assert_eq!(
            PieceHashes::new(0, PieceAlgorithm::Sha1, vec![vec![0; 20].into()]),
            Err(PieceError::ZeroLength)
        );
        assert_eq!(
            PieceHashes::new(4, PieceAlgorithm::Sha1, Vec::new()),
            Err(PieceError::Empty)
        );
        assert!(matches!(
            PieceHashes::new(4, PieceAlgorithm::Sha256, vec![vec![0; 20].into()]),
            Err(PieceError::DigestLength {
                index: 0,
                expected: 32,
                found: 20,
                ..
            })
        ));
    }

    #[test]
    fn offsets_ranges_and_checks() {
        let file: Vec<u8> = (0..10u8).collect();
        let list = pieces(&file, 4, PieceAlgorithm::Sha256);
        assert_eq!(list.count(), 3);
        assert_eq!(list.fit(10), Ok(()));
        assert_eq!(list.fit(9), Ok(()));
        assert!(matches!(
            list.fit(8),
            Err(PieceError::Count {
                expected: 2,
                found: 3,
                ..
            })
        ));
        assert!(list.fit(13).is_err());
        assert_eq!(list.piece_of(0), Some(0));
        assert_eq!(list.piece_of(3), Some(0));
        assert_eq!(list.piece_of(4), Some(1));
        assert_eq!(
            list.piece_of(11),
            Some(2),
            "past total but inside the last piece's span"
        );
        assert_eq!(list.piece_of(12), None);
        assert_eq!(list.piece_of(u64::MAX), None);
        assert_eq!(list.range_of(0, 10), Some(ByteRange::new(0, 4)));
        assert_eq!(list.range_of(2, 10), Some(ByteRange::new(8, 10)));
        assert_eq!(list.range_of(3, 10), None);
        assert_eq!(list.range_of(2, 8), None, "starts at the end");
        assert!(list.check(0, &file[0..4]));
        assert!(list.check(2, &file[8..10]));
        assert!(!list.check(1, &file[0..4]));
        assert!(!list.check(1, &file[4..7]), "a short piece");
        assert!(!list.check(3, &file[8..10]));
        let mut flipped = file[4..8].to_vec();
        flipped[1] ^= 1;
        assert!(!list.check(1, &flipped));
    }

    #[test]
    fn which_pieces_a_range_completes() {
        let list = pieces(&[7; 10], 4, PieceAlgorithm::Sha1);
        assert_eq!(list.complete_in(ByteRange::new(0, 10), 10), 0..3);
        assert_eq!(list.complete_in(ByteRange::new(0, 4), 10), 0..1);
        assert_eq!(list.complete_in(ByteRange::new(1, 8), 10), 1..2);
        assert_eq!(list.complete_in(ByteRange::new(1, 7), 10), 0..0);
        assert_eq!(
            list.complete_in(ByteRange::new(8, 10), 10),
            2..3,
            "the short last piece"
        );
        assert_eq!(list.complete_in(ByteRange::new(8, 9), 10), 0..0);
        assert_eq!(list.complete_in(ByteRange::new(5, 5), 10), 0..0);
        assert_eq!(list.complete_in(ByteRange::new(4, u64::MAX), 10), 1..3);
    }

    #[test]
    fn progress_reports_each_completed_piece_once() {
        let list = pieces(&[1; 10], 4, PieceAlgorithm::Sha1);
        let mut progress = PieceProgress::new(&list, 10);
        assert_eq!(progress.wrote(ByteRange::new(2, 6)), Vec::<usize>::new());
        assert_eq!(progress.wrote(ByteRange::new(0, 2)), [0]);
        assert_eq!(
            progress.wrote(ByteRange::new(8, 12)),
            [2],
            "bytes past the file ignored"
        );
        assert!(!progress.is_complete());
        assert_eq!(progress.wrote(ByteRange::new(6, 8)), [1]);
        assert!(progress.is_complete());
        progress.reset(1);
        assert!(!progress.is_complete());
        assert_eq!(progress.wrote(ByteRange::new(4, 8)), [1]);
        assert_eq!(progress.wrote(ByteRange::new(3, 3)), Vec::<usize>::new());
        progress.reset(99);
        assert!(progress.is_complete());
    }

    proptest! {
        /// Writes that tile the file in any order and any cut complete
        /// every piece exactly once, each when its last byte arrives.
        #[test]
        fn progress_over_any_tiling(
            total in 1u64..400,
            length in 1u64..50,
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            order in any::<u64>(),
        ) {
            let count = PieceHashes::pieces_for(total, length) as usize;
            let list = PieceHashes::new(length, PieceAlgorithm::Sha1, vec![vec![0; 20].into(); count])
                .expect("valid");
            let mut points: Vec<u64> = cuts.iter().map(|i| i.index(total as usize) as u64).collect();
            points.extend([0, total]);
            points.sort_unstable();
            points.dedup();
            let mut ranges: Vec<ByteRange> = points.windows(2).map(|w| ByteRange::new(w[0], w[1])).collect();
            // A deterministic shuffle.
            let mut state = order | 1;
            for i in (1..ranges.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ranges.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut progress = PieceProgress::new(&list, total);
            let mut written = vec![false; total as usize];
            let mut seen = Vec::new();
            for range in ranges {
                for byte in range.start..range.end {
                    written[byte as usize] = true;
                }
                for index in progress.wrote(range) {
                    let piece = list.range_of(index, total).expect("a piece");
                    prop_assert!((piece.start..piece.end).all(|b| written[b as usize]));
                    seen.push(index);
                }
                for index in 0..count {
                    let piece = list.range_of(index, total).expect("a piece");
                    let done = (piece.start..piece.end).all(|b| written[b as usize]);
                    prop_assert_eq!(done, seen.contains(&index), "piece {} reported late or early", index);
                }
            }
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..count).collect::<Vec<_>>());
            prop_assert!(progress.is_complete());
        }


        /// Every byte of a file lies in exactly the piece whose range holds
        /// it; the pieces tile the file; each checks against its own bytes
        /// and no other's; a flipped byte fails its piece.
        #[test]
        fn pieces_tile_and_check(
            file in proptest::collection::vec(any::<u8>(), 1..300),
            length in 1usize..64,
            sha1 in any::<bool>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let algorithm = if sha1 { PieceAlgorithm::Sha1 } else { PieceAlgorithm::Sha256 };
            let list = pieces(&file, length, algorithm);
            let total = file.len() as u64;
            prop_assert_eq!(list.fit(total), Ok(()));
            let mut next = 0;
            for index in 0..list.count() {
                let range = list.range_of(index, total).expect("a piece in the file");
                prop_assert_eq!(range.start, next);
                next = range.end;
                prop_assert_eq!(list.piece_of(range.start), Some(index));
                prop_assert_eq!(list.piece_of(range.end - 1), Some(index));
                prop_assert_eq!(list.complete_in(range, total), index..index + 1);
                let bytes = &file[range.start as usize..range.end as usize];
                prop_assert!(list.check(index, bytes));
                let mut streamed = PieceHasher::new(algorithm);
                for part in bytes.chunks(3) {
                    streamed.update(part);
                }
                prop_assert!(list.matches(index, &streamed.finish()));
            }
            prop_assert_eq!(next, total);
            prop_assert_eq!(list.complete_in(ByteRange::new(0, total), total), 0..list.count());
            let at = flip.index(file.len());
            let mut bad = file.clone();
            bad[at] ^= 0x80;
            let index = list.piece_of(at as u64).expect("inside");
            let range = list.range_of(index, total).expect("a piece");
            prop_assert!(!list.check(index, &bad[range.start as usize..range.end as usize]));
        }

        /// No offset, index or range panics.
        #[test]
        fn never_panics(
            length in 1u64..=u64::MAX,
            count in 1usize..5,
            offset in any::<u64>(),
            index in any::<usize>(),
            total in any::<u64>(),
            start in any::<u64>(),
            end in any::<u64>(),
        ) {
            let list = PieceHashes::new(length, PieceAlgorithm::Sha1, vec![vec![0; 20].into(); count])
                .expect("valid");
            let _ = list.piece_of(offset);
            let _ = list.range_of(index, total);
            let _ = list.fit(total);
            let done = list.complete_in(ByteRange::new(start, end), total);
            prop_assert!(done.end <= count);
            let _ = list.check(index, &[]);
        }
    }
}
