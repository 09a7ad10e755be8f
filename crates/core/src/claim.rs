//! The engine's own files: the claim on an output (one download writes
//! `<out>.part`; another waits for it, then takes the file it published),
//! and opening the part file without ever following a symlink or writing
//! into something that is not a regular file, with its space reserved.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::checksums::Sha256Hex;
use crate::download::Outcome;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::reuse;
use crate::size::format_size;
use crate::store::{PartFile, WriteMode, free_space, parent_dir};
use crate::sys;

/// The lock of one output: `<out>.part.lock`, exclusively locked by the
/// one download that writes `<out>.part`. Dropping it removes the file and
/// then releases the lock.
#[derive(Debug)]
pub(crate) struct OutputLock {
    file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Takes the lock at `path` if no one holds it; `None` if someone does.
    /// A lock won on a file that was meanwhile unlinked by its previous
    /// holder would exclude no one, so only a lock on the file still at
    /// `path` counts.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<Self>> {
        loop {
            let file = sys::open_no_follow(path)?;
            if !sys::lock_exclusive(&file, false)? {
                return Ok(None);
            }
            let held = file.metadata()?;
            match std::fs::symlink_metadata(path) {
                Ok(current) if sys::same_file(&current, &held) => {
                    return Ok(Some(Self {
                        file,
                        path: path.to_owned(),
                    }));
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock: a waiter that then wins the
        // old inode sees it is no longer at the path and opens afresh.
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.file;
    }
}

/// A download about to claim its output.
pub(crate) struct Claim<'a> {
    pub output: &'a Path,
    pub expected: Option<Sha256Hex>,
    pub cancel: &'a CancelToken,
    pub started: Instant,
}

impl Claim<'_> {
    /// Takes the output's lock, so that two downloads (processes, or two
    /// `Download`s in one) never write one part file. When another holds
    /// it, waits for it; if the other published the output meanwhile, that
    /// file is the outcome (its hash checked when one is expected).
    pub(crate) async fn take(&self, emit: &(dyn Fn(Event) + Sync)) -> Result<Claimed> {
        let lock_path = crate::resume::lock_path(self.output);
        let io_err = |e| Error::io(format!("cannot lock {}", lock_path.display()), e);
        if let Some(lock) = OutputLock::try_acquire(&lock_path).map_err(io_err)? {
            return Ok(Claimed::Ours(lock));
        }
        // What was at the output before: a file that is there afterwards and
        // is another file was published by the download we waited for.
        let before = std::fs::symlink_metadata(self.output).ok();
        emit(Event::Notice {
            message: format!(
                "another download is writing {}; waiting for it to finish",
                self.output.display()
            ),
        });
        let lock = loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = self.cancel.cancelled() => return Err(crate::download::cancelled()),
            }
            if let Some(lock) = OutputLock::try_acquire(&lock_path).map_err(io_err)? {
                break lock;
            }
        };
        let published = std::fs::symlink_metadata(self.output).is_ok_and(|now| {
            now.is_file()
                && before
                    .as_ref()
                    .is_none_or(|before| !crate::sys::same_file(before, &now))
        });
        if published {
            let found = match self.expected {
                Some(expected) => {
                    reuse::already_present(self.output, expected, self.started, None).await?
                }
                None => reuse::published(self.output, self.started).await?,
            };
            if let Some(outcome) = found {
                return Ok(Claimed::Published(outcome));
            }
        }
        Ok(Claimed::Ours(lock))
    }
}

/// What [`Claim::take`] found.
pub(crate) enum Claimed {
    /// The lock is ours: download.
    Ours(OutputLock),
    /// Another download published the output while we waited.
    Published(Outcome),
}

/// Opens the part file. A symlink in its place is removed (its target
/// untouched) and replaced by the engine's own file; anything else that is
/// not a regular file is refused. `fresh` (not resuming) empties it and
/// reserves space for the total, if known.
pub(crate) fn open_part(
    part_path: &Path,
    mode: WriteMode,
    fresh: Option<Option<u64>>,
    emit: &dyn Fn(Event),
) -> Result<PartFile> {
    let io_err = |what: &str, e| Error::io(format!("cannot {what} {}", part_path.display()), e);
    let part = match PartFile::open(part_path, mode) {
        Err(error) if crate::sys::is_symlink_refusal(&error) && is_symlink(part_path) => {
            // Never written through: the link goes (its target stays
            // untouched) and the engine makes its own file.
            emit(Event::Notice {
                message: format!(
                    "{} was a symbolic link; replaced it with a new part file (the link's target is untouched)",
                    part_path.display()
                ),
            });
            std::fs::remove_file(part_path).map_err(|e| io_err("remove the link", e))?;
            PartFile::open(part_path, mode)
        }
        other => other,
    }
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            Error::new(
                ErrorKind::Io,
                format!(
                    "{} exists and is not a regular file; remove it or choose another output",
                    part_path.display()
                ),
            )
        } else {
            io_err("create", e)
        }
    })?;
    if let Some(total) = fresh {
        part.set_len(0).map_err(|e| io_err("truncate", e))?;
        if let Some(total) = total {
            reserve_space(&part, total)?;
        }
    }
    Ok(part)
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Checks free space and preallocates the part file, so a full disk fails
/// before the download rather than half-way.
fn reserve_space(part: &PartFile, total: u64) -> Result<()> {
    let dir = parent_dir(part.path());
    let allocated = part.allocated().unwrap_or(0);
    let needed = total.saturating_sub(allocated);
    if let Ok(free) = free_space(dir)
        && needed > free
    {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "not enough disk space in {}: needs {}, {} free",
                dir.display(),
                format_size(needed),
                format_size(free)
            ),
        ));
    }
    part.preallocate(total).map_err(|e| {
        if crate::sys::is_disk_full(&e) {
            Error::io(
                format!(
                    "not enough disk space in {}: needs {}",
                    dir.display(),
                    format_size(needed)
                ),
                e,
            )
        } else {
            Error::io(format!("cannot allocate {}", part.path().display()), e)
        }
    })
}
