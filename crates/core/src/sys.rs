//! The system calls the engine makes beyond `std`, and the crate's only
//! `unsafe`. Linux gets its fast paths (`posix_fallocate`,
//! `sync_file_range`, `MAP_POPULATE`, `FICLONE`, `statvfs`); every other
//! platform gets a portable fallback behind `cfg`, so the core compiles
//! wherever `std` and tokio do.
//!
//! [`set_portable`] makes this module take the portable fallbacks on Linux
//! too, so the tests exercise both paths on the one platform CI has.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{Mmap, MmapOptions};

static PORTABLE: AtomicBool = AtomicBool::new(false);

/// Makes every call here take its portable fallback (`true`) or the
/// platform's fast path (`false`, the default). Process-wide; for tests and
/// benchmarks that compare the two.
pub fn set_portable(portable: bool) {
    PORTABLE.store(portable, Ordering::Relaxed);
}

/// Whether the fast paths are switched off.
fn portable() -> bool {
    PORTABLE.load(Ordering::Relaxed)
}

/// Opens `path` for reading and writing, creating it if needed, without
/// truncating it and **without following a symlink** at its last component
/// (`O_NOFOLLOW`): a link there fails with `ELOOP` instead of letting the
/// engine write through it. The portable fallback checks with
/// `symlink_metadata` first, which leaves a window a local attacker could
/// race; Unix platforms have no such window.
pub(crate) fn open_no_follow(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    if !portable() {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        return options.open(path);
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to follow a symbolic link",
        ));
    }
    options.open(path)
}

/// Whether an open error means "a symlink was in the way" (`ELOOP` from
/// `O_NOFOLLOW`, or the fallback's refusal).
pub(crate) fn is_symlink_refusal(error: &io::Error) -> bool {
    #[cfg(unix)]
    if error.raw_os_error() == Some(libc::ELOOP) {
        return true;
    }
    error.kind() == io::ErrorKind::InvalidInput
}

/// Whether two metadata describe the same file (device and inode on Unix).
/// Elsewhere there is no stable identity in `std`, so two regular files of
/// the same length and modification time count as the same.
pub(crate) fn same_file(a: &Metadata, b: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len() && a.modified().ok() == b.modified().ok()
    }
}

/// Writes all of `data` at `offset` without moving a file position.
pub(crate) fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.write_all_at(data, offset)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let (mut data, mut offset) = (data, offset);
        while !data.is_empty() {
            let n = file.seek_write(data, offset)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
            offset += n as u64;
        }
        Ok(())
    }
    #[cfg(not(any(unix, windows)))]
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = file;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(data)
    }
}

/// Bytes of disk actually allocated to `file`; the length where the
/// platform does not say.
pub(crate) fn allocated(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(meta.blocks().saturating_mul(512))
    }
    #[cfg(not(unix))]
    {
        Ok(meta.len())
    }
}

/// Reserves disk blocks for `[0, len)` (`posix_fallocate`), so a full disk
/// fails now rather than half-way. The fallback, and file systems without
/// `fallocate`, set a sparse length instead.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return file.set_len(0);
    }
    #[cfg(target_os = "linux")]
    if !portable() {
        use std::os::fd::AsRawFd;
        let Ok(signed_len) = libc::off_t::try_from(len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file too large",
            ));
        };
        if on_tmpfs(file) {
            // tmpfs allocates by zeroing every page up front (0.6 s of CPU
            // per 2 GiB here, on the thread that starts the download), and
            // the pages the download writes are allocated as they come
            // anyway; the free-space check before this stands in for the
            // reservation.
            if file.metadata()?.len() < len {
                file.set_len(len)?;
            }
            return Ok(());
        }
        // SAFETY: a plain system call on a file descriptor we own; no memory
        // is passed to the kernel.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, signed_len) };
        return match rc {
            0 => Ok(()),
            libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len),
            errno => Err(io::Error::from_raw_os_error(errno)),
        };
    }
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    Ok(())
}

/// Whether `file` lives on tmpfs (Linux `fstatfs`).
#[cfg(target_os = "linux")]
fn on_tmpfs(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    /// `TMPFS_MAGIC` from `linux/magic.h`.
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let mut stats = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs writes a `statfs` into the buffer we pass, which is
    // large enough for it, for a descriptor we own.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), stats.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstatfs returned 0, so it initialised the struct.
    let stats = unsafe { stats.assume_init() };
    #[allow(
        clippy::useless_conversion,
        reason = "f_type is i64 on 64-bit glibc, narrower elsewhere"
    )]
    let kind = i64::from(stats.f_type);
    kind == TMPFS_MAGIC
}

/// Whether an I/O error means the disk is full.
pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    #[cfg(unix)]
    if error.raw_os_error() == Some(libc::ENOSPC) {
        return true;
    }
    error.kind() == io::ErrorKind::StorageFull
}

/// Starts writing `[offset, offset + len)` back to the device without
/// waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Advisory: the
/// fallback does nothing, and failures are ignored.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    if !portable() {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: a plain system call on a file descriptor we own; it reads
        // no memory of ours.
        let _ = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
    let _ = (file, offset, len);
}

/// Maps `[offset, offset + len)` of `file` read-only; on Linux pre-faulted
/// (`MAP_POPULATE`), so hashing it takes no page faults.
pub(crate) fn map_read(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    let mut options = MmapOptions::new();
    options.offset(offset).len(len);
    if !portable() {
        options.populate();
    }
    // SAFETY: a read-only map. The engine never writes the mapped range
    // while it is mapped (the hasher maps only finished bytes); another
    // process shrinking the file could raise SIGBUS, as with any file map.
    unsafe { options.map(file) }
}

