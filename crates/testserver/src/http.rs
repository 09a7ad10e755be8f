//! The HTTP/1.1 wire format, by hand: request-head parsing, the `Range` and `If-Range` headers,
//! and response-head formatting. Hand-rolled so that faults can break any part of it on purpose.

use std::ops::Range;
use std::time::SystemTime;

use crate::date;

/// The largest request head the server buffers; anything bigger gets 431 and a close.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A parsed request line and header block.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RequestHead {
    pub method: String,
    /// The request-target as sent, query included.
    pub target: String,
    /// The target's path without query, used to look the file up.
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header names lowercased, values trimmed, in the order received.
    pub headers: Vec<(String, String)>,
}

/// Why a request head could not be parsed; each maps to an error status and a close.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum HeadError {
    Malformed,
    VersionNotSupported,
}

impl HeadError {
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::Malformed => 400,
            Self::VersionNotSupported => 505,
        }
    }
}

impl RequestHead {
    /// The first header called `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the connection ends after this exchange: HTTP/1.1 persists unless told `close`,
    /// HTTP/1.0 closes unless told `keep-alive`.
    pub(crate) fn wants_close(&self) -> bool {
        let has_token = |token: &str| {
            self.headers
                .iter()
                .filter(|(name, _)| name == "connection")
                .flat_map(|(_, value)| value.split(','))
                .any(|option| option.trim().eq_ignore_ascii_case(token))
        };
        if self.minor_version == 0 {
            !has_token("keep-alive")
        } else {
            has_token("close")
        }
    }

    /// How many request-body bytes follow the head, so they can be skipped to keep the
    /// connection in step. A chunked body is not supported (no GET or HEAD client sends one).
    pub(crate) fn body_length(&self) -> Result<u64, HeadError> {
        if self.header("transfer-encoding").is_some() {
            return Err(HeadError::Malformed);
        }
        match self.header("content-length") {
            None => Ok(0),
            Some(value) => digits(value.trim()).ok_or(HeadError::Malformed),
        }
    }
}

/// Parses one request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, or the head and how many bytes of `buf` it
/// took. Blank lines before the request line are skipped, as RFC 9112 section 2.2 asks.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let Some(start) = buf.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return Ok(None);
    };
    let Some(len) = find_head_end(&buf[start..]) else {
        return Ok(None);
    };
    // Header values are ASCII in practice; lossy decoding keeps a stray byte from failing the
    // whole request.
    let text = String::from_utf8_lossy(&buf[start..start + len]);
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().ok_or(HeadError::Malformed)?;
    let mut parts = request_line.split(' ').filter(|part| !part.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        other if other.starts_with("HTTP/") => return Err(HeadError::VersionNotSupported),
        _ => return Err(HeadError::Malformed),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        // Obsolete line folding is a request-smuggling vector; RFC 9112 lets servers reject it.
        if line.starts_with([' ', '\t']) {
            return Err(HeadError::Malformed);
        }
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed)?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(HeadError::Malformed);
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let head = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        path: path_of_target(target),
        minor_version,
        headers,
    };
    Ok(Some((head, start + len)))
}

/// Length of the head at the start of `buf`, through the blank line that ends it; bare `\n`
/// line ends are accepted as RFC 9112 allows.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.iter().enumerate().find_map(|(idx, &byte)| {
        if byte != b'\n' {
            return None;
        }
        match buf.get(idx + 1..) {
            Some([b'\n', ..]) => Some(idx + 2),
            Some([b'\r', b'\n', ..]) => Some(idx + 3),
            _ => None,
        }
    })
}

/// The path of a request-target: the origin form without its query, or the path part of the
/// absolute form a proxy-style client sends.
fn path_of_target(target: &str) -> String {
    let without_scheme = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"));
    let origin_form = match without_scheme {
        Some(rest) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => target,
    };
    let path = origin_form.split(['?', '#']).next().unwrap_or(origin_form);
    path.to_owned()
}

/// A decimal number as HTTP writes them (digits only), saturating at `u64::MAX` so that an
/// absurd first-byte-pos reads as unsatisfiable rather than as a syntax error.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// One byte-range-spec of a `Range` header, still in HTTP's inclusive form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeSpec {
    /// `bytes=first-last`, both inclusive.
    FromTo(u64, u64),
    /// `bytes=first-`.
    From(u64),
    /// `bytes=-len`: the last `len` bytes.
    Suffix(u64),
}

/// What a `Range` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeHeader {
    Single(RangeSpec),
    /// Several ranges; this server answers those with the whole file, which RFC 9110 allows.
    Multiple,
    /// Not a bytes range, or not parseable: ignored, as RFC 9110 section 14.2 requires.
    Invalid,
}

