//! A content-addressed cache of verified files, keyed by SHA-256, so that a
//! file fetched once can be put in place again without the network — and so
//! that a failed download can fall back to it without ever handing back a
//! partial or unverified file.
//!
//! # Guarantees
//!
//! - **Only verified bytes go in.** [`Cache::insert`] takes a file whose hash
//!   the caller has already checked, builds the entry under a temporary name
//!   in `DIR/tmp` and renames it into place, so an entry never appears
//!   half-written.
//! - **Only verified bytes come out.** [`Cache::lookup`] and [`Cache::place`]
//!   hash the bytes again every time before handing them back. An entry that
//!   no longer matches (disk corruption, a hard-linked output edited in place,
//!   a wrong hash given to `insert`) is removed and reported as a miss.
//! - **The destination is never partial.** [`Cache::place`] builds the output
//!   under a temporary name in the destination's directory (reflink, else
//!   hard link, else copy), verifies *that* file, and renames it over `dest`.
//! - **Concurrent processes cooperate.** [`Cache::lock`] takes an exclusive
//!   `flock` per hash, so a second process about to fetch the same file waits
//!   for the first one and then finds a hit. Readers need no lock: entries are
//!   only created or replaced by rename and removed by unlink, and an open
//!   file stays readable after an unlink.
//! - **Bounded size.** With a cap, every insert evicts the least recently used
//!   entries (by modification time, which every verified hit refreshes) until
//!   the total fits, never the entry just inserted and never one whose lock is
//!   held.
//!
//! # Layout
//!
//! ```text
//! DIR/CACHEDIR.TAG           tells backup tools that this is a cache
//! DIR/sha256/ab/abcdef…      one entry per file, named by its lowercase hex SHA-256
//! DIR/locks/abcdef….lock     the per-hash lock files
//! DIR/tmp/                   entries under construction
//! ```
//!
//! Anything else found in the directory (files with other names, a crashed
//! process's temporaries) is ignored, never an error; temporaries older than
//! an hour are removed by the next insert.
//!
//! # Hard links
//!
//! Where the filesystem cannot reflink, [`Cache::place`] and
//! [`Cache::insert`] hard-link: the output and the cache entry are then one
//! inode. Replacing the output by rename, as rangefetch and most editors do,
//! leaves the entry alone; writing *into* the output in place (a VM booting a
//! disk image, `truncate`) changes the entry as well. That is safe, because
//! the next lookup re-hashes the entry and discards it, but it costs the
//! cache that entry. Refreshing an entry's last-use time also sets the
//! modification time of every name of that inode. Evicting a hard-linked
//! entry frees no space while the output still exists.
//!
//! All operations are blocking `std` I/O: async callers run them in
//! `spawn_blocking`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::checksums::Sha256Hex;
use crate::store::{parent_dir, sync_dir};

/// Subdirectory holding the entries, named after the hash algorithm so that
/// another algorithm could share the cache later.
const ENTRIES_DIR: &str = "sha256";

/// Subdirectory holding the per-hash lock files.
const LOCKS_DIR: &str = "locks";

/// Subdirectory where entries are built before their rename; on the same
/// filesystem as the entries, so the rename is atomic.
const TEMP_DIR: &str = "tmp";

/// A temporary in `DIR/tmp` whose inode has not changed for this long was
/// left by a crashed process: building an entry takes a link or a copy
/// (each of which updates the inode's change time) and then a rename.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// The Cache Directory Tagging Specification marker
/// (<https://bford.info/cachedir/>), honoured by `tar --exclude-caches`,
/// borg, restic and others.
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
    # This file is a cache directory tag created by rangefetch.\n\
    # For information about cache directory tags see https://bford.info/cachedir/\n";

/// Read size when re-hashing an entry.
const HASH_BUFFER_LEN: usize = 1 << 20;

/// Distinguishes the temporary names made by one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How a cached file was put at its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Placement {
    /// A copy-on-write clone (`FICLONE`, on Btrfs, XFS and the like): an
    /// independent file that shares disk blocks until either is written.
    Reflink,
    /// A second name for the cache entry's inode; see the module docs on
    /// what editing the output in place then does.
    HardLink,
    /// A plain copy of the bytes.
    Copy,
}

impl Placement {
    /// Every method, best first: a reflink costs no space and shares nothing
    /// writable, a hard link costs no space, a copy always works.
    const PREFERENCE: [Placement; 3] = [Placement::Reflink, Placement::HardLink, Placement::Copy];

    /// A short lowercase name, for messages and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Placement::Reflink => "reflink",
            Placement::HardLink => "hard link",
            Placement::Copy => "copy",
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cache directory of verified files, keyed by SHA-256.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
    max_size: Option<u64>,
}

