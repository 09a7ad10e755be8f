//! The default output file name: taken from the URL's last path segment and
//! sanitised, because it comes from the network and must never name a path
//! outside the current directory. (A server's `Content-Disposition` name is
//! not used: the output is chosen before any request, and a name the server
//! picks is one more piece of untrusted input.)
//!
//! A sanitised name is a single path component: no `/`, `\`, NUL or other
//! control character, no bidirectional-text override (which can disguise an
//! extension), no surrounding whitespace, no leading dot (so never `.`, `..`
//! or a hidden file), at most 255 bytes, and not empty.

/// Longest file name most file systems accept, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// Longest extension (with its dot, in bytes) kept when a long name is cut.
const MAX_KEPT_EXTENSION_BYTES: usize = 16;

/// Longest input echoed back in an error, in characters.
const MAX_ECHO_CHARS: usize = 120;

/// Why no file name could be derived.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The URL's path has no usable last segment (`https://host/`, `.../..`).
    #[error("cannot take a file name from {url:?}; choose the output path with -o")]
    NoFileName {
        /// The URL without credentials, query or fragment, truncated.
        url: String,
    },
    /// Nothing is left of the name once sanitised.
    #[error("{raw:?} is not a usable file name; choose the output path with -o")]
    Empty {
        /// The name before sanitising, truncated.
        raw: String,
    },
}

/// The file name a URL points at: its last non-empty path segment, without
/// query or fragment, percent-decoded (invalid UTF-8 replaced by U+FFFD), then
/// [sanitised](sanitize_file_name).
///
/// The URL is split by hand (`scheme://authority/path?query#fragment`); input
/// without `://` is taken as a bare path.
pub fn file_name_from_url(url: &str) -> Result<String, NameError> {
    let parts = UrlParts::split(url);
    let no_file_name = || NameError::NoFileName {
        url: parts.redacted(),
    };
    let segment = parts
        .path
        .rsplit('/')
        .find(|segment| !segment.is_empty())
        .ok_or_else(no_file_name)?;
    let decoded = String::from_utf8_lossy(&percent_decode(segment)).into_owned();
    sanitize_file_name(&decoded).map_err(|_| no_file_name())
}

/// Makes `raw` safe to use as a file name in the current directory.
///
/// Separators (`/`, `\`), control characters and bidirectional-text controls
/// become `_`; surrounding whitespace and leading dots are removed; a name
/// longer than 255 bytes is cut at a character boundary, keeping a short
/// extension (up to 15 bytes after the dot). Sanitising a sanitised name
/// returns it unchanged.
pub fn sanitize_file_name(raw: &str) -> Result<String, NameError> {
    // Trim first so that a trailing newline is dropped, not turned into `_`.
    let replaced: String = raw
        .trim()
        .chars()
        .map(|c| if is_forbidden(c) { '_' } else { c })
        .collect();
    let name = replaced
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end();
    let name = truncate_keeping_extension(name);
    if name.is_empty() {
        return Err(NameError::Empty {
            raw: truncate_chars(raw, MAX_ECHO_CHARS),
        });
    }
    Ok(name)
}

/// Whether `c` may not appear in a sanitised name.
fn is_forbidden(c: char) -> bool {
    matches!(c, '/' | '\\')
        || c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Cuts a name to [`MAX_NAME_BYTES`], keeping a short extension when there is
/// one. The input has no leading whitespace or dot, so the kept stem is never
/// empty.
fn truncate_keeping_extension(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_owned();
    }
    let extension = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= MAX_KEPT_EXTENSION_BYTES => &name[dot..],
        _ => "",
    };
    let stem = &name[..name.len() - extension.len()];
    let cut = floor_char_boundary(stem, MAX_NAME_BYTES - extension.len());
    // The stem's end may now be whitespace; trim it so the result is a fixed
    // point of sanitising (an extension ends in a non-space already).
    let mut truncated = stem[..cut].trim_end().to_owned();
    truncated.push_str(extension);
    truncated
}

/// The largest character boundary of `s` not above `index`.
fn floor_char_boundary(s: &str, index: usize) -> usize {
    (0..=index.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// `%XX` sequences decoded to bytes; a `%` not followed by two hex digits is
/// kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        let escaped = bytes.get(idx + 1..idx + 3).and_then(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        });
        match (bytes[idx], escaped) {
            (b'%', Some(byte)) => {
                out.push(byte);
                idx += 3;
            }
            (byte, _) => {
                out.push(byte);
                idx += 1;
            }
        }
    }
    out
}

/// A URL cut into the pieces this module needs.
struct UrlParts<'a> {
    /// `https://` or empty when the input has no scheme.
    scheme_and_slashes: &'a str,
    /// `host:port`, without any `user:password@`.
    host: &'a str,
    /// The path, without query or fragment.
    path: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Self {
        let url = url.trim();
        let end = url.find(['?', '#']).unwrap_or(url.len());
        let url = &url[..end];
        let Some(scheme_end) = url.find("://").filter(|&idx| is_scheme(&url[..idx])) else {
            return Self {
                scheme_and_slashes: "",
                host: "",
                path: url,
            };
        };
        let (scheme_and_slashes, rest) = url.split_at(scheme_end + 3);
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        Self {
            scheme_and_slashes,
            host,
            path,
        }
    }

    /// The URL for messages: no credentials, query or fragment, truncated.
    fn redacted(&self) -> String {
        let text = format!("{}{}{}", self.scheme_and_slashes, self.host, self.path);
        truncate_chars(&text, MAX_ECHO_CHARS)
    }
}

