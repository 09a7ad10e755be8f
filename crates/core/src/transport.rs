//! HTTP plumbing below every stage that talks to a server: the client, a
//! request whose response headers must come within a timeout, the next
//! body chunk within the stall timeout, and the mapping of transport
//! failures and unusable statuses to engine errors. Stages import it; it
//! imports no stage.

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, RequestBuilder, Response, Url};

use crate::download::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::header::parse_retry_after;

/// The HTTP client of one download with the caller's request headers:
/// every request goes through [`Http::get`], which adds them.
#[derive(Clone)]
pub(crate) struct Http {
    client: Client,
    headers: Arc<HeaderMap>,
    /// The origins of the URLs the caller named: only requests to these
    /// carry credentials (`Authorization`, cookies). A redirect target on
    /// another host, reached directly once the redirect is known, gets the
    /// other headers only, as reqwest's own redirect handling does.
    trusted: Arc<Vec<Url>>,
}

impl Http {
    /// A GET for `url` with the caller's headers.
    pub(crate) fn get(&self, url: &Url) -> RequestBuilder {
        let mut request = self.client.get(url.clone());
        let trusted = self.trusted.iter().any(|t| t.origin() == url.origin());
        for (name, value) in self.headers.iter() {
            if trusted || !is_credential_header(name) {
                request = request.header(name, value.clone());
            }
        }
        request
    }
}

/// Headers that carry credentials, dropped on the way to another host.
fn is_credential_header(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION
        || name == header::COOKIE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "cookie2"
}

/// Headers the engine sets itself: a caller's value would break ranges,
/// validators or framing.
const RESERVED_HEADERS: [&str; 13] = [
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "accept-encoding",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

/// The caller's headers, checked: valid names and values, none the engine
/// sets itself. Values are marked sensitive, so no `Debug` shows them; an
/// error names the header, never its value.
pub(crate) fn request_headers(config: &Config) -> Result<HeaderMap> {
    let invalid = |m: String| Error::new(ErrorKind::InvalidInput, m);
    let mut map = HeaderMap::new();
    for (name, value) in config.headers.iter() {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| invalid(format!("invalid request header name {name:?}")))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(invalid(format!(
                "request header {name} is set by rangefetch itself and cannot be given"
            )));
        }
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| invalid(format!("invalid value for request header {name}")))?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

/// The HTTP client of one download: HTTP/1.1 connections (one per range in
/// flight), the configured proxy and extra roots, and a redirect policy
/// that refuses downgrades. `trusted` are the URLs the caller named, whose
/// origins get credential headers.
pub(crate) fn client(config: &Config, trusted: &[Url]) -> Result<Http> {
    let headers = request_headers(config)?;
    let user_agent = config
        .user_agent
        .clone()
        .unwrap_or_else(|| concat!("rangefetch/", env!("CARGO_PKG_VERSION")).to_owned());
    let user_agent = HeaderValue::from_str(&user_agent)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "invalid user agent"))?;
    let mut builder = Client::builder()
        .connect_timeout(config.connect_timeout)
        .pool_max_idle_per_host(config.connections)
        .tcp_nodelay(true)
        .redirect(redirect_policy())
        .user_agent(user_agent);
    builder = match &config.proxy {
        Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, "invalid proxy URL").with_source(e)
        })?),
        None => builder.no_proxy(),
    };
    for pem in &config.ca_certs_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, "invalid CA certificate PEM").with_source(e)
        })?;
        if certs.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "no certificate in the CA PEM file",
            ));
        }
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder.build().map_err(|e| {
        Error::new(ErrorKind::InvalidInput, "cannot set up the HTTP client").with_source(e)
    })?;
    Ok(Http {
        client,
        headers: Arc::new(headers),
        trusted: Arc::new(trusted.to_vec()),
    })
}

/// Follows up to 10 redirects and refuses a downgrade from HTTPS to HTTP.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt
            .previous()
            .last()
            .is_some_and(|prev| prev.scheme() == "https")
            && attempt.url().scheme() == "http";
        if downgrade {
            attempt.error("refusing a redirect from https to http")
        } else if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `Retry-After` delay of a response, if it sent a valid one.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_str(headers, header::RETRY_AFTER).and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// Sends `request` for `url`, waiting at most `timeout` for the response
/// headers; a failure or the timeout becomes a network error.
pub(crate) async fn send_within(
    request: RequestBuilder,
    timeout: Duration,
    url: &Url,
) -> Result<Response> {
    within(timeout, request.send(), url, "no response within").await
}

/// The next piece of `response`'s body, `None` at its end; no data for
/// `stall` is a stalled connection, a network error.
pub(crate) async fn next_chunk(
    response: &mut Response,
    stall: Duration,
    url: &Url,
) -> Result<Option<Bytes>> {
    within(stall, response.chunk(), url, "stalled: no data for").await
}

