//! HTTP plumbing below every stage that talks to a server: the client, a
//! request whose response headers must come within a timeout, the next
//! body chunk within the stall timeout, and the mapping of transport
//! failures and unusable statuses to engine errors. Stages import it; it
//! imports no stage.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, RequestBuilder, Response, Url};

use crate::download::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::header::parse_retry_after;

/// The HTTP client of one download: HTTP/1.1 connections (one per range in
/// flight), the configured proxy and extra roots, and a redirect policy
/// that refuses downgrades.
pub(crate) fn client(config: &Config) -> Result<Client> {
    let mut builder = Client::builder()
        .connect_timeout(config.connect_timeout)
        .pool_max_idle_per_host(config.connections)
        .tcp_nodelay(true)
        .redirect(redirect_policy())
        .user_agent(concat!("rangefetch/", env!("CARGO_PKG_VERSION")));
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
    builder.build().map_err(|e| {
        Error::new(ErrorKind::InvalidInput, "cannot set up the HTTP client").with_source(e)
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
    let engine = Error::new(ErrorKind::Network, message)
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

/// An error for a status we cannot use.
pub(crate) fn status_error(response: &Response, url: &Url) -> Error {
    let status = response.status();
    let reason = status.canonical_reason().unwrap_or("");
    Error::new(
        ErrorKind::HttpStatus(status.as_u16()),
        format!("server answered {} {reason}", status.as_u16())
            .trim_end()
            .to_owned(),
    )
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
