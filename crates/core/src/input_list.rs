//! The list `get -i` reads: one file per line, each its URL, its mirrors,
//! an optional expected SHA-256 and an optional output path. Pure: no I/O,
//! so property tests and the `input_list` fuzz target reach it directly.
//!
//! A line is, fields separated by spaces or tabs:
//!
//! ```text
//! [HASH [*]]URL [MIRROR...] [PATH]
//! ```
//!
//! - `HASH`, 64 hex digits of either case, makes `HASH  URL` a line of a
//!   `SHA256SUMS`-style list whose names are URLs; sha256sum's `*` (binary
//!   mode) before the URL is accepted and means nothing more.
//! - `URL` and each `MIRROR` are `http://` or `https://` URLs of the same
//!   bytes (tabs between them, by convention); a field is a URL when it
//!   contains `://`.
//! - `PATH`, the one field that is not a URL, comes last: a relative path
//!   inside the working directory, `/`-separated, whose every component is
//!   a plain file name (no `..`, no leading dot, no control character; `.`
//!   and empty components are dropped). Without it the output is the first
//!   URL's file name, sanitised as `get` names a file. A path cannot hold a
//!   space or a tab.
//! - A line whose first non-blank character is `#` is a comment; blank
//!   lines are skipped; a `\r` before the newline and a UTF-8 byte-order
//!   mark are ignored.
//!
//! The list is untrusted: lines, entries and URLs per entry are bounded,
//! every error names its line, no error echoes a URL (it may carry a
//! token), and two entries with one output path are an error.

use std::collections::HashMap;

use crate::checksums::{HashParseError, Sha256Hex};
use crate::name::{file_name_from_url, sanitize_file_name};

/// Longest line, in bytes, without its newline (signed URLs are long).
pub const MAX_LIST_LINE_BYTES: usize = 16 * 1024;
/// Most entries in one list.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Most URLs of one entry: its URL and its mirrors.
pub const MAX_LIST_URLS: usize = 16;
/// Largest list, in bytes (a reader of stdin stops there).
pub const MAX_LIST_BYTES: usize = 64 << 20;
/// Longest output path, in bytes.
const MAX_PATH_BYTES: usize = 4096;

/// One file of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputEntry {
    /// Its line in the list, from 1.
    pub line: usize,
    /// The expected SHA-256, when the line gives one.
    pub sha256: Option<Sha256Hex>,
    /// The URL, then its mirrors; never empty.
    pub urls: Vec<String>,
    /// The output path: relative, `/`-separated, inside the working
    /// directory.
    pub output: String,
}

impl InputEntry {
    /// The entry as a line of a list (without newline) that parses back to
    /// it: the path is written only when it is not the URL's own name.
    pub fn to_line(&self) -> String {
        let mut line = String::new();
        if let Some(sha256) = &self.sha256 {
            line.push_str(&sha256.to_string());
            line.push_str("  ");
        }
        line.push_str(&self.urls.join("\t"));
        let derived = self
            .urls
            .first()
            .and_then(|url| file_name_from_url(url).ok());
        if derived.as_deref() != Some(self.output.as_str()) {
            line.push(' ');
            line.push_str(&self.output);
        }
        line
    }

    /// The first URL as events show it: no `user:password`, no signature
    /// or token in its query.
    pub fn shown_url(&self) -> String {
        self.urls
            .first()
            .and_then(|url| reqwest::Url::parse(url).ok())
            .map(|url| crate::error::redact_url(&url))
            .unwrap_or_default()
    }
}

