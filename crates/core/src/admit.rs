//! Admission: every response is checked against what the probe saw before
//! a byte of it is written — status, framing (`Content-Range`,
//! `Content-Length`, duplicated headers), encodings and validators — by the
//! pure functions here, one rule each, each with a unit test.
//!
//! The probe pins a version ([`Validator`]: the ETag, strong or weak, and
//! Last-Modified; plus the total size). A later response whose validator
//! differs, or lost one the probe saw, is of another version: its bytes are
//! never spliced into the file.

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderName};

use crate::header::{parse_content_length, parse_etag};
use crate::range::{ByteRange, parse_content_range};

/// What pins the version of the remote file: its `ETag` (strong or weak)
/// and its `Last-Modified` date, as the server sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validator {
    /// The entity tag exactly as it goes into a header: quoted, `W/` first
    /// when weak.
    pub etag: Option<String>,
    /// The `Last-Modified` value exactly as sent.
    pub last_modified: Option<String>,
}

impl Validator {
    /// The validators of a response.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let etag = single(headers, header::ETAG)
            .and_then(parse_etag)
            .map(|tag| tag.header_value());
        let last_modified = single(headers, header::LAST_MODIFIED).map(str::to_owned);
        Self {
            etag,
            last_modified,
        }
    }

    /// Whether the ETag is weak (`W/"…"`): it then only promises an
    /// equivalent representation, and cannot go in `If-Range` (RFC 9110
    /// §13.1.5).
    pub(crate) fn weak_etag(&self) -> bool {
        self.etag
            .as_deref()
            .is_some_and(|tag| tag.starts_with("W/"))
    }

    /// The strong ETag, if there is one.
    pub(crate) fn strong_etag(&self) -> Option<&str> {
        self.etag.as_deref().filter(|_| !self.weak_etag())
    }

    /// The value for `If-Range`: the strong ETag, else the date.
    pub(crate) fn if_range(&self) -> Option<&str> {
        self.strong_etag().or(self.last_modified.as_deref())
    }

    /// Whether there is anything at all to tell versions apart.
    pub(crate) fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    /// Whether `other` shows the same version as this one, pinned by the
    /// probe: every validator seen here must be there and equal (ETags by
    /// weak comparison, RFC 9110 §8.8.3.2, since a weak tag is compared
    /// with itself). A validator only the later response has is no
    /// contradiction. With `etag_unstable` the ETag is not compared (a farm
    /// whose backends tag one file differently), the date still is.
    pub(crate) fn mismatch(&self, other: &Validator, etag_unstable: bool) -> Option<String> {
        if !etag_unstable && let Some(ours) = &self.etag {
            match &other.etag {
                None => return Some(format!("the ETag {ours} disappeared")),
                Some(theirs) if opaque(theirs) != opaque(ours) => {
                    return Some(format!("the ETag changed from {ours} to {theirs}"));
                }
                Some(_) => {}
            }
        }
        if let Some(ours) = &self.last_modified {
            match &other.last_modified {
                None => return Some(format!("Last-Modified ({ours}) disappeared")),
                Some(theirs) if theirs != ours => {
                    return Some(format!("Last-Modified changed from {ours} to {theirs}"));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Whether two sources can be shown to serve the same version: they
    /// have validators, and the very same ones.
    pub(crate) fn same_version(&self, other: &Validator) -> bool {
        !self.is_empty() && self == other
    }

    /// Whether only the ETag differs from `other`, while a Last-Modified
    /// both have agrees: the signature of a load-balanced farm whose
    /// backends tag one file differently (Apache's inode ETags).
    pub(crate) fn only_etag_differs(&self, other: &Validator) -> bool {
        self.last_modified.is_some()
            && self.last_modified == other.last_modified
            && self.etag.is_some()
            && other.etag.is_some()
            && self.etag.as_deref().map(opaque) != other.etag.as_deref().map(opaque)
    }
}

/// The opaque part of an entity tag, for weak comparison.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// The one value of a header, `None` when absent, not text, or sent more
/// than once with different values.
fn single(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?;
    values
        .all(|v| v.to_str().ok() == Some(first))
        .then_some(first)
}

/// Why a response is not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The status is not one we can use (the caller maps it).
    Status,
    /// The server broke the rules for what we asked: retry, maybe elsewhere.
    Protocol(String),
    /// The bytes are of another version than the probe's.
    Changed(String),
    /// A `200` with the whole, unchanged file: the server mishandles the
    /// `If-Range` form we sent.
    WholeUnchanged,
    /// Only the ETag differs, size and Last-Modified agree: a farm.
    EtagFlip(String),
}

/// The bytes of a response body: where they start, and how far the caller
/// may write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// What the body carries, by its `Content-Range`.
    pub body: ByteRange,
    /// The part of it that was asked for: `body` cut at the wanted end (a
    /// server may send more than asked).
    pub wanted: ByteRange,
}

/// What a ranged response is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expect<'a> {
    /// The probe's validator for this source.
    pub validator: &'a Validator,
    /// The file's size.
    pub total: Option<u64>,
    /// Whether this source's ETags flip between backends (compare the date
    /// only).
    pub etag_unstable: bool,
}

