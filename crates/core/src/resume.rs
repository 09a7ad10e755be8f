//! Resume: where the part file and its journal live; the journal writer,
//! which records each block as it is written; the decision whether a
//! journal found on disk is for the remote the probe just saw; and the
//! check of every block it records against the part file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

use crate::event::Event;
use crate::journal::{Block, HashPoint, Journal};
use crate::probe::Remote;
use crate::store::{PartFile, write_atomic};
use crate::verify::{HashFollower, HashProgress};

/// `<out>.part`, beside the output.
pub fn part_path(output: &Path) -> PathBuf {
    with_suffix(output, ".part")
}

/// `<out>.part.state`: the resume journal, beside the part file.
pub fn state_path(output: &Path) -> PathBuf {
    with_suffix(output, ".part.state")
}

/// `<out>.part.lock`: held by the one download writing `<out>.part`.
pub(crate) fn lock_path(output: &Path) -> PathBuf {
    with_suffix(output, ".part.lock")
}

fn with_suffix(output: &Path, suffix: &str) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The blocks a journal records: 1/4096 of the file, between 32 KiB and
/// 1 MiB. A `kill -9` loses at most the block each connection is in the
/// middle of (plus what was in flight), and the journal stays a few hundred
/// KiB at most.
pub(crate) fn block_size(total: u64) -> u64 {
    (total / 4096).next_power_of_two().clamp(32 << 10, 1 << 20)
}

/// How far the hasher must have moved before its state is recorded again.
const HASH_POINT_EVERY: u64 = 8 << 20;

/// The journal of a running download, appended to as blocks are written:
/// a line per block the moment its bytes are in the part file (the page
/// cache, which survives a `kill -9`), a hash point now and then. Nothing is
/// flushed: what a power cut loses, the next run's check of every block
/// finds. An append that fails is said once and appends stop; the download
/// goes on (it only resumes less well).
pub(crate) struct JournalWriter {
    file: Mutex<Option<std::fs::File>>,
    path: PathBuf,
    last_hash_point: AtomicU64,
}

impl JournalWriter {
    /// Replaces the journal at `path` with `journal` (atomically: a temp
    /// file renamed over it, never following a link) and opens it to append.
    pub(crate) fn start(path: &Path, journal: &Journal) -> std::io::Result<Self> {
        write_atomic(path, &journal.encode())?;
        // Never through a link put there since the rename; one writer, so
        // writing on from the end is appending.
        let mut file = crate::sys::open_no_follow(path)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))?;
        let last = journal.hash_points.last().map_or(0, |p| p.hashed);
        Ok(Self {
            file: Mutex::new(Some(file)),
            path: path.to_owned(),
            last_hash_point: AtomicU64::new(last),
        })
    }

    fn append(&self, line: &str) {
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(handle) = file.as_mut()
            && let Err(error) = handle.write_all(line.as_bytes())
        {
            warn!(%error, path = %self.path.display(), "cannot record progress for resume; going on without");
            *file = None;
        }
    }

    /// Records `block`, whose bytes were just written; and the hasher's
    /// state, when it has moved far enough since the last one recorded.
    pub(crate) fn block(&self, block: Block, hashed: &HashFollower) {
        self.append(&Journal::encode_block(block));
        let progress = hashed.progress();
        let last = self.last_hash_point.load(Ordering::Relaxed);
        if progress.hashed >= last + HASH_POINT_EVERY {
            self.hash_point(progress);
        }
    }

    /// Records the hasher's state as it is now (at the end of a run that
    /// will be resumed).
    pub(crate) fn hash_point(&self, progress: HashProgress) {
        let last = self
            .last_hash_point
            .fetch_max(progress.hashed, Ordering::Relaxed);
        if progress.hashed > last && !progress.state.is_empty() {
            self.append(&Journal::encode_hash_point(&HashPoint {
                hashed: progress.hashed,
                state: progress.state,
            }));
        }
    }

    /// Records that the remote's ETags flip between backends.
    pub(crate) fn etag_unstable(&self) {
        self.append(&Journal::encode_etag_unstable());
    }
}

/// What of a journal the part file still holds.
pub(crate) struct Checked {
    /// The blocks whose bytes still have their recorded CRC.
    pub journal: Journal,
    /// Bytes of recorded blocks that no longer do.
    pub damaged: u64,
    /// Where the hasher may start: the furthest recorded state whose whole
    /// prefix checked out.
    pub hash_from: Option<HashProgress>,
}

