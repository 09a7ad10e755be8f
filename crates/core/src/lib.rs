//! rangefetch-core: segmented, resumable, verified HTTP downloads.
//!
//! A [`Download`] splits a remote file into byte ranges, fetches them over
//! several connections with per-range retries, writes them into
//! `<out>.part`, hashes the completed prefix with SHA-256 *while* the rest
//! arrives, and publishes `<out>` by an atomic rename only once every byte is
//! written, flushed and — when a hash was given — verified.
//!
//! Inside, one module per stage: probe (size, ranges, validator) → plan
//! (the chunk scheduler) → fetch (the connection pool) → store (the part
//! file) → verify (streaming SHA-256) → commit (flush, rename, journal,
//! cache); `ARCHITECTURE.md` in the repository maps them. The public API is
//! what is re-exported here.
//!
//! # Runtime
//!
//! [`Download::run`] is a future for a Tokio 1.x runtime with the timer
//! enabled; a `current_thread` runtime is enough (the engine spawns its
//! connections as tasks on it, and hashes on a thread of its own). The
//! engine builds no runtime, reads no environment variable (except that the
//! TLS roots come from the platform's trust store, which may itself read
//! `SSL_CERT_FILE`) and prints nothing.
//!
//! The hashing threads (one maps the written prefix, one hashes it) are
//! started from within [`Download::run`], by whichever thread polls it at
//! the time, and inherit that thread's scheduling priority. On a link
//! faster than SHA-256 the hash is the one sequential job, so it pays to
//! run the runtime's workers a little below that thread: the `rangefetch` binary awaits the download on its main
//! thread and puts the runtime's threads five nice steps lower
//! (`on_thread_start`), which on two cores brought a 2 GiB download into
//! tmpfs from 2.4 s to 2.2 s and the last byte → verified from hundreds of
//! milliseconds to a few.
//!
//! # Example
//!
//! ```no_run
//! use rangefetch_core::{Download, Event, Sha256Hex};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let expected = Sha256Hex::parse(
//!     "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
//! )?;
//! let outcome = Download::builder("https://example.org/images/disk.img")
//!     .output("disk.img")
//!     .sha256(expected)
//!     .connections(8)
//!     .on_event(|event| {
//!         if let Event::Progress { bytes, total, .. } = event {
//!             eprintln!("{bytes} of {total:?} bytes");
//!         }
//!     })
//!     .build()?
//!     .run()
//!     .await?;
//! println!("{} {}", outcome.sha256, outcome.path.display());
//! # Ok(())
//! # }
//! ```
//!
//! # Cancellation
//!
//! Two ways, both safe:
//!
//! - Cancel a [`CancelToken`] given to [`DownloadBuilder::cancel_token`]:
//!   connections stop, the resume journal (`<out>.part.state`) records how
//!   far the hash got, and `run` returns an error of kind
//!   [`ErrorKind::Cancelled`].
//! - Drop the future returned by [`Download::run`]: every connection stops at
//!   its next await point, recording the block it was writing, and nothing
//!   the download started runs on (no task, no thread, no open handle).
//!
//! The journal records every block the moment its bytes are written, with a
//! CRC-32 of them; the next run reads each recorded block back and fetches
//! again any that no longer match, so nothing needs flushing on the way.
//!
//! Either way `<out>` is untouched (an unfinished download never writes
//! under the final name) and running the same download again resumes from
//! `<out>.part`, unless the remote changed, in which case it starts over.
//! `examples/embed.rs` shows the whole cycle.
//!
//! # Errors
//!
//! Every failure is an [`Error`] with an [`ErrorKind`]:
//! network and 5xx failures are retried inside the engine and surface only
//! once the retry budget is spent; [`Error::is_retryable`] says whether a
//! later attempt could succeed.

#![warn(missing_docs)]

