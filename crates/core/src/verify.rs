//! Streaming SHA-256: a hasher thread that follows the contiguous written
//! prefix of the part file while the download runs, and the same code for
//! hashing whole local files (`verify`, `hash`).
//!
//! SHA-256 is sequential, so the only way to not pay for it after the
//! transfer is to hash the prefix as it completes. The scheduler hands out
//! low offsets first, which keeps the frontier moving.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};

use crate::checksums::Sha256Hex;
use memmap2::Mmap;

use crate::store::map_read;

/// Bytes hashed per map; large enough to amortise the map, small enough to
/// keep the resident set bounded: at most seven maps are alive (being
/// hashed, two queued, one the mapper holds while the queue is full, and
/// the three it unmaps once it can), 14 MiB of page cache.
const WINDOW: u64 = 2 << 20;

enum Message {
    /// The written prefix now ends here.
    Advance(u64),
    /// Forget everything hashed; the part file is being rewritten.
    Reset,
}

/// Where the hasher stands: the bytes hashed and the serialized SHA-256
/// state after them, published after every window for the resume journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HashProgress {
    pub hashed: u64,
    pub state: Vec<u8>,
}

/// The hasher thread; it returns the digest and the bytes it hashed.
type HashThread = thread::JoinHandle<io::Result<(Sha256Hex, u64)>>;

/// A thread hashing `[0, frontier)` of a file as the frontier advances.
pub(crate) struct HashFollower {
    sender: Mutex<Option<mpsc::Sender<Message>>>,
    handle: Mutex<Option<HashThread>>,
    progress: Arc<Mutex<HashProgress>>,
}

impl HashFollower {
    /// Starts hashing `file`, continuing from `resume` (a prefix already
    /// hashed by an earlier run) or from byte 0.
    pub(crate) fn start(file: File, resume: Option<HashProgress>) -> io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let (hasher, hashed) = match &resume {
            Some(progress) => match restore(&progress.state) {
                Some(hasher) => (hasher, progress.hashed),
                None => (Sha256::new(), 0),
            },
            None => (Sha256::new(), 0),
        };
        let progress = Arc::new(Mutex::new(HashProgress {
            hashed,
            state: if hashed == 0 {
                Vec::new()
            } else {
                save(&hasher)
            },
        }));
        let published = Arc::clone(&progress);
        let handle = thread::Builder::new()
            .name("rangefetch-hash".into())
            .spawn(move || follow(&file, &receiver, hasher, hashed, &published))?;
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            handle: Mutex::new(Some(handle)),
            progress,
        })
    }

    fn send(&self, message: Message) {
        if let Some(sender) = lock(&self.sender).as_ref() {
            // A send fails only if the thread already ended with an I/O
            // error, which `finish` reports.
            let _ = sender.send(message);
        }
    }

    /// Tells the hasher that `[0, frontier)` is written.
    pub(crate) fn advance(&self, frontier: u64) {
        self.send(Message::Advance(frontier));
    }

    /// Drops the hash state; hashing restarts from byte 0.
    pub(crate) fn reset(&self) {
        self.send(Message::Reset);
    }

    /// The latest published state (for the journal).
    pub(crate) fn progress(&self) -> HashProgress {
        lock(&self.progress).clone()
    }

    /// Waits for the hasher to reach the last frontier and returns the
    /// digest and the number of bytes hashed. Blocks: call it off the async
    /// runtime.
    pub(crate) fn finish(&self) -> io::Result<(Sha256Hex, u64)> {
        drop(lock(&self.sender).take());
        let handle = lock(&self.handle).take();
        match handle.map(thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(io::Error::other("hasher already finished")),
        }
    }
}

