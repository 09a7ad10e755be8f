//! The response to one request, decided without I/O: status, headers (after the header
//! edits), how the connection ends, and what the body is (a text, or a file range with its
//! encodings, cut, stalls, pace and flipped bytes).

use std::ops::Range;
use std::time::SystemTime;

use crate::date::{self, format_http_date};
use crate::fault::{Cut, CutKind, Effects, HeadDelay, HeaderEdit, Replacement, StallPoint};
use crate::http::{self, RangeHeader};
use crate::{FileSpec, content, encoding};

/// The byte `Fault::LongerBody` pads with.
pub(crate) const EXTRA_BYTE: u8 = 0xA5;

/// What the server sends for one request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub status: u16,
    /// The head's lines in sending order, as they go on the wire (`Connection` included).
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Whether the server closes the connection after this response: the client asked, the
    /// head says `Connection: close`, or the body is close-delimited.
    pub close: bool,
    /// How long the head is held back (`Fault::DelayHeaders`).
    pub head_delay: Option<HeadDelay>,
}

/// The body of a response (not sent for HEAD, whose headers are those of the GET).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Body {
    Empty,
    /// A short text for error and status responses.
    Text(String),
    File(FileBody),
}

/// A body generated from a file's seed.
///
/// Its bytes on the wire are the content (the file `range`, then `extra` padding bytes),
/// encoded when `encoded` is set. Cuts, stalls and the byte counts of the log are positions in
/// these wire bytes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FileBody {
    pub seed: u64,
    /// The file range served (half-open).
    pub range: Range<u64>,
    /// Bytes of [`EXTRA_BYTE`] after the range (`Fault::LongerBody`).
    pub extra: u64,
    /// File offsets inside `range` sent XORed with 0xFF (before any encoding).
    pub flips: Vec<u64>,
    /// The whole body as encoded for the wire (`Gzip`, `TransferGzip`); `None` sends the
    /// content as generated.
    pub encoded: Option<Vec<u8>>,
    /// Where the body stops early, in wire bytes, always `<` [`FileBody::wire_len`].
    pub cut: Option<Cut>,
    /// Pauses in order, each at or before the point where the body stops.
    pub stalls: Vec<StallPoint>,
    pub throttle: Option<u64>,
}

impl FileBody {
    fn new(seed: u64, range: Range<u64>, effects: &Effects) -> Self {
        let flips = effects
            .flips
            .iter()
            .filter(|offset| range.contains(offset))
            .copied()
            .collect();
        let mut body = Self {
            seed,
            range,
            extra: effects.longer_by,
            flips,
            encoded: None,
            cut: None,
            stalls: Vec::new(),
            throttle: effects.throttle,
        };
        if effects.gzip || effects.transfer_gzip {
            let mut wire = body.content_bytes();
            if effects.gzip {
                wire = encoding::gzip(&wire);
            }
            if effects.transfer_gzip {
                wire = encoding::chunked(&encoding::gzip(&wire));
            }
            body.encoded = Some(wire);
        }
        body.place_cuts_and_stalls(effects);
        body
    }

    fn place_cuts_and_stalls(&mut self, effects: &Effects) {
        let len = self.wire_len();
        let mut cut = effects.cut.filter(|cut| cut.at < len);
        if let Some(missing) = effects.short_by.filter(|missing| *missing > 0) {
            let at = len.saturating_sub(missing);
            if at < len && cut.is_none_or(|earlier| at < earlier.at) {
                cut = Some(Cut {
                    at,
                    kind: CutKind::Close,
                });
            }
        }
        let stop = cut.map_or(len, |cut| cut.at);
        // A stall at the very end of a complete body would only delay a finished response; one
        // at the cut point is kept, since "stall, then die" is a fault of its own.
        let mut stalls: Vec<StallPoint> = effects
            .stalls
            .iter()
            .filter(|stall| stall.after_bytes < len && stall.after_bytes <= stop)
            .copied()
            .collect();
        stalls.sort_by_key(|stall| stall.after_bytes);
        self.cut = cut;
        self.stalls = stalls;
    }