/// Parses a `Range` header value.
pub(crate) fn parse_range(value: &str) -> RangeHeader {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return RangeHeader::Invalid;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeHeader::Invalid;
    }
    // Empty list elements are allowed by the `#rule` list syntax and mean nothing.
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
        .collect();
    let parsed: Option<Vec<RangeSpec>> = specs.iter().map(|spec| parse_spec(spec)).collect();
    match parsed.as_deref() {
        Some([single]) => RangeHeader::Single(*single),
        Some([_, _, ..]) => RangeHeader::Multiple,
        _ => RangeHeader::Invalid,
    }
}

fn parse_spec(spec: &str) -> Option<RangeSpec> {
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return digits(last).map(RangeSpec::Suffix);
    }
    let first = digits(first)?;
    if last.is_empty() {
        return Some(RangeSpec::From(first));
    }
    let last = digits(last)?;
    // last < first is a syntax error (RFC 9110 section 14.1.1), not an unsatisfiable range.
    (last >= first).then_some(RangeSpec::FromTo(first, last))
}

impl RangeSpec {
    /// The half-open byte range this spec selects in a file of `size` bytes, or `None` when it
    /// is unsatisfiable. Every range is unsatisfiable on an empty file, as S3 answers.
    pub(crate) fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            Self::FromTo(first, last) => {
                (first < size).then(|| first..last.saturating_add(1).min(size))
            }
            Self::From(first) => (first < size).then_some(first..size),
            Self::Suffix(len) => (len > 0 && size > 0).then(|| size - len.min(size)..size),
        }
    }

    /// The first byte offset this spec asks for; a suffix needs the file's size to say.
    pub(crate) fn start(self, size: Option<u64>) -> Option<u64> {
        match self {
            Self::FromTo(first, _) | Self::From(first) => Some(first),
            Self::Suffix(len) => size.map(|size| size.saturating_sub(len)),
        }
    }
}

/// Whether an `If-Range` value is the entity-tag form (as opposed to an HTTP-date).
pub(crate) fn is_etag_form(value: &str) -> bool {
    let value = value.trim();
    value.starts_with('"') || value.starts_with("W/")
}

/// Whether `If-Range: value` lets a range through for a file with these validators: a strong
/// ETag must match exactly, a weak one never does, a date must equal `Last-Modified` to the
/// second (RFC 9110 section 13.1.5).
pub(crate) fn if_range_matches(
    value: &str,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    let value = value.trim();
    if value.starts_with("W/") {
        return false;
    }
    if value.starts_with('"') {
        return etag.is_some_and(|etag| !etag.starts_with("W/") && etag == value);
    }
    match (date::parse_http_date(value), last_modified) {
        (Some(date), Some(modified)) => date::unix_secs(date) == date::unix_secs(modified),
        _ => false,
    }
}

/// The value of `Content-Range` for a (half-open) `range`, in `unit` (`bytes`, or a faulty
/// spelling), shifted and with the given total (`None` prints the unknown `*`); the shift exists
/// to serve deliberately wrong headers, so it is applied in wide arithmetic and may print a
/// nonsensical (negative) position.
pub(crate) fn content_range(
    unit: &str,
    range: &Range<u64>,
    shift: i64,
    total: Option<u64>,
) -> String {
    let first = i128::from(range.start) + i128::from(shift);
    let last = i128::from(range.end) - 1 + i128::from(shift);
    match total {
        Some(total) => format!("{unit} {first}-{last}/{total}"),
        None => format!("{unit} {first}-{last}/*"),
    }
}