/// Reads back every block `journal` records from `part` and keeps those
/// whose CRC still matches. Blocking: reads as much as the journal records.
pub(crate) fn check(part: &PartFile, journal: Journal) -> std::io::Result<Checked> {
    let mut kept = Vec::with_capacity(journal.blocks.len());
    let mut damaged = 0;
    let len = part.len()?;
    for block in &journal.blocks {
        let intact = block.range.end <= len && {
            let length = usize::try_from(block.range.len()).unwrap_or(usize::MAX);
            let map = part.map_read(block.range.start, length)?;
            crc32fast::hash(&map) == block.crc
        };
        if intact {
            kept.push(*block);
        } else {
            damaged += block.range.len();
        }
    }
    let journal = Journal {
        blocks: kept,
        ..journal
    };
    let done = journal.done();
    let hash_from = journal
        .hash_points
        .iter()
        .filter(|point| done.prefix_end() >= point.hashed)
        .max_by_key(|point| point.hashed)
        .map(|point| HashProgress {
            hashed: point.hashed,
            state: point.state.clone(),
        });
    let journal = Journal {
        hash_points: hash_from
            .iter()
            .map(|p| HashPoint {
                hashed: p.hashed,
                state: p.state.clone(),
            })
            .collect(),
        ..journal
    };
    Ok(Checked {
        journal,
        damaged,
        hash_from,
    })
}

/// Reads the resume journal and decides whether it may be trusted for
/// this remote; says why not (through `emit`) when it may not.
pub(crate) fn load(
    state_path: &Path,
    part_path: &Path,
    remote: &Remote,
    url: &str,
    emit: &dyn Fn(Event),
) -> Option<Journal> {
    let notice = |message: String| {
        warn!("{message}");
        emit(Event::Notice { message });
        None
    };
    match std::fs::symlink_metadata(state_path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            // A link or anything else in the journal's place is not ours:
            // never read through it (the new journal replaces a link).
            let _ = std::fs::remove_file(state_path);
            return notice(format!(
                "ignoring resume state {}: not a regular file; starting over",
                state_path.display()
            ));
        }
        Err(_) => return None,
    }
    let bytes = std::fs::read(state_path).ok()?;
    let journal = match Journal::decode(&bytes) {
        Ok(journal) => journal,
        Err(error) => {
            return notice(format!(
                "ignoring resume state {}: {error}; starting over",
                state_path.display()
            ));
        }
    };
    if journal.torn {
        let message = format!(
            "the resume state {} ends in a damaged line (a crash cut it short, or it was altered); using the {} blocks before it",
            state_path.display(),
            journal.blocks.len()
        );
        warn!("{message}");
        emit(Event::Notice { message });
    }
    if journal.url != url {
        return notice(format!(
            "resume state {} is for another URL ({}); starting over",
            state_path.display(),
            journal.url
        ));
    }
    let same_total = remote.total == Some(journal.total);
    // Exactly the validators of the first run: one that changed, appeared
    // or disappeared is another version. A farm whose ETags flip is pinned
    // by its date alone.
    let same_validator = (journal.etag_unstable || remote.validator.etag == journal.etag)
        && remote.validator.last_modified == journal.last_modified
        && !(journal.etag_unstable && journal.last_modified.is_none());
    if !same_total || !same_validator {
        let what = if !same_total {
            format!(
                "size {} → {}",
                journal.total,
                remote.total.map_or("unknown".into(), |t| t.to_string())
            )
        } else {
            "its ETag or Last-Modified differ".to_owned()
        };
        let reason = format!(
            "the remote file changed since the last run ({what}); discarding {} downloaded bytes and starting over",
            journal.done().covered()
        );
        warn!("{reason}");
        emit(Event::RemoteChanged { reason });
        return None;
    }
    if !remote.ranges {
        return notice("the server no longer serves byte ranges; starting over".to_owned());
    }
    let part_len = std::fs::symlink_metadata(part_path)
        .map(|m| m.len())
        .unwrap_or(0);
    if part_len != journal.total {
        return notice(format!(
            "{} is not the size the resume state expects; starting over",
            part_path.display()
        ));
    }
    Some(journal)
}