/// Checks a response to a request for `want`.
pub(crate) fn admit_range(
    status: StatusCode,
    headers: &HeaderMap,
    want: ByteRange,
    expect: Expect<'_>,
) -> Result<Admitted, Refusal> {
    let validator = Validator::from_headers(headers);
    match status {
        StatusCode::PARTIAL_CONTENT => {}
        StatusCode::OK => return Err(whole_instead_of_range(headers, &validator, expect)),
        StatusCode::NOT_MODIFIED => {
            return Err(Refusal::Protocol(
                "server answered 304 Not Modified to a request that asked for none".into(),
            ));
        }
        _ => return Err(Refusal::Status),
    }
    identity_only(headers)?;
    if let Some(reason) = expect.validator.mismatch(&validator, expect.etag_unstable) {
        return Err(
            if expect.validator.only_etag_differs(&validator) && !expect.etag_unstable {
                Refusal::EtagFlip(reason)
            } else {
                Refusal::Changed(reason)
            },
        );
    }
    let (body, total) = content_range(headers)?;
    if let Some(total) = total
        && Some(total) != expect.total
    {
        return Err(Refusal::Changed(format!(
            "size changed from {} to {total} bytes",
            expect.total.unwrap_or(0)
        )));
    }
    if body.start != want.start || body.is_empty() {
        return Err(Refusal::Protocol(format!(
            "asked for bytes {want}, server sent {body}"
        )));
    }
    if expect.total.is_some_and(|t| body.end > t) {
        return Err(Refusal::Protocol(format!(
            "server sent bytes {body}, past the end of the file"
        )));
    }
    Ok(Admitted {
        body,
        wanted: ByteRange::new(body.start, body.end.min(want.end)),
    })
}

/// A `200` where a range was asked for: the server mishandles our
/// `If-Range` form (the very validator we pinned), or the file changed.
fn whole_instead_of_range(
    headers: &HeaderMap,
    validator: &Validator,
    expect: Expect<'_>,
) -> Refusal {
    let length_agrees = single(headers, header::CONTENT_LENGTH)
        .and_then(parse_content_length)
        .is_none_or(|len| Some(len) == expect.total);
    let encoded = identity_only(headers).is_err();
    if !length_agrees || encoded {
        return Refusal::Changed(
            "server sent a whole file of another length or encoding instead of the range".into(),
        );
    }
    match expect.validator.mismatch(validator, expect.etag_unstable) {
        None if !expect.validator.is_empty() && !validator.is_empty() => Refusal::WholeUnchanged,
        Some(reason) if expect.validator.only_etag_differs(validator) => Refusal::EtagFlip(reason),
        _ => Refusal::Changed(
            "server sent the whole file instead of the range: the remote changed or stopped serving ranges"
                .into(),
        ),
    }
}

