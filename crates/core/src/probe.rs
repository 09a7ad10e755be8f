//! The probe: one request that learns the file's size, whether the server
//! serves ranges, and the validator that pins the version we download.
//!
//! The probe is itself a ranged GET for the first chunk, so its body is not
//! wasted: it becomes the first connection's data. A server that ignores the
//! range answers `200` with the whole body, which then becomes the single
//! stream of the fallback path.

use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap};
use reqwest::{Client, Response, StatusCode, Url};

use crate::error::{Error, ErrorKind, Result};
use crate::header::{parse_content_length, parse_etag};
use crate::range::{ByteRange, format_range_header, parse_content_range};
use crate::transport::{header_str, send_within, status_error};

/// What pins the version of the remote file: its strong `ETag` and its
/// `Last-Modified` date, as the server sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validator {
    /// The strong entity tag, quoted, exactly as sent. Weak tags are not
    /// kept: they cannot vouch for byte-identical content.
    pub etag: Option<String>,
    /// The `Last-Modified` value exactly as sent.
    pub last_modified: Option<String>,
}

impl Validator {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let etag = header_str(headers, header::ETAG)
            .and_then(parse_etag)
            .filter(|tag| !tag.weak)
            .map(|tag| tag.header_value());
        let last_modified = header_str(headers, header::LAST_MODIFIED).map(str::to_owned);
        Self {
            etag,
            last_modified,
        }
    }

    /// The value for `If-Range`: the strong ETag, else the date.
    pub(crate) fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }

    /// Whether a response's validators contradict ours. A missing header is
    /// no contradiction; a different one is.
    pub(crate) fn contradicts(&self, other: &Validator) -> bool {
        let differs =
            |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
        differs(&self.etag, &other.etag) || differs(&self.last_modified, &other.last_modified)
    }
}

/// The remote file as the probe found it.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Where ranges are fetched: the probe's URL after redirects.
    pub url: Url,
    /// Size in bytes, when known.
    pub total: Option<u64>,
    /// Whether the server answered the probe's range with `206`.
    pub ranges: bool,
    /// The version we are downloading.
    pub validator: Validator,
    /// From sending the probe to its response headers: connect, TLS and one
    /// request, so a few round trips. Sets how long the engine watches
    /// throughput before it adds connections.
    pub latency: Duration,
}

/// The probe response's body, which the fetch stage consumes.
pub(crate) enum FirstBody {
    /// A `206` whose body is `range` of the file.
    Partial(Response, ByteRange),
    /// A `200` whose body is the whole file.
    Whole(Response),
    /// The file is empty (`416` with `bytes */0`, or a `200` of length 0).
    Empty,
}

/// Sends the probe: a GET for `[0, first_len)`.
pub(crate) async fn probe(
    client: &Client,
    url: &Url,
    first_len: u64,
    timeout: Duration,
) -> Result<(Remote, FirstBody)> {
    let range = ByteRange::new(0, first_len.max(1));
    let mut request = client
        .get(url.clone())
        .header(header::ACCEPT_ENCODING, "identity");
    if let Some(value) = format_range_header(range) {
        request = request.header(header::RANGE, value);
    }
    let sent = Instant::now();
    let response = send_within(request, timeout, url).await?;
    let latency = sent.elapsed();
    let final_url = response.url().clone();
    let headers = response.headers();
    let validator = Validator::from_headers(headers);
    match response.status() {
        StatusCode::PARTIAL_CONTENT => {
            let value = header_str(headers, header::CONTENT_RANGE).ok_or_else(|| {
                Error::new(ErrorKind::Protocol, "206 response without Content-Range")
                    .with_url(&final_url)
            })?;
            let content_range = parse_content_range(value).map_err(|e| {
                Error::new(ErrorKind::Protocol, "bad Content-Range")
                    .with_url(&final_url)
                    .with_source(e)
            })?;
            let (Some(got), Some(total)) = (content_range.range, content_range.total) else {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("unusable Content-Range {value:?}"),
                )
                .with_url(&final_url));
            };
            if got.start != 0 || got.end > range.end {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("asked for bytes {range}, server sent {got}"),
                )
                .with_url(&final_url));
            }
            let remote = Remote {
                url: final_url,
                total: Some(total),
                ranges: true,
                validator,
                latency,
            };
            Ok((remote, FirstBody::Partial(response, got)))
        }
        StatusCode::OK => {
            let total = header_str(headers, header::CONTENT_LENGTH).and_then(parse_content_length);
            let remote = Remote {
                url: final_url,
                total,
                ranges: false,
                validator,
                latency,
            };
            if total == Some(0) {
                return Ok((remote, FirstBody::Empty));
            }
            Ok((remote, FirstBody::Whole(response)))
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            // S3 and others answer any range on an empty object this way.
            let total = header_str(headers, header::CONTENT_RANGE)
                .and_then(|v| parse_content_range(v).ok())
                .and_then(|cr| cr.total);
            if total == Some(0) {
                let remote = Remote {
                    url: final_url,
                    total: Some(0),
                    ranges: true,
                    validator,
                    latency,
                };
                return Ok((remote, FirstBody::Empty));
            }
            Err(status_error(&response, &final_url))
        }
        _ => Err(status_error(&response, &final_url)),
    }
}