impl Cache {
    /// Opens the cache at `dir`, creating it and its subdirectories if
    /// missing. With `max_size`, inserts evict least recently used entries
    /// until the entries total at most that many bytes.
    pub fn open(dir: impl Into<PathBuf>, max_size: Option<u64>) -> io::Result<Cache> {
        let dir = dir.into();
        for subdir in [ENTRIES_DIR, LOCKS_DIR, TEMP_DIR] {
            fs::create_dir_all(dir.join(subdir))?;
        }
        let cache = Cache { dir, max_size };
        cache.write_cachedir_tag();
        Ok(cache)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size cap in bytes, if any.
    pub fn max_size(&self) -> Option<u64> {
        self.max_size
    }

    /// Where the entry for `hash` lives (whether or not it exists):
    /// `DIR/sha256/<first two hex digits>/<64 hex digits>`.
    pub fn path_of(&self, hash: &Sha256Hex) -> PathBuf {
        let hex = hash.to_string();
        self.dir.join(ENTRIES_DIR).join(&hex[..2]).join(hex)
    }

    /// The path of a verified entry for `hash`, or `None` on a miss.
    ///
    /// The entry is re-hashed on every call and returned only if it still
    /// matches; an entry that does not is removed. A hit refreshes the
    /// entry's last-use time (its modification time) for eviction.
    pub fn lookup(&self, hash: &Sha256Hex) -> io::Result<Option<PathBuf>> {
        let entry = self.path_of(hash);
        if !entry_is_file(&entry)? {
            return Ok(None);
        }
        match hash_by_reading(&entry, &AtomicU64::new(0)) {
            Ok(actual) if actual == *hash => {
                touch(&entry);
                Ok(Some(entry))
            }
            Ok(actual) => {
                discard_corrupt(&entry, hash, &actual)?;
                Ok(None)
            }
            // Evicted by another process between the two calls: a miss.
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Puts the cached file for `hash` at `dest`, atomically, and says how.
    ///
    /// The file is built under a temporary name in `dest`'s directory — a
    /// reflink where the filesystem allows, else a hard link, else a copy
    /// that is fsynced — then hashed, and renamed over `dest` only if it
    /// matches; the directory is fsynced after the rename. `dest` therefore
    /// either keeps its old content or holds the verified file, never
    /// anything partial. A hard link makes `dest` and the cache entry one
    /// inode: see the module docs.
    ///
    /// Fails with [`io::ErrorKind::NotFound`] when the cache holds no entry
    /// for `hash` or the entry fails verification (it is then removed).
    pub fn place(&self, hash: &Sha256Hex, dest: &Path) -> io::Result<Placement> {
        self.place_with(hash, dest, &Placement::PREFERENCE, &AtomicU64::new(0))
    }

    /// [`Cache::place`], counting the bytes hashed in `hashed` as it goes
    /// (for progress events).
    pub(crate) fn place_counting(
        &self,
        hash: &Sha256Hex,
        dest: &Path,
        hashed: &AtomicU64,
    ) -> io::Result<Placement> {
        self.place_with(hash, dest, &Placement::PREFERENCE, hashed)
    }

    /// [`Cache::place`], trying only `methods`, in order.
    fn place_with(
        &self,
        hash: &Sha256Hex,
        dest: &Path,
        methods: &[Placement],
        hashed: &AtomicU64,
    ) -> io::Result<Placement> {
        let entry = self.path_of(hash);
        if !entry_is_file(&entry)? {
            return Err(not_cached(hash));
        }
        let file_name = dest.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a file", dest.display()),
            )
        })?;
        let (temp, method) = match materialize(&entry, parent_dir(dest), file_name, methods) {
            Ok(placed) => placed,
            // Evicted by another process meanwhile: a miss, not a failure.
            Err(error) if error.kind() == io::ErrorKind::NotFound && !entry.exists() => {
                return Err(not_cached(hash));
            }
            Err(error) => return Err(error),
        };
        // Hash the file about to be published rather than the entry: these
        // are the bytes the caller gets. For a hard link they are the entry.
        let actual = hash_by_reading(&temp.path, hashed)?;
        if actual != *hash {
            discard_corrupt(&entry, hash, &actual)?;
            return Err(not_cached(hash));
        }
        touch(&entry);
        temp.persist(dest)?;
        tracing::debug!(%hash, dest = %dest.display(), %method, "placed from cache");
        Ok(method)
    }

