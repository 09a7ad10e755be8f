//! Parsers for the response header values the engine acts on: `ETag`,
//! `Last-Modified` and other HTTP dates, `Retry-After` and `Content-Length`.
//!
//! They take the value as text and return `None` for anything malformed: a
//! server that sends garbage in a header is treated as one that did not send
//! it, and the caller falls back to its own defaults.

use std::time::{Duration, SystemTime};

/// An entity tag, the `ETag` validator of a representation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntityTag {
    /// Whether the tag is weak (`W/"..."`): it then only promises equivalent
    /// content, not identical bytes, and cannot guard a ranged resume.
    pub weak: bool,
    /// The opaque tag, without quotes or the `W/` prefix.
    pub tag: String,
}

impl EntityTag {
    /// The tag as it goes into a header: quoted, with `W/` when weak.
    pub fn header_value(&self) -> String {
        let prefix = if self.weak { "W/" } else { "" };
        format!("{prefix}\"{}\"", self.tag)
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both tags strong and equal.
    /// This is the comparison that decides whether partial bytes may be
    /// completed with more bytes of the "same" representation.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.tag == other.tag
    }
}

/// Parses an `ETag` value: `"tag"` or `W/"tag"`.
///
/// The tag may hold any visible character but `"` (and non-ASCII, RFC 9110's
/// obs-text). As a leniency, an unquoted tag of such characters is accepted
/// too, since some servers send one and it still tells versions apart; it is
/// re-quoted by [`EntityTag::header_value`].
pub fn parse_etag(value: &str) -> Option<EntityTag> {
    let value = value.trim();
    let (weak, opaque) = match value.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let tag = match opaque.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None if opaque.is_empty() => return None,
        None => opaque,
    };
    if !tag.chars().all(is_etag_char) {
        return None;
    }
    Some(EntityTag {
        weak,
        tag: tag.to_owned(),
    })
}

/// RFC 9110 `etagc`: `!`, `#` to `~`, or obs-text (here: any non-ASCII
/// character, since the value arrives as text).
fn is_etag_char(c: char) -> bool {
    c == '!' || ('#'..='~').contains(&c) || !c.is_ascii()
}

/// Parses an HTTP date (`Last-Modified`, `Date`, `Retry-After`): the
/// IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT` and the obsolete RFC 850 and
/// asctime forms. Surrounding whitespace is ignored.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// Parses `Retry-After`: delta-seconds, or an HTTP date turned into the wait
/// from `now` (zero for a date in the past).
///
/// No cap is applied: a server asking for a week gets a week here, and the
/// caller decides how long it is willing to wait. A delta-seconds value too
/// large for 64 bits saturates, as RFC 9111 §1.2.2 asks of such values.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let date = parse_http_date(value)?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `Content-Length`: ASCII digits only, no sign, `None` on overflow.
///
/// A list of identical values (`5, 5`), which proxies produce by merging
/// duplicate fields, is accepted as that value (RFC 9110 §8.6); differing
/// values, or an empty element, make the length unknown.
pub fn parse_content_length(value: &str) -> Option<u64> {
    let mut length = None;
    for element in value.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() || !element.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let parsed = element.parse::<u64>().ok()?;
        if length.is_some_and(|seen| seen != parsed) {
            return None;
        }
        length = Some(parsed);
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn etag(weak: bool, tag: &str) -> Option<EntityTag> {
        Some(EntityTag {
            weak,
            tag: tag.to_owned(),
        })
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag(r#""abc""#), etag(false, "abc"));
        assert_eq!(parse_etag(r#" W/"abc" "#), etag(true, "abc"));
        assert_eq!(parse_etag(r#""""#), etag(false, ""));
        assert_eq!(
            parse_etag(r#""5f3c-1a2b3c4d""#),
            etag(false, "5f3c-1a2b3c4d")
        );
        assert_eq!(parse_etag("unquoted-123"), etag(false, "unquoted-123"));
        assert_eq!(parse_etag(r#""caf€""#), etag(false, "caf€"));
        for bad in [
            "",
            "W/",
            r#"""#,
            r#""abc"#,
            r#"abc""#,
            r#""a"b""#,
            r#""a b""#,
            "a b",
            "w/\"x\"x",
            "\"\u{7f}\"",
        ] {
            assert_eq!(parse_etag(bad), None, "{bad:?}");
        }
        let weak = parse_etag(r#"W/"v1""#).expect("valid");
        let strong = parse_etag(r#""v1""#).expect("valid");
        assert_eq!(weak.header_value(), r#"W/"v1""#);
        assert_eq!(strong.header_value(), r#""v1""#);
        assert!(strong.strong_eq(&strong));
        assert!(!weak.strong_eq(&strong) && !weak.strong_eq(&weak));
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "  Sun, 06 Nov 1994 08:49:37 GMT\t",
        ] {
            assert_eq!(parse_http_date(form), Some(expected), "{form:?}");
        }
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "-1", "+5", "1.5", "5s", "soon"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn content_length_forms() {
        assert_eq!(parse_content_length("0"), Some(0));
        assert_eq!(parse_content_length(" 1234 "), Some(1234));
        assert_eq!(parse_content_length("5, 5"), Some(5));
        assert_eq!(parse_content_length("5,5,\t5"), Some(5));
        assert_eq!(parse_content_length("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            " ",
            "-1",
            "+1",
            "1.0",
            "0x10",
            "5, 6",
            "5,",
            ",5",
            "5,,5",
            "18446744073709551616",
            "1 2",
            "١",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn retry_after_seconds(n in any::<u64>()) {
            prop_assert_eq!(parse_retry_after(&n.to_string(), SystemTime::now()), Some(Duration::from_secs(n)));
        }

        #[test]
        fn retry_after_date_is_the_difference(now_s in 0u64..1 << 34, then_s in 0u64..1 << 34) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_s);
            let then = SystemTime::UNIX_EPOCH + Duration::from_secs(then_s);
            let value = httpdate::fmt_http_date(then);
            prop_assert_eq!(parse_retry_after(&value, now), Some(Duration::from_secs(then_s.saturating_sub(now_s))));
        }

        #[test]
        fn etag_round_trips(weak in any::<bool>(), tag in "[!#-~\u{80}-\u{10ffff}]{0,40}") {
            let tag = EntityTag { weak, tag };
            prop_assert_eq!(parse_etag(&tag.header_value()), Some(tag.clone()));
        }

        #[test]
        fn content_length_round_trips(n in any::<u64>(), copies in 1usize..4) {
            let value = vec![n.to_string(); copies].join(", ");
            prop_assert_eq!(parse_content_length(&value), Some(n));
        }

        #[test]
        fn never_panics(value in ".{0,80}") {
            let now = SystemTime::now();
            let _ = parse_retry_after(&value, now);
            let _ = parse_http_date(&value);
            let _ = parse_content_length(&value);
            if let Some(tag) = parse_etag(&value) {
                prop_assert_eq!(parse_etag(&tag.header_value()), Some(tag));
            }
        }
    }
}
