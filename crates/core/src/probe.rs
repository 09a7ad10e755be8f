//! The probe: one request that learns the file's size, whether the server
//! serves ranges, and the validator that pins the version we download.
//!
//! The probe is itself a ranged GET for the first chunk, so its body is not
//! wasted: it becomes the first connection's data. A server that ignores the
//! range answers `200` with the whole body, which then becomes the single
//! stream of the fallback path.

use std::time::{Duration, Instant};

use reqwest::header;
use reqwest::{Response, StatusCode, Url};

pub use crate::admit::Validator;
use crate::admit::{Refusal, content_coding, content_range};
use crate::error::{Error, ErrorKind, Result, redact_url};
use crate::header::parse_content_length;
use crate::range::{ByteRange, format_range_header, parse_content_range};
use crate::transport::{Http, header_str, send_within, status_error};

/// How much a probe asks for when its body is not wanted (a resume, a
/// mirror, a renewed redirect): two bytes, `bytes=0-1`, never `bytes=0-0`.
/// busybox httpd reads a last position of 0 as "no last position" and
/// answers `bytes=0-0` with the whole file (some builds with `200`, which
/// reads as "no ranges here": the mirror dropped, the journal thrown away);
/// every server handles a range that ends after byte 0.
pub(crate) const SMALL_PROBE_LEN: u64 = 2;

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
    /// The file's SHA-256 as the response's headers state it (digest.rs):
    /// usually none, more than one only when they disagree.
    pub digests: Vec<crate::digest::ServerDigest>,
    /// Mirrors the response names (`Link: <…>; rel=duplicate`, RFC 6249),
    /// best first; they serve only after their own probe agrees.
    pub duplicates: Vec<String>,
}

/// The probe response's body, which the fetch stage consumes.
pub(crate) enum FirstBody {
    /// A `206` whose body starts with `range` of the file (the part that
    /// was asked for; the server may send more, which is not used).
    Partial(Response, ByteRange),
    /// A `200` whose body is the whole file, in identity encoding.
    Whole(Response),
    /// A `200` whose body is the whole file in this content coding
    /// (`gzip`, `br`…): one stream, decoded, or a clear error.
    Encoded(Response, String),
    /// A body that cannot be used as it is (a `206` of unknown total, or an
    /// encoded range): the single stream asks for the whole file again,
    /// expecting this coding, if any.
    Refetch(Option<String>),
    /// A `200` with a `Content-Range` (a proxy that mangles ranged
    /// answers): nothing of it is used; one stream of the whole file
    /// instead, asked without `Range`.
    Mangled,
    /// The file is empty (`416` with `bytes */0`, or a `200` of length 0).
    Empty,
}

/// One-line notices about what the probe found that changes what the
/// user can rely on: no validator, no ranges, an encoded body.
pub(crate) fn notices(remote: &Remote, first: &FirstBody, expected_hash: bool) -> Vec<String> {
    let url = redact_url(&remote.url);
    let mut notices = Vec::new();
    let mut notice = |message: String| notices.push(message);
    match first {
        FirstBody::Encoded(_, coding) | FirstBody::Refetch(Some(coding)) => notice(format!(
            "{url} sends the file {coding}-encoded although identity was asked for; downloading it as one stream and decoding it (the SHA-256 is of the decoded bytes)"
        )),
        FirstBody::Whole(_) => notice(format!(
            "{url} does not serve byte ranges; downloading it as one stream, which an interruption restarts from the beginning"
        )),
        FirstBody::Mangled => notice(format!(
            "{url} answered a ranged request with 200 and a Content-Range, as proxies that mangle ranged answers do; downloading the whole file as one stream, without ranges"
        )),
        FirstBody::Refetch(None) => notice(format!(
            "{url} serves ranges but does not say how large the file is; downloading it as one stream"
        )),
        FirstBody::Partial(..) | FirstBody::Empty => {}
    }
    if remote.validator.is_empty() && !expected_hash && !matches!(first, FirstBody::Empty) {
        notice(format!(
            "{url} sends no ETag or Last-Modified, so a change to the file during the download cannot be detected; --sha256 is what protects the file"
        ));
    }
    notices
}

