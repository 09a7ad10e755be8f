//! SHA-256 digests as values, and checksum files (`SHA256SUMS` and the like)
//! parsed into entries, so `--sha256-sums` can pick the hash of the file being
//! downloaded.
//!
//! Both common line formats are understood: GNU `sha256sum` output
//! (`<hex>  <name>`, `<hex> *<name>`, and the single-space `<hex> <name>` that
//! BSD `sha256 -r` writes) and the tagged BSD form (`SHA256 (<name>) = <hex>`,
//! also written by `sha256sum --tag` and, as `SHA2-256(<name>)= <hex>`, by
//! OpenSSL). Names holding a backslash or a newline use GNU's escaping: the
//! line starts with `\` and the name spells them `\\`, `\n` (and `\r`).
//! Anything else — comments, blank lines, digests of other lengths, garbage —
//! is skipped, because real checksum files mix several algorithms and
//! signatures into one file.

use std::fmt;
use std::str::FromStr;

/// How many names a [`ChecksumLookupError::NotFound`] keeps for its message.
const MAX_LISTED_NAMES: usize = 10;

/// Longest name (in characters) echoed back in an error.
const MAX_ECHO_CHARS: usize = 80;

/// A SHA-256 digest: 32 bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hex([u8; 32]);

/// Why a string is not a SHA-256 hex digest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashParseError {
    /// The trimmed input does not have exactly 64 characters.
    #[error("expected 64 hex digits for a SHA-256, got {len} characters")]
    WrongLength {
        /// Length of the trimmed input, in characters.
        len: usize,
    },
    /// A character is not a hex digit.
    #[error("invalid hex digit {found:?} at position {index} of the SHA-256")]
    NotHex {
        /// The offending character.
        found: char,
        /// Its zero-based position in the trimmed input, in characters.
        index: usize,
    },
}

impl Sha256Hex {
    /// Parses exactly 64 hex digits of either case; surrounding whitespace is
    /// ignored.
    pub fn parse(s: &str) -> Result<Self, HashParseError> {
        let s = s.trim();
        let len = s.chars().count();
        if len != 64 {
            return Err(HashParseError::WrongLength { len });
        }
        // 64 characters that are all hex digits are 64 ASCII bytes, so the
        // byte pairs below line up with character positions.
        if let Some((index, found)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(HashParseError::NotHex { found, index });
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        Ok(Self(bytes))
    }

    /// Wraps a digest computed elsewhere.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Sha256Hex {
    type Err = HashParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&text).expect("hex digits are ASCII"))
    }
}

impl fmt::Debug for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hex({self})")
    }
}

/// The value of an ASCII hex digit already checked by `is_ascii_hexdigit`.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// One `name -> SHA-256` line of a checksum file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChecksumEntry {
    /// The file name as written in the file (unescaped), possibly with a
    /// directory part such as `./` or `images/`.
    pub name: String,
    /// The expected digest.
    pub sha256: Sha256Hex,
}

impl ChecksumEntry {
    /// The entry as a GNU `sha256sum` line, `<hex>  <name>`, without the
    /// newline; a name with a backslash or line break is escaped the way GNU
    /// does it, so [`parse_checksums`] reads it back unchanged.
    pub fn gnu_line(&self) -> String {
        let (prefix, name) = escape_name(&self.name);
        format!("{prefix}{}  {name}", self.sha256)
    }

    /// The entry as a tagged BSD line, `SHA256 (<name>) = <hex>`, without the
    /// newline, escaped like [`ChecksumEntry::gnu_line`].
    pub fn bsd_line(&self) -> String {
        let (prefix, name) = escape_name(&self.name);
        format!("{prefix}SHA256 ({name}) = {}", self.sha256)
    }
}

/// Why no single hash could be picked from a checksum file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChecksumLookupError {
    /// No entry names the file.
    #[error("no SHA-256 for {name:?} in the checksum file ({})", describe_found(.found, *.n_names))]
    NotFound {
        /// The file name looked for (truncated).
        name: String,
        /// The first few distinct names the file does list (each truncated).
        found: Vec<String>,
        /// How many distinct names the file lists in all.
        n_names: usize,
    },
    /// Two entries name the file with different hashes.
    #[error("the checksum file lists {name:?} twice with different hashes ({first} and {second})")]
    Conflict {
        /// The file name looked for (truncated).
        name: String,
        /// The hash of the first matching entry.
        first: Sha256Hex,
        /// A different hash of a later matching entry.
        second: Sha256Hex,
    },
}

