//! `rangefetch get` against the test server's fault script, one test per fault and one module
//! per kind: resets, short bodies and random cuts; stalls and throttling; error statuses with
//! `Retry-After`; wrong headers and corrupted bytes; a remote that changes mid-download and a
//! CDN that mishandles `If-Range`; redirects that expire; mirrors that disagree or die. Each
//! test asserts the output's SHA-256 and what the server saw: how many bytes it sent and which
//! ranges were asked for, so that a retry that starts over from the chunk's first byte, or a
//! file that mixes two versions, fails. This module holds what the tests ask of a run's
//! requests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rangefetch_testserver::RequestLog;

use crate::support::Run;

// Cut-off responses: the retry asks for the rest of the range, from the byte where it stopped.
mod cuts;
// Slow and stalled connections.
mod stalls;
// Error statuses.
mod statuses;
// Wrong headers and wrong bodies.
mod wrong_responses;
// Validators: a changed remote, and a CDN that mishandles `If-Range`.
mod validators;
// Redirects.
mod redirects;
// Mirrors.
mod mirrors;

/// The GET requests a run sent to the server it was recorded against, in arrival order.
pub(crate) fn gets(run: &Run) -> Vec<&RequestLog> {
    run.served
        .as_ref()
        .expect("the run was recorded against a server")
        .requests
        .iter()
        .filter(|request| request.method == "GET")
        .collect()
}

/// The file-content bytes the server sent during the run.
fn served_bytes(run: &Run) -> u64 {
    run.served
        .as_ref()
        .expect("the run was recorded against a server")
        .body_bytes
}

/// The half-open range a request asked for: `bytes=a-b` is `(a, Some(b + 1))`, `bytes=a-` is
/// `(a, None)`.
pub(crate) fn asked(request: &RequestLog) -> Option<(u64, Option<u64>)> {
    let spec = request.range.as_deref()?.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let last = last.trim();
    let end = if last.is_empty() {
        None
    } else {
        Some(last.parse::<u64>().ok()? + 1)
    };
    Some((first, end))
}

/// The GETs of the run whose `Range` starts at `start`.
pub(crate) fn asked_from(run: &Run, start: u64) -> Vec<&RequestLog> {
    gets(run)
        .into_iter()
        .filter(|request| asked(request).is_some_and(|(first, _)| first == start))
        .collect()
}

/// How far from byte 0 the bodies of `requests` reach without a gap: a 200 covers `[0, its
/// body)`, a 206 `[range start, + its body)`.
fn covered_prefix(requests: &[&RequestLog]) -> u64 {
    let mut spans: Vec<(u64, u64)> = requests
        .iter()
        .filter(|request| request.body_bytes > 0)
        .filter_map(|request| {
            let start = match request.status {
                200 => 0,
                206 => asked(request)?.0,
                _ => return None,
            };
            Some((start, start + request.body_bytes))
        })
        .collect();
    spans.sort_unstable();
    let mut covered_to = 0;
    for (start, end) in spans {
        if start > covered_to {
            break;
        }
        covered_to = covered_to.max(end);
    }
    covered_to
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form of `Retry-After` dates.
fn http_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Howard Hinnant's days-to-civil, for days since the epoch.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} GMT",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

#[test]
fn http_date_formats_known_instants() {
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(1_704_164_645)),
        "Tue, 02 Jan 2024 03:04:05 GMT"
    );
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "Tue, 29 Feb 2000 00:00:00 GMT"
    );
}
