//! Byte sizes as people type them on the command line (`8M`, `512KiB`,
//! `1.5G`) and as the engine prints them in messages (`1.5 GiB`).
//!
//! Every unit is binary (1024-based): `K`, `KB`, `KiB` and `k` all mean 1024
//! bytes. That is what the contract promises for `--chunk-size`, and what curl,
//! wget and aria2 do with their own size flags, so `8MB` means the same thing
//! here as there. A decimal fraction is accepted with a unit and rounded down
//! to a whole byte: `1.5M` is 1 572 864 bytes, `0.1K` is 102 bytes.

use std::fmt::Write as _;

/// The units [`parse_size`] understands, lowercase, with their shift; the
/// optional trailing `b` is stripped before looking a unit up.
const UNITS: [(&str, u32); 5] = [("", 0), ("k", 10), ("m", 20), ("g", 30), ("t", 40)];

/// The units [`format_size`] prints, largest first.
const DISPLAY_UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];

/// Longest input echoed back in an error, so a hostile value cannot make an
/// error message arbitrarily large.
const MAX_ECHO_CHARS: usize = 40;

/// Why a size could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    /// The input was empty or only whitespace.
    #[error("empty size")]
    Empty,
    /// The number part was missing or not a plain decimal number.
    #[error("invalid size {input:?}: expected a number with an optional unit, like 8M or 512KiB")]
    InvalidNumber {
        /// The offending input, truncated.
        input: String,
    },
    /// The unit after the number is not one of the known ones.
    #[error("unknown size unit {unit:?} (expected B, K, M, G, T or KiB, MiB, GiB, TiB)")]
    UnknownUnit {
        /// The unit as written, truncated.
        unit: String,
    },
    /// A fraction was given for a plain byte count, which has no fractions.
    #[error("invalid size {input:?}: a byte count without a unit must be a whole number")]
    FractionalBytes {
        /// The offending input, truncated.
        input: String,
    },
    /// The value does not fit in 64 bits.
    #[error("size {input:?} is too large")]
    Overflow {
        /// The offending input, truncated.
        input: String,
    },
}

/// Parses a size such as `4096`, `512K`, `8M`, `8MiB`, `1G`, `1.5 GiB`.
///
/// The grammar is: optional surrounding whitespace, ASCII digits, optionally
/// a `.` and more digits, optional whitespace, then an optional unit. Units
/// are case-insensitive and all binary: `K`/`KB`/`KiB` = 2^10, `M` = 2^20,
/// `G` = 2^30, `T` = 2^40, and a bare `B` (or nothing) means bytes. A fraction
/// needs a unit and is rounded down to a whole byte. Zero is accepted; callers
/// that need a positive size reject it themselves. Signs, exponents, digit
/// separators and values above `u64::MAX` are errors.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let input = s.trim();
    if input.is_empty() {
        return Err(SizeError::Empty);
    }
    let echo = || truncate_chars(input, MAX_ECHO_CHARS);

    let number_len = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(number_len);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let is_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(whole) || fraction.is_some_and(|f| !is_digits(f)) {
        return Err(SizeError::InvalidNumber { input: echo() });
    }

    let unit = unit.trim_start();
    // Digits or punctuation after the number (`1e6`, `1_000`, `0x10`) mean a
    // malformed number rather than a misspelt unit.
    if unit
        .chars()
        .any(|c| !(c.is_alphabetic() || c.is_whitespace()))
    {
        return Err(SizeError::InvalidNumber { input: echo() });
    }
    let shift = unit_shift(unit).ok_or_else(|| SizeError::UnknownUnit {
        unit: truncate_chars(unit, MAX_ECHO_CHARS),
    })?;
    if fraction.is_some() && shift == 0 {
        return Err(SizeError::FractionalBytes { input: echo() });
    }

    let overflow = || SizeError::Overflow { input: echo() };
    let multiplier = 1u64 << shift;
    let whole_bytes = parse_whole(whole)
        .and_then(|w| w.checked_mul(multiplier))
        .ok_or_else(overflow)?;
    let fraction_bytes = fraction.map_or(0, |f| fraction_of(f, multiplier));
    whole_bytes.checked_add(fraction_bytes).ok_or_else(overflow)
}