/// The tail of the `NotFound` message: what the file lists instead.
fn describe_found(found: &[String], n_names: usize) -> String {
    if found.is_empty() {
        return "it has no SHA-256 entries".to_owned();
    }
    // Debug formatting escapes control characters a hostile file could use
    // to rewrite the terminal.
    let listed: Vec<String> = found.iter().map(|name| format!("{name:?}")).collect();
    let mut text = format!("it lists {}", listed.join(", "));
    if n_names > found.len() {
        text.push_str(&format!(" and {} more", n_names - found.len()));
    }
    text
}

/// Parses a checksum file into its SHA-256 entries, in file order.
///
/// Blank lines, `#` comments and every line that is not a SHA-256 entry in
/// one of the formats described in the module docs are skipped. A UTF-8 byte
/// order mark, CRLF line ends and leading whitespace are tolerated; digests
/// may be in either case. Names are kept verbatim otherwise (a GNU `*` binary
/// marker is not part of the name).
pub fn parse_checksums(text: &str) -> Vec<ChecksumEntry> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n')
        .filter_map(|line| parse_line(line.strip_suffix('\r').unwrap_or(line)))
        .collect()
}

/// Picks the expected hash of `file_name` from parsed entries.
///
/// An entry matches when its name is `file_name` or `./` followed by it; if
/// none does, an entry matches when its last path component (after the last
/// `/` or `\`) is `file_name`, so `images/ubuntu.iso` serves for
/// `ubuntu.iso`. Several matches are fine as long as they agree
/// on the hash; otherwise the answer is ambiguous and an error.
pub fn find_checksum(
    entries: &[ChecksumEntry],
    file_name: &str,
) -> Result<Sha256Hex, ChecksumLookupError> {
    let exact = |entry: &&ChecksumEntry| {
        let name = entry.name.as_str();
        name == file_name || name.strip_prefix("./") == Some(file_name)
    };
    let by_last_component = |entry: &&ChecksumEntry| last_component(&entry.name) == file_name;
    let matches: Vec<&ChecksumEntry> = if entries.iter().any(|e| exact(&e)) {
        entries.iter().filter(exact).collect()
    } else {
        entries.iter().filter(by_last_component).collect()
    };

    let Some(first) = matches.first() else {
        let mut distinct = std::collections::HashSet::new();
        let mut found = Vec::new();
        for entry in entries {
            if distinct.insert(entry.name.as_str()) && found.len() < MAX_LISTED_NAMES {
                found.push(truncate_chars(&entry.name, MAX_ECHO_CHARS));
            }
        }
        return Err(ChecksumLookupError::NotFound {
            name: truncate_chars(file_name, MAX_ECHO_CHARS),
            found,
            n_names: distinct.len(),
        });
    };
    if let Some(other) = matches.iter().find(|e| e.sha256 != first.sha256) {
        return Err(ChecksumLookupError::Conflict {
            name: truncate_chars(file_name, MAX_ECHO_CHARS),
            first: first.sha256,
            second: other.sha256,
        });
    }
    Ok(first.sha256)
}

/// The part of `name` after its last `/` or `\`.
fn last_component(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

/// One line (without its line end) as an entry, or `None` to skip it.
fn parse_line(line: &str) -> Option<ChecksumEntry> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (raw_name, sha256) = parse_gnu(line).or_else(|| parse_bsd(line))?;
    let name = if escaped {
        unescape_name(raw_name)?
    } else {
        raw_name.to_owned()
    };
    if name.is_empty() {
        return None;
    }
    Some(ChecksumEntry { name, sha256 })
}

/// `<hex> <mode><name>` where mode is ` ` (text), `*` (binary) or absent.
fn parse_gnu(line: &str) -> Option<(&str, Sha256Hex)> {
    let sha256 = Sha256Hex::parse(line.get(..64)?).ok()?;
    let rest = line[64..].strip_prefix([' ', '\t'])?;
    let name = rest.strip_prefix([' ', '*']).unwrap_or(rest);
    Some((name, sha256))
}

/// `SHA256 (<name>) = <hex>`, with optional spaces around `(` and `=`, and
/// the OpenSSL tag `SHA2-256`.
fn parse_bsd(line: &str) -> Option<(&str, Sha256Hex)> {
    let tag_len = line.find('(')?;
    let tag = line[..tag_len].trim_end();
    if !(tag.eq_ignore_ascii_case("SHA256") || tag.eq_ignore_ascii_case("SHA2-256")) {
        return None;
    }
    // Hex digits hold no ')', so the last one closes the name even when the
    // name itself contains parentheses.
    let (name, digest_part) = line[tag_len + 1..].rsplit_once(')')?;
    let hex = digest_part.trim_start().strip_prefix('=')?;
    let sha256 = Sha256Hex::parse(hex).ok()?;
    Some((name, sha256))
}