    /// Length of the content before encoding: the range and the padding.
    fn content_len(&self) -> u64 {
        (self.range.end - self.range.start).saturating_add(self.extra)
    }

    /// Length of the body on the wire, as `Content-Length` announces it.
    pub(crate) fn wire_len(&self) -> u64 {
        self.encoded
            .as_ref()
            .map_or(self.content_len(), |encoded| encoded.len() as u64)
    }

    /// Body bytes actually sent: up to the cut, or all of them.
    pub(crate) fn bytes_to_send(&self) -> u64 {
        self.cut.map_or(self.wire_len(), |cut| cut.at)
    }

    /// Writes the wire bytes at `offset..offset + piece.len()` (inside the body) into `piece`.
    pub(crate) fn fill(&self, offset: u64, piece: &mut [u8]) {
        match &self.encoded {
            Some(encoded) => {
                let start = offset as usize;
                piece.copy_from_slice(&encoded[start..start + piece.len()]);
            }
            None => self.fill_content(offset, piece),
        }
    }

    /// Writes content bytes (file bytes with their flips, then padding) at `offset`.
    fn fill_content(&self, offset: u64, piece: &mut [u8]) {
        let range_len = self.range.end - self.range.start;
        let from_file = range_len.saturating_sub(offset).min(piece.len() as u64) as usize;
        let (file_part, padding) = piece.split_at_mut(from_file);
        if !file_part.is_empty() {
            let start = self.range.start + offset;
            content::fill(self.seed, start, file_part);
            for flip in &self.flips {
                if (start..start + from_file as u64).contains(flip) {
                    file_part[(flip - start) as usize] ^= 0xFF;
                }
            }
        }
        padding.fill(EXTRA_BYTE);
    }

    /// The whole content in memory, for the encoders.
    fn content_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.content_len() as usize];
        self.fill_content(0, &mut bytes);
        bytes
    }
}

/// The parts of a request the decision needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestView<'a> {
    pub method: &'a str,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
    /// The client asked for the connection to end after this exchange (`Connection: close`,
    /// or HTTP/1.0 without `keep-alive`).
    pub close_requested: bool,
    /// HTTP/1.0, whose persistent connections need `Connection: keep-alive` in the answer.
    pub http_1_0: bool,
}

/// Decides the response to `request` for `file` (`None` if the path has no file) under the
/// effects of the matching fault rules.
pub(crate) fn decide(
    request: &RequestView<'_>,
    file: Option<&FileSpec>,
    effects: &Effects,
) -> Plan {
    let plan = choose(request, file, effects);
    finish(plan, request, effects)
}