/// The reason phrase of a status code; clients ignore it, humans reading logs do not.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Whether a response with this status carries no body whatever its headers say
/// (RFC 9110 section 6.4.1).
pub(crate) fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// The bytes of a response head: status line, headers, blank line.
pub(crate) fn encode_head(status: u16, headers: &[(String, String)]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn parses_a_request_and_reports_its_length() {
        let text = "GET /img.bin?sig=1 HTTP/1.1\r\nHost: x\r\nRange:  bytes=0-9 \r\n\r\nNEXT";
        let (head, len) = parse(text).expect("valid").expect("complete");
        assert_eq!(&text[len..], "NEXT");
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/img.bin?sig=1");
        assert_eq!(head.path, "/img.bin");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.header("range"), Some("bytes=0-9"));
        assert_eq!(head.header("host"), Some("x"));
        assert!(!head.wants_close());
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("\r\n"), Ok(None));
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    }

    #[test]
    fn leading_blank_lines_and_bare_newlines_are_tolerated() {
        let text = "\r\nGET / HTTP/1.0\nConnection: keep-alive\n\n";
        let (head, len) = parse(text).expect("valid").expect("complete");
        assert_eq!(len, text.len());
        assert_eq!(head.minor_version, 0);
        assert!(!head.wants_close());
    }

    #[test]
    fn connection_tokens_decide_persistence() {
        let close = "GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n";
        assert!(
            parse(close)
                .expect("valid")
                .expect("complete")
                .0
                .wants_close()
        );
        let http10 = "GET / HTTP/1.0\r\n\r\n";
        assert!(
            parse(http10)
                .expect("valid")
                .expect("complete")
                .0
                .wants_close()
        );
    }

    #[test]
    fn malformed_heads_are_rejected() {
        for text in [
            "GET /\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "GET / FTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nA: x\r\n folded\r\n\r\n",
        ] {
            assert_eq!(parse(text), Err(HeadError::Malformed), "{text:?}");
        }
        assert_eq!(
            parse("GET / HTTP/2.0\r\n\r\n"),
            Err(HeadError::VersionNotSupported)
        );
    }

    #[test]
    fn absolute_form_targets_give_their_path() {
        assert_eq!(path_of_target("http://127.0.0.1:80/a/b?x"), "/a/b");
        assert_eq!(path_of_target("http://host"), "/");
        assert_eq!(path_of_target("/plain"), "/plain");
    }

    #[test]
    fn body_length_reads_content_length() {
        let head = |extra: &str| {
            parse(&format!("GET / HTTP/1.1\r\n{extra}\r\n"))
                .expect("valid")
                .expect("complete")
                .0
        };
        assert_eq!(head("").body_length(), Ok(0));
        assert_eq!(head("Content-Length: 12\r\n").body_length(), Ok(12));
        assert!(head("Content-Length: x\r\n").body_length().is_err());
        assert!(
            head("Transfer-Encoding: chunked\r\n")
                .body_length()
                .is_err()
        );
    }

    #[test]
    fn range_headers_parse() {
        use RangeHeader::*;
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-99"), Single(FromTo(0, 99)));
        assert_eq!(parse_range(" Bytes = 5 - "), Single(From(5)));
        assert_eq!(parse_range("bytes=-7"), Single(Suffix(7)));
        assert_eq!(parse_range("bytes=0-0,"), Single(FromTo(0, 0)));
        assert_eq!(parse_range("bytes=0-1,5-6"), Multiple);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-"),
            Single(From(u64::MAX))
        );
        for invalid in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=5-4",
            "bytes=a-b",
            "items=0-1",
            "bytes=1-2-3",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(invalid), Invalid, "{invalid:?}");
        }
    }

    #[test]
    fn ranges_resolve_half_open_and_clamped() {
        use RangeSpec::*;
        assert_eq!(FromTo(0, 99).resolve(1000), Some(0..100));
        assert_eq!(FromTo(990, 2000).resolve(1000), Some(990..1000));
        assert_eq!(FromTo(999, 999).resolve(1000), Some(999..1000));
        assert_eq!(FromTo(1000, 1000).resolve(1000), None);
        assert_eq!(FromTo(0, u64::MAX).resolve(10), Some(0..10));
        assert_eq!(From(10).resolve(1000), Some(10..1000));
        assert_eq!(From(1000).resolve(1000), None);
        assert_eq!(Suffix(10).resolve(1000), Some(990..1000));
        assert_eq!(Suffix(5000).resolve(1000), Some(0..1000));
        assert_eq!(Suffix(0).resolve(1000), None);
        for spec in [FromTo(0, 0), From(0), Suffix(1)] {
            assert_eq!(spec.resolve(0), None, "{spec:?} on an empty file");
        }
        assert_eq!(Suffix(10).start(Some(100)), Some(90));
        assert_eq!(Suffix(10).start(None), None);
        assert_eq!(From(3).start(None), Some(3));
    }

    #[test]
    fn if_range_follows_rfc_9110() {
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert!(if_range_matches("\"v1\"", Some("\"v1\""), None));
        assert!(!if_range_matches("\"v2\"", Some("\"v1\""), None));
        assert!(!if_range_matches("W/\"v1\"", Some("W/\"v1\""), None));
        assert!(!if_range_matches("\"v1\"", Some("W/\"v1\""), None));
        assert!(!if_range_matches("\"v1\"", None, Some(modified)));
        assert!(if_range_matches(date, None, Some(modified)));
        assert!(if_range_matches(
            date,
            Some("\"v1\""),
            Some(modified + Duration::from_millis(500))
        ));
        assert!(!if_range_matches(
            date,
            None,
            Some(modified + Duration::from_secs(1))
        ));
        assert!(!if_range_matches(date, None, None));
        assert!(!if_range_matches("yesterday", None, Some(modified)));
        assert!(is_etag_form("W/\"x\"") && is_etag_form("\"x\"") && !is_etag_form(date));
    }

    #[test]
    fn content_range_prints_inclusive_and_shifted() {
        assert_eq!(
            content_range("bytes", &(0..100), 0, Some(1000)),
            "bytes 0-99/1000"
        );
        assert_eq!(
            content_range("bytes", &(10..20), 5, Some(7)),
            "bytes 15-24/7"
        );
        assert_eq!(
            content_range("bytes", &(0..1), -3, Some(9)),
            "bytes -3--3/9"
        );
        assert_eq!(content_range("BYTES", &(5..6), 0, None), "BYTES 5-5/*");
    }

    #[test]
    fn heads_encode() {
        let head = encode_head(206, &[("Content-Length".to_owned(), "5".to_owned())]);
        assert_eq!(
            String::from_utf8(head).expect("ascii"),
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\n\r\n"
        );
    }
}
