//! Small requests made before a download, with the download's own proxy
//! and TLS settings: the bytes of a checksum or signature file, and the
//! digest a server states for a file (what `--trust-server-digest` takes
//! as the expected hash, so that an output already in place or a cached
//! copy is recognised without fetching the file).

use crate::digest::{ServerDigest, judge};
use crate::download::{Config, parse_url};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::{client, network_error, send_within, status_error};

/// Fetches a small resource (a checksum file, a detached signature), at
/// most `limit` bytes, as bytes: a binary signature is no text.
pub async fn fetch_bytes(url: &str, config: &Config, limit: usize) -> Result<Vec<u8>> {
    let url = parse_url(url)?;
    let client = client(config, std::slice::from_ref(&url))?;
    let mut response = send_within(
        client.get(&url),
        config.stall_timeout.max(config.connect_timeout),
        &url,
    )
    .await?;
    if !response.status().is_success() {
        return Err(status_error(&response, &url));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| network_error(e, &url))? {
        if body.len() + chunk.len() > limit {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("larger than {limit} bytes"),
            )
            .with_url(&url));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetches a small text resource (a checksum file), at most `limit` bytes;
/// bytes that are not UTF-8 become U+FFFD.
pub async fn fetch_text(url: &str, config: &Config, limit: usize) -> Result<String> {
    let bytes = fetch_bytes(url, config, limit).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The SHA-256 the server states for the file at `url` (`Repr-Digest`,
/// `Digest`, `X-Linked-ETag`), learnt from a probe for its first byte;
/// `None` when it states none. Digests that disagree with each other are
/// an error of kind [`ErrorKind::ChecksumMismatch`].
pub async fn server_digest(url: &str, config: &Config) -> Result<Option<ServerDigest>> {
    let url = parse_url(url)?;
    let client = client(config, std::slice::from_ref(&url))?;
    let (remote, _first) = crate::probe::probe(&client, &url, 1, config.stall_timeout).await?;
    judge(None, &remote.digests).map_err(|disagreement| {
        Error::new(ErrorKind::ChecksumMismatch, disagreement.to_string()).with_url(&remote.url)
    })
}