/// The status, content headers and body, before the `Connection` line and the header edits.
fn choose(request: &RequestView<'_>, file: Option<&FileSpec>, effects: &Effects) -> Plan {
    if request.method != "GET" && request.method != "HEAD" {
        let mut plan = text(405, "method not allowed\n");
        plan.headers
            .push(("Allow".to_owned(), "GET, HEAD".to_owned()));
        return plan;
    }
    if let Some(replacement) = &effects.replacement {
        return replaced(replacement, file);
    }
    let Some(file) = file else {
        return text(404, "not found\n");
    };
    // Range handling is defined for GET only (RFC 9110 section 14.2): HEAD answers as a GET
    // without Range would.
    let range_header = request
        .range
        .filter(|_| request.method == "GET" && file.accept_ranges && !effects.ignore_range)
        .map(http::parse_range);
    let selected = match range_header {
        Some(RangeHeader::Single(spec)) => {
            let validators = Validators::after_edits(file, &effects.header_edits);
            let if_range = request.if_range.filter(|_| !effects.ignore_if_range);
            let if_range_passes = match if_range {
                None => true,
                Some(value) if effects.ok_on_etag_if_range && http::is_etag_form(value) => false,
                Some(value) => http::if_range_matches(
                    value,
                    validators.etag.as_deref(),
                    validators.last_modified,
                ),
            };
            if if_range_passes {
                Some(spec.resolve(file.size))
            } else {
                None
            }
        }
        Some(RangeHeader::Multiple | RangeHeader::Invalid) | None => None,
    };
    let unit = if effects.uppercase_unit {
        "BYTES"
    } else {
        "bytes"
    };
    let mut headers = Vec::new();
    let (status, range) = match selected {
        None => (200, 0..file.size),
        Some(None) => {
            headers.push(("Content-Length".to_owned(), "0".to_owned()));
            headers.push((
                "Content-Range".to_owned(),
                format!("{unit} */{}", file.size),
            ));
            push_validators(&mut headers, file);
            return Plan::new(416, headers, Body::Empty);
        }
        Some(Some(range)) if effects.range_to_end => (206, range.start..file.size),
        Some(Some(range)) => (206, range),
    };
    let body = FileBody::new(file.seed, range.clone(), effects);
    if effects.transfer_gzip {
        headers.push(("Transfer-Encoding".to_owned(), "gzip, chunked".to_owned()));
    } else {
        headers.push(("Content-Length".to_owned(), body.wire_len().to_string()));
    }
    if status == 206 {
        let total = (!effects.unknown_total).then(|| effects.wrong_total.unwrap_or(file.size));
        headers.push((
            "Content-Range".to_owned(),
            http::content_range(unit, &range, effects.content_range_shift, total),
        ));
    }
    if effects.gzip {
        headers.push(("Content-Encoding".to_owned(), "gzip".to_owned()));
    }
    push_validators(&mut headers, file);
    headers.push((
        "Content-Type".to_owned(),
        "application/octet-stream".to_owned(),
    ));
    let status = if status == 206 && effects.ok_with_content_range {
        200
    } else {
        status
    };
    Plan::new(status, headers, Body::File(body))
}

/// Adds the `Connection` line the client's request calls for, applies the header edits, and
/// settles how the connection ends.
fn finish(mut plan: Plan, request: &RequestView<'_>, effects: &Effects) -> Plan {
    if request.close_requested {
        plan.headers
            .push(("Connection".to_owned(), "close".to_owned()));
    } else if request.http_1_0 {
        plan.headers
            .push(("Connection".to_owned(), "keep-alive".to_owned()));
    }
    for edit in &effects.header_edits {
        apply_edit(&mut plan.headers, edit);
    }
    let has = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .any(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
    };
    let sends_body = request.method != "HEAD" && !http::status_has_no_body(plan.status);
    let close_delimited = sends_body
        && !has(&plan.headers, "content-length")
        && !has(&plan.headers, "transfer-encoding");
    // A body without framing ends where the connection does, and the head must say so.
    if close_delimited && !says_close(&plan.headers) {
        plan.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("connection"));
        plan.headers
            .push(("Connection".to_owned(), "close".to_owned()));
    }
    plan.close = request.close_requested || says_close(&plan.headers);
    plan.head_delay = effects.head_delay;
    plan
}

/// Whether a `Connection` line of the head carries the `close` option.
fn says_close(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("close"))
}

/// Applies one header edit to the head's lines; names match case-insensitively.
fn apply_edit(headers: &mut Vec<(String, String)>, edit: &HeaderEdit) {
    match edit {
        HeaderEdit::Set { name, value } => {
            let first = headers
                .iter()
                .position(|(header_name, _)| header_name.eq_ignore_ascii_case(name));
            match first {
                Some(first) => {
                    headers[first] = (name.clone(), value.clone());
                    let mut idx = 0;
                    headers.retain(|(header_name, _)| {
                        let keep = idx == first || !header_name.eq_ignore_ascii_case(name);
                        idx += 1;
                        keep
                    });
                }
                None => headers.push((name.clone(), value.clone())),
            }
        }
        HeaderEdit::Remove { name } => {
            headers.retain(|(header_name, _)| !header_name.eq_ignore_ascii_case(name));
        }
        HeaderEdit::Append { name, value } => headers.push((name.clone(), value.clone())),
    }
}

/// The validators of the backend answering: the file's, as the header edits leave them.
#[derive(Clone, Debug, PartialEq)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<SystemTime>,
}