/// Refuses a body in any encoding but identity (`Content-Encoding`, or a
/// `Transfer-Encoding` other than `chunked`): ranges of an encoded
/// representation cannot be reassembled into the file.
pub(crate) fn identity_only(headers: &HeaderMap) -> Result<(), Refusal> {
    if let Some(coding) = content_coding(headers) {
        return Err(Refusal::Protocol(format!(
            "server sent a {coding}-encoded body although identity was asked for"
        )));
    }
    Ok(())
}

/// The coding of a body, if it is not identity: its `Content-Encoding`,
/// else a `Transfer-Encoding` coding other than `chunked`, lowercase and
/// comma-joined (`gzip`, `br`, `gzip, deflate`).
pub(crate) fn content_coding(headers: &HeaderMap) -> Option<String> {
    let codings = |name: HeaderName| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .flat_map(|value| {
                String::from_utf8_lossy(value.as_bytes())
                    .split(',')
                    .map(|coding| coding.trim().to_ascii_lowercase())
                    .filter(|coding| !coding.is_empty() && coding != "identity")
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let content = codings(header::CONTENT_ENCODING);
    let transfer: Vec<String> = codings(header::TRANSFER_ENCODING)
        .into_iter()
        .filter(|coding| coding != "chunked")
        .collect();
    let all: Vec<String> = transfer.into_iter().chain(content).collect();
    (!all.is_empty()).then(|| all.join(", "))
}

/// The body's range and the file's total from `Content-Range`, checked
/// against `Content-Length`; one of each at most, unless the copies agree.
/// `None` for the total is a `*` (unknown).
pub(crate) fn content_range(headers: &HeaderMap) -> Result<(ByteRange, Option<u64>), Refusal> {
    let protocol = |m: String| Refusal::Protocol(m);
    if headers.get_all(header::CONTENT_RANGE).iter().count() == 0 {
        return Err(protocol("206 response without Content-Range".into()));
    }
    let value = single(headers, header::CONTENT_RANGE)
        .ok_or_else(|| protocol("several different Content-Range headers".into()))?;
    if single(headers, header::CONTENT_TYPE)
        .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("multipart/"))
    {
        return Err(protocol(
            "a multipart body, where one range was asked".into(),
        ));
    }
    let parsed =
        parse_content_range(value).map_err(|e| protocol(format!("bad Content-Range: {e}")))?;
    let Some(body) = parsed.range else {
        return Err(protocol(format!("unusable Content-Range {value:?}")));
    };
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 0 {
        let length = single(headers, header::CONTENT_LENGTH)
            .and_then(parse_content_length)
            .ok_or_else(|| protocol("several different Content-Length headers".into()))?;
        if length != body.len() {
            return Err(protocol(format!(
                "Content-Length {length} disagrees with Content-Range {value:?}"
            )));
        }
    }
    Ok((body, parsed.total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    const LM: &str = "Tue, 02 Jan 2024 03:04:05 GMT";

    fn pinned() -> Validator {
        Validator {
            etag: Some("\"v1\"".into()),
            last_modified: Some(LM.into()),
        }
    }

    fn expect(validator: &Validator) -> Expect<'_> {
        Expect {
            validator,
            total: Some(1000),
            etag_unstable: false,
        }
    }

    fn ok_206(extra: &[(&str, &str)]) -> HeaderMap {
        let mut pairs = vec![
            ("content-range", "bytes 100-199/1000"),
            ("content-length", "100"),
            ("etag", "\"v1\""),
            ("last-modified", LM),
        ];
        pairs.extend_from_slice(extra);
        headers(&pairs)
    }

    fn admit(status: u16, headers: &HeaderMap) -> Result<Admitted, Refusal> {
        let validator = pinned();
        admit_range(
            StatusCode::from_u16(status).expect("status"),
            headers,
            ByteRange::new(100, 200),
            expect(&validator),
        )
    }

    #[test]
    fn a_matching_206_is_admitted() {
        let admitted = admit(206, &ok_206(&[])).expect("admitted");
        assert_eq!(admitted.body, ByteRange::new(100, 200));
        assert_eq!(admitted.wanted, ByteRange::new(100, 200));
    }

    #[test]
    fn a_206_running_past_the_wanted_end_is_cut_there() {
        let h = headers(&[
            ("content-range", "bytes 100-999/1000"),
            ("etag", "\"v1\""),
            ("last-modified", LM),
        ]);
        let admitted = admit(206, &h).expect("admitted");
        assert_eq!(admitted.body, ByteRange::new(100, 1000));
        assert_eq!(admitted.wanted, ByteRange::new(100, 200));
    }

    #[test]
    fn the_unit_is_case_insensitive() {
        let h = headers(&[
            ("content-range", "BYTES 100-199/1000"),
            ("etag", "\"v1\""),
            ("last-modified", LM),
        ]);
        assert!(admit(206, &h).is_ok());
    }

    #[test]
    fn content_length_must_agree_with_content_range() {
        let h = headers(&[
            ("content-range", "bytes 100-199/1000"),
            ("content-length", "164"),
            ("etag", "\"v1\""),
            ("last-modified", LM),
        ]);
        assert!(matches!(admit(206, &h), Err(Refusal::Protocol(m)) if m.contains("disagrees")));
    }

    #[test]
    fn duplicated_framing_headers_that_disagree_are_refused() {
        let two_ranges = ok_206(&[("content-range", "bytes 100-149/1000")]);
        assert!(
            matches!(admit(206, &two_ranges), Err(Refusal::Protocol(m)) if m.contains("several"))
        );
        let two_lengths = ok_206(&[("content-length", "50")]);
        assert!(
            matches!(admit(206, &two_lengths), Err(Refusal::Protocol(m)) if m.contains("several"))
        );
        // The same value twice is no contradiction.
        assert!(admit(206, &ok_206(&[("content-length", "100")])).is_ok());
    }

    #[test]
    fn a_multipart_body_is_refused() {
        let h = ok_206(&[("content-type", "multipart/byteranges; boundary=x")]);
        assert!(matches!(admit(206, &h), Err(Refusal::Protocol(_))));
    }

    #[test]
    fn encoded_bodies_are_refused() {
        for (name, value) in [
            ("content-encoding", "gzip"),
            ("content-encoding", "br"),
            ("transfer-encoding", "gzip, chunked"),
        ] {
            let h = ok_206(&[(name, value)]);
            assert!(
                matches!(admit(206, &h), Err(Refusal::Protocol(ref m)) if m.contains("encoded")),
                "{name}: {value}"
            );
        }
        assert!(admit(206, &ok_206(&[("transfer-encoding", "chunked")])).is_ok());
        assert!(admit(206, &ok_206(&[("content-encoding", "identity")])).is_ok());
    }

    #[test]
    fn another_etag_or_date_is_another_version() {
        let etag = ok_206(&[]);
        let mut other = etag.clone();
        other.insert(header::ETAG, "\"v2\"".parse().expect("value"));
        other.insert(
            header::LAST_MODIFIED,
            "Wed, 03 Jan 2024 03:04:05 GMT".parse().expect("v"),
        );
        assert!(matches!(admit(206, &other), Err(Refusal::Changed(_))));
        let mut date_only = etag.clone();
        date_only.insert(
            header::LAST_MODIFIED,
            "Wed, 03 Jan 2024 03:04:05 GMT".parse().expect("v"),
        );
        assert!(matches!(admit(206, &date_only), Err(Refusal::Changed(_))));
    }

    #[test]
    fn a_validator_that_disappears_is_another_version() {
        let mut no_etag = ok_206(&[]);
        no_etag.remove(header::ETAG);
        assert!(
            matches!(admit(206, &no_etag), Err(Refusal::Changed(m)) if m.contains("disappeared"))
        );
        let mut no_date = ok_206(&[]);
        no_date.remove(header::LAST_MODIFIED);
        assert!(
            matches!(admit(206, &no_date), Err(Refusal::Changed(m)) if m.contains("disappeared"))
        );
    }

    #[test]
    fn an_etag_flip_with_the_same_date_is_a_farm() {
        let mut flipped = ok_206(&[]);
        flipped.insert(header::ETAG, "\"inode-2\"".parse().expect("value"));
        assert!(matches!(admit(206, &flipped), Err(Refusal::EtagFlip(_))));
        // Once the source is known to flip, the date alone decides.
        let validator = pinned();
        let lenient = Expect {
            etag_unstable: true,
            ..expect(&validator)
        };
        assert!(
            admit_range(
                StatusCode::PARTIAL_CONTENT,
                &flipped,
                ByteRange::new(100, 200),
                lenient
            )
            .is_ok()
        );
    }

    #[test]
    fn weak_etags_are_compared_but_never_sent_in_if_range() {
        let weak = Validator {
            etag: Some("W/\"w1\"".into()),
            last_modified: Some(LM.into()),
        };
        assert!(weak.weak_etag());
        assert_eq!(weak.if_range(), Some(LM));
        let same =
            Validator::from_headers(&headers(&[("etag", "W/\"w1\""), ("last-modified", LM)]));
        assert_eq!(weak.mismatch(&same, false), None);
        let other =
            Validator::from_headers(&headers(&[("etag", "W/\"w2\""), ("last-modified", LM)]));
        assert!(weak.mismatch(&other, false).is_some());
        let only_weak = Validator {
            etag: Some("W/\"w1\"".into()),
            last_modified: None,
        };
        assert_eq!(only_weak.if_range(), None);
    }

    #[test]
    fn a_changed_total_is_another_version() {
        let h = headers(&[
            ("content-range", "bytes 100-199/2000"),
            ("etag", "\"v1\""),
            ("last-modified", LM),
        ]);
        assert!(matches!(admit(206, &h), Err(Refusal::Changed(m)) if m.contains("size")));
    }

    #[test]
    fn an_unknown_total_is_admitted_on_matching_validators() {
        let h = headers(&[
            ("content-range", "bytes 100-199/*"),
            ("etag", "\"v1\""),
            ("last-modified", LM),
        ]);
        assert!(admit(206, &h).is_ok());
    }

    #[test]
    fn a_range_elsewhere_is_a_protocol_error() {
        let h = headers(&[
            ("content-range", "bytes 0-99/1000"),
            ("etag", "\"v1\""),
            ("last-modified", LM),
        ]);
        assert!(matches!(admit(206, &h), Err(Refusal::Protocol(_))));
    }

    #[test]
    fn an_unsolicited_304_is_recoverable() {
        assert!(matches!(
            admit(304, &headers(&[])),
            Err(Refusal::Protocol(_))
        ));
    }

    #[test]
    fn a_whole_file_of_the_same_version_means_if_range_is_mishandled() {
        let h = headers(&[
            ("content-length", "1000"),
            ("etag", "\"v1\""),
            ("last-modified", LM),
        ]);
        assert_eq!(admit(200, &h), Err(Refusal::WholeUnchanged));
        let changed = headers(&[("content-length", "1000"), ("etag", "\"v2\"")]);
        assert!(matches!(admit(200, &changed), Err(Refusal::Changed(_))));
        let farm = headers(&[
            ("content-length", "1000"),
            ("etag", "\"v9\""),
            ("last-modified", LM),
        ]);
        assert!(matches!(admit(200, &farm), Err(Refusal::EtagFlip(_))));
        let gzip = headers(&[
            ("content-length", "1000"),
            ("content-encoding", "gzip"),
            ("etag", "\"v1\""),
            ("last-modified", LM),
        ]);
        assert!(matches!(admit(200, &gzip), Err(Refusal::Changed(_))));
    }

    #[test]
    fn same_version_needs_validators_and_equality() {
        assert!(pinned().same_version(&pinned()));
        assert!(!Validator::default().same_version(&Validator::default()));
        let other = Validator {
            etag: Some("\"v2\"".into()),
            ..pinned()
        };
        assert!(!pinned().same_version(&other));
    }
}