impl Drop for HashFollower {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current window; it is
        // detached rather than joined so that cancelling never blocks.
        drop(lock(&self.sender).take());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn save(hasher: &Sha256) -> Vec<u8> {
    hasher.serialize().to_vec()
}

fn restore(state: &[u8]) -> Option<Sha256> {
    let serialized = SerializedState::<Sha256>::try_from(state).ok()?;
    Sha256::deserialize(&serialized).ok()
}

/// What the mapping thread hands the hashing thread, in file order.
enum Work {
    /// The next window of the prefix, mapped.
    Window(Mmap),
    /// Start over from byte 0.
    Reset,
}

/// The follower's two threads: this one takes the frontier's news and maps
/// the written prefix window by window (and unmaps what was hashed); a
/// second one only hashes. Mapping with `MAP_POPULATE` and unmapping cost
/// page-table work of about a fifth of the hash, and the hash is the one
/// sequential job of a download: done in line, it lengthened the time from
/// the last byte to the verified file by as much.
fn follow(
    file: &File,
    receiver: &mpsc::Receiver<Message>,
    hasher: Sha256,
    hashed: u64,
    published: &Mutex<HashProgress>,
) -> io::Result<(Sha256Hex, u64)> {
    // Two windows queued: the mapper shares its core with the connections
    // and may wait a few milliseconds for it, the time the hasher takes for
    // one window.
    let (work, queued) = mpsc::sync_channel::<Work>(2);
    let (done_with, finished) = mpsc::channel::<Mmap>();
    thread::scope(|scope| {
        let hashing = thread::Builder::new()
            .name("rangefetch-sha".into())
            .spawn_scoped(scope, move || {
                hash_windows(&queued, &done_with, hasher, hashed, published)
            })?;
        let mapped = map_windows(file, receiver, &work, &finished, hashed);
        drop(work);
        // Unmap the rest as the hasher hands the windows back.
        while finished.recv().is_ok() {}
        let hashed = match hashing.join() {
            Ok(hashed) => hashed,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // A map that failed is the error to report; the hasher then only
        // stopped short.
        mapped.map(|()| hashed)
    })
}

/// The mapping side of [`follow`]: maps `[mapped, frontier)` in windows of
/// [`WINDOW`] bytes as the frontier advances, until the channel closes.
fn map_windows(
    file: &File,
    receiver: &mpsc::Receiver<Message>,
    work: &mpsc::SyncSender<Work>,
    finished: &mpsc::Receiver<Mmap>,
    mut mapped: u64,
) -> io::Result<()> {
    let mut frontier = mapped;
    // Block for news, then drain whatever else queued up meanwhile.
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Advance(f) => frontier = frontier.max(f),
                Message::Reset => {
                    mapped = 0;
                    frontier = 0;
                    if work.send(Work::Reset).is_err() {
                        return Ok(());
                    }
                }
            }
            next = receiver.try_recv().ok();
        }
        while mapped < frontier {
            // Unmap here what the hasher is done with.
            while finished.try_recv().is_ok() {}
            let len = (frontier - mapped).min(WINDOW);
            let map = map_read(file, mapped, len as usize)?;
            // A closed channel means the hasher ended: nothing more to do.
            if work.send(Work::Window(map)).is_err() {
                return Ok(());
            }
            mapped += len;
        }
        while finished.try_recv().is_ok() {}
    }
    Ok(())
}

/// The hashing side of [`follow`]: hashes the windows in order, publishes
/// the state after each, and hands each map back to be unmapped.
fn hash_windows(
    queued: &mpsc::Receiver<Work>,
    done_with: &mpsc::Sender<Mmap>,
    mut hasher: Sha256,
    mut hashed: u64,
    published: &Mutex<HashProgress>,
) -> (Sha256Hex, u64) {
    for work in queued {
        match work {
            Work::Window(map) => {
                hasher.update(&map[..]);
                hashed += map.len() as u64;
                *lock(published) = HashProgress {
                    hashed,
                    state: save(&hasher),
                };
                let _ = done_with.send(map);
            }
            Work::Reset => {
                hasher = Sha256::new();
                hashed = 0;
                *lock(published) = HashProgress::default();
            }
        }
    }
    (Sha256Hex::from_bytes(hasher.finalize().into()), hashed)
}