impl Validators {
    fn after_edits(file: &FileSpec, edits: &[HeaderEdit]) -> Self {
        let mut validators = Self {
            etag: file.etag.clone(),
            last_modified: file.last_modified,
        };
        for edit in edits {
            match edit {
                HeaderEdit::Set { name, value } if name.eq_ignore_ascii_case("etag") => {
                    validators.etag = Some(value.clone());
                }
                HeaderEdit::Set { name, value } if name.eq_ignore_ascii_case("last-modified") => {
                    // A value that is no HTTP-date is a validator no date can match.
                    validators.last_modified = date::parse_http_date(value.trim());
                }
                HeaderEdit::Remove { name } if name.eq_ignore_ascii_case("etag") => {
                    validators.etag = None;
                }
                HeaderEdit::Remove { name } if name.eq_ignore_ascii_case("last-modified") => {
                    validators.last_modified = None;
                }
                _ => {}
            }
        }
        validators
    }
}

/// `Accept-Ranges`, `ETag` and `Last-Modified`, as the file has them.
fn push_validators(headers: &mut Vec<(String, String)>, file: &FileSpec) {
    if file.accept_ranges {
        headers.push(("Accept-Ranges".to_owned(), "bytes".to_owned()));
    }
    if let Some(etag) = &file.etag {
        headers.push(("ETag".to_owned(), etag.clone()));
    }
    if let Some(modified) = file.last_modified {
        headers.push(("Last-Modified".to_owned(), format_http_date(modified)));
    }
}

fn replaced(replacement: &Replacement, file: Option<&FileSpec>) -> Plan {
    match replacement {
        Replacement::Redirect { status, location } => Plan::new(
            *status,
            vec![
                ("Location".to_owned(), location.clone()),
                ("Content-Length".to_owned(), "0".to_owned()),
            ],
            Body::Empty,
        ),
        Replacement::Status { code, retry_after } => {
            let mut plan = text(*code, &format!("{code} {}\n", http::reason(*code)));
            if let Some(retry_after) = retry_after {
                plan.headers
                    .push(("Retry-After".to_owned(), retry_after.clone()));
            }
            plan
        }
        Replacement::Forbidden => text(403, "403 Forbidden: request has expired\n"),
        Replacement::NotModified => {
            let mut headers = Vec::new();
            if let Some(file) = file {
                push_validators(&mut headers, file);
            }
            Plan::new(304, headers, Body::Empty)
        }
    }
}

impl Plan {
    /// A plan that keeps the connection and sends its head at once; `finish` settles both.
    fn new(status: u16, headers: Vec<(String, String)>, body: Body) -> Self {
        Self {
            status,
            headers,
            body,
            close: false,
            head_delay: None,
        }
    }
}