/// Why a list was refused; every variant but the list-wide ones names the
/// line, from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputListError {
    /// The list is larger than [`MAX_LIST_BYTES`].
    #[error("the list is larger than {max} bytes")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// More than [`MAX_LIST_ENTRIES`] entries.
    #[error("the list has more than {max} entries")]
    TooManyEntries {
        /// The bound.
        max: usize,
    },
    /// No entry at all (only comments and blank lines).
    #[error("the list names no file")]
    NoEntries,
    /// A line longer than [`MAX_LIST_LINE_BYTES`].
    #[error("line {line}: longer than {max} bytes")]
    LineTooLong {
        /// The line.
        line: usize,
        /// The bound.
        max: usize,
    },
    /// A line that is not UTF-8.
    #[error("line {line}: not UTF-8 text")]
    NotUtf8 {
        /// The line.
        line: usize,
    },
    /// The first field is hex but not a SHA-256.
    #[error("line {line}: not a SHA-256")]
    BadHash {
        /// The line.
        line: usize,
        /// What is wrong with it.
        #[source]
        source: HashParseError,
    },
    /// The first field is neither a hash nor a URL.
    #[error("line {line}: expected a SHA-256 or a URL first")]
    NotHashOrUrl {
        /// The line.
        line: usize,
    },
    /// A hash with no URL after it.
    #[error("line {line}: a hash without a URL")]
    NoUrl {
        /// The line.
        line: usize,
    },
    /// A URL that does not parse.
    #[error("line {line}: URL {field} is not a valid URL ({reason})")]
    BadUrl {
        /// The line.
        line: usize,
        /// Which URL of the line, from 1.
        field: usize,
        /// The parser's reason (it does not repeat the URL).
        reason: String,
    },
    /// A URL of another scheme than `http` and `https`.
    #[error("line {line}: URL {field} is {scheme}:, not http: or https:")]
    UnsupportedScheme {
        /// The line.
        line: usize,
        /// Which URL of the line, from 1.
        field: usize,
        /// Its scheme.
        scheme: String,
    },
    /// More than [`MAX_LIST_URLS`] URLs on one line.
    #[error("line {line}: more than {max} URLs for one file")]
    TooManyUrls {
        /// The line.
        line: usize,
        /// The bound.
        max: usize,
    },
    /// A field after the path, or a second path.
    #[error("line {line}: a field after the output path (a path holds no space)")]
    ExtraField {
        /// The line.
        line: usize,
    },
    /// An output path that would leave the working directory or is not
    /// a plain path.
    #[error("line {line}: output path {reason}")]
    BadPath {
        /// The line.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No output path given and none can be taken from the URL.
    #[error("line {line}: the URL names no file; give an output path after it")]
    NoFileName {
        /// The line.
        line: usize,
    },
    /// Two entries with one output path.
    #[error("line {line}: output {path} is also line {first_line}'s")]
    DuplicateOutput {
        /// The later line.
        line: usize,
        /// The earlier one.
        first_line: usize,
        /// The path both name.
        path: String,
    },
}

/// Parses a `get -i` list: one file per line, `[HASH [*]]URL [MIRROR...] [PATH]`,
/// `#` comments and blank lines skipped (docs/CONTRACT.md has the whole format).
pub fn parse_input_list(list: &[u8]) -> Result<Vec<InputEntry>, InputListError> {
    if list.len() > MAX_LIST_BYTES {
        return Err(InputListError::TooLarge {
            max: MAX_LIST_BYTES,
        });
    }
    let mut entries = Vec::new();
    let mut outputs: HashMap<String, usize> = HashMap::new();
    for (line_idx, raw) in list.split(|&b| b == b'\n').enumerate() {
        let line = line_idx + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.len() > MAX_LIST_LINE_BYTES {
            return Err(InputListError::LineTooLong {
                line,
                max: MAX_LIST_LINE_BYTES,
            });
        }
        let text = std::str::from_utf8(raw).map_err(|_| InputListError::NotUtf8 { line })?;
        let text = if line == 1 {
            text.strip_prefix('\u{feff}').unwrap_or(text)
        } else {
            text
        };
        let Some(entry) = parse_line(text, line)? else {
            continue;
        };
        if entries.len() == MAX_LIST_ENTRIES {
            return Err(InputListError::TooManyEntries {
                max: MAX_LIST_ENTRIES,
            });
        }
        if let Some(&first_line) = outputs.get(&entry.output) {
            return Err(InputListError::DuplicateOutput {
                line,
                first_line,
                path: entry.output,
            });
        }
        outputs.insert(entry.output.clone(), line);
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(InputListError::NoEntries);
    }
    Ok(entries)
}