/// Formats a byte count for messages: `17 B`, `512 KiB`, `1.5 GiB`.
///
/// The largest binary unit not exceeding the value is used, up to TiB. An exact
/// multiple of the unit is printed without a fraction; anything else gets one
/// decimal, rounded down, so the printed value never overstates the real one
/// and a printed `.0` means "a little more than". Every output parses back
/// with [`parse_size`] to at most the original value.
pub fn format_size(bytes: u64) -> String {
    let Some(&(name, shift)) = DISPLAY_UNITS.iter().find(|(_, shift)| bytes >> shift > 0) else {
        return format!("{bytes} B");
    };
    let unit = 1u64 << shift;
    let whole = bytes >> shift;
    let remainder = bytes & (unit - 1);
    let mut out = whole.to_string();
    if remainder != 0 {
        // remainder < 2^40, so remainder * 10 cannot overflow.
        let tenths = (remainder * 10) >> shift;
        let _ = write!(out, ".{tenths}");
    }
    out.push(' ');
    out.push_str(name);
    out
}

/// The shift for a unit string (already stripped of leading whitespace), or
/// `None` if it is not a known unit.
fn unit_shift(unit: &str) -> Option<u32> {
    let lower = unit.to_ascii_lowercase();
    let stem = lower
        .strip_suffix("ib")
        .filter(|stem| !stem.is_empty())
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    UNITS
        .iter()
        .find(|(name, _)| *name == stem)
        .map(|&(_, shift)| shift)
}