/// A short plain-text response; statuses that cannot have a body get none.
pub(crate) fn text(status: u16, body: &str) -> Plan {
    if http::status_has_no_body(status) {
        return Plan::new(status, Vec::new(), Body::Empty);
    }
    Plan::new(
        status,
        vec![
            ("Content-Length".to_owned(), body.len().to_string()),
            (
                "Content-Type".to_owned(),
                "text/plain; charset=utf-8".to_owned(),
            ),
        ],
        Body::Text(body.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn get(range: Option<&'static str>) -> RequestView<'static> {
        RequestView {
            method: "GET",
            range,
            if_range: None,
            close_requested: false,
            http_1_0: false,
        }
    }

    fn header<'p>(plan: &'p Plan, name: &str) -> Option<&'p str> {
        plan.headers
            .iter()
            .find(|(header_name, _)| *header_name == name)
            .map(|(_, value)| value.as_str())
    }

    fn file_body(plan: &Plan) -> &FileBody {
        match &plan.body {
            Body::File(body) => body,
            other => panic!("expected a file body, got {other:?}"),
        }
    }

    fn file() -> FileSpec {
        FileSpec::new("/f", 1000, 5)
    }

    #[test]
    fn full_and_partial_responses() {
        let none = Effects::default();
        let full = decide(&get(None), Some(&file()), &none);
        assert_eq!(full.status, 200);
        assert_eq!(header(&full, "Content-Length"), Some("1000"));
        assert_eq!(header(&full, "Content-Range"), None);
        assert_eq!(header(&full, "Accept-Ranges"), Some("bytes"));
        assert!(header(&full, "ETag").is_some() && header(&full, "Last-Modified").is_some());
        assert_eq!(file_body(&full).range, 0..1000);

        let part = decide(&get(Some("bytes=-10")), Some(&file()), &none);
        assert_eq!(part.status, 206);
        assert_eq!(header(&part, "Content-Range"), Some("bytes 990-999/1000"));
        assert_eq!(header(&part, "Content-Length"), Some("10"));
        assert_eq!(file_body(&part).range, 990..1000);
    }

    #[test]
    fn unsatisfiable_and_ignored_ranges() {
        let none = Effects::default();
        let past_end = decide(&get(Some("bytes=1000-")), Some(&file()), &none);
        assert_eq!(past_end.status, 416);
        assert_eq!(header(&past_end, "Content-Range"), Some("bytes */1000"));
        assert_eq!(past_end.body, Body::Empty);
        let empty = FileSpec::new("/e", 0, 1);
        let on_empty = decide(&get(Some("bytes=0-")), Some(&empty), &none);
        assert_eq!(on_empty.status, 416);
        assert_eq!(header(&on_empty, "Content-Range"), Some("bytes */0"));
        for ignored in ["bytes=0-1,3-4", "bytes=5-1", "lines=1-2"] {
            assert_eq!(
                decide(&get(Some(ignored)), Some(&file()), &none).status,
                200
            );
        }
        let mut no_ranges = file();
        no_ranges.accept_ranges = false;
        let plan = decide(&get(Some("bytes=0-1")), Some(&no_ranges), &none);
        assert_eq!(plan.status, 200);
        assert_eq!(header(&plan, "Accept-Ranges"), None);
    }

    #[test]
    fn head_ignores_range() {
        let head = RequestView {
            method: "HEAD",
            ..get(Some("bytes=0-9"))
        };
        let plan = decide(&head, Some(&file()), &Effects::default());
        assert_eq!(plan.status, 200);
        assert_eq!(header(&plan, "Content-Length"), Some("1000"));
    }

    #[test]
    fn if_range_and_the_cdn_bug() {
        let spec = file();
        let etag = spec.etag.clone().expect("default etag");
        let status_with = |if_range: &str, effects: &Effects| {
            let request = RequestView {
                if_range: Some(if_range),
                ..get(Some("bytes=0-9"))
            };
            decide(&request, Some(&spec), effects).status
        };
        let none = Effects::default();
        assert_eq!(status_with(&etag, &none), 206);
        assert_eq!(status_with("\"other\"", &none), 200);
        let cdn = Effects {
            ok_on_etag_if_range: true,
            ..Effects::default()
        };
        assert_eq!(status_with(&etag, &cdn), 200);
        assert_eq!(status_with("Tue, 02 Jan 2024 03:04:05 GMT", &cdn), 206);
    }

    #[test]
    fn header_faults() {
        let effects = Effects {
            content_range_shift: 3,
            wrong_total: Some(7),
            ..Effects::default()
        };
        let plan = decide(&get(Some("bytes=10-19")), Some(&file()), &effects);
        assert_eq!(header(&plan, "Content-Range"), Some("bytes 13-22/7"));
        assert_eq!(file_body(&plan).range, 10..20);
        let ignore = Effects {
            ignore_range: true,
            ..Effects::default()
        };
        let plan = decide(&get(Some("bytes=10-19")), Some(&file()), &ignore);
        assert_eq!((plan.status, header(&plan, "Content-Range")), (200, None));
    }

    #[test]
    fn replacements_and_missing_files() {
        let status = Effects {
            replacement: Some(Replacement::Status {
                code: 503,
                retry_after: Some("2".to_owned()),
            }),
            ..Effects::default()
        };
        let plan = decide(&get(None), Some(&file()), &status);
        assert_eq!(plan.status, 503);
        assert_eq!(header(&plan, "Retry-After"), Some("2"));
        assert!(matches!(plan.body, Body::Text(_)));
        let redirect = Effects {
            replacement: Some(Replacement::Redirect {
                status: 308,
                location: "/img.bin".to_owned(),
            }),
            ..Effects::default()
        };
        let plan = decide(&get(None), None, &redirect);
        assert_eq!(plan.status, 308);
        assert_eq!(header(&plan, "Location"), Some("/img.bin"));
        assert_eq!(decide(&get(None), None, &Effects::default()).status, 404);
        let post = RequestView {
            method: "POST",
            ..get(None)
        };
        assert_eq!(decide(&post, Some(&file()), &status).status, 405);
    }

    #[test]
    fn body_cuts_stalls_and_flips() {
        let effects = Effects {
            cut: Some(Cut {
                at: 50,
                kind: CutKind::Reset,
            }),
            short_by: Some(95),
            stalls: vec![
                StallPoint {
                    after_bytes: 5,
                    duration: None,
                },
                StallPoint {
                    after_bytes: 1,
                    duration: Some(Duration::from_millis(1)),
                },
                StallPoint {
                    after_bytes: 7,
                    duration: None,
                },
            ],
            flips: vec![3, 12, 200],
            ..Effects::default()
        };
        let plan = decide(&get(Some("bytes=10-109")), Some(&file()), &effects);
        let body = file_body(&plan);
        // ShortBody cuts the 100-byte body at 5, before the reset at 50.
        assert_eq!(
            body.cut,
            Some(Cut {
                at: 5,
                kind: CutKind::Close
            })
        );
        assert_eq!(body.bytes_to_send(), 5);
        let stall_points: Vec<u64> = body.stalls.iter().map(|s| s.after_bytes).collect();
        assert_eq!(stall_points, [1, 5]);
        assert_eq!(body.flips, [12]);

        let past_end = Effects {
            cut: Some(Cut {
                at: 100,
                kind: CutKind::Reset,
            }),
            ..Effects::default()
        };
        let plan = decide(&get(Some("bytes=0-99")), Some(&file()), &past_end);
        assert_eq!(file_body(&plan).cut, None);
    }

    fn edits(edits: Vec<HeaderEdit>) -> Effects {
        Effects {
            header_edits: edits,
            ..Effects::default()
        }
    }

    fn set(name: &str, value: &str) -> HeaderEdit {
        HeaderEdit::Set {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    fn remove(name: &str) -> HeaderEdit {
        HeaderEdit::Remove {
            name: name.to_owned(),
        }
    }

    fn with_if_range(if_range: &str) -> RequestView<'_> {
        RequestView {
            if_range: Some(if_range),
            ..get(Some("bytes=0-9"))
        }
    }

    #[test]
    fn header_edits_replace_remove_and_append_in_order() {
        let effects = edits(vec![
            set("content-type", "text/html"),
            HeaderEdit::Append {
                name: "Content-Length".to_owned(),
                value: "5".to_owned(),
            },
            remove("ACCEPT-RANGES"),
            set("X-New", "1"),
        ]);
        let plan = decide(&get(Some("bytes=0-9")), Some(&file()), &effects);
        let names: Vec<&str> = plan.headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Content-Length",
                "Content-Range",
                "ETag",
                "Last-Modified",
                "content-type",
                "Content-Length",
                "X-New"
            ]
        );
        assert_eq!(plan.headers[4].1, "text/html");
        assert_eq!(plan.headers[5].1, "5");
        // The body follows the response's own Content-Length.
        assert_eq!(file_body(&plan).wire_len(), 10);
        assert!(!plan.close);
    }

    #[test]
    fn set_header_keeps_one_line_where_the_first_was() {
        let mut headers = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "2".to_owned()),
            ("a".to_owned(), "3".to_owned()),
        ];
        apply_edit(&mut headers, &set("a", "x"));
        assert_eq!(
            headers,
            [
                ("a".to_owned(), "x".to_owned()),
                ("B".to_owned(), "2".to_owned())
            ]
        );
    }

    #[test]
    fn overridden_validators_decide_if_range() {
        let etag = file().etag.expect("default etag");
        let date = "Tue, 02 Jan 2024 03:04:05 GMT";
        let status = |request: &RequestView<'_>, effects: &Effects| {
            decide(request, Some(&file()), effects).status
        };
        let other_etag = edits(vec![set("ETag", "\"other\"")]);
        assert_eq!(status(&with_if_range(&etag), &other_etag), 200);
        assert_eq!(status(&with_if_range("\"other\""), &other_etag), 206);
        // The last edit of a validator wins.
        let back = edits(vec![set("ETag", "\"other\""), set("etag", &etag)]);
        assert_eq!(status(&with_if_range(&etag), &back), 206);
        let no_etag = edits(vec![remove("etag")]);
        assert_eq!(status(&with_if_range(&etag), &no_etag), 200);
        assert_eq!(status(&with_if_range(date), &no_etag), 206);
        let later = edits(vec![set("Last-Modified", "Wed, 03 Jan 2024 03:04:05 GMT")]);
        assert_eq!(status(&with_if_range(date), &later), 200);
        let garbage = edits(vec![set("Last-Modified", "yesterday")]);
        assert_eq!(status(&with_if_range(date), &garbage), 200);
        let no_date = edits(vec![remove("Last-Modified")]);
        assert_eq!(status(&with_if_range(date), &no_date), 200);
        // Appended lines are not validators.
        let appended = edits(vec![HeaderEdit::Append {
            name: "ETag".to_owned(),
            value: "\"other\"".to_owned(),
        }]);
        assert_eq!(status(&with_if_range(&etag), &appended), 206);
    }

    #[test]
    fn ignore_if_range_serves_the_range_regardless() {
        let effects = Effects {
            ignore_if_range: true,
            ok_on_etag_if_range: true,
            ..Effects::default()
        };
        let plan = decide(&with_if_range("\"stale\""), Some(&file()), &effects);
        assert_eq!(plan.status, 206);
        assert_eq!(file_body(&plan).range, 0..10);
    }

    #[test]
    fn removing_content_length_makes_the_body_close_delimited() {
        let effects = edits(vec![remove("content-length")]);
        let plan = decide(&get(Some("bytes=0-9")), Some(&file()), &effects);
        assert!(plan.close);
        assert_eq!(header(&plan, "Connection"), Some("close"));
        assert_eq!(header(&plan, "Content-Length"), None);
        let http_1_0 = RequestView {
            http_1_0: true,
            ..get(None)
        };
        let plan = decide(&http_1_0, Some(&file()), &effects);
        let connections: Vec<&str> = plan
            .headers
            .iter()
            .filter(|(name, _)| name == "Connection")
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(connections, ["close"], "keep-alive is replaced");
        // A HEAD or a 304 has no body to delimit.
        let head = RequestView {
            method: "HEAD",
            ..get(None)
        };
        assert!(!decide(&head, Some(&file()), &effects).close);
        let not_modified = Effects {
            replacement: Some(Replacement::NotModified),
            ..edits(vec![remove("content-length")])
        };
        assert!(!decide(&get(None), Some(&file()), &not_modified).close);
        // Saying `Connection: close` ends the connection too.
        let says_close = edits(vec![set("Connection", "close")]);
        assert!(decide(&get(None), Some(&file()), &says_close).close);
        let asked = RequestView {
            close_requested: true,
            ..get(None)
        };
        let plan = decide(&asked, Some(&file()), &Effects::default());
        assert!(plan.close);
        assert_eq!(header(&plan, "Connection"), Some("close"));
    }

    #[test]
    fn content_range_faults() {
        let to_end = Effects {
            range_to_end: true,
            ..Effects::default()
        };
        let plan = decide(&get(Some("bytes=10-19")), Some(&file()), &to_end);
        assert_eq!(header(&plan, "Content-Range"), Some("bytes 10-999/1000"));
        assert_eq!(header(&plan, "Content-Length"), Some("990"));
        assert_eq!(file_body(&plan).range, 10..1000);
        let unknown = Effects {
            unknown_total: true,
            uppercase_unit: true,
            wrong_total: Some(5),
            ..Effects::default()
        };
        let plan = decide(&get(Some("bytes=10-19")), Some(&file()), &unknown);
        assert_eq!(header(&plan, "Content-Range"), Some("BYTES 10-19/*"));
        let plan = decide(&get(Some("bytes=1000-")), Some(&file()), &unknown);
        assert_eq!(header(&plan, "Content-Range"), Some("BYTES */1000"));
        let ok = Effects {
            ok_with_content_range: true,
            ..Effects::default()
        };
        let plan = decide(&get(Some("bytes=10-19")), Some(&file()), &ok);
        assert_eq!(plan.status, 200);
        assert_eq!(header(&plan, "Content-Range"), Some("bytes 10-19/1000"));
        assert_eq!(header(&plan, "Content-Length"), Some("10"));
        // Without a range there is nothing to mislabel.
        let plan = decide(&get(None), Some(&file()), &ok);
        assert_eq!((plan.status, header(&plan, "Content-Range")), (200, None));
    }

    #[test]
    fn longer_body_pads_after_the_content() {
        let effects = Effects {
            longer_by: 5,
            flips: vec![12],
            ..Effects::default()
        };
        let plan = decide(&get(Some("bytes=10-19")), Some(&file()), &effects);
        assert_eq!(header(&plan, "Content-Range"), Some("bytes 10-19/1000"));
        assert_eq!(header(&plan, "Content-Length"), Some("15"));
        let body = file_body(&plan);
        let mut wire = vec![0; 15];
        body.fill(0, &mut wire);
        let mut expected = crate::content(5, 10..20);
        expected[2] ^= 0xFF;
        expected.extend([EXTRA_BYTE; 5]);
        assert_eq!(wire, expected);
        // A piece that straddles the end of the range.
        let mut piece = vec![0; 4];
        body.fill(8, &mut piece);
        assert_eq!(piece, expected[8..12]);
    }

    #[test]
    fn encodings_set_the_framing_headers() {
        let gzip = Effects {
            gzip: true,
            ..Effects::default()
        };
        let plan = decide(&get(Some("bytes=0-99")), Some(&file()), &gzip);
        let body = file_body(&plan);
        let encoded = body.encoded.as_ref().expect("encoded body");
        assert_eq!(*encoded, encoding::gzip(&crate::content(5, 0..100)));
        assert_eq!(
            header(&plan, "Content-Length"),
            Some(encoded.len().to_string().as_str())
        );
        assert_eq!(header(&plan, "Content-Encoding"), Some("gzip"));
        assert_eq!(header(&plan, "Content-Range"), Some("bytes 0-99/1000"));
        let both = Effects {
            gzip: true,
            transfer_gzip: true,
            ..Effects::default()
        };
        let plan = decide(&get(None), Some(&file()), &both);
        let expected = encoding::chunked(&encoding::gzip(&encoding::gzip(&crate::content(
            5,
            0..1000,
        ))));
        assert_eq!(file_body(&plan).encoded.as_ref(), Some(&expected));
        assert_eq!(header(&plan, "Content-Length"), None);
        assert_eq!(header(&plan, "Transfer-Encoding"), Some("gzip, chunked"));
        assert!(!plan.close, "chunked framing needs no close");
    }

    #[test]
    fn not_modified_keeps_the_validators() {
        let effects = Effects {
            replacement: Some(Replacement::NotModified),
            head_delay: Some(HeadDelay::For(Duration::from_millis(1))),
            ..edits(vec![set("ETag", "\"farm-2\"")])
        };
        let plan = decide(&get(Some("bytes=0-9")), Some(&file()), &effects);
        assert_eq!(plan.status, 304);
        assert_eq!(plan.body, Body::Empty);
        assert_eq!(header(&plan, "ETag"), Some("\"farm-2\""));
        assert_eq!(
            header(&plan, "Last-Modified"),
            Some("Tue, 02 Jan 2024 03:04:05 GMT")
        );
        assert_eq!(header(&plan, "Content-Length"), None);
        assert_eq!(
            plan.head_delay,
            Some(HeadDelay::For(Duration::from_millis(1)))
        );
    }
}