/// [`next_chunk`], and whether the chunk was there at once, already read
/// from the socket, with no wait for the server. `waiting` runs before the
/// connection starts to wait, so the caller can say so while it does.
pub(crate) async fn next_chunk_or_wait(
    response: &mut Response,
    stall: Duration,
    url: &Url,
    waiting: impl FnOnce(),
) -> Result<(Option<Bytes>, bool)> {
    let mut next = std::pin::pin!(next_chunk(response, stall, url));
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(match next.as_mut().poll(cx) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        })
    })
    .await;
    if let Some(result) = first {
        return result.map(|chunk| (chunk, true));
    }
    waiting();
    next.await.map(|chunk| (chunk, false))
}

/// Awaits `work` for at most `limit`; a transport error or running out of
/// time (`late`, followed by the limit in seconds) is a network error.
async fn within<T>(
    limit: Duration,
    work: impl Future<Output = reqwest::Result<T>>,
    url: &Url,
    late: &str,
) -> Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(network_error(error, url)),
        Err(_) => Err(Error::new(
            ErrorKind::Network,
            format!("{late} {} s", limit.as_secs_f64()),
        )
        .with_url(url)),
    }
}

/// Turns a transport error into an engine error, marking the ones that
/// repeating cannot fix.
pub(crate) fn network_error(error: reqwest::Error, url: &Url) -> Error {
    let mut message = if error.is_timeout() {
        "request timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_redirect() {
        "redirect refused".to_owned()
    } else if error.is_body() || error.is_decode() {
        "connection lost while reading the body".to_owned()
    } else {
        "request failed".to_owned()
    };
    let chain = error_chain_text(&error);
    let certificate = chain.contains("certificate") || chain.contains("UnknownIssuer");
    if certificate {
        message = "TLS certificate not trusted".to_owned();
    }
    let http2_only = offers_no_http1(&chain);
    if http2_only {
        message = "the server offers no HTTP/1.1 (it speaks only HTTP/2); rangefetch fetches ranges over HTTP/1.1 connections".to_owned();
    }
    let permanent = certificate || http2_only || error.is_redirect() || error.is_builder();
    // The URL is in our own context already, credential-free; reqwest's copy
    // of it would repeat it and could carry a password.
    let kind = if certificate {
        ErrorKind::Certificate
    } else {
        ErrorKind::Network
    };
    let engine = Error::new(kind, message)
        .with_url(url)
        .with_source(error.without_url());
    if permanent {
        engine.permanent()
    } else {
        engine
    }
}

/// Whether a transport failure says the server would not speak HTTP/1.1:
/// TLS refused for want of a common ALPN protocol (we offer `http/1.1`
/// only), a server that picked one we did not offer, or a cleartext
/// server that answered with the HTTP/2 preface.
fn offers_no_http1(chain: &str) -> bool {
    [
        "NoApplicationProtocol",
        "no application protocol",
        "no_application_protocol",
        "SelectedUnofferedApplicationProtocol",
        "HTTP2 preface",
    ]
    .iter()
    .any(|needle| chain.contains(needle))
}

fn error_chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut current = Some(error);
    while let Some(e) = current {
        text.push_str(&e.to_string());
        text.push_str(&format!(" {e:?} "));
        current = e.source();
    }
    text
}

/// The header a Dragonfly dfdaemon names the failing side in.
const DRAGONFLY_ERROR: &str = "x-dragonfly-error-type";

/// An error for a status we cannot use.
pub(crate) fn status_error(response: &Response, url: &Url) -> Error {
    let status = response.status();
    let reason = status.canonical_reason().unwrap_or("");
    let mut message = format!("server answered {} {reason}", status.as_u16())
        .trim_end()
        .to_owned();
    // A Dragonfly dfdaemon says which side failed: the origin behind it
    // ("backend") or the P2P network and the daemon itself.
    if let Some(kind) = header_str(response.headers(), HeaderName::from_static(DRAGONFLY_ERROR))
        .map(|v| {
            v.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(40)
                .collect::<String>()
        })
        .filter(|v| !v.is_empty())
    {
        message.push_str(&format!(
            " (Dragonfly error type {kind}: {})",
            if kind.eq_ignore_ascii_case("backend") {
                "the origin behind the daemon failed"
            } else {
                "the daemon or its P2P network failed, not the origin"
            }
        ));
    }
    Error::new(ErrorKind::HttpStatus(status.as_u16()), message)
        .with_url(url)
        .with_retry_after(retry_after(response.headers()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alpn_refusal_or_an_h2_preface_means_no_http1() {
        // rustls's texts for a server whose ALPN list lacks `http/1.1`, and
        // for one that picked a protocol we did not offer; hyper's for an
        // HTTP/2 preface where an HTTP/1.1 status line should be.
        for chain in [
            "client error (Connect) received fatal alert: NoApplicationProtocol AlertReceived(NoApplicationProtocol)",
            "peer misbehaved: SelectedUnofferedApplicationProtocol",
            "invalid HTTP version parsed (found HTTP2 preface)",
        ] {
            assert!(offers_no_http1(chain), "{chain}");
        }
        for chain in [
            "tcp connect error: Connection refused (os error 111)",
            "invalid peer certificate: UnknownIssuer",
            "received fatal alert: HandshakeFailure",
        ] {
            assert!(!offers_no_http1(chain), "{chain}");
        }
    }
}