/// Whether `s` is a URL scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The first `max` characters of `s`.
fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(url: &str) -> Result<String, NameError> {
        file_name_from_url(url)
    }

    fn assert_safe(name: &str) {
        assert!(!name.is_empty() && name != "." && name != "..", "{name:?}");
        assert!(!name.starts_with('.'), "{name:?}");
        assert!(!name.chars().any(is_forbidden), "{name:?}");
        assert!(name.len() <= MAX_NAME_BYTES, "{name:?}");
        assert_eq!(name.trim(), name);
    }

    #[test]
    fn takes_the_last_segment_of_the_path() {
        let ok =
            |url: &str, expected: &str| assert_eq!(name(url).as_deref(), Ok(expected), "{url}");
        ok(
            "https://releases.ubuntu.com/24.04/ubuntu-24.04-desktop-amd64.iso",
            "ubuntu-24.04-desktop-amd64.iso",
        );
        ok(
            "https://example.com/dir/file.tar.gz?token=abc&x=/y#frag/z",
            "file.tar.gz",
        );
        ok("https://example.com/dir/sub/", "sub");
        ok("https://example.com/a%20b%2Fc.iso", "a b_c.iso");
        ok("https://example.com/%E2%82%AC.iso", "€.iso");
        ok("https://example.com/%FF.iso", "\u{fffd}.iso");
        ok("https://example.com/100%25.iso", "100%.iso");
        ok("https://example.com/bad%zz%4.iso", "bad%zz%4.iso");
        ok("https://example.com/%2e%2e%2fetc%2fpasswd", "_etc_passwd");
        ok("https://user:p@ss@example.com/f.iso", "f.iso");
        ok("http://[::1]:8080/f.iso", "f.iso");
        ok("/local/path/f.iso", "f.iso");
        ok("f.iso", "f.iso");
        ok("https://example.com/.hidden", "hidden");
    }

    #[test]
    fn urls_without_a_name_are_errors_without_secrets() {
        for url in [
            "https://example.com",
            "https://example.com/",
            "https://example.com//",
            "https://example.com?x=/y.iso",
            "https://example.com/a/..",
            "https://example.com/%2e",
            "",
        ] {
            assert!(
                matches!(name(url), Err(NameError::NoFileName { .. })),
                "{url}: {:?}",
                name(url)
            );
        }
        let err = name("https://user:secret@example.com/?sig=token").expect_err("no name");
        assert_eq!(
            err.to_string(),
            r#"cannot take a file name from "https://example.com/"; choose the output path with -o"#
        );
    }

    #[test]
    fn sanitises_hostile_names() {
        let ok = |raw: &str, expected: &str| {
            assert_eq!(sanitize_file_name(raw).as_deref(), Ok(expected), "{raw:?}");
        };
        ok("plain.iso", "plain.iso");
        ok("  spaced name.iso \n", "spaced name.iso");
        ok("a/b\\c.iso", "a_b_c.iso");
        ok("nul\0bell\u{7}del\u{7f}", "nul_bell_del_");
        ok("evil\u{202e}osi.exe", "evil_osi.exe");
        ok("...dots", "dots");
        ok(". .x", "x");
        ok("../../etc/passwd", "_.._etc_passwd");
        ok("tab\tinside", "tab_inside");
        for raw in ["", " ", ".", "..", "...", " . . ", "\n"] {
            assert!(
                matches!(sanitize_file_name(raw), Err(NameError::Empty { .. })),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn long_names_keep_their_extension() {
        let long = format!("{}.iso", "a".repeat(300));
        let cut = sanitize_file_name(&long).expect("usable");
        assert_eq!(cut.len(), MAX_NAME_BYTES);
        assert!(cut.ends_with("a.iso"));

        // Multi-byte characters are never split.
        let long = format!("{}.tar.gz", "é".repeat(200));
        let cut = sanitize_file_name(&long).expect("usable");
        assert!(
            cut.len() <= MAX_NAME_BYTES && cut.ends_with("é.gz"),
            "{cut}"
        );

        // A "extension" too long to be one is cut like the rest.
        let long = format!("x.{}", "b".repeat(300));
        assert_eq!(
            sanitize_file_name(&long).expect("usable").len(),
            MAX_NAME_BYTES
        );

        // Whitespace exposed by the cut is trimmed.
        let long = format!("{} {}", "c".repeat(254), "d".repeat(10));
        assert_eq!(sanitize_file_name(&long).expect("usable"), "c".repeat(254));
    }

    /// Every byte percent-encoded, the strongest test of the decoder.
    fn percent_encode_all(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    proptest! {
        #[test]
        fn sanitised_names_are_safe_and_stable(raw in prop_oneof![any::<String>(), "[ ./\\\\a-z\t\n\u{202e}é]{0,300}"]) {
            if let Ok(clean) = sanitize_file_name(&raw) {
                assert_safe(&clean);
                prop_assert_eq!(sanitize_file_name(&clean), Ok(clean.clone()));
            }
        }

        #[test]
        fn plain_names_come_back_from_urls(file in "[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,40}", query in "[a-z=&/]{0,10}") {
            prop_assert_eq!(name(&format!("https://host.example/dir/{file}?{query}#x/y")), Ok(file));
        }

        #[test]
        fn encoded_names_decode_then_sanitise(raw in any::<String>()) {
            // An empty last segment would make the URL name its directory.
            if !raw.is_empty() {
                let url = format!("https://host.example/d/{}", percent_encode_all(&raw));
                match sanitize_file_name(&raw) {
                    Ok(clean) => prop_assert_eq!(name(&url), Ok(clean)),
                    Err(_) => prop_assert!(name(&url).is_err()),
                }
            }
        }

        #[test]
        fn arbitrary_input_never_panics(input in ".{0,200}") {
            if let Ok(clean) = name(&input) {
                assert_safe(&clean);
            }
        }
    }
}
