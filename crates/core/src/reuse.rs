//! Finishing without fetching: an output already in place with the
//! expected hash, or a verified copy in the cache.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::Cache;
use crate::checksums::Sha256Hex;
use crate::download::Outcome;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventSink};
use crate::progress::{Counters, Ticker};
use crate::verify::{hash_file, hash_file_counting};

/// `output`, if it is a regular file whose SHA-256 is `expected`.
pub(crate) async fn already_present(
    output: &Path,
    expected: Sha256Hex,
    started: Instant,
    events: Option<&EventSink>,
) -> Result<Option<Outcome>> {
    let Ok(meta) = std::fs::metadata(output) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let path = output.to_owned();
    // Re-hashing a large output takes seconds: it reports progress like a
    // download does, the bytes being the bytes hashed.
    let counters = Arc::new(Counters::default());
    let ticker = Ticker::start(Arc::clone(&counters), Some(meta.len()), events.cloned());
    let hashing = Instant::now();
    let counted = Arc::clone(&counters);
    let digest = tokio::task::spawn_blocking(move || hash_file_counting(&path, &counted.bytes))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, "hashing task failed").with_source(e))?
        .map_err(|e| Error::io(format!("cannot read {}", output.display()), e))?;
    ticker.finish(hashing.elapsed());
    if digest != expected {
        return Ok(None);
    }
    Ok(Some(Outcome {
        path: output.to_owned(),
        bytes: meta.len(),
        sha256: digest,
        verified: true,
        already_present: true,
        from_cache: false,
        elapsed: started.elapsed(),
        retries: 0,
        resumed_bytes: meta.len(),
        connections: 0,
    }))
}

/// `output`, just published by another download of it that this one waited
/// for: its own SHA-256, unverified (no hash was expected).
pub(crate) async fn published(output: &Path, started: Instant) -> Result<Option<Outcome>> {
    let Ok(meta) = std::fs::metadata(output) else {
        return Ok(None);
    };
    let path = output.to_owned();
    let digest = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, "hashing task failed").with_source(e))?
        .map_err(|e| Error::io(format!("cannot read {}", output.display()), e))?;
    Ok(Some(Outcome {
        path: output.to_owned(),
        bytes: meta.len(),
        sha256: digest,
        verified: false,
        already_present: true,
        from_cache: false,
        elapsed: started.elapsed(),
        retries: 0,
        resumed_bytes: meta.len(),
        connections: 0,
    }))
}

/// Places a verified cached copy at `output`, if the cache has one; says
/// so with a notice naming the network error it stands in for, if any.
pub(crate) async fn from_cache(
    cache: &Cache,
    expected: Sha256Hex,
    output: &Path,
    started: Instant,
    network_error: Option<&Error>,
    emit: &(dyn Fn(Event) + Sync),
    events: Option<&EventSink>,
) -> Option<Outcome> {
    let cache = cache.clone();
    let dest = output.to_owned();
    let counters = Arc::new(Counters::default());
    let size = std::fs::metadata(cache.path_of(&expected))
        .ok()
        .map(|m| m.len());
    let ticker = Ticker::start(Arc::clone(&counters), size, events.cloned());
    let hashing = Instant::now();
    let counted = Arc::clone(&counters);
    let placed =
        tokio::task::spawn_blocking(move || cache.place_counting(&expected, &dest, &counted.bytes))
            .await;
    ticker.finish(hashing.elapsed());
    let placement = match placed {
        Ok(Ok(placement)) => placement,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Ok(Err(error)) => {
            emit(Event::Notice {
                message: format!("cannot use the cached copy: {error}"),
            });
            return None;
        }
        Err(_) => return None,
    };
    let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    let why = match network_error {
        Some(error) => format!("the download failed ({error}); "),
        None => String::new(),
    };
    emit(Event::Notice {
        message: format!("{why}served from the verified cache ({placement})"),
    });
    Some(Outcome {
        path: output.to_owned(),
        bytes,
        sha256: expected,
        verified: true,
        already_present: false,
        from_cache: true,
        elapsed: started.elapsed(),
        retries: 0,
        resumed_bytes: 0,
        connections: 0,
    })
}