/// Sends the probe: a GET for `[0, first_len)`.
pub(crate) async fn probe(
    client: &Http,
    url: &Url,
    first_len: u64,
    timeout: Duration,
) -> Result<(Remote, FirstBody)> {
    let asked = ByteRange::new(0, first_len.max(1));
    let mut request = client.get(url).header(header::ACCEPT_ENCODING, "identity");
    for (name, value) in crate::digest::WANT_HEADERS {
        request = request.header(name, value);
    }
    if let Some(value) = format_range_header(asked) {
        request = request.header(header::RANGE, value);
    }
    let sent = Instant::now();
    let response = send_within(request, timeout, url).await?;
    let latency = sent.elapsed();
    let final_url = response.url().clone();
    let headers = response.headers();
    let remote = |total: Option<u64>, ranges: bool| Remote {
        url: final_url.clone(),
        total,
        ranges,
        validator: Validator::from_headers(headers),
        latency,
        digests: crate::digest::from_header_map(
            headers,
            crate::digest::ResponseKind {
                status: response.status().as_u16(),
                total,
                encoded: content_coding(headers).is_some(),
            },
        ),
        duplicates: crate::metalink::duplicate_links(
            headers
                .get_all(header::LINK)
                .iter()
                .filter_map(|value| value.to_str().ok()),
            final_url.as_str(),
        )
        .into_iter()
        .map(|link| link.url)
        .collect(),
    };
    let protocol = |message: String| Error::new(ErrorKind::Protocol, message).with_url(&final_url);
    if response.status().is_success()
        && let Some(kind) = header_str(headers, header::CONTENT_TYPE)
            .and_then(crate::metalink::MetalinkVersion::from_media_type)
    {
        // A Metalink is a description of the file, not the file.
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the URL serves a Metalink {} document, not the file itself",
                match kind {
                    crate::metalink::MetalinkVersion::V4 => "4",
                    crate::metalink::MetalinkVersion::V3 => "3",
                }
            ),
        )
        .with_url(&final_url)
        .serving_metalink()
        .permanent());
    }
    match response.status() {
        StatusCode::PARTIAL_CONTENT => {
            if let Some(coding) = content_coding(headers) {
                // A range of an encoded representation is no range of the file.
                return Ok((remote(None, false), FirstBody::Refetch(Some(coding))));
            }
            let (got, total) = content_range(headers).map_err(|refusal| match refusal {
                Refusal::Protocol(message) => protocol(message),
                other => protocol(format!("{other:?}")),
            })?;
            if got.start != 0 {
                return Err(protocol(format!(
                    "asked for bytes {asked}, server sent {got}"
                )));
            }
            let Some(total) = total else {
                // `bytes 0-N/*`: ranges work, but without the size there is
                // no plan; one stream of the whole file instead.
                return Ok((remote(None, false), FirstBody::Refetch(None)));
            };
            let first = ByteRange::new(0, got.end.min(asked.end));
            Ok((
                remote(Some(total), true),
                FirstBody::Partial(response, first),
            ))
        }
        StatusCode::OK => {
            if headers.contains_key(header::CONTENT_RANGE) {
                // A 200 that claims to carry a range (a P2P proxy's bug): its
                // body is neither the whole file nor a range we can trust.
                return Ok((remote(None, false), FirstBody::Mangled));
            }
            if let Some(coding) = content_coding(headers) {
                let found = remote(None, false);
                return Ok((found, FirstBody::Encoded(response, coding)));
            }
            let total = header_str(headers, header::CONTENT_LENGTH).and_then(parse_content_length);
            let found = remote(total, false);
            if total == Some(0) {
                return Ok((found, FirstBody::Empty));
            }
            Ok((found, FirstBody::Whole(response)))
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            // S3 and others answer any range on an empty object this way.
            let total = header_str(headers, header::CONTENT_RANGE)
                .and_then(|v| parse_content_range(v).ok())
                .and_then(|cr| cr.total);
            if total == Some(0) {
                return Ok((remote(Some(0), true), FirstBody::Empty));
            }
            Err(status_error(&response, &final_url))
        }
        StatusCode::NOT_MODIFIED => Err(protocol(
            "server answered 304 Not Modified to a request that asked for none".into(),
        )),
        _ => Err(status_error(&response, &final_url)),
    }
}