/// One line: `None` for a comment or a blank line.
fn parse_line(text: &str, line: usize) -> Result<Option<InputEntry>, InputListError> {
    let trimmed = text.trim_matches([' ', '\t']);
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut fields = trimmed
        .split([' ', '\t'])
        .filter(|field| !field.is_empty())
        .peekable();
    let mut sha256 = None;
    if let Some(&first) = fields.peek()
        && !is_url_like(first)
    {
        if !first.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InputListError::NotHashOrUrl { line });
        }
        let parsed =
            Sha256Hex::parse(first).map_err(|source| InputListError::BadHash { line, source })?;
        sha256 = Some(parsed);
        fields.next();
        // sha256sum's binary-mode marker, alone or on the URL.
        if fields.peek() == Some(&"*") {
            fields.next();
        }
    }
    let mut urls: Vec<String> = Vec::new();
    let mut output = None;
    for (field_idx, field) in fields.enumerate() {
        let field = if field_idx == 0 && sha256.is_some() {
            field.strip_prefix('*').unwrap_or(field)
        } else {
            field
        };
        if output.is_some() {
            return Err(InputListError::ExtraField { line });
        }
        if is_url_like(field) {
            if urls.len() == MAX_LIST_URLS {
                return Err(InputListError::TooManyUrls {
                    line,
                    max: MAX_LIST_URLS,
                });
            }
            check_url(field, line, urls.len() + 1)?;
            urls.push(field.to_owned());
        } else if urls.is_empty() {
            return Err(if sha256.is_some() {
                InputListError::NoUrl { line }
            } else {
                InputListError::NotHashOrUrl { line }
            });
        } else {
            let path = normalize_output(field)
                .map_err(|reason| InputListError::BadPath { line, reason })?;
            output = Some(path);
        }
    }
    let Some(first_url) = urls.first() else {
        return Err(InputListError::NoUrl { line });
    };
    let output = match output {
        Some(output) => output,
        None => file_name_from_url(first_url).map_err(|_| InputListError::NoFileName { line })?,
    };
    Ok(Some(InputEntry {
        line,
        sha256,
        urls,
        output,
    }))
}

fn is_url_like(field: &str) -> bool {
    field.contains("://")
}

fn check_url(field: &str, line: usize, field_no: usize) -> Result<(), InputListError> {
    // The URL parser drops tabs, CRs and newlines inside a URL; a field
    // with any control character is refused instead of read as another URL.
    if field.chars().any(char::is_control) {
        return Err(InputListError::BadUrl {
            line,
            field: field_no,
            reason: "a control character in it".to_owned(),
        });
    }
    let url = reqwest::Url::parse(field).map_err(|error| InputListError::BadUrl {
        line,
        field: field_no,
        reason: error.to_string(),
    })?;
    match url.scheme() {
        "http" | "https" => Ok(()),
        scheme => Err(InputListError::UnsupportedScheme {
            line,
            field: field_no,
            // Schemes are short ASCII words; a long one is cut.
            scheme: scheme.chars().take(16).collect(),
        }),
    }
}

