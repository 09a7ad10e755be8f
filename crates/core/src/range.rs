//! Half-open byte ranges, sets of them, and the HTTP `Range` / `Content-Range`
//! header forms.
//!
//! Everything in the engine speaks half-open `[start, end)`. The inclusive
//! `first-last` form of HTTP exists only inside [`format_range_header`] and
//! [`parse_content_range`]: an off-by-one there is the classic bug of this
//! field, so it lives in exactly one place and is property-tested.

use std::fmt;

/// A half-open byte range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    /// First byte in the range.
    pub start: u64,
    /// One past the last byte in the range.
    pub end: u64,
}

impl ByteRange {
    /// A range `[start, end)`; an inverted pair is clamped to empty at `start`.
    pub fn new(start: u64, end: u64) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }

    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Whether `offset` lies inside the range.
    pub fn contains(&self, offset: u64) -> bool {
        self.start <= offset && offset < self.end
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// The value of a `Range` request header for a non-empty range:
/// `bytes=first-last`, with `last` inclusive.
///
/// Returns `None` for an empty range, which has no HTTP form.
pub fn format_range_header(range: ByteRange) -> Option<String> {
    if range.is_empty() {
        return None;
    }
    Some(format!("bytes={}-{}", range.start, range.end - 1))
}

/// A parsed `Content-Range` response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    /// The bytes carried by the response, half-open; `None` for the
    /// unsatisfied form `bytes */total`.
    pub range: Option<ByteRange>,
    /// The complete length of the representation; `None` when the server
    /// sent `*`.
    pub total: Option<u64>,
}

