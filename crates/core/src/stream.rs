//! The fallback path: one stream from byte 0, for servers that ignore
//! ranges or do not say how long the file is. Still verified, still written
//! to the part file first; a failure restarts the stream from zero (without
//! ranges there is no way to ask for the rest), with the hash reset so no
//! byte is counted twice.

use std::sync::atomic::Ordering;

use reqwest::{Response, StatusCode, header};

use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::fetch::Fetcher;
use crate::probe::Validator;
use crate::range::ByteRange;
use crate::retry::Jitter;
use crate::transport::{next_chunk, send_within, status_error};

/// Streams the whole body into the part file; returns its length.
pub(crate) async fn single_stream(fetcher: &Fetcher, first: Response) -> Result<u64> {
    let mut response = Some(first);
    let mut failures = 0u32;
    let mut jitter = Jitter::new(0x5eed);
    loop {
        let result = match response.take() {
            Some(response) => stream_once(fetcher, response).await,
            None => request_whole(fetcher).await,
        };
        let error = match result {
            Ok(len) => return Ok(len),
            Err(error) => error,
        };
        failures += 1;
        if !error.is_retryable() || failures > fetcher.policy.retries {
            return Err(error.with_attempts(failures));
        }
        let delay = fetcher
            .policy
            .backoff
            .delay(failures, error.retry_after(), &mut jitter);
        fetcher.counters.retries.fetch_add(1, Ordering::Relaxed);
        fetcher.emit(Event::retry(
            ByteRange::new(0, fetcher.total.unwrap_or(0)),
            failures,
            &error,
            delay,
        ));
        tokio::time::sleep(delay).await;
        // Start over: forget the hash and what was counted.
        fetcher.hasher.reset();
        fetcher.counters.bytes.store(0, Ordering::Relaxed);
    }
}

async fn request_whole(fetcher: &Fetcher) -> Result<u64> {
    let source = &fetcher.sources[0];
    let url = &source.url();
    let request = fetcher
        .client
        .get(url.clone())
        .header(header::ACCEPT_ENCODING, "identity");
    let response = send_within(request, fetcher.policy.stall_timeout, url).await?;
    if response.status() != StatusCode::OK {
        return Err(status_error(&response, url));
    }
    if source
        .validator
        .contradicts(&Validator::from_headers(response.headers()))
    {
        return Err(Error::new(
            ErrorKind::RemoteChanged,
            "validator changed between attempts",
        )
        .with_url(url));
    }
    stream_once(fetcher, response).await
}

async fn stream_once(fetcher: &Fetcher, mut response: Response) -> Result<u64> {
    let url = &fetcher.sources[0].url();
    let expected = fetcher.total;
    let mut offset = 0u64;
    while let Some(chunk) = next_chunk(&mut response, fetcher.policy.stall_timeout, url).await? {
        let end = offset + chunk.len() as u64;
        if expected.is_some_and(|total| end > total) {
            return Err(
                Error::new(ErrorKind::Protocol, "body longer than its Content-Length")
                    .with_url(url),
            );
        }
        fetcher
            .part
            .write_at(offset, &chunk)
            .map_err(|e| Error::io(format!("cannot write {}", fetcher.part.path().display()), e))?;
        offset = end;
        fetcher.hasher.advance(offset);
        fetcher.counters.bytes.store(offset, Ordering::Relaxed);
    }
    if let Some(total) = expected
        && offset < total
    {
        return Err(Error::new(
            ErrorKind::Network,
            format!("connection closed after {offset} of {total} bytes"),
        )
        .with_url(url));
    }
    // An unknown length ends where the stream ends; trim any preallocation.
    fetcher.part.set_len(offset).map_err(|e| {
        Error::io(
            format!("cannot resize {}", fetcher.part.path().display()),
            e,
        )
    })?;
    Ok(offset)
}