    /// Adds `src`, whose SHA-256 the caller has verified to be `hash`, to the
    /// cache, then evicts least recently used entries until the cap holds
    /// (never this entry).
    ///
    /// The entry is a reflink of `src` where the filesystem allows, else a
    /// hard link (sharing `src`'s inode: see the module docs), else an
    /// fsynced copy, built in `DIR/tmp` and renamed into place; an existing
    /// entry for `hash` is replaced. A wrong `hash` cannot poison the cache:
    /// every lookup re-verifies, so such an entry is only ever a miss.
    pub fn insert(&self, src: &Path, hash: &Sha256Hex) -> io::Result<()> {
        let entry = self.path_of(hash);
        // `src` may be the entry's other name already, from an earlier place.
        if !same_inode(src, &entry)? {
            let hex = hash.to_string();
            let temp_dir = self.dir.join(TEMP_DIR);
            fs::create_dir_all(&temp_dir)?;
            let (temp, method) =
                materialize(src, &temp_dir, OsStr::new(&hex), &Placement::PREFERENCE)?;
            fs::create_dir_all(parent_dir(&entry))?;
            temp.persist(&entry)?;
            tracing::debug!(%hash, src = %src.display(), %method, "inserted into cache");
        }
        touch(&entry);
        self.remove_stale_temps(STALE_TEMP_AGE);
        self.evict_keeping(Some(hash))?;
        Ok(())
    }

    /// Takes the exclusive lock for `hash`, blocking while another process
    /// (or another [`CacheLock`] in this one) holds it. Hold it across
    /// lookup, download and insert, so that a second process fetching the
    /// same file waits and then finds a hit instead of downloading it again.
    /// The lock is released when the returned guard is dropped, and by the
    /// kernel if the process dies.
    pub fn lock(&self, hash: &Sha256Hex) -> io::Result<CacheLock> {
        let lock = self.acquire(hash, true)?;
        Ok(lock.expect("a blocking lock is always acquired"))
    }

    /// [`Cache::lock`] without waiting: `None` if the lock is held.
    pub fn try_lock(&self, hash: &Sha256Hex) -> io::Result<Option<CacheLock>> {
        self.acquire(hash, false)
    }

    fn acquire(&self, hash: &Sha256Hex, wait: bool) -> io::Result<Option<CacheLock>> {
        let path = self.dir.join(LOCKS_DIR).join(format!("{hash}.lock"));
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            if !crate::sys::lock_exclusive(&file, wait)? {
                return Ok(None);
            }
            // Eviction unlinks lock files while holding them. A lock won on
            // such an orphaned inode would not exclude a process that opens
            // the path afresh, so only a lock on the file still at `path`
            // counts.
            let held = file.metadata()?;
            match fs::metadata(&path) {
                Ok(current) if crate::sys::same_file(&current, &held) => {
                    return Ok(Some(CacheLock { _file: file, path }));
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Removes least recently used entries until the cache fits its cap, and
    /// returns the bytes freed; without a cap, does nothing. Entries whose
    /// lock is held are in use and skipped.
    pub fn evict(&self) -> io::Result<u64> {
        self.evict_keeping(None)
    }

    fn evict_keeping(&self, keep: Option<&Sha256Hex>) -> io::Result<u64> {
        let Some(max_size) = self.max_size else {
            return Ok(0);
        };
        let mut entries = self.entries()?;
        let mut total = entries
            .iter()
            .fold(0u64, |sum, (_, size, _)| sum.saturating_add(*size));
        if total <= max_size {
            return Ok(0);
        }
        // Oldest first; the hash breaks ties so the order is deterministic.
        entries.sort_by_key(|&(hash, _, last_used)| (last_used, hash));
        let mut freed = 0;
        for (hash, size, _) in entries {
            if total <= max_size {
                break;
            }
            if keep == Some(&hash) {
                continue;
            }
            // A held lock means another download is fetching or placing this
            // file right now; taking the entry from under it would only turn
            // its hit into a miss.
            let Some(lock) = self.try_lock(&hash)? else {
                continue;
            };
            match fs::remove_file(self.path_of(&hash)) {
                Ok(()) => freed += size,
                // Another process evicted it first.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            total = total.saturating_sub(size);
            tracing::debug!(%hash, size, "evicted from cache");
            lock.remove();
        }
        Ok(freed)
    }

    /// Every entry: its hash, size in bytes and last use (modification
    /// time), in no particular order. Files and directories that are not
    /// entries are skipped.
    pub fn entries(&self) -> io::Result<Vec<(Sha256Hex, u64, SystemTime)>> {
        let mut entries = Vec::new();
        for shard in fs::read_dir(self.dir.join(ENTRIES_DIR))? {
            let shard = shard?;
            let shard_name = shard.file_name();
            let Some(prefix) = shard_name.to_str().filter(|name| is_shard_name(name)) else {
                continue;
            };
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                let Some(hash) = file
                    .file_name()
                    .to_str()
                    .and_then(|name| parse_entry_name(prefix, name))
                else {
                    continue;
                };
                // `DirEntry::metadata` does not follow symbolic links, so a
                // link with an entry's name is skipped like any other stray.
                let metadata = match file.metadata() {
                    Ok(metadata) => metadata,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                };
                if metadata.is_file() {
                    entries.push((hash, metadata.len(), metadata.modified()?));
                }
            }
        }
        Ok(entries)
    }

    /// Removes temporaries in `DIR/tmp` whose inode has not changed for
    /// `older_than`: leftovers of a process that crashed while inserting.
    /// Best effort; failures are only logged.
    fn remove_stale_temps(&self, older_than: Duration) {
        let Ok(temps) = fs::read_dir(self.dir.join(TEMP_DIR)) else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff = i64::try_from(now.saturating_sub(older_than).as_secs()).unwrap_or(i64::MAX);
        for temp in temps.flatten() {
            let Ok(metadata) = temp.metadata() else {
                continue;
            };
            let modified = metadata
                .modified()
                .ok()
                .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(i64::MAX, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            if !metadata.is_file() || modified > cutoff {
                continue;
            }
            if let Err(error) = fs::remove_file(temp.path()) {
                tracing::debug!(path = %temp.path().display(), %error, "cannot remove stale cache temporary");
            }
        }
    }

    /// Writes `DIR/CACHEDIR.TAG` if missing. Best effort: a read-only cache
    /// still serves hits.
    fn write_cachedir_tag(&self) {
        use std::io::Write;
        let path = self.dir.join("CACHEDIR.TAG");
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                if let Err(error) = file.write_all(CACHEDIR_TAG.as_bytes()) {
                    tracing::debug!(path = %path.display(), %error, "cannot write cache directory tag");
                }
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "cannot write cache directory tag")
            }
        }
    }
}

/// The exclusive lock on one hash, from [`Cache::lock`]; released on drop.
///
/// An advisory `flock` on `DIR/locks/<hex>.lock`: it excludes other
/// `CacheLock`s for the same hash, in this process or any other, but does
/// not stop anyone from reading or writing the cache.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct CacheLock {
    /// Holds the lock: closing the descriptor releases it.
    _file: File,
    path: PathBuf,
}