/// A path given in the list, checked and normalised: relative, no `..`,
/// each component a name sanitising leaves as it is; `.` and empty
/// components dropped.
fn normalize_output(raw: &str) -> Result<String, &'static str> {
    if raw.len() > MAX_PATH_BYTES {
        return Err("is too long");
    }
    if raw.starts_with('/') {
        return Err("is absolute; it must be relative to the working directory");
    }
    let mut components = Vec::new();
    for component in raw.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("has a `..` component; it must stay inside the working directory"),
            name => {
                if sanitize_file_name(name).as_deref() != Ok(name) {
                    return Err(
                        "has a component that is not a plain file name (leading dot, control or backslash character)",
                    );
                }
                components.push(name);
            }
        }
    }
    if components.is_empty() {
        return Err("names no file");
    }
    Ok(components.join("/"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn parse(text: &str) -> Result<Vec<InputEntry>, InputListError> {
        parse_input_list(text.as_bytes())
    }

    fn one(text: &str) -> InputEntry {
        let mut entries = parse(text).expect("the list parses");
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.remove(0)
    }

    #[test]
    fn every_line_form_reads() {
        let hash = Sha256Hex::parse(HASH).expect("a hash");
        let bare = one("https://h/a/disk.img");
        assert_eq!(
            (bare.sha256, bare.urls.clone(), bare.output.as_str()),
            (None, vec!["https://h/a/disk.img".to_owned()], "disk.img")
        );
        assert_eq!(one("https://h/a/disk.img out/x.img").output, "out/x.img");
        let sums = one(&format!("{}  http://h/f.iso", HASH.to_uppercase()));
        assert_eq!((sums.sha256, sums.output.as_str()), (Some(hash), "f.iso"));
        assert_eq!(
            one(&format!("{HASH} *http://h/f.iso")).urls,
            ["http://h/f.iso"]
        );
        assert_eq!(
            one(&format!("{HASH}  * http://h/f.iso")).urls,
            ["http://h/f.iso"]
        );
        let mirrored = one(&format!(
            "{HASH}  http://a/f.iso\thttp://b/f.iso\thttps://c/f.iso  ./iso//f"
        ));
        assert_eq!(mirrored.urls.len(), 3);
        assert_eq!(mirrored.output, "iso/f");
    }

    #[test]
    fn comments_blank_lines_crlf_and_bom_are_skipped_and_lines_counted() {
        let list = "\u{feff}# a list\r\n\r\n   \n  # indented\nhttp://h/a\r\n\thttp://h/b\t\n";
        let entries = parse(list).expect("parses");
        let lines: Vec<_> = entries
            .iter()
            .map(|e| (e.line, e.output.as_str()))
            .collect();
        assert_eq!(lines, [(5, "a"), (6, "b")]);
    }

    #[test]
    fn paths_that_leave_the_directory_are_refused() {
        for path in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            ".hidden",
            "a/.ssh/k",
            ".",
            "./",
            "a\\b",
            "a/\u{202e}gpj.exe",
        ] {
            let error = parse(&format!("http://h/f {path}")).expect_err(path);
            assert!(
                matches!(error, InputListError::BadPath { line: 1, .. }),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn malformed_lines_name_their_line_and_never_echo_the_url() {
        let secret = "http://user:hunter2@h/f?sig=s3cret";
        type Case = (String, fn(&InputListError) -> bool);
        let cases: Vec<Case> = vec![
            ("deadbeef http://h/f".into(), |e| {
                matches!(e, InputListError::BadHash { line: 2, .. })
            }),
            ("file.iso".into(), |e| {
                matches!(e, InputListError::NotHashOrUrl { line: 2 })
            }),
            (HASH.into(), |e| {
                matches!(e, InputListError::NoUrl { line: 2 })
            }),
            (format!("{HASH}  name.iso"), |e| {
                matches!(e, InputListError::NoUrl { line: 2 })
            }),
            ("http://h/f a b".into(), |e| {
                matches!(e, InputListError::ExtraField { line: 2 })
            }),
            ("http://h/f a http://m/f".into(), |e| {
                matches!(e, InputListError::ExtraField { line: 2 })
            }),
            ("ftp://h/f".into(), |e| {
                matches!(
                    e,
                    InputListError::UnsupportedScheme {
                        line: 2,
                        field: 1,
                        ..
                    }
                )
            }),
            ("ht\rtp://h/f".into(), |e| {
                matches!(
                    e,
                    InputListError::BadUrl {
                        line: 2,
                        field: 1,
                        ..
                    }
                )
            }),
            (format!("http://h/f http://[::1/{secret}"), |e| {
                matches!(
                    e,
                    InputListError::BadUrl {
                        line: 2,
                        field: 2,
                        ..
                    }
                )
            }),
            ("http://h/".into(), |e| {
                matches!(e, InputListError::NoFileName { line: 2 })
            }),
            ("http://h/a/f\nhttp://other/b/f".into(), |e| {
                matches!(
                    e,
                    InputListError::DuplicateOutput {
                        line: 3,
                        first_line: 2,
                        ..
                    }
                )
            }),
            (
                format!("http://h/{}", "a".repeat(MAX_LIST_LINE_BYTES)),
                |e| matches!(e, InputListError::LineTooLong { line: 2, .. }),
            ),
            (vec!["http://h/f"; MAX_LIST_URLS + 1].join("\t"), |e| {
                matches!(e, InputListError::TooManyUrls { line: 2, .. })
            }),
        ];
        for (line, expected) in cases {
            let list = format!("# header\n{line}\n");
            let error = parse(&list).expect_err(&line);
            assert!(expected(&error), "{line:?}: {error:?}");
            let text = error.to_string();
            assert!(
                !text.contains("hunter2") && !text.contains("s3cret"),
                "{text}"
            );
        }
        assert_eq!(parse("# nothing\n\n"), Err(InputListError::NoEntries));
        assert_eq!(
            parse_input_list(b"http://h/f\n\xff\n"),
            Err(InputListError::NotUtf8 { line: 2 })
        );
    }

    #[test]
    fn entries_are_bounded() {
        let list: String = (0..=MAX_LIST_ENTRIES)
            .map(|i| format!("http://h/f{i}\n"))
            .collect();
        assert_eq!(
            parse(&list),
            Err(InputListError::TooManyEntries {
                max: MAX_LIST_ENTRIES
            })
        );
    }

    #[test]
    fn the_shown_url_has_no_credentials() {
        let entry = one("https://user:pw@h/f?X-Amz-Signature=abc&part=1");
        let shown = entry.shown_url();
        assert!(!shown.contains("pw") && !shown.contains("abc"), "{shown}");
        assert!(shown.contains("part=1"), "{shown}");
    }

    fn entry_strategy()
    -> impl Strategy<Value = (Option<[u8; 32]>, Vec<String>, Option<Vec<String>>)> {
        let url = (
            "(http|https|HTTP)",
            "[a-z][a-z0-9]{0,10}",
            "[a-zA-Z0-9._~%-]{0,12}",
        )
            .prop_map(|(scheme, host, dir)| format!("{scheme}://{host}/{dir}"));
        (
            proptest::option::of(any::<[u8; 32]>()),
            proptest::collection::vec(url, 1..4),
            proptest::option::of(proptest::collection::vec(
                "[a-zA-Z0-9_-][a-zA-Z0-9._ -]{0,8}[a-zA-Z0-9_-]|[a-z]",
                1..4,
            )),
        )
    }

    proptest! {
        /// Entries written as lines — with comments, blank lines, CRLF,
        /// either hash case and the binary marker between them — parse back.
        #[test]
        fn generated_lists_round_trip(
            specs in proptest::collection::vec(entry_strategy(), 1..12),
            decorations in proptest::collection::vec(0u8..8, 12),
        ) {
            let mut list = String::new();
            let mut expected = Vec::new();
            let mut line = 0;
            for (idx, (hash, urls, path)) in specs.into_iter().enumerate() {
                // Unique file names: the entry's index ends every URL.
                let urls: Vec<String> = urls.iter().map(|url| format!("{url}/file{idx}.bin")).collect();
                let output = match &path {
                    Some(components) => format!("e{idx}/{}", components.join("/").replace(' ', "_")),
                    None => format!("file{idx}.bin"),
                };
                let decoration = decorations[idx % decorations.len()];
                if decoration == 1 {
                    list.push_str("# comment\n");
                    line += 1;
                }
                if decoration == 2 {
                    list.push_str("  \t\n");
                    line += 1;
                }
                let sha256 = hash.map(Sha256Hex::from_bytes);
                if let Some(sha256) = sha256 {
                    let hex = sha256.to_string();
                    let hex = if decoration == 3 { hex.to_uppercase() } else { hex };
                    let marker = if decoration == 4 { " *" } else { "  " };
                    list.push_str(&hex);
                    list.push_str(marker);
                }
                list.push_str(&urls.join("\t"));
                if path.is_some() {
                    list.push(' ');
                    list.push_str(if decoration == 5 { "./" } else { "" });
                    list.push_str(&output);
                }
                list.push_str(if decoration == 6 { "\r\n" } else { "\n" });
                line += 1;
                expected.push(InputEntry { line, sha256, urls, output });
            }
            let parsed = parse(&list).map_err(|e| TestCaseError::fail(format!("{e}\n{list}")))?;
            prop_assert_eq!(&parsed, &expected);
            let rewritten: String = parsed.iter().map(|e| e.to_line() + "\n").collect();
            prop_assert_eq!(parse(&rewritten).map(|e| e.len()), Ok(parsed.len()));
        }

        /// Any bytes: an error or entries that keep the promises, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(entries) = parse_input_list(&bytes) {
                for entry in entries {
                    prop_assert!(!entry.urls.is_empty());
                    prop_assert!(!entry.output.starts_with('/') && !entry.output.split('/').any(|c| c == ".."));
                }
            }
        }

        /// Line-shaped noise built from the format's own pieces.
        #[test]
        fn pieces_of_lines_never_panic(pieces in proptest::collection::vec(
            prop_oneof![
                Just(HASH.to_owned()), Just("*".to_owned()), Just("http://h/f".to_owned()),
                Just("https://u:p@h:1/a%2F..%2Fb?x#y".to_owned()), Just("../x".to_owned()),
                Just("#".to_owned()), Just("\t".to_owned()), Just(" ".to_owned()),
                Just("\r\n".to_owned()), Just("\n".to_owned()), Just("a/b".to_owned()),
                Just("://".to_owned()), "[ -~]{0,6}",
            ], 0..40)) {
            let list = pieces.concat();
            if let Ok(entries) = parse(&list) {
                let rewritten: String = entries.iter().map(|e| e.to_line() + "\n").collect();
                let reparsed = parse(&rewritten).map_err(|e| TestCaseError::fail(format!("{e}\n{rewritten}")))?;
                prop_assert_eq!(reparsed.len(), entries.len());
                for (again, entry) in reparsed.iter().zip(&entries) {
                    prop_assert_eq!((&again.sha256, &again.urls, &again.output), (&entry.sha256, &entry.urls, &entry.output));
                }
            }
        }
    }
}