/// Bytes per map when hashing a whole file: at most four are alive (being
/// hashed, waiting, being mapped, being unmapped), 16 MiB of page cache.
const FILE_WINDOW: u64 = 4 << 20;

/// Bytes per read when hashing a stream: at most three buffers are alive
/// (being read, waiting, being hashed).
const STREAM_BUFFER: usize = 4 << 20;

/// SHA-256 of everything a local path yields, whatever it is.
///
/// - A regular file takes the fast path: mapped window by window, then read
///   on past the length it reported, so a `/proc` or `/sys` file (length 0
///   or 4096, whatever its content) and a file that grew are hashed to
///   their actual end. Where a file cannot be mapped, reading takes over.
/// - A FIFO, a socket, a block device (whose reported length is 0), a
///   terminal and `/dev/null` are read to their end.
/// - Any other character device (`/dev/zero`, `/dev/urandom`…) may never
///   end and is refused with an [`io::ErrorKind::InvalidInput`] error.
/// - A directory is an [`io::ErrorKind::IsADirectory`] error.
///
/// Mapping a window (`MAP_POPULATE`) and unmapping it cost page-table work
/// of about a fifth of the hash itself; done in line, they held
/// `rangefetch hash` at ~0.83 of `openssl speed`. So a second thread maps
/// the next window while this one hashes, and unmaps the windows it is done
/// with: the hashing thread then spends ~98 % of its time in the SHA-256
/// compression function (`perf record`), and `rangefetch hash` of a 2 GiB
/// file in the page cache runs at 1.00–1.01 × `openssl speed -evp sha256`.
/// Streams get the same shape: a second thread reads the next buffer.
pub fn hash_file(path: &Path) -> io::Result<Sha256Hex> {
    hash_file_counting(path, &AtomicU64::new(0))
}

/// [`hash_file`], counting the bytes of a regular file's mapped part in
/// `hashed` as they are hashed (for progress events).
pub(crate) fn hash_file_counting(path: &Path, counter: &AtomicU64) -> io::Result<Sha256Hex> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    match Reading::of(&file)? {
        Reading::Mapped(len) => {
            let hashed = hash_mapped(&file, len, &mut hasher, counter)?;
            file.seek(SeekFrom::Start(hashed))?;
        }
        Reading::ToEnd => {}
        Reading::Refused => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a character device, which may never end (like /dev/zero or /dev/urandom); \
                 hash a regular file, a block device or a pipe",
            ));
        }
        Reading::Directory => {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "a directory, not a file",
            ));
        }
    }
    hash_rest(&file, &mut hasher)?;
    Ok(Sha256Hex::from_bytes(hasher.finalize().into()))
}

/// SHA-256 of several files, in parallel on the rayon pool; results in the
/// order given.
pub fn hash_files<P: AsRef<Path> + Sync>(paths: &[P]) -> Vec<io::Result<Sha256Hex>> {
    use rayon::prelude::*;
    paths.par_iter().map(|p| hash_file(p.as_ref())).collect()
}

/// How [`hash_file`] gets the bytes of what a path opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// A regular file of this reported length: mapped, then read on.
    Mapped(u64),
    /// A stream or device with an end: read to it.
    ToEnd,
    /// A character device that may never end.
    Refused,
    Directory,
}

/// What kind of thing a path opened, as far as hashing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    Regular,
    Directory,
    BlockDevice,
    Fifo,
    Socket,
    /// `finite`: `/dev/null` or a terminal, which end (at once, or at
    /// end-of-file typed by a person); every other character device is
    /// presumed endless.
    CharDevice {
        finite: bool,
    },
    /// Anything else the platform has; read to its end.
    Other,
}

impl Reading {
    fn of(file: &File) -> io::Result<Reading> {
        let metadata = file.metadata()?;
        Ok(Reading::plan(FileKind::of(file, &metadata), metadata.len()))
    }