impl CacheLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unlinks the lock file while still holding it, then releases it, so
    /// that lock files do not outlive their entries. Safe against racing
    /// lockers because [`Cache::lock`] only accepts a lock on the file still
    /// at the path.
    fn remove(self) {
        if let Err(error) = fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), %error, "cannot remove cache lock file");
        }
    }
}

/// A file under a temporary name, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// A fresh name `<stem>.tmp-<pid>-<n>` in `dir`; nothing is created.
    fn new_in(dir: &Path, stem: &OsStr) -> TempFile {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = OsString::from(stem);
        name.push(format!(".tmp-{}-{n}", std::process::id()));
        TempFile {
            path: dir.join(name),
            persisted: false,
        }
    }

    /// Renames the file to `dest` and makes the rename durable.
    fn persist(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.persisted = true;
        // rename() between two names of one inode (placing over an earlier
        // hard-linked placement) succeeds without doing anything, leaving
        // the temporary name behind.
        match fs::remove_file(&self.path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        sync_dir(parent_dir(dest))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            // Also runs for names never created; NotFound is expected then.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Makes a copy of `src` under a temporary name in `dir`, by the first of
/// `methods` that works; the error of the last one tried if none does.
fn materialize(
    src: &Path,
    dir: &Path,
    stem: &OsStr,
    methods: &[Placement],
) -> io::Result<(TempFile, Placement)> {
    let mut last_error = None;
    for &method in methods {
        let temp = TempFile::new_in(dir, stem);
        let result = match method {
            Placement::Reflink => reflink_file(src, &temp.path),
            Placement::HardLink => fs::hard_link(src, &temp.path),
            Placement::Copy => copy_file(src, &temp.path),
        };
        match result {
            Ok(()) => return Ok((temp, method)),
            Err(error) => {
                tracing::debug!(src = %src.display(), %method, %error, "cache placement method failed");
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "no placement method allowed")
    }))
}

/// A durable copy-on-write clone of `src` at the new path `dest`.
fn reflink_file(src: &Path, dest: &Path) -> io::Result<()> {
    let source = File::open(src)?;
    let target = OpenOptions::new().write(true).create_new(true).open(dest)?;
    crate::sys::reflink(&source, &target)?;
    target.set_permissions(source.metadata()?.permissions())?;
    target.sync_all()
}

/// A durable copy of `src` at `dest`, permissions included.
fn copy_file(src: &Path, dest: &Path) -> io::Result<()> {
    fs::copy(src, dest)?;
    File::open(dest)?.sync_all()
}

/// SHA-256 of a file by plain reads.
///
/// Not `verify::hash_file`, which maps the file: a mapped read of a file
/// truncated meanwhile kills the process with `SIGBUS`, and a cache entry
/// may be a hard link to a user's file that anything may truncate. A read
/// merely sees fewer bytes, and the hash then fails to match.
fn hash_by_reading(path: &Path, hashed: &AtomicU64) -> io::Result<Sha256Hex> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_LEN];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buffer[..n]);
                hashed.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Sha256Hex::from_bytes(hasher.finalize().into()))
}

