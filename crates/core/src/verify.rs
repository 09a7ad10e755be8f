//! Streaming SHA-256: a hasher thread that follows the contiguous written
//! prefix of the part file while the download runs, and the same code for
//! hashing whole local files (`verify`, `hash`).
//!
//! SHA-256 is sequential, so the only way to not pay for it after the
//! transfer is to hash the prefix as it completes. The scheduler hands out
//! low offsets first, which keeps the frontier moving.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};

use crate::checksums::Sha256Hex;
use memmap2::Mmap;

use crate::store::map_read;

/// Bytes hashed per map; large enough to amortise the map, small enough to
/// keep the resident set bounded.
const WINDOW: u64 = 8 << 20;

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

fn follow(
    file: &File,
    receiver: &mpsc::Receiver<Message>,
    mut hasher: Sha256,
    mut hashed: u64,
    published: &Mutex<HashProgress>,
) -> io::Result<(Sha256Hex, u64)> {
    let mut frontier = hashed;
    // Block for news, then drain whatever else queued up meanwhile.
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Advance(f) => frontier = frontier.max(f),
                Message::Reset => {
                    hasher = Sha256::new();
                    hashed = 0;
                    frontier = 0;
                    *lock(published) = HashProgress::default();
                }
            }
            next = receiver.try_recv().ok();
        }
        while hashed < frontier {
            let upto = frontier.min(hashed + WINDOW);
            hash_span(file, &mut hasher, &mut hashed, upto)?;
            *lock(published) = HashProgress {
                hashed,
                state: save(&hasher),
            };
        }
    }
    hash_span(file, &mut hasher, &mut hashed, frontier)?;
    Ok((Sha256Hex::from_bytes(hasher.finalize().into()), hashed))
}

fn hash_span(file: &File, hasher: &mut Sha256, hashed: &mut u64, upto: u64) -> io::Result<()> {
    while *hashed < upto {
        let len = (upto - *hashed).min(WINDOW);
        let map = map_read(file, *hashed, len as usize)?;
        hasher.update(&map[..]);
        *hashed += len;
    }
    Ok(())
}

/// Bytes per map when hashing a whole file: at most four are alive (being
/// hashed, waiting, being mapped, being unmapped), 16 MiB of page cache.
const FILE_WINDOW: u64 = 4 << 20;

/// SHA-256 of a whole local file.
///
/// Mapping a window (`MAP_POPULATE`) and unmapping it cost page-table work
/// of about a fifth of the hash itself; done in line, they held
/// `rangefetch hash` at ~0.83 of `openssl speed`. So a second thread maps
/// the next window while this one hashes, and unmaps the windows it is done
/// with: the hashing thread then spends ~98 % of its time in the SHA-256
/// compression function (`perf record`), and `rangefetch hash` of a 2 GiB
/// file in the page cache runs at 1.00–1.01 × `openssl speed -evp sha256`.
pub fn hash_file(path: &Path) -> io::Result<Sha256Hex> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let (windows, mapped) = mpsc::sync_channel(1);
    let (done_with, finished) = mpsc::channel::<Mmap>();
    let mapper = thread::Builder::new()
        .name("rangefetch-map".into())
        .spawn(move || {
            let mut offset = 0;
            while offset < len {
                // Unmap here what the hasher is done with.
                while finished.try_recv().is_ok() {}
                let window = (len - offset).min(FILE_WINDOW);
                let map = map_read(&file, offset, window as usize);
                let failed = map.is_err();
                // A closed channel means the hasher gave up: stop too.
                if windows.send(map).is_err() || failed {
                    return;
                }
                offset += window;
            }
            // The rest, until the hasher hangs up.
            while finished.recv().is_ok() {}
        })?;
    let mut hasher = Sha256::new();
    let mut hashed = 0;
    let outcome = loop {
        if hashed == len {
            break Ok(());
        }
        match mapped.recv() {
            Ok(Ok(map)) => {
                hasher.update(&map[..]);
                hashed += map.len() as u64;
                let _ = done_with.send(map);
            }
            Ok(Err(error)) => break Err(error),
            Err(_) => break Err(io::Error::other("the mapping thread stopped early")),
        }
    };
    drop((mapped, done_with));
    let _ = mapper.join();
    outcome?;
    Ok(Sha256Hex::from_bytes(hasher.finalize().into()))
}

/// SHA-256 of several files, in parallel on the rayon pool; results in the
/// order given.
pub fn hash_files<P: AsRef<Path> + Sync>(paths: &[P]) -> Vec<io::Result<Sha256Hex>> {
    use rayon::prelude::*;
    paths.par_iter().map(|p| hash_file(p.as_ref())).collect()
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
}
