//! A tiny seeded generator (SplitMix64) for reproducible "random" choices in tests: the kill
//! points of the crash test are its input, the same on every run.

use std::ops::RangeInclusive;

/// A tiny seeded generator (SplitMix64) for reproducible "random" choices in tests.
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator whose draws are fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next draw.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw from `range` (inclusive).
    pub fn in_range(&mut self, range: RangeInclusive<u64>) -> u64 {
        range.start() + self.next_u64() % (range.end() - range.start() + 1)
    }
}