/// Whether `entry` is a regular file. Anything else under an entry's name is
/// not an entry: a symbolic link is removed (it could point anywhere), a
/// directory left alone.
fn entry_is_file(entry: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(entry) {
        Ok(metadata) if metadata.is_file() => Ok(true),
        Ok(metadata) => {
            if metadata.is_symlink() {
                let _ = fs::remove_file(entry);
            }
            Ok(false)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Removes an entry whose content no longer has its name's hash.
fn discard_corrupt(entry: &Path, expected: &Sha256Hex, actual: &Sha256Hex) -> io::Result<()> {
    tracing::warn!(path = %entry.display(), %expected, %actual, "cache entry fails verification; removing it");
    match fs::remove_file(entry) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Marks `path` as just used. Best effort: setting times needs ownership,
/// and a shared cache may hold other users' entries.
fn touch(path: &Path) {
    let now = SystemTime::now();
    let result = File::open(path)
        .and_then(|file| file.set_times(FileTimes::new().set_accessed(now).set_modified(now)));
    if let Err(error) = result {
        tracing::debug!(path = %path.display(), %error, "cannot refresh cache entry time");
    }
}

/// Whether `a` and `b` exist and are the same inode.
fn same_inode(a: &Path, b: &Path) -> io::Result<bool> {
    let (a, b) = match (fs::metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(error), _) | (_, Err(error)) if error.kind() != io::ErrorKind::NotFound => {
            return Err(error);
        }
        _ => return Ok(false),
    };
    Ok(crate::sys::same_file(&a, &b))
}

fn not_cached(hash: &Sha256Hex) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no verified cache entry for {hash}"),
    )
}

/// Two lowercase hex digits: the name of a shard directory.
fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(is_lower_hex)
}

/// The hash named by an entry file in shard `prefix`: 64 lowercase hex
/// digits starting with the shard's two.
fn parse_entry_name(prefix: &str, name: &str) -> Option<Sha256Hex> {
    if name.len() != 64 || !name.starts_with(prefix) || !name.bytes().all(is_lower_hex) {
        return None;
    }
    Sha256Hex::parse(name).ok()
}

