//! Commit, the last stage: finish the hash, compare it with the expected
//! one, flush the part file, rename it over the output, make the rename
//! durable, drop the journal, and enter the file into the cache.

use std::path::Path;
use std::sync::Arc;

use tracing::warn;

use crate::cache::Cache;
use crate::checksums::Sha256Hex;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::fetch::Fetcher;
use crate::store::{PartFile, parent_dir, sync_dir};

/// Waits for the hasher to cover all `written` bytes and returns the
/// digest of the part file.
pub(crate) async fn finish_hash(fetcher: &Arc<Fetcher>, written: u64) -> Result<Sha256Hex> {
    let finisher = Arc::clone(fetcher);
    let (digest, hashed) = tokio::task::spawn_blocking(move || finisher.hasher.finish())
        .await
        .map_err(|e| Error::new(ErrorKind::Io, "hashing task failed").with_source(e))?
        .map_err(|e| Error::io(format!("cannot hash {}", fetcher.part.path().display()), e))?;
    if hashed != written {
        return Err(Error::new(
            ErrorKind::Io,
            format!("internal: hashed {hashed} of {written} bytes"),
        ));
    }
    Ok(digest)
}

/// Compares the digest with the expected hash. On a mismatch the part
/// file and its journal are removed: keeping bytes that are not the file
/// asked for would only make a re-run fail the same way.
pub(crate) fn check_expected(
    digest: Sha256Hex,
    expected: Option<Sha256Hex>,
    part_path: &Path,
    state_path: &Path,
    url: &reqwest::Url,
) -> Result<()> {
    match expected {
        Some(expected) if digest != expected => {
            let _ = std::fs::remove_file(part_path);
            let _ = std::fs::remove_file(state_path);
            Err(Error::new(
                ErrorKind::ChecksumMismatch,
                format!("checksum mismatch: expected sha256 {expected}, got {digest}"),
            )
            .with_url(url))
        }
        _ => Ok(()),
    }
}

/// Flushes, renames `<out>.part` to `output` atomically, makes the rename
/// durable and drops the journal.
pub(crate) fn publish(part: &PartFile, output: &Path, state_path: &Path) -> Result<()> {
    let part_path = part.path();
    part.sync_all()
        .map_err(|e| Error::io(format!("cannot flush {}", part_path.display()), e))?;
    std::fs::rename(part_path, output).map_err(|e| {
        Error::io(
            format!(
                "cannot rename {} to {}",
                part_path.display(),
                output.display()
            ),
            e,
        )
    })?;
    let dir = parent_dir(output);
    sync_dir(dir).map_err(|e| Error::io(format!("cannot sync directory {}", dir.display()), e))?;
    let _ = std::fs::remove_file(state_path);
    Ok(())
}

/// Adds a verified file to the cache; a failure is a notice, not an error:
/// the download itself succeeded.
pub(crate) async fn enter_cache(
    cache: &Cache,
    path: &Path,
    hash: Sha256Hex,
    emit: &(dyn Fn(Event) + Sync),
) {
    let cache = cache.clone();
    let path = path.to_owned();
    match tokio::task::spawn_blocking(move || cache.insert(&path, &hash)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => emit(Event::Notice {
            message: format!("could not add the file to the cache: {error}"),
        }),
        Err(error) => warn!(%error, "cache insert task failed"),
    }
}