/// Copies `data` into a writable map of `[offset, offset + len)` of `file`,
/// which must be at least that long.
pub(crate) fn write_mapped(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    let mut options = MmapOptions::new();
    options.offset(offset).len(data.len());
    if !portable() {
        options.populate();
    }
    // SAFETY: the map covers bytes of a file this process owns and that no
    // other mapping writes concurrently: the scheduler hands every byte to
    // exactly one writer. Another process truncating the part file would
    // be a SIGBUS, the documented risk of any file map.
    let mut map = unsafe { options.map_mut(file)? };
    map.copy_from_slice(data);
    Ok(())
}

/// Bytes available to an unprivileged writer on the file system holding
/// `dir` (`statvfs`); `Unsupported` where the platform cannot say.
pub(crate) fn free_space(dir: &Path) -> io::Result<u64> {
    #[cfg(unix)]
    if !portable() {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c_path` is a valid NUL-terminated string and `stats`
        // points to writable memory of the right type; the kernel fills it
        // on success.
        let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it initialised the struct.
        let stats = unsafe { stats.assume_init() };
        #[allow(
            clippy::useless_conversion,
            reason = "the field types are narrower on 32-bit targets"
        )]
        return Ok(u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)));
    }
    let _ = dir;
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "free space is not known on this platform",
    ))
}

/// `FICLONE` from `<linux/fs.h>`, `_IOW(0x94, 9, int)`, spelled out
/// because not every libc target defines it.
#[cfg(target_os = "linux")]
const FICLONE: libc::Ioctl = 0x4004_9409;

/// Makes `dest` (empty, open for writing) a copy-on-write clone of `src`.
/// Fails with `EOPNOTSUPP`, `EXDEV`, `EINVAL` or the like where the
/// filesystem cannot, and with `Unsupported` off Linux or in portable mode.
pub(crate) fn reflink(src: &File, dest: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if !portable() {
        use std::os::fd::AsRawFd;
        // SAFETY: FICLONE takes the source descriptor as a plain int
        // argument and touches no memory of ours; both descriptors are open
        // for the whole call because the files are borrowed.
        let rc = unsafe { libc::ioctl(dest.as_raw_fd(), FICLONE, src.as_raw_fd()) };
        return if rc == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
    }
    let _ = (src, dest);
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "reflink is implemented for Linux only",
    ))
}

/// Takes an exclusive advisory lock on `file` (`flock` on Unix, `LockFileEx`
/// on Windows, through `std`): waiting for it if `wait`, else returning
/// `false` at once when another open file description holds it.
pub(crate) fn lock_exclusive(file: &File, wait: bool) -> io::Result<bool> {
    if wait {
        file.lock()?;
        return Ok(true);
    }
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(error)) => Err(error),
    }
}

/// Makes a rename in `dir` durable (an `fsync` of the directory). Platforms
/// that cannot open a directory make renames durable by themselves.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On tmpfs the length is set without allocating (fallocate would zero
    /// every page up front).
    #[cfg(target_os = "linux")]
    #[test]
    fn tmpfs_is_sized_without_allocating() -> io::Result<()> {
        let shm = std::path::Path::new("/dev/shm");
        assert!(
            shm.is_dir(),
            "this test needs /dev/shm (tmpfs), which this machine lacks"
        );
        let dir = tempfile::tempdir_in(shm)?;
        let file = open_no_follow(&dir.path().join("f"))?;
        assert!(on_tmpfs(&file), "/dev/shm is not tmpfs here");
        preallocate(&file, 64 << 20)?;
        assert_eq!(file.metadata()?.len(), 64 << 20);
        assert_eq!(allocated(&file)?, 0);
        Ok(())
    }

    /// The fast paths, on real files. The portable ones are exercised by
    /// `tests/portable.rs`, a process of its own, because the switch is
    /// process-wide and unit tests share one process.
    #[test]
    fn fast_paths_store_and_lock() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let file = open_no_follow(&path)?;
        preallocate(&file, 10_000)?;
        assert_eq!(file.metadata()?.len(), 10_000);
        write_all_at(&file, &[7u8; 100], 5000)?;
        write_mapped(&file, 0, &[3u8; 100])?;
        start_writeback(&file, 0, 10_000);
        {
            let map = map_read(&file, 4990, 20)?;
            assert_eq!(&map[..10], &[0u8; 10]);
            assert_eq!(&map[10..], &[7u8; 10]);
            assert_eq!(&map_read(&file, 0, 100)?[..], &[3u8; 100]);
        }
        assert!(free_space(dir.path())? > 0);
        assert!(lock_exclusive(&file, false)?);
        let other = File::open(&path)?;
        assert!(!lock_exclusive(&other, false)?, "a second lock must fail");
        // A map holds the open file (and so its lock) too: the maps above
        // are gone, so closing the file releases the lock.
        drop(file);
        assert!(lock_exclusive(&other, false)?);
        sync_dir(dir.path())?;
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&path, &link)?;
            let refused = open_no_follow(&link).map(|_| ());
            assert!(
                refused.as_ref().is_err_and(is_symlink_refusal),
                "{refused:?}"
            );
            let dangling = dir.path().join("dangling");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling)?;
            assert!(open_no_follow(&dangling).is_err());
            assert!(
                !dir.path().join("nowhere").exists(),
                "followed a dangling link"
            );
        }
        Ok(())
    }
}