    /// The decision itself, by file type alone: a device's reported length
    /// says nothing (0 for a block device of any size).
    fn plan(kind: FileKind, len: u64) -> Reading {
        match kind {
            FileKind::Regular => Reading::Mapped(len),
            FileKind::Directory => Reading::Directory,
            FileKind::CharDevice { finite: false } => Reading::Refused,
            FileKind::BlockDevice
            | FileKind::Fifo
            | FileKind::Socket
            | FileKind::CharDevice { finite: true }
            | FileKind::Other => Reading::ToEnd,
        }
    }
}

impl FileKind {
    #[cfg(unix)]
    fn of(file: &File, metadata: &std::fs::Metadata) -> FileKind {
        use std::io::IsTerminal as _;
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        let file_type = metadata.file_type();
        if file_type.is_file() {
            FileKind::Regular
        } else if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_block_device() {
            FileKind::BlockDevice
        } else if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_socket() {
            FileKind::Socket
        } else if file_type.is_char_device() {
            // The null device by its device number, wherever it is linked.
            let null = std::fs::metadata("/dev/null").is_ok_and(|null| {
                null.file_type().is_char_device() && null.rdev() == metadata.rdev()
            });
            FileKind::CharDevice {
                finite: null || file.is_terminal(),
            }
        } else {
            FileKind::Other
        }
    }

    #[cfg(not(unix))]
    fn of(_file: &File, metadata: &std::fs::Metadata) -> FileKind {
        let file_type = metadata.file_type();
        if file_type.is_file() {
            FileKind::Regular
        } else if file_type.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Other
        }
    }
}

/// Hashes `[0, len)` of `file` through maps, a second thread mapping ahead;
/// returns how far it got. A window that cannot be mapped (a file system
/// without mmap, such as sysfs) ends the mapped part early: the caller
/// reads on from there, and reading reports any real I/O error.
fn hash_mapped(file: &File, len: u64, hasher: &mut Sha256, counter: &AtomicU64) -> io::Result<u64> {
    let (windows, mapped) = mpsc::sync_channel::<Mmap>(1);
    let (done_with, finished) = mpsc::channel::<Mmap>();
    thread::scope(|scope| {
        thread::Builder::new()
            .name("rangefetch-map".into())
            .spawn_scoped(scope, move || {
                let mut offset = 0;
                while offset < len {
                    // Unmap here what the hasher is done with.
                    while finished.try_recv().is_ok() {}
                    let window = (len - offset).min(FILE_WINDOW);
                    let Ok(map) = map_read(file, offset, window as usize) else {
                        break;
                    };
                    // A closed channel means the hasher gave up: stop too.
                    if windows.send(map).is_err() {
                        return;
                    }
                    offset += window;
                }
                // No more windows; unmap the rest as the hasher hands them back.
                drop(windows);
                while finished.recv().is_ok() {}
            })?;
        let mut hashed = 0;
        for map in &mapped {
            hasher.update(&map[..]);
            hashed += map.len() as u64;
            counter.store(hashed, Ordering::Relaxed);
            let _ = done_with.send(map);
        }
        drop(done_with);
        Ok(hashed)
    })
}

/// Hashes what `file` yields from its position to its end. One plain read
/// first: for a regular file that was mapped whole it returns nothing, and
/// no thread is started for it.
fn hash_rest(mut file: &File, hasher: &mut Sha256) -> io::Result<()> {
    let mut first = vec![0; 64 << 10];
    let n = fill(&mut file, &mut first)?;
    if n == 0 {
        return Ok(());
    }
    hasher.update(&first[..n]);
    if n < first.len() {
        // `fill` stops short only at the end.
        return Ok(());
    }
    hash_stream(file, hasher)
}

