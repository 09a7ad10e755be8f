//! Progress events: what a running download tells its embedder.
//!
//! The engine never prints. It hands [`Event`]s to a callback; the CLI turns
//! them into a progress bar or JSON lines, a VM manager into its own UI.

use std::time::Duration;

use crate::error::Error;
use crate::range::ByteRange;

/// Something that happened during a download.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// The remote was probed; the plan is known.
    Started {
        /// The URL ranges are fetched from, after redirects, without credentials.
        url: String,
        /// Size of the file, when the server said.
        total: Option<u64>,
        /// Whether the server serves byte ranges (segmented download).
        ranges: bool,
        /// Bytes already present from an earlier run.
        resumed_bytes: u64,
    },
    /// Periodic progress, a few times a second.
    Progress {
        /// Bytes written so far (including resumed ones).
        bytes: u64,
        /// Size of the file, when known.
        total: Option<u64>,
        /// Recent throughput in bytes per second.
        rate_bps: u64,
        /// Connections currently transferring.
        connections: usize,
        /// Retries so far.
        retries: u64,
    },
    /// A request failed and will be tried again after `delay`.
    Retry {
        /// The bytes still to fetch for this request.
        range: ByteRange,
        /// Which attempt failed (1 = the first).
        attempt: u32,
        /// Error class (`network`, `http`, …) as in [`crate::ErrorKind::class`].
        class: &'static str,
        /// The error, one line.
        message: String,
        /// How long the engine waits before trying again.
        delay: Duration,
    },
    /// Something the user should know that is not an error: a resume state
    /// that could not be used, partial data discarded.
    Notice {
        /// One line.
        message: String,
    },
    /// The remote file changed (size or validator); what was downloaded of
    /// the old version is discarded and the download starts over.
    RemoteChanged {
        /// What differed, one line.
        reason: String,
    },
    /// A mirror disagreed with the others or kept failing, and is no longer
    /// used.
    MirrorDropped {
        /// The mirror, without credentials.
        url: String,
        /// Why, one line.
        reason: String,
    },
    /// The hash of every byte is known (and, when an expected hash was
    /// given, it matched); only flushing and the rename remain.
    Verified {
        /// The file's SHA-256.
        sha256: crate::Sha256Hex,
        /// Whether it was checked against an expected hash.
        against_expected: bool,
    },
    /// The server stated the file's SHA-256 in a response header
    /// (`Repr-Digest`, `Digest`, `X-Linked-ETag`), and it agrees with the
    /// expected hash if one was given; the finished file is checked
    /// against it.
    ServerDigest {
        /// What the server stated.
        sha256: crate::Sha256Hex,
        /// The header it came from.
        header: crate::DigestHeader,
    },
    /// The finished file did not have the expected SHA-256, and repair
    /// fixed it: each of `pieces` disagreed with two other copies that
    /// agreed with each other and was replaced; the file now has the
    /// expected hash.
    Repaired {
        /// The stretches replaced, and who had delivered them.
        pieces: Vec<crate::RepairedPiece>,
        /// Bytes fetched again to find and replace them.
        fetched: u64,
    },
    /// All bytes are written; only hashing of the tail remains.
    Downloaded {
        /// Size of the file.
        bytes: u64,
    },
}

impl Event {
    /// The retry of `range` after failure number `attempt`, `error`.
    pub(crate) fn retry(range: ByteRange, attempt: u32, error: &Error, delay: Duration) -> Event {
        Event::Retry {
            range,
            attempt,
            class: error.kind().class(),
            message: error.to_string(),
            delay,
        }
    }
}

/// The callback type events are delivered to. It runs on engine threads, so
/// it must be quick and must not block.
pub type EventSink = std::sync::Arc<dyn Fn(Event) + Send + Sync>;