fn is_lower_hex(byte: u8) -> bool {
    byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::sync::mpsc;

    fn sha(data: &[u8]) -> Sha256Hex {
        Sha256Hex::from_bytes(Sha256::digest(data).into())
    }

    /// Writes `data` to `dir/name` and inserts it; returns its hash.
    fn add(cache: &Cache, dir: &Path, name: &str, data: &[u8]) -> io::Result<Sha256Hex> {
        let path = dir.join(name);
        fs::write(&path, data)?;
        let hash = sha(data);
        cache.insert(&path, &hash)?;
        Ok(hash)
    }

    fn set_last_used(cache: &Cache, hash: &Sha256Hex, secs_since_epoch: u64) -> io::Result<()> {
        File::open(cache.path_of(hash))?
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs_since_epoch))
    }

    fn flip_first_byte(path: &Path) -> io::Result<()> {
        let first = fs::read(path)?[0];
        OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all_at(&[first ^ 0xff], 0)
    }

    fn names_in(dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn cached_hashes(cache: &Cache) -> io::Result<Vec<Sha256Hex>> {
        let mut hashes: Vec<_> = cache
            .entries()?
            .into_iter()
            .map(|(hash, _, _)| hash)
            .collect();
        hashes.sort();
        Ok(hashes)
    }

    fn sorted(mut hashes: Vec<Sha256Hex>) -> Vec<Sha256Hex> {
        hashes.sort();
        hashes
    }

    #[test]
    fn open_creates_the_layout_and_reopens() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("a").join("cache");
        Cache::open(&dir, None)?;
        assert_eq!(names_in(&dir)?, ["CACHEDIR.TAG", "locks", "sha256", "tmp"]);
        assert!(
            fs::read_to_string(dir.join("CACHEDIR.TAG"))?
                .starts_with("Signature: 8a477f597d28d172789f06886806bc55")
        );
        let cache = Cache::open(&dir, Some(10))?;
        assert_eq!(cache.max_size(), Some(10));
        assert!(cache.entries()?.is_empty());
        Ok(())
    }

    #[test]
    fn insert_then_lookup_round_trips() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let data = b"a verified file".repeat(1000);
        let hash = add(&cache, root.path(), "file", &data)?;

        let path = cache.path_of(&hash);
        let hex = hash.to_string();
        assert!(path.ends_with(Path::new("sha256").join(&hex[..2]).join(&hex)));
        assert_eq!(cache.lookup(&hash)?, Some(path.clone()));
        assert_eq!(fs::read(&path)?, data);
        let entries = cache.entries()?;
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].0, entries[0].1), (hash, data.len() as u64));
        assert!(names_in(&root.path().join("cache").join("tmp"))?.is_empty());

        assert_eq!(cache.lookup(&sha(b"never inserted"))?, None);
        Ok(())
    }

    #[test]
    fn insert_twice_and_insert_an_empty_file() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let hash = add(&cache, root.path(), "file", b"same bytes")?;
        // Again from the same path (possibly the entry's own inode), then
        // from another file with the same bytes.
        cache.insert(&root.path().join("file"), &hash)?;
        assert_eq!(add(&cache, root.path(), "other", b"same bytes")?, hash);
        assert_eq!(cached_hashes(&cache)?, [hash]);
        assert!(cache.lookup(&hash)?.is_some());

        let empty = add(&cache, root.path(), "empty", b"")?;
        assert!(cache.lookup(&empty)?.is_some());
        Ok(())
    }

    #[test]
    fn a_corrupted_entry_is_not_returned_and_is_removed() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let hash = add(&cache, root.path(), "file", b"bytes that will rot")?;
        flip_first_byte(&cache.path_of(&hash))?;

        assert_eq!(cache.lookup(&hash)?, None);
        assert!(!cache.path_of(&hash).exists());
        assert!(cache.entries()?.is_empty());
        assert_eq!(cache.lookup(&hash)?, None);
        Ok(())
    }

    #[test]
    fn a_truncated_entry_is_not_returned() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let hash = add(&cache, root.path(), "file", &[7u8; 5000])?;
        OpenOptions::new()
            .write(true)
            .open(cache.path_of(&hash))?
            .set_len(100)?;
        assert_eq!(cache.lookup(&hash)?, None);
        assert!(!cache.path_of(&hash).exists());
        Ok(())
    }

    #[test]
    fn a_wrongly_inserted_hash_is_never_served() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let src = root.path().join("file");
        fs::write(&src, b"actual bytes")?;
        let claimed = sha(b"other bytes");
        cache.insert(&src, &claimed)?;
        assert_eq!(cache.lookup(&claimed)?, None);
        let error = cache
            .place(&claimed, &root.path().join("out"))
            .expect_err("the entry is wrong");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(!root.path().join("out").exists());
        Ok(())
    }

    #[test]
    fn place_produces_an_identical_file() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let data = b"disk image".repeat(10_000);
        let hash = add(&cache, root.path(), "src", &data)?;
        let out_dir = root.path().join("out");
        fs::create_dir(&out_dir)?;
        let dest = out_dir.join("disk.img");

        let method = cache.place(&hash, &dest)?;
        // Cache and destination share a filesystem, so no copy is needed.
        assert_ne!(method, Placement::Copy);
        assert_eq!(fs::read(&dest)?, data);
        assert_eq!(names_in(&out_dir)?, ["disk.img"]);
        if method == Placement::HardLink {
            assert!(same_inode(&dest, &cache.path_of(&hash))?);
        }

        // Again, over the earlier placement (for a hard link: the same inode).
        assert_eq!(cache.place(&hash, &dest)?, method);
        assert_eq!(fs::read(&dest)?, data);
        assert_eq!(names_in(&out_dir)?, ["disk.img"]);
        Ok(())
    }

    #[test]
    fn place_by_copy_makes_an_independent_file() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let data = b"copied".repeat(1000);
        let hash = add(&cache, root.path(), "src", &data)?;
        let dest = root.path().join("dest");
        fs::write(&dest, b"an older file")?;

        assert_eq!(
            cache.place_with(&hash, &dest, &[Placement::Copy], &AtomicU64::new(0))?,
            Placement::Copy
        );
        assert_eq!(fs::read(&dest)?, data);
        assert!(!same_inode(&dest, &cache.path_of(&hash))?);
        flip_first_byte(&dest)?;
        assert!(cache.lookup(&hash)?.is_some());
        Ok(())
    }

    #[test]
    fn a_failed_reflink_falls_back_without_leaving_temporaries() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let data = b"maybe cloned".repeat(1000);
        let hash = add(&cache, root.path(), "src", &data)?;
        let out_dir = root.path().join("out");
        fs::create_dir(&out_dir)?;
        let dest = out_dir.join("file");

        let method = cache.place_with(
            &hash,
            &dest,
            &[Placement::Reflink, Placement::Copy],
            &AtomicU64::new(0),
        )?;
        assert!(matches!(method, Placement::Reflink | Placement::Copy));
        assert_eq!(fs::read(&dest)?, data);
        assert_eq!(names_in(&out_dir)?, ["file"]);
        Ok(())
    }

    #[test]
    fn placing_a_missing_or_corrupt_entry_leaves_the_destination_alone() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let out_dir = root.path().join("out");
        fs::create_dir(&out_dir)?;
        let dest = out_dir.join("file");
        fs::write(&dest, b"old content")?;

        let missing = cache
            .place(&sha(b"never inserted"), &dest)
            .expect_err("nothing is cached");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);

        let hash = add(&cache, root.path(), "src", b"content that will rot")?;
        flip_first_byte(&cache.path_of(&hash))?;
        for methods in [&Placement::PREFERENCE[..], &[Placement::Copy]] {
            let corrupt = cache
                .place_with(&hash, &dest, methods, &AtomicU64::new(0))
                .expect_err("the entry is corrupt");
            assert_eq!(corrupt.kind(), io::ErrorKind::NotFound);
        }
        assert!(!cache.path_of(&hash).exists());
        assert_eq!(fs::read(&dest)?, b"old content");
        assert_eq!(names_in(&out_dir)?, ["file"]);
        Ok(())
    }

    #[test]
    fn eviction_removes_the_least_recently_used_first() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("cache");
        let unbounded = Cache::open(&dir, None)?;
        let a = add(&unbounded, root.path(), "a", &[1u8; 100])?;
        let b = add(&unbounded, root.path(), "b", &[2u8; 100])?;
        let c = add(&unbounded, root.path(), "c", &[3u8; 100])?;
        set_last_used(&unbounded, &a, 1000)?;
        set_last_used(&unbounded, &b, 2000)?;
        set_last_used(&unbounded, &c, 3000)?;
        assert_eq!(unbounded.evict()?, 0);

        let capped = Cache::open(&dir, Some(250))?;
        assert_eq!(capped.evict()?, 100);
        assert_eq!(cached_hashes(&capped)?, sorted(vec![b, c]));
        assert_eq!(capped.evict()?, 0);

        // A hit makes `b` the most recently used, so `c` goes next.
        assert!(capped.lookup(&b)?.is_some());
        let d = add(&capped, root.path(), "d", &[4u8; 100])?;
        assert_eq!(cached_hashes(&capped)?, sorted(vec![b, d]));
        let total: u64 = capped.entries()?.iter().map(|(_, size, _)| size).sum();
        assert!(total <= 250);
        Ok(())
    }

    #[test]
    fn an_insert_never_evicts_its_own_entry() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("cache");
        let old = add(&Cache::open(&dir, None)?, root.path(), "old", &[1u8; 10])?;
        let capped = Cache::open(&dir, Some(50))?;
        let big = add(&capped, root.path(), "big", &[2u8; 100])?;
        assert_eq!(cached_hashes(&capped)?, [big]);
        assert!(capped.lookup(&big)?.is_some());
        assert_eq!(capped.lookup(&old)?, None);
        Ok(())
    }

    #[test]
    fn eviction_skips_entries_whose_lock_is_held() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("cache");
        let unbounded = Cache::open(&dir, None)?;
        let a = add(&unbounded, root.path(), "a", &[1u8; 100])?;
        let b = add(&unbounded, root.path(), "b", &[2u8; 100])?;
        set_last_used(&unbounded, &a, 1000)?;
        set_last_used(&unbounded, &b, 2000)?;

        let capped = Cache::open(&dir, Some(150))?;
        let in_use = capped.lock(&a)?;
        assert_eq!(capped.evict()?, 100);
        assert_eq!(cached_hashes(&capped)?, [a]);
        drop(in_use);

        let capped = Cache::open(&dir, Some(0))?;
        assert_eq!(capped.evict()?, 100);
        assert!(capped.entries()?.is_empty());
        // The evicted entries' lock files went with them.
        assert!(names_in(&dir.join("locks"))?.is_empty());
        Ok(())
    }

    #[test]
    fn a_second_lock_waits_for_the_first() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let hash = sha(b"downloading");
        let first = cache.lock(&hash)?;
        assert!(first.path().exists());

        std::thread::scope(|scope| -> io::Result<()> {
            let (held_tx, held_rx) = mpsc::channel();
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let (cache, hash) = (&cache, &hash);
            let other = scope.spawn(move || -> io::Result<()> {
                // flock locks belong to open file descriptions, so another
                // open in the same process conflicts like another process.
                held_tx
                    .send(cache.try_lock(hash)?.is_none())
                    .expect("the test waits for this");
                go_rx.recv().expect("the test sends this");
                let second = cache.try_lock(hash)?;
                assert!(second.is_some());
                drop(second);
                // A blocking lock succeeds too (here without waiting).
                drop(cache.lock(hash)?);
                Ok(())
            });
            assert!(
                held_rx.recv().expect("the thread sends this"),
                "try_lock succeeded while the lock was held"
            );
            drop(first);
            go_tx.send(()).expect("the thread waits for this");
            other.join().expect("the locking thread does not panic")
        })?;

        // A blocked `lock` proceeds once the holder lets go.
        let holder = cache.lock(&hash)?;
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| cache.lock(&hash).map(drop));
            drop(holder);
            waiter.join().expect("the waiting thread does not panic")
        })?;
        Ok(())
    }

    #[test]
    fn a_lock_after_its_file_was_removed_still_excludes() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let cache = Cache::open(root.path().join("cache"), None)?;
        let hash = sha(b"evicted and fetched again");
        cache.lock(&hash)?.remove();
        assert!(names_in(&root.path().join("cache").join("locks"))?.is_empty());

        let held = cache.lock(&hash)?;
        assert!(cache.try_lock(&hash)?.is_none());
        drop(held);
        assert!(cache.try_lock(&hash)?.is_some());
        Ok(())
    }

    #[test]
    fn strays_in_the_cache_directory_are_ignored() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("cache");
        let cache = Cache::open(&dir, Some(0))?;
        let entries_dir = dir.join("sha256");

        let stray = sha(b"stray");
        let hex = stray.to_string();
        let shard = entries_dir.join(&hex[..2]);
        fs::create_dir_all(&shard)?;
        fs::write(shard.join(hex.to_uppercase()), b"upper case")?;
        fs::write(shard.join(format!("{hex}.tmp-1-1")), b"suffix")?;
        fs::write(shard.join(&hex[..63]), b"too short")?;
        fs::write(shard.join("README"), b"not a hash")?;
        let wrong_shard = if hex.starts_with("00") { "01" } else { "00" };
        fs::create_dir_all(entries_dir.join(wrong_shard))?;
        fs::write(entries_dir.join(wrong_shard).join(&hex), b"wrong shard")?;
        fs::create_dir_all(entries_dir.join("xyz"))?;
        fs::write(entries_dir.join("junk"), b"loose file")?;
        // A directory and a symbolic link under entries' names.
        let dir_hash = sha(b"a directory");
        fs::create_dir_all(cache.path_of(&dir_hash))?;
        let link_hash = sha(b"a link");
        fs::create_dir_all(parent_dir(&cache.path_of(&link_hash)))?;
        std::os::unix::fs::symlink(root.path().join("anywhere"), cache.path_of(&link_hash))?;

        assert!(cache.entries()?.is_empty());
        assert_eq!(cache.lookup(&stray)?, None);
        assert_eq!(cache.lookup(&dir_hash)?, None);
        assert!(cache.path_of(&dir_hash).is_dir());
        assert_eq!(cache.lookup(&link_hash)?, None);
        assert!(fs::symlink_metadata(cache.path_of(&link_hash)).is_err());

        let real = add(&cache, root.path(), "real", b"real entry")?;
        assert_eq!(cached_hashes(&cache)?, [real]);
        // The cap of 0 evicts the real entry and nothing else.
        let capped = Cache::open(&dir, Some(0))?;
        assert_eq!(capped.evict()?, 10);
        assert!(capped.entries()?.is_empty());
        assert!(shard.join("README").exists());
        assert!(entries_dir.join("junk").exists());
        Ok(())
    }

    #[test]
    fn stale_temporaries_are_removed() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("cache");
        let cache = Cache::open(&dir, None)?;
        let temp = dir.join("tmp").join("leftover.tmp-1-1");
        fs::write(&temp, b"from a crashed insert")?;
        cache.remove_stale_temps(STALE_TEMP_AGE);
        assert!(temp.exists());
        cache.remove_stale_temps(Duration::ZERO);
        assert!(!temp.exists());
        Ok(())
    }

    #[test]
    fn placement_names() {
        let names: Vec<String> = Placement::PREFERENCE
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["reflink", "hard link", "copy"]);
    }
}
