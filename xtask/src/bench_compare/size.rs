//! Byte counts as people write them (`512MiB`, `5MB`, `4096B`): parsed for
//! the command line and formatted for file names and headings. A leaf
//! module: every other part of bench-compare may use it, it uses none.

/// A byte count with an optional unit: decimal `KB MB GB`, binary `KiB MiB GiB`
/// (also `K M G`), case-insensitive; the same spelling as the test server's.
/// The error says what is wrong with `text`, for a usage message.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 512MiB"))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return Err(format!("`{text}` has an unknown unit `{unit}`")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `2GiB`, `512MiB`, `4096B`: the shortest exact binary spelling, for names
/// and headings.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map(|(unit, name)| format!("{}{name}", bytes / unit))
        .unwrap_or_else(|| format!("{bytes}B"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_format_and_parse() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("3T").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert_eq!(format_size(2 << 30), "2GiB");
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn format_then_parse_is_the_identity() {
        for bytes in [1, 1000, 1 << 10, 3 << 20, 5 << 30, (1 << 30) + 1] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
        }
    }
}