/// Parses ASCII digits (already validated) into a `u64`, `None` on overflow.
fn parse_whole(digits: &str) -> Option<u64> {
    digits.bytes().try_fold(0u64, |acc, digit| {
        acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// `floor(0.<digits> * multiplier)`, exactly, for any number of digits.
///
/// Horner's rule from the last digit: `x = (d * multiplier + x) / 10` with
/// integer division at each step. Flooring inside is exact because
/// `floor((a + floor(y)) / 10) == floor((a + y) / 10)` for an integer `a`, and
/// every intermediate stays below `10 * multiplier <= 10 * 2^40`.
fn fraction_of(digits: &str, multiplier: u64) -> u64 {
    digits.bytes().rev().fold(0u64, |acc, digit| {
        (u64::from(digit - b'0') * multiplier + acc) / 10
    })
}

/// The first `max` characters of `s`.
fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_forms() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("4096B", 4096),
            ("4096 b", 4096),
            ("512K", 512 << 10),
            ("512k", 512 << 10),
            ("512KB", 512 << 10),
            ("512KiB", 512 << 10),
            ("512kib", 512 << 10),
            ("8M", 8 << 20),
            ("8MiB", 8 << 20),
            ("8 MiB", 8 << 20),
            ("  8mb  ", 8 << 20),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("2T", 2 << 40),
            ("2TiB", 2 << 40),
            ("1.5M", 3 << 19),
            ("1.5 GiB", 3 << 29),
            ("0.1K", 102),
            ("0.999K", 1022),
            ("007K", 7 << 10),
            ("0M", 0),
            ("18446744073709551615", u64::MAX),
            (
                "15.999999999999999999999999999999999999999T",
                (16 << 40) - 1,
            ),
        ];
        for &(input, expected) in cases {
            assert_eq!(parse_size(input), Ok(expected), "{input:?}");
        }
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("   "), Err(SizeError::Empty));
        for bad in [
            "M", "-1", "+1", "1e6", "1_000", ".5M", "1.M", "1..5M", "1.5.2M", "0x10", "१२", "8M!",
        ] {
            assert!(
                matches!(parse_size(bad), Err(SizeError::InvalidNumber { .. })),
                "{bad:?}: {:?}",
                parse_size(bad)
            );
        }
        for bad in ["8X", "8 MBs", "8iB", "8 i", "8P", "8MiBB", "8 M B", "1é"] {
            assert!(
                matches!(parse_size(bad), Err(SizeError::UnknownUnit { .. })),
                "{bad:?}: {:?}",
                parse_size(bad)
            );
        }
        for bad in ["1.5", "1.5B", "0.0"] {
            assert!(
                matches!(parse_size(bad), Err(SizeError::FractionalBytes { .. })),
                "{bad:?}"
            );
        }
        for bad in [
            "18446744073709551616",
            "16777216T",
            "99999999999999999999999K",
        ] {
            assert!(
                matches!(parse_size(bad), Err(SizeError::Overflow { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_read_well_and_stay_short() {
        assert_eq!(
            parse_size("8X").map_err(|e| e.to_string()),
            Err(r#"unknown size unit "X" (expected B, K, M, G, T or KiB, MiB, GiB, TiB)"#.into())
        );
        let huge = "9".repeat(10_000);
        let message = parse_size(&huge).expect_err("overflows").to_string();
        assert!(message.len() < 100, "{message}");
    }

    #[test]
    fn formats_for_messages() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(17), "17 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1 KiB");
        assert_eq!(format_size(512 << 10), "512 KiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(4 << 30), "4 GiB");
        assert_eq!(format_size((4 << 30) + 1), "4.0 GiB");
        assert_eq!(format_size((1 << 20) - 1), "1023.9 KiB");
        assert_eq!(format_size(u64::MAX), "16777215.9 TiB");
    }

    proptest! {
        #[test]
        fn plain_digits_are_bytes(n in any::<u64>()) {
            prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
        }

        #[test]
        fn units_multiply(k in 0u64..1 << 24, unit in 0usize..5, spelling in 0usize..4, space in any::<bool>()) {
            let (name, shift) = UNITS[unit];
            let suffix = match spelling {
                0 => name.to_owned(),
                1 => name.to_ascii_uppercase(),
                2 => format!("{name}B"),
                _ if name.is_empty() => "b".to_owned(),
                _ => format!("{}iB", name.to_ascii_uppercase()),
            };
            let gap = if space { " " } else { "" };
            prop_assert_eq!(parse_size(&format!("{k}{gap}{suffix}")), Ok(k << shift));
        }

        #[test]
        fn mebibytes_up_to_the_limit(k in 0u64..1 << 44) {
            prop_assert_eq!(parse_size(&format!("{k}MiB")), Ok(k << 20));
        }

        #[test]
        fn fractions_round_down(whole in 0u64..1 << 20, tenths in 0u64..10, unit in 1usize..5) {
            let (name, shift) = UNITS[unit];
            let exact = (u128::from(whole) * 10 + u128::from(tenths)) << shift;
            let expected = u64::try_from(exact / 10).expect("fits");
            prop_assert_eq!(parse_size(&format!("{whole}.{tenths}{name}")), Ok(expected));
        }

        #[test]
        fn format_parses_back_to_at_most_the_value(n in any::<u64>()) {
            let text = format_size(n);
            let back = parse_size(&text).expect("format_size output parses");
            prop_assert!(back <= n, "{} -> {}", text, back);
            // One decimal of the unit, and the unit is at most the value.
            prop_assert!(n - back <= n / 10 + 1, "{} -> {}", text, back);
            if !text.contains('.') {
                prop_assert_eq!(back, n);
            }
            prop_assert_eq!(format_size(n), text);
        }

        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = parse_size(&s);
        }

        #[test]
        fn never_panics_on_size_like_text(s in "[0-9. ]{0,30}[kKmMgGtTiIbB ]{0,4}") {
            let _ = parse_size(&s);
        }
    }
}
