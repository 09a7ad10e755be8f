//! The response to one request, decided without I/O: status, headers, and what the body is
//! (a text, or a file range with its cut, stalls, pace and flipped bytes).

use std::ops::Range;

use crate::FileSpec;
use crate::date::format_http_date;
use crate::fault::{Cut, CutKind, Effects, Replacement, StallPoint};
use crate::http::{self, RangeHeader};

/// What the server sends for one request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub status: u16,
    /// Headers in sending order, `Content-Length` always among them.
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
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
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FileBody {
    pub seed: u64,
    /// The file range served (half-open); `Content-Length` is its length even when cut.
    pub range: Range<u64>,
    /// Where the body stops early, in body bytes, always `< range` length.
    pub cut: Option<Cut>,
    /// Pauses in order, each at or before the point where the body stops.
    pub stalls: Vec<StallPoint>,
    pub throttle: Option<u64>,
    /// File offsets inside `range` sent XORed with 0xFF.
    pub flips: Vec<u64>,
}

impl FileBody {
    fn new(seed: u64, range: Range<u64>, effects: &Effects) -> Self {
        let len = range.end - range.start;
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
        let flips = effects
            .flips
            .iter()
            .filter(|offset| range.contains(offset))
            .copied()
            .collect();
        Self {
            seed,
            range,
            cut,
            stalls,
            throttle: effects.throttle,
            flips,
        }
    }

    /// Body bytes actually sent: up to the cut, or all of them.
    pub(crate) fn bytes_to_send(&self) -> u64 {
        self.cut
            .map_or(self.range.end - self.range.start, |cut| cut.at)
    }
}

/// The parts of a request the decision needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestView<'a> {
    pub method: &'a str,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
}

/// Decides the response to `request` for `file` (`None` if the path has no file) under the
/// effects of the matching fault rules.
pub(crate) fn decide(
    request: &RequestView<'_>,
    file: Option<&FileSpec>,
    effects: &Effects,
) -> Plan {
    if request.method != "GET" && request.method != "HEAD" {
        let mut plan = text(405, "method not allowed\n");
        plan.headers.push(("Allow", "GET, HEAD".to_owned()));
        return plan;
    }
    if let Some(replacement) = &effects.replacement {
        return replaced(replacement);
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
            let if_range_passes = match request.if_range {
                None => true,
                Some(value) if effects.ok_on_etag_if_range && http::is_etag_form(value) => false,
                Some(value) => {
                    http::if_range_matches(value, file.etag.as_deref(), file.last_modified)
                }
            };
            if if_range_passes {
                Some(spec.resolve(file.size))
            } else {
                None
            }
        }
        Some(RangeHeader::Multiple | RangeHeader::Invalid) | None => None,
    };
    let mut headers = Vec::new();
    let (status, range) = match selected {
        None => (200, 0..file.size),
        Some(None) => {
            headers.push(("Content-Length", "0".to_owned()));
            headers.push(("Content-Range", format!("bytes */{}", file.size)));
            push_validators(&mut headers, file);
            return Plan {
                status: 416,
                headers,
                body: Body::Empty,
            };
        }
        Some(Some(range)) => (206, range),
    };
    headers.push(("Content-Length", (range.end - range.start).to_string()));
    if status == 206 {
        let total = effects.wrong_total.unwrap_or(file.size);
        headers.push((
            "Content-Range",
            http::content_range(&range, effects.content_range_shift, total),
        ));
    }
    push_validators(&mut headers, file);
    headers.push(("Content-Type", "application/octet-stream".to_owned()));
    Plan {
        status,
        headers,
        body: Body::File(FileBody::new(file.seed, range, effects)),
    }
}

/// `Accept-Ranges`, `ETag` and `Last-Modified`, as the file has them.
fn push_validators(headers: &mut Vec<(&'static str, String)>, file: &FileSpec) {
    if file.accept_ranges {
        headers.push(("Accept-Ranges", "bytes".to_owned()));
    }
    if let Some(etag) = &file.etag {
        headers.push(("ETag", etag.clone()));
    }
    if let Some(modified) = file.last_modified {
        headers.push(("Last-Modified", format_http_date(modified)));
    }
}

fn replaced(replacement: &Replacement) -> Plan {
    match replacement {
        Replacement::Redirect { status, location } => Plan {
            status: *status,
            headers: vec![
                ("Location", location.clone()),
                ("Content-Length", "0".to_owned()),
            ],
            body: Body::Empty,
        },
        Replacement::Status { code, retry_after } => {
            let mut plan = text(*code, &format!("{code} {}\n", http::reason(*code)));
            if let Some(retry_after) = retry_after {
                plan.headers.push(("Retry-After", retry_after.clone()));
            }
            plan
        }
        Replacement::Forbidden => text(403, "403 Forbidden: request has expired\n"),
    }
}

/// A short plain-text response; statuses that cannot have a body get none.
pub(crate) fn text(status: u16, body: &str) -> Plan {
    if http::status_has_no_body(status) {
        return Plan {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        };
    }
    Plan {
        status,
        headers: vec![
            ("Content-Length", body.len().to_string()),
            ("Content-Type", "text/plain; charset=utf-8".to_owned()),
        ],
        body: Body::Text(body.to_owned()),
    }
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
}