/// Undoes GNU name escaping (`\\`, `\n`, `\r`); `None` for a stray backslash.
fn unescape_name(raw: &str) -> Option<String> {
    let mut name = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            name.push(c);
            continue;
        }
        name.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(name)
}

/// GNU name escaping: the line prefix (`\` or nothing) and the escaped name.
fn escape_name(name: &str) -> (&'static str, String) {
    if !name.contains(['\\', '\n', '\r']) {
        return ("", name.to_owned());
    }
    let mut escaped = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            _ => escaped.push(c),
        }
    }
    ("\\", escaped)
}

/// The first `max` characters of `s`.
fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const B: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";

    fn hash(hex: &str) -> Sha256Hex {
        Sha256Hex::parse(hex).expect("test hash is valid")
    }

    fn entry(name: &str, hex: &str) -> ChecksumEntry {
        ChecksumEntry {
            name: name.to_owned(),
            sha256: hash(hex),
        }
    }

    #[test]
    fn sha256_hex_parses_and_prints_lowercase() {
        let parsed = hash(&format!("  {B}\n"));
        assert_eq!(parsed.to_string(), B.to_ascii_lowercase());
        assert_eq!(parsed.as_bytes()[0], 0x9f);
        assert_eq!(Sha256Hex::from_bytes(*parsed.as_bytes()), parsed);
        assert_eq!(B.parse::<Sha256Hex>(), Ok(parsed));
        assert_eq!(
            format!("{parsed:?}"),
            format!("Sha256Hex({})", B.to_ascii_lowercase())
        );
    }

    #[test]
    fn sha256_hex_rejects_malformed_input() {
        assert_eq!(
            Sha256Hex::parse(""),
            Err(HashParseError::WrongLength { len: 0 })
        );
        assert_eq!(
            Sha256Hex::parse(&A[..63]),
            Err(HashParseError::WrongLength { len: 63 })
        );
        assert_eq!(
            Sha256Hex::parse(&format!("{A}0")),
            Err(HashParseError::WrongLength { len: 65 })
        );
        let with_g = format!("{}g", &A[..63]);
        assert_eq!(
            Sha256Hex::parse(&with_g),
            Err(HashParseError::NotHex {
                found: 'g',
                index: 63
            })
        );
        // 64 characters but not 64 bytes: must not slice inside a character.
        let with_accent = format!("é{}", &A[..63]);
        assert_eq!(
            Sha256Hex::parse(&with_accent),
            Err(HashParseError::NotHex {
                found: 'é',
                index: 0
            })
        );
        assert_eq!(
            Sha256Hex::parse(&"x".repeat(64)).map_err(|e| e.to_string()),
            Err("invalid hex digit 'x' at position 0 of the SHA-256".to_owned())
        );
    }

    #[test]
    fn parses_a_realistic_file() {
        let text = format!(
            "\u{feff}# comment\r\n\
             \r\n\
             {A} *ubuntu-24.04-desktop-amd64.iso\r\n\
             {B}  ./ubuntu-24.04-live-server-amd64.iso\r\n\
             \t{A} single-space.img\n\
             SHA256 (bsd (1).img) = {B}\n\
             SHA2-256(openssl.img)= {A}\n\
             SHA512 (other.img) = {A}{A}\n\
             {A}{A}  sha512.img\n\
             {A}\n\
             {A}  \n\
             -----BEGIN PGP SIGNATURE-----\n\
             \\{A}  back\\\\slash\\nnewline\n\
             \\{A}  bad\\escape\n\
             {A}  trailing space \n\
             {A}  no-newline-at-end\r"
        );
        let names: Vec<String> = parse_checksums(&text).into_iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "ubuntu-24.04-desktop-amd64.iso",
                "./ubuntu-24.04-live-server-amd64.iso",
                "single-space.img",
                "bsd (1).img",
                "openssl.img",
                "back\\slash\nnewline",
                "trailing space ",
                "no-newline-at-end",
            ]
        );
        let entries = parse_checksums(&text);
        assert_eq!(entries[1].sha256, hash(B));
        assert_eq!(entries[3].sha256.to_string(), B.to_ascii_lowercase());
    }

    #[test]
    fn finds_by_exact_name_then_last_component() {
        let entries = [
            entry("./a.iso", A),
            entry("sub/b.iso", B),
            entry("other\\b.iso", B),
            entry("c.iso", A),
            entry("mirror/c.iso", B),
        ];
        assert_eq!(find_checksum(&entries, "a.iso"), Ok(hash(A)));
        // Two matches by last component that agree are fine.
        assert_eq!(find_checksum(&entries, "b.iso"), Ok(hash(B)));
        // An exact name wins over a different hash in a subdirectory.
        assert_eq!(find_checksum(&entries, "c.iso"), Ok(hash(A)));
        assert_eq!(find_checksum(&entries, "mirror/c.iso"), Ok(hash(B)));
    }

    #[test]
    fn conflicting_entries_are_an_error() {
        let entries = [
            entry("x/d.iso", A),
            entry("y/d.iso", B),
            entry("d.iso.zsync", B),
        ];
        let err = find_checksum(&entries, "d.iso").expect_err("ambiguous");
        assert_eq!(
            err,
            ChecksumLookupError::Conflict {
                name: "d.iso".into(),
                first: hash(A),
                second: hash(B),
            }
        );
        assert!(
            err.to_string()
                .starts_with("the checksum file lists \"d.iso\" twice")
        );
        let same_twice = [entry("e.iso", A), entry("./e.iso", A)];
        assert_eq!(find_checksum(&same_twice, "e.iso"), Ok(hash(A)));
    }

    #[test]
    fn not_found_lists_what_is_there() {
        let entries: Vec<ChecksumEntry> = (0..15)
            .flat_map(|i| {
                [
                    entry(&format!("f{i}.iso"), A),
                    entry(&format!("f{i}.iso"), A),
                ]
            })
            .collect();
        let err = find_checksum(&entries, "g.iso").expect_err("absent");
        let ChecksumLookupError::NotFound { found, n_names, .. } = &err else {
            panic!("wrong error {err:?}");
        };
        assert_eq!(found.len(), MAX_LISTED_NAMES);
        assert_eq!(found[1], "f1.iso");
        assert_eq!(*n_names, 15);
        assert!(err.to_string().ends_with("\"f9.iso\" and 5 more)"), "{err}");

        let err = find_checksum(&[], "g.iso").expect_err("absent");
        assert_eq!(
            err.to_string(),
            "no SHA-256 for \"g.iso\" in the checksum file (it has no SHA-256 entries)"
        );
        // Control characters from the file are escaped in the message.
        let err = find_checksum(&[entry("evil\u{1b}[2J", A)], "g.iso").expect_err("absent");
        assert!(err.to_string().contains("evil\\u{1b}[2J"), "{err}");
    }

    fn arb_entry() -> impl Strategy<Value = ChecksumEntry> {
        let name = prop_oneof![
            "[a-zA-Z0-9._/ -]{1,30}",
            "[*( )=\\\\\r\n#\t]{1,6}[a-z]{0,3}",
            any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
        ];
        (name, any::<[u8; 32]>()).prop_map(|(name, bytes)| ChecksumEntry {
            name,
            sha256: Sha256Hex::from_bytes(bytes),
        })
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in any::<[u8; 32]>(), upper in any::<bool>()) {
            let hash = Sha256Hex::from_bytes(bytes);
            let text = hash.to_string();
            prop_assert_eq!(text.len(), 64);
            prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            let text = if upper { text.to_ascii_uppercase() } else { text };
            prop_assert_eq!(Sha256Hex::parse(&text), Ok(hash));
        }

        #[test]
        fn formatted_entries_parse_back(
            entries in proptest::collection::vec((arb_entry(), any::<bool>()), 0..12),
            crlf in any::<bool>(),
        ) {
            let line_end = if crlf { "\r\n" } else { "\n" };
            let mut text = String::from("# generated\n");
            for (entry, bsd) in &entries {
                text.push_str(&if *bsd { entry.bsd_line() } else { entry.gnu_line() });
                text.push_str(line_end);
            }
            let expected: Vec<ChecksumEntry> = entries.into_iter().map(|(e, _)| e).collect();
            prop_assert_eq!(parse_checksums(&text), expected);
        }

        #[test]
        fn parse_never_panics(text in ".{0,300}") {
            let entries = parse_checksums(&text);
            for entry in &entries {
                prop_assert!(!entry.name.is_empty());
                prop_assert_eq!(find_checksum(std::slice::from_ref(entry), &entry.name), Ok(entry.sha256));
            }
        }

        #[test]
        fn every_parsed_name_is_found(
            entries in proptest::collection::vec(arb_entry(), 1..8),
        ) {
            let text: String = entries.iter().map(|e| e.gnu_line() + "\n").collect();
            let parsed = parse_checksums(&text);
            for entry in &parsed {
                match find_checksum(&parsed, &entry.name) {
                    Ok(_) | Err(ChecksumLookupError::Conflict { .. }) => {}
                    Err(other) => prop_assert!(false, "{:?} not found: {}", entry.name, other),
                }
            }
        }
    }
}