// The pipeline, in the order data flows through it; each line a group of
// its own, so that rustfmt keeps the order.
mod transport;
// Stage 1: size, ranges and the validator that pins the version.
mod probe;
// Every response is checked against the probe before a byte is written.
mod admit;
// Stage 2: the chunk scheduler.
mod plan;
// Mirrors and their state.
mod sources;
// How many connections.
mod pool;
// Stage 3: the connections, and the one-stream fallback.
mod fetch;
mod stream;
// Progress events.
mod progress;
// Stage 4: the part file.
mod store;
// The engine's own files: the claim on the output, opening the part file.
mod claim;
// Stage 5: streaming SHA-256, and reference piece hashes as pieces land.
mod piece_check;
mod verify;
// The journal, appended block by block, and the resume check.
mod resume;
// Stage 6: publish.
mod commit;
// A mismatch at the end: find the bad stretches, fetch them again.
mod repair;
// Finishing without fetching: an output in place, the cache.
mod reuse;
// The public face and the orchestrator.
mod download;
// Policies and parsers of untrusted input, used by the stages.
mod cache;
mod cancel;
mod checksums;
mod digest;
mod error;
mod event;
mod header;
mod input_list;
mod journal;
mod limit;
mod lookup;
mod metalink;
mod name;
mod pieces;
mod range;
mod retry;
#[cfg(feature = "openpgp")]
mod signature;
mod simplestreams;
mod size;
// The only `unsafe`.
mod sys;

pub use cache::{Cache, CacheLock, Placement};
pub use cancel::CancelToken;
pub use checksums::{
    ChecksumEntry, ChecksumLookupError, HashParseError, Sha256Hex, find_checksum, parse_checksums,
};
pub use digest::{DigestHeader, ServerDigest};
pub use download::{Config, Download, DownloadBuilder, Outcome, ProxyFlavor, RequestHeaders};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventSink};
pub use input_list::{
    InputEntry, InputListError, MAX_LIST_BYTES, MAX_LIST_ENTRIES, MAX_LIST_LINE_BYTES,
    MAX_LIST_URLS, parse_input_list,
};
pub use limit::{ConnectionBudget, RateLimit};
pub use lookup::{fetch_bytes, fetch_text, server_digest};
pub use metalink::{
    Metalink, MetalinkError, MetalinkFile, MetalinkUrl, MetalinkVersion, parse_metalink,
};
pub use name::{NameError, file_name_from_url};
pub use pieces::{PieceAlgorithm, PieceError, PieceHasher, PieceHashes, PieceProgress};
pub use range::ByteRange;
pub use repair::RepairedPiece;
pub use resume::{part_path, state_path};
#[cfg(feature = "openpgp")]
pub use signature::{
    Keyring, SignatureError, Signer, is_cleartext, verify_cleartext, verify_detached,
};
pub use simplestreams::{
    DEFAULT_FTYPES, IMAGE_DOWNLOADS, IndexEntry, Item, Product, ProductVersion, Selection,
    StreamsError, compare_serials, debian_arch, image_downloads_path, mirror_url, parse_index,
    parse_products, select, signed_path,
};
pub use size::{SizeError, format_size, parse_size};
pub use store::WriteMode;
pub use verify::{hash_file, hash_files};

/// Internals for the crate's benches, fuzz targets and tests: not a
/// supported API, and may change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::digest::{
        format_repr_digest, parse_linked_etag, parse_repr_digest, parse_rfc3230_digest,
    };
    pub use crate::header::{
        EntityTag, parse_content_length, parse_etag, parse_http_date, parse_retry_after,
    };
    pub use crate::journal::{Journal, JournalError};
    pub use crate::metalink::{
        DuplicateLink, LOWEST_PRIORITY, MAX_METALINK_BYTES, duplicate_links,
    };
    pub use crate::name::sanitize_file_name;
    pub use crate::plan::{Assignment, Scheduler, TakeOver, TaskId};
    pub use crate::range::{
        ContentRange, ContentRangeError, RangeSet, format_content_range, parse_content_range,
    };
    pub use crate::store::PartFile;
    pub use crate::sys::set_portable;
}