/// Reads `file` to its end and hashes it, a second thread reading the next
/// buffer while this one hashes the last.
fn hash_stream(file: &File, hasher: &mut Sha256) -> io::Result<()> {
    let (full, filled) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(1);
    let (empty, recycled) = mpsc::channel::<Vec<u8>>();
    thread::scope(|scope| {
        thread::Builder::new()
            .name("rangefetch-read".into())
            .spawn_scoped(scope, move || {
                let mut reader = file;
                loop {
                    let mut buffer = recycled
                        .try_recv()
                        .unwrap_or_else(|_| vec![0; STREAM_BUFFER]);
                    let message = match fill(&mut reader, &mut buffer) {
                        Ok(0) => return,
                        Ok(n) => Ok((buffer, n)),
                        Err(error) => Err(error),
                    };
                    let failed = message.is_err();
                    // A closed channel means the hasher gave up: stop too.
                    if full.send(message).is_err() || failed {
                        return;
                    }
                }
            })?;
        for message in filled {
            let (buffer, n) = message?;
            hasher.update(&buffer[..n]);
            let _ = empty.send(buffer);
        }
        Ok(())
    })
}

/// Reads until `buffer` is full or the end is reached; returns the bytes
/// read, fewer than the buffer's length only at the end.
fn fill(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buffer.len() {
        match reader.read(&mut buffer[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn reference(data: &[u8]) -> Sha256Hex {
        Sha256Hex::from_bytes(Sha256::digest(data).into())
    }

    #[test]
    fn follower_hashes_in_any_advance_pattern() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * WINDOW + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        File::create(&path)?.write_all(&data)?;
        let follower = HashFollower::start(File::open(&path)?, None)?;
        for frontier in [10, 10, 5, WINDOW + 1, 2 * WINDOW, data.len() as u64] {
            follower.advance(frontier);
        }
        let (digest, hashed) = follower.finish()?;
        assert_eq!(hashed, data.len() as u64);
        assert_eq!(digest, reference(&data));
        Ok(())
    }

    #[test]
    fn reset_starts_over() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        File::create(&path)?.write_all(b"abcdef")?;
        let follower = HashFollower::start(File::open(&path)?, None)?;
        follower.advance(6);
        follower.reset();
        follower.advance(3);
        let (digest, hashed) = follower.finish()?;
        assert_eq!((digest, hashed), (reference(b"abc"), 3));
        Ok(())
    }

    #[test]
    fn a_reset_behind_queued_windows_starts_over_after_them() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let len = 5 * WINDOW as usize + 7;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        File::create(&path)?.write_all(&data)?;
        let follower = HashFollower::start(File::open(&path)?, None)?;
        for round in 0..3 {
            // Five windows mapped and queued, then a reset behind them.
            follower.advance(len as u64);
            follower.reset();
            follower.advance(WINDOW + round);
        }
        let again = 3 * WINDOW + 1;
        follower.advance(again);
        let (digest, hashed) = follower.finish()?;
        assert_eq!(
            (digest, hashed),
            (reference(&data[..again as usize]), again)
        );
        Ok(())
    }

    #[test]
    fn resumes_from_a_saved_state() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(WINDOW + 999)).map(|i| (i % 253) as u8).collect();
        File::create(&path)?.write_all(&data)?;
        let first = HashFollower::start(File::open(&path)?, None)?;
        first.advance(WINDOW);
        first.finish()?;
        let saved = first.progress();
        assert_eq!(saved.hashed, WINDOW);
        let second = HashFollower::start(File::open(&path)?, Some(saved))?;
        second.advance(data.len() as u64);
        let (digest, hashed) = second.finish()?;
        assert_eq!((digest, hashed), (reference(&data), data.len() as u64));
        Ok(())
    }

    #[test]
    fn hash_file_matches_reference_including_empty() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let empty = dir.path().join("empty");
        File::create(&empty)?;
        let small = dir.path().join("small");
        File::create(&small)?.write_all(b"hello world")?;
        let results = hash_files(&[&empty, &small]);
        assert_eq!(results[0].as_ref().ok(), Some(&reference(b"")));
        assert_eq!(results[1].as_ref().ok(), Some(&reference(b"hello world")));
        Ok(())
    }

    #[test]
    fn hash_file_is_exact_at_every_window_boundary() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let window = FILE_WINDOW as usize;
        let data: Vec<u8> = (0..3 * window + 1).map(|i| (i * 37 % 253) as u8).collect();
        for len in [
            1,
            window - 1,
            window,
            window + 1,
            3 * window,
            3 * window + 1,
        ] {
            let path = dir.path().join(format!("f{len}"));
            File::create(&path)?.write_all(&data[..len])?;
            assert_eq!(hash_file(&path)?, reference(&data[..len]), "{len} bytes");
        }
        let missing = hash_file(&dir.path().join("missing")).expect_err("no such file");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        Ok(())
    }

    #[test]
    fn hashing_plans_by_file_type_not_length() {
        use FileKind::*;
        assert_eq!(Reading::plan(Regular, 0), Reading::Mapped(0));
        assert_eq!(Reading::plan(Regular, 4096), Reading::Mapped(4096));
        // A block device reports length 0 whatever its size; a FIFO too.
        for kind in [
            BlockDevice,
            Fifo,
            Socket,
            CharDevice { finite: true },
            Other,
        ] {
            assert_eq!(Reading::plan(kind, 0), Reading::ToEnd, "{kind:?}");
        }
        assert_eq!(
            Reading::plan(CharDevice { finite: false }, 0),
            Reading::Refused
        );
        assert_eq!(Reading::plan(Directory, 4096), Reading::Directory);
    }

    /// Fails, naming it, when the test machine lacks `path`.
    fn needs(path: &str) -> &Path {
        let path = Path::new(path);
        assert!(
            path.exists(),
            "this test needs {} (Linux with /proc, /sys and /dev)",
            path.display()
        );
        path
    }

    #[test]
    fn a_pipe_is_read_to_its_end() -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let (reader, mut writer) = io::pipe()?;
        // Reopened by path, the pipe is a FIFO whose length reads as 0.
        let path = needs("/proc/self/fd").join(reader.as_raw_fd().to_string());
        let data: Vec<u8> = (0..(1 << 20) + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let sent = data.clone();
        let feeder = thread::spawn(move || writer.write_all(&sent));
        let digest = hash_file(&path);
        // Without a reader left, a writer the hash did not drain fails
        // (broken pipe) instead of waiting forever.
        drop(reader);
        let fed = feeder.join().expect("the writer thread does not panic");
        assert_eq!(digest?, reference(&data));
        fed
    }

    #[test]
    fn proc_and_sys_files_hash_their_content_not_their_length() -> io::Result<()> {
        // /proc reports length 0; sysfs reports 4096 and cannot be mapped.
        let sys = ["/sys/kernel/profiling", "/sys/kernel/address_bits"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("/sys/kernel/profiling");
        for path in [needs("/proc/sys/kernel/ostype"), needs(sys)] {
            let content = std::fs::read(path)?;
            assert!(!content.is_empty(), "{} is empty", path.display());
            assert_eq!(hash_file(path)?, reference(&content), "{}", path.display());
        }
        Ok(())
    }

    #[test]
    fn endless_character_devices_are_refused_and_dev_null_is_empty() -> io::Result<()> {
        for path in ["/dev/zero", "/dev/urandom", "/dev/full"] {
            let error = hash_file(needs(path)).expect_err(path);
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{path}: {error}");
            assert!(error.to_string().contains("character device"), "{error}");
        }
        assert_eq!(hash_file(needs("/dev/null"))?, reference(b""));
        Ok(())
    }

    #[test]
    fn a_directory_is_an_error_of_its_own_kind() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let error = hash_file(dir.path()).expect_err("a directory");
        assert_eq!(error.kind(), io::ErrorKind::IsADirectory, "{error}");
        Ok(())
    }
}
