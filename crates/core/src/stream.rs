//! The fallback path: one stream from byte 0, for servers that ignore
//! ranges, do not say how long the file is, or send it encoded. Still
//! verified, still written to the part file first; a failure restarts the
//! stream from zero (without ranges there is no way to ask for the rest),
//! with the hash reset so no byte is counted twice.
//!
//! A body in a content coding (`gzip`, `deflate`) is decoded on the way in:
//! what is written and hashed is the file, never its encoded form. A coding
//! the engine cannot decode is a clear error, not a file.

use std::io::Write;
use std::sync::atomic::Ordering;

use reqwest::{Response, StatusCode, header};

use crate::admit::{Validator, content_coding};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::fetch::Fetcher;
use crate::range::ByteRange;
use crate::retry::Jitter;
use crate::transport::{next_chunk, send_within, status_error};

/// Streams the whole body into the part file, starting with `first` (the
/// probe's response) when it is usable; returns the file's length.
pub(crate) async fn single_stream(fetcher: &Fetcher, first: Option<Response>) -> Result<u64> {
    let mut response = first;
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
        .get(url)
        .header(header::ACCEPT_ENCODING, "identity");
    let response = send_within(request, fetcher.policy.first_byte_timeout, url).await?;
    if response.status() != StatusCode::OK {
        return Err(status_error(&response, url));
    }
    if response.headers().contains_key(header::CONTENT_RANGE) {
        return Err(Error::new(
            ErrorKind::Protocol,
            "server answered a request for the whole file with a Content-Range",
        )
        .with_url(url));
    }
    if let Some(reason) = source
        .validator
        .mismatch(&Validator::from_headers(response.headers()), false)
    {
        return Err(Error::new(
            ErrorKind::RemoteChanged,
            format!("{reason} between attempts"),
        )
        .with_url(url));
    }
    stream_once(fetcher, response).await
}

/// Turns the body's bytes into the file's bytes.
enum Decoder {
    Identity,
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
}

impl Decoder {
    /// The decoder for a content coding (`None`: identity); an error for a
    /// coding it cannot decode.
    fn for_coding(coding: Option<&str>) -> std::result::Result<Self, String> {
        match coding {
            None => Ok(Self::Identity),
            Some("gzip" | "x-gzip") => Ok(Self::Gzip(flate2::write::GzDecoder::new(Vec::new()))),
            Some("deflate") => Ok(Self::Zlib(flate2::write::ZlibDecoder::new(Vec::new()))),
            Some(other) => Err(other.to_owned()),
        }
    }

    /// Decodes `input`; returns the decoded bytes now available.
    fn feed<'a>(&'a mut self, input: &'a [u8]) -> std::io::Result<&'a [u8]> {
        match self {
            Self::Identity => Ok(input),
            Self::Gzip(decoder) => {
                decoder.get_mut().clear();
                decoder.write_all(input)?;
                Ok(decoder.get_ref())
            }
            Self::Zlib(decoder) => {
                decoder.get_mut().clear();
                decoder.write_all(input)?;
                Ok(decoder.get_ref())
            }
        }
    }

    /// Ends the stream: checks it is complete, returns the last bytes.
    fn finish(&mut self) -> std::io::Result<&[u8]> {
        match self {
            Self::Identity => Ok(&[]),
            Self::Gzip(decoder) => {
                decoder.get_mut().clear();
                decoder.try_finish()?;
                Ok(decoder.get_ref())
            }
            Self::Zlib(decoder) => {
                decoder.get_mut().clear();
                decoder.try_finish()?;
                Ok(decoder.get_ref())
            }
        }
    }
}

async fn stream_once(fetcher: &Fetcher, mut response: Response) -> Result<u64> {
    let url = &fetcher.sources[0].url();
    let coding = content_coding(response.headers());
    let mut decoder = Decoder::for_coding(coding.as_deref()).map_err(|coding| {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "server sends the file only {coding}-encoded, although identity was asked for, and rangefetch cannot decode {coding}"
            ),
        )
        .with_url(url)
        .permanent()
    })?;
    // An encoded body's Content-Length is of the encoded bytes.
    let expected = if coding.is_none() {
        fetcher.total
    } else {
        None
    };
    let corrupt = |e: std::io::Error| {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "cannot decode the {}-encoded body",
                coding.as_deref().unwrap_or("identity")
            ),
        )
        .with_url(url)
        .with_source(e)
    };
    let mut offset = 0u64;
    loop {
        let chunk = next_chunk(&mut response, fetcher.policy.stall_timeout, url).await?;
        if let (Some(limit), Some(chunk)) = (&fetcher.rate, &chunk) {
            limit.take(chunk.len() as u64).await;
        }
        let decoded = match &chunk {
            Some(chunk) => decoder.feed(chunk).map_err(corrupt)?,
            None => decoder.finish().map_err(corrupt)?,
        };
        let end = offset + decoded.len() as u64;
        if expected.is_some_and(|total| end > total) {
            return Err(
                Error::new(ErrorKind::Protocol, "body longer than its Content-Length")
                    .with_url(url),
            );
        }
        fetcher
            .part
            .write_at(offset, decoded)
            .map_err(|e| Error::io(format!("cannot write {}", fetcher.part.path().display()), e))?;
        offset = end;
        fetcher.hasher.advance(offset);
        fetcher.counters.bytes.store(offset, Ordering::Relaxed);
        if chunk.is_none() {
            break;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(coding: Option<&str>, encoded: &[u8], piece: usize) -> std::io::Result<Vec<u8>> {
        let mut decoder = Decoder::for_coding(coding).map_err(std::io::Error::other)?;
        let mut out = Vec::new();
        for chunk in encoded.chunks(piece) {
            out.extend_from_slice(decoder.feed(chunk)?);
        }
        out.extend_from_slice(decoder.finish()?);
        Ok(out)
    }

    #[test]
    fn gzip_and_deflate_decode_in_any_pieces() -> std::io::Result<()> {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 / 3) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data)?;
        let gz = gz.finish()?;
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(&data)?;
        let zlib = zlib.finish()?;
        for piece in [1, 7, 4096, 1 << 20] {
            assert_eq!(decode_all(Some("gzip"), &gz, piece)?, data);
            assert_eq!(decode_all(Some("deflate"), &zlib, piece)?, data);
        }
        assert_eq!(decode_all(None, &data, 999)?, data);
        Ok(())
    }

    #[test]
    fn a_truncated_gzip_stream_is_an_error() -> std::io::Result<()> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[42u8; 100_000])?;
        let gz = gz.finish()?;
        assert!(decode_all(Some("gzip"), &gz[..gz.len() / 2], 1000).is_err());
        Ok(())
    }

    #[test]
    fn unknown_codings_are_refused() {
        for coding in ["br", "zstd", "compress", "gzip, gzip"] {
            assert!(Decoder::for_coding(Some(coding)).is_err(), "{coding}");
        }
    }
}
