//! Resume: where the part file and its journal live, the checkpointer that
//! records what the part file durably holds while the download runs, and
//! the decision whether a journal found on disk may be trusted for the
//! remote the probe just saw.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::cancel::CancelToken;
use crate::event::Event;
use crate::fetch::Fetcher;
use crate::journal::Journal;
use crate::probe::Remote;
use crate::store::write_atomic;

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

/// Flushes the part file, then records what it durably holds. The order is
/// the whole point: a journal never names a byte that is not on disk.
fn checkpoint(fetcher: &Fetcher, template: &Journal, state_path: &Path) -> std::io::Result<()> {
    // Hash progress first: the written set only grows, so it then covers at
    // least the hashed prefix.
    let progress = fetcher.hasher.progress();
    let done = fetcher.plan().written().clone();
    fetcher.part.sync_data()?;
    let journal = Journal {
        done,
        etag_unstable: fetcher.sources[0].etag_unstable(),
        hashed: progress.hashed,
        hash_state: progress.state,
        ..template.clone()
    };
    write_atomic(state_path, &journal.encode())
}

/// What a checkpoint needs, behind a gate that closes for good when the
/// download ends or is dropped: no checkpoint starts after that.
struct Recorder {
    fetcher: Arc<Fetcher>,
    template: Journal,
    state_path: PathBuf,
    open: Mutex<bool>,
}

impl Recorder {
    /// Takes one checkpoint unless the gate is closed. Blocking.
    fn record(&self) -> std::io::Result<()> {
        let open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*open {
            return Ok(());
        }
        checkpoint(&self.fetcher, &self.template, &self.state_path)
    }

    /// Closes the gate, waiting for a checkpoint under way to finish.
    fn close(&self) {
        *self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
    }
}

/// The periodic checkpoint task of one download. Dropping it (with the
/// download's future) stops it: the task is aborted and the gate closed, so
/// no journal is written afterwards.
pub(crate) struct Checkpointer {
    recorder: Arc<Recorder>,
    stop: CancelToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Checkpointer {
    /// Checkpoints every `interval` (spaced out when the device is slow, so
    /// checkpoints never take over a fifth of the time).
    pub(crate) fn start(
        fetcher: Arc<Fetcher>,
        template: Journal,
        state_path: PathBuf,
        interval: Duration,
    ) -> Self {
        let recorder = Arc::new(Recorder {
            fetcher,
            template,
            state_path,
            open: Mutex::new(true),
        });
        let stop = CancelToken::new();
        let task = {
            let recorder = Arc::clone(&recorder);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut pause = interval;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.cancelled() => break,
                    }
                    let began = Instant::now();
                    let recorder = Arc::clone(&recorder);
                    let saved = tokio::task::spawn_blocking(move || recorder.record()).await;
                    if let Ok(Err(error)) = saved {
                        warn!(%error, "cannot record progress for resume");
                    }
                    pause = interval.max(began.elapsed() * 2);
                }
            })
        };
        Self {
            recorder,
            stop,
            task: Some(task),
        }
    }

    /// Stops between checkpoints, never inside one; with `record_last`,
    /// records what is on disk once more so a re-run resumes from here.
    /// Afterwards no checkpoint is ever written: one still writing after the
    /// commit would leave a stale journal behind.
    pub(crate) async fn stop(mut self, record_last: bool) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let recorder = Arc::clone(&self.recorder);
        let _ = tokio::task::spawn_blocking(move || {
            if record_last {
                let _ = recorder.record();
            }
            recorder.close();
        })
        .await;
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // A checkpoint may be under way on a blocking thread: wait for it
        // (one flush and a small write), so nothing is written after the
        // download is gone.
        self.recorder.close();
    }
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
            // never read through it (the next checkpoint replaces a link).
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
            journal.done.covered()
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
