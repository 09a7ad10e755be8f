//! Reference piece hashes checked as pieces land: when a publisher gives
//! them (a Metalink's `<pieces>`), each piece is read back and hashed the
//! moment its last byte is written; a piece that fails goes back to the
//! plan to be fetched again from another source, and the whole-file hasher
//! never reads past the verified prefix, so a bad piece costs its own bytes,
//! not a repair of the file.

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, PoisonError};

use crate::pieces::{PieceHashes, PieceProgress};
use crate::range::{ByteRange, RangeSet};
use crate::store::PartFile;

/// How often one piece may fail its hash before the download gives up on
/// it.
pub(crate) const MAX_PIECE_FAILURES: u32 = 3;

/// The pieces of one download and which of them are verified.
pub(crate) struct PieceCheck {
    hashes: PieceHashes,
    total: u64,
    state: Mutex<State>,
}

struct State {
    progress: PieceProgress,
    verified: RangeSet,
    failures: HashMap<usize, u32>,
}

/// A piece whose bytes did not have its reference hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadPiece {
    pub index: usize,
    pub range: ByteRange,
    /// How often this piece has failed so far, this time included.
    pub failures: u32,
}

impl PieceCheck {
    /// Checks for a file of `total` bytes (`hashes` must fit it).
    pub(crate) fn new(hashes: PieceHashes, total: u64) -> Self {
        let progress = PieceProgress::new(&hashes, total);
        Self {
            hashes,
            total,
            state: Mutex::new(State {
                progress,
                verified: RangeSet::new(),
                failures: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `range` of `part` was written: hashes every piece it completed and
    /// returns those that failed (each counted as unwritten again).
    pub(crate) fn wrote(&self, part: &PartFile, range: ByteRange) -> io::Result<Vec<BadPiece>> {
        let completed = self.state().progress.wrote(range);
        let mut bad = Vec::new();
        for index in completed {
            let Some(piece) = self.hashes.range_of(index, self.total) else {
                continue;
            };
            let bytes = part.map_read(piece.start, piece.len() as usize)?;
            let good = self.hashes.check(index, &bytes);
            let mut state = self.state();
            if good {
                state.verified.insert(piece);
            } else {
                state.progress.reset(index);
                let failures = state.failures.entry(index).or_insert(0);
                *failures += 1;
                bad.push(BadPiece {
                    index,
                    range: piece,
                    failures: *failures,
                });
            }
        }
        Ok(bad)
    }

    /// The end of the verified prefix: how far the whole-file hasher may
    /// read.
    pub(crate) fn verified_prefix(&self) -> u64 {
        self.state().verified.prefix_end()
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::pieces::PieceAlgorithm;
    use crate::store::WriteMode;

    fn digests(data: &[u8], length: usize) -> Vec<Box<[u8]>> {
        data.chunks(length)
            .map(|piece| Sha256::digest(piece).to_vec().into_boxed_slice())
            .collect()
    }

    #[test]
    fn a_bad_piece_is_found_when_it_completes_and_the_prefix_stops_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.part");
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let hashes = PieceHashes::new(10_000, PieceAlgorithm::Sha256, digests(&data, 10_000))
            .expect("pieces");
        let part = PartFile::open(&path, WriteMode::Pwrite).expect("part");
        let check = PieceCheck::new(hashes, data.len() as u64);
        // Piece 0 good; piece 1 written with a flipped byte, in two writes.
        part.write_at(0, &data[..10_000]).expect("write");
        assert!(
            check
                .wrote(&part, ByteRange::new(0, 10_000))
                .expect("check")
                .is_empty()
        );
        let mut bad = data[10_000..20_000].to_vec();
        bad[123] ^= 0xff;
        part.write_at(10_000, &bad[..5_000]).expect("write");
        assert!(
            check
                .wrote(&part, ByteRange::new(10_000, 15_000))
                .expect("check")
                .is_empty()
        );
        part.write_at(15_000, &bad[5_000..]).expect("write");
        let found = check
            .wrote(&part, ByteRange::new(15_000, 20_000))
            .expect("check");
        assert_eq!(
            found,
            vec![BadPiece {
                index: 1,
                range: ByteRange::new(10_000, 20_000),
                failures: 1
            }]
        );
        assert_eq!(check.verified_prefix(), 10_000);
        // Written again, right: verified, and the prefix moves past it.
        part.write_at(10_000, &data[10_000..20_000]).expect("write");
        assert!(
            check
                .wrote(&part, ByteRange::new(10_000, 20_000))
                .expect("check")
                .is_empty()
        );
        assert_eq!(check.verified_prefix(), 20_000);
    }
}
