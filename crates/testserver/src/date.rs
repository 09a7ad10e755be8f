//! IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the HTTP-date of `Last-Modified` and
//! `If-Range`, formatted and parsed by hand so the server needs no date crate.

use std::time::{Duration, SystemTime};

const SECS_PER_DAY: u64 = 86_400;
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Whole seconds since the Unix epoch; HTTP dates have one-second resolution, and times before
/// 1970 (which no test needs) clamp to the epoch.
pub(crate) fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Formats `time` as an IMF-fixdate, truncating to the second.
pub(crate) fn format_http_date(time: SystemTime) -> String {
    let secs = unix_secs(time);
    let days = secs / SECS_PER_DAY;
    let secs_of_day = secs % SECS_PER_DAY;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday, index 4 when Sunday is 0.
    let weekday = WEEKDAYS[((days + 4) % 7) as usize];
    format!(
        "{weekday}, {day:02} {month} {year:04} {hour:02}:{minute:02}:{second:02} GMT",
        month = MONTHS[(month - 1) as usize],
        hour = secs_of_day / 3600,
        minute = secs_of_day / 60 % 60,
        second = secs_of_day % 60,
    )
}

/// Parses an IMF-fixdate; `None` for anything else, including the obsolete RFC 850 and asctime
/// forms, which no client this server tests sends.
pub(crate) fn parse_http_date(text: &str) -> Option<SystemTime> {
    // Only ASCII can be an HTTP-date, and checking it first makes the byte slicing below safe.
    if !text.is_ascii() {
        return None;
    }
    let bytes = text.as_bytes();
    if bytes.len() != 29 || &text[3..5] != ", " || &text[25..] != " GMT" {
        return None;
    }
    if !WEEKDAYS.contains(&&text[..3]) {
        return None;
    }
    let field = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let separators_ok = bytes[7] == b' '
        && bytes[11] == b' '
        && bytes[16] == b' '
        && bytes[19] == b':'
        && bytes[22] == b':';
    if !separators_ok {
        return None;
    }
    let day = field(5..7)?;
    let month = MONTHS.iter().position(|m| *m == &text[8..11])? as u64 + 1;
    let year = field(12..16)?;
    let (hour, minute, second) = (field(17..19)?, field(20..22)?, field(23..25)?);
    // A leap second (60) is allowed by the grammar and folds into the next minute.
    if year < 1970 || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * SECS_PER_DAY + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01; Howard Hinnant's
/// `civil_from_days`, restricted to dates after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so that February's variable length comes last.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a date from 1970 on; the inverse of `civil_from_days`.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = year - u64::from(month <= 2);
    let era = year / 400;
    let year_of_era = year % 400;
    let march_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * march_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_known_dates() {
        assert_eq!(format_http_date(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        // The example of RFC 9110 section 5.6.7.
        assert_eq!(
            format_http_date(at(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            format_http_date(at(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            format_http_date(at(1_704_164_645)),
            "Tue, 02 Jan 2024 03:04:05 GMT"
        );
    }

    #[test]
    fn sub_second_parts_are_truncated() {
        let time = at(784_111_777) + Duration::from_millis(999);
        assert_eq!(format_http_date(time), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn parse_inverts_format() {
        // Every day over a few centuries, at a time of day that moves with the day.
        for days in (0..200_000u64).step_by(7) {
            let time = at(days * SECS_PER_DAY + days % SECS_PER_DAY);
            let text = format_http_date(time);
            assert_eq!(parse_http_date(&text), Some(time), "{text}");
        }
    }

    #[test]
    fn parse_rejects_other_forms() {
        for text in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT ",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "\"v1\"",
            "Sun, 06 Nov 1994 08:49:37 GMT\u{e9}",
            "Sun, 06 Nov 1994 08:49:3\u{e9} GMT",
        ] {
            assert_eq!(parse_http_date(text), None, "{text:?}");
        }
    }
}