/// Why a `Content-Range` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed Content-Range {value:?}: {reason}")]
pub struct ContentRangeError {
    /// The offending header value (truncated to 80 characters).
    pub value: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// Parses `bytes first-last/total`, `bytes first-last/*` or `bytes */total`.
///
/// Rejects `last < first`, `last >= total`, numbers that overflow `u64`,
/// signs, and anything but ASCII digits where a number is expected.
pub fn parse_content_range(value: &str) -> Result<ContentRange, ContentRangeError> {
    let err = |reason| ContentRangeError {
        value: value.chars().take(80).collect(),
        reason,
    };
    // Range units are case-insensitive (RFC 9110 §14.1): `BYTES` is fine.
    let trimmed = value.trim();
    let rest = trimmed
        .get(..5)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes"))
        .and_then(|_| trimmed.get(5..))
        .ok_or_else(|| err("unit is not bytes"))?;
    // RFC 9110 requires exactly one space; be lenient about extra whitespace.
    let rest = rest.trim_start();
    let (range_part, total_part) = rest.split_once('/').ok_or_else(|| err("no '/'"))?;
    let total = match total_part.trim() {
        "*" => None,
        digits => Some(parse_decimal(digits).ok_or_else(|| err("bad complete length"))?),
    };
    let range = match range_part.trim() {
        "*" => {
            if total.is_none() {
                return Err(err("both range and length are '*'"));
            }
            None
        }
        spec => {
            let (first, last) = spec.split_once('-').ok_or_else(|| err("no '-' in range"))?;
            let first = parse_decimal(first).ok_or_else(|| err("bad first byte position"))?;
            let last = parse_decimal(last).ok_or_else(|| err("bad last byte position"))?;
            if last < first {
                return Err(err("last byte before first byte"));
            }
            if let Some(total) = total
                && last >= total
            {
                return Err(err("last byte at or past the complete length"));
            }
            let end = last.checked_add(1).ok_or_else(|| err("range overflows"))?;
            Some(ByteRange::new(first, end))
        }
    };
    Ok(ContentRange { range, total })
}

/// Formats a [`ContentRange`] the way a server would send it (the inverse of
/// [`parse_content_range`] for every value it accepts).
pub fn format_content_range(content_range: &ContentRange) -> String {
    let total = content_range
        .total
        .map_or_else(|| "*".to_owned(), |t| t.to_string());
    match content_range.range {
        Some(r) if !r.is_empty() => format!("bytes {}-{}/{}", r.start, r.end - 1, total),
        _ => format!("bytes */{total}"),
    }
}

/// Parses a non-empty run of ASCII digits into a `u64`, refusing overflow.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A set of disjoint, non-adjacent byte ranges kept sorted; inserting merges.
///
/// Used for "bytes written" and "bytes durably recorded": the hash frontier
/// is the end of the range that starts at 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<ByteRange>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `range`, merging it with any range it overlaps or touches.
    pub fn insert(&mut self, range: ByteRange) {
        if range.is_empty() {
            return;
        }
        // First range whose end reaches the new start (touching counts).
        let first = self.ranges.partition_point(|r| r.end < range.start);
        let mut merged = range;
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].start <= merged.end {
            merged.start = merged.start.min(self.ranges[last].start);
            merged.end = merged.end.max(self.ranges[last].end);
            last += 1;
        }
        self.ranges.splice(first..last, std::iter::once(merged));
    }

    /// Takes `range` out of the set (a range found bad, to be written
    /// again).
    pub fn remove(&mut self, range: ByteRange) {
        if range.is_empty() {
            return;
        }
        let mut kept = Vec::with_capacity(self.ranges.len() + 1);
        for r in self.ranges.drain(..) {
            if r.end <= range.start || range.end <= r.start {
                kept.push(r);
                continue;
            }
            if r.start < range.start {
                kept.push(ByteRange::new(r.start, range.start));
            }
            if range.end < r.end {
                kept.push(ByteRange::new(range.end, r.end));
            }
        }
        self.ranges = kept;
    }

    /// The ranges, sorted, disjoint and non-adjacent.
    pub fn ranges(&self) -> &[ByteRange] {
        &self.ranges
    }

    /// Total bytes covered.
    pub fn covered(&self) -> u64 {
        self.ranges.iter().map(ByteRange::len).sum()
    }

    /// End of the contiguous run starting at byte 0 (0 if byte 0 is absent).
    pub fn prefix_end(&self) -> u64 {
        match self.ranges.first() {
            Some(r) if r.start == 0 => r.end,
            _ => 0,
        }
    }

    /// Whether every byte of `range` is in the set.
    pub fn contains_range(&self, range: ByteRange) -> bool {
        if range.is_empty() {
            return true;
        }
        let idx = self.ranges.partition_point(|r| r.end <= range.start);
        self.ranges
            .get(idx)
            .is_some_and(|r| r.start <= range.start && range.end <= r.end)
    }

    /// Whether any byte of `range` is in the set.
    pub fn overlaps(&self, range: ByteRange) -> bool {
        if range.is_empty() {
            return false;
        }
        let idx = self.ranges.partition_point(|r| r.end <= range.start);
        self.ranges.get(idx).is_some_and(|r| r.start < range.end)
    }

    /// The parts of `[0, len)` not in the set, in order.
    pub fn gaps(&self, len: u64) -> Vec<ByteRange> {
        let mut gaps = Vec::new();
        let mut cursor = 0;
        for r in &self.ranges {
            if r.start >= len {
                break;
            }
            if r.start > cursor {
                gaps.push(ByteRange::new(cursor, r.start));
            }
            cursor = cursor.max(r.end);
        }
        if cursor < len {
            gaps.push(ByteRange::new(cursor, len));
        }
        gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn range_header_is_inclusive() {
        assert_eq!(
            format_range_header(ByteRange::new(0, 1)).as_deref(),
            Some("bytes=0-0")
        );
        assert_eq!(
            format_range_header(ByteRange::new(10, 20)).as_deref(),
            Some("bytes=10-19")
        );
        assert_eq!(format_range_header(ByteRange::new(5, 5)), None);
    }

    #[test]
    fn content_range_forms() {
        let cr = parse_content_range("bytes 0-499/1234").expect("valid");
        assert_eq!(cr.range, Some(ByteRange::new(0, 500)));
        assert_eq!(cr.total, Some(1234));
        let cr = parse_content_range("bytes */0").expect("valid");
        assert_eq!(
            cr,
            ContentRange {
                range: None,
                total: Some(0)
            }
        );
        let cr = parse_content_range("bytes 5-9/*").expect("valid");
        assert_eq!(cr.total, None);
        for bad in [
            "",
            "bytes",
            "bytes 9-5/10",
            "bytes 0-10/10",
            "bytes -1-5/10",
            "bytes +1-5/10",
            "bytes */*",
            "items 0-1/2",
            "bytes 0-18446744073709551615/*",
            "bytes 0-99999999999999999999999/*",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rangeset_merges_touching_ranges() {
        let mut set = RangeSet::new();
        set.insert(ByteRange::new(10, 20));
        set.insert(ByteRange::new(30, 40));
        assert_eq!(set.prefix_end(), 0);
        set.insert(ByteRange::new(0, 10));
        assert_eq!(set.prefix_end(), 20);
        set.insert(ByteRange::new(20, 30));
        assert_eq!(set.ranges(), &[ByteRange::new(0, 40)]);
        assert!(set.contains_range(ByteRange::new(5, 35)));
        assert!(!set.contains_range(ByteRange::new(35, 41)));
        assert_eq!(set.gaps(50), vec![ByteRange::new(40, 50)]);
    }

    proptest! {
        #[test]
        fn content_range_format_parse_roundtrip(start in 0u64..u64::MAX / 2, len in 1u64..1 << 40, extra in 0u64..1 << 40) {
            let range = ByteRange::new(start, start + len);
            let cr = ContentRange { range: Some(range), total: Some(range.end + extra) };
            prop_assert_eq!(parse_content_range(&format_content_range(&cr)), Ok(cr));
            let header = format_range_header(range).expect("non-empty");
            let (first, last) = header.trim_start_matches("bytes=").split_once('-').expect("dash");
            prop_assert_eq!(first.parse::<u64>().ok(), Some(range.start));
            prop_assert_eq!(last.parse::<u64>().ok().map(|l| l + 1), Some(range.end));
        }

        #[test]
        fn rangeset_matches_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..40), 0..40)) {
            let mut set = RangeSet::new();
            let mut bits = [false; 256];
            for (start, len) in ops {
                set.insert(ByteRange::new(start, start + len));
                for b in &mut bits[start as usize..(start + len) as usize] { *b = true; }
            }
            prop_assert_eq!(set.covered(), bits.iter().filter(|b| **b).count() as u64);
            for pair in set.ranges().windows(2) {
                prop_assert!(pair[0].end < pair[1].start, "not disjoint and non-adjacent");
            }
            let gaps: u64 = set.gaps(256).iter().map(ByteRange::len).sum();
            prop_assert_eq!(gaps + set.covered(), 256);
        }
    }
}
