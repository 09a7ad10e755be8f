//! rangefetch-core: segmented, resumable, verified HTTP downloads.
//!
//! A [`Download`] splits a remote file into byte ranges, fetches them over
//! several connections with per-range retries, writes them into
//! `<out>.part`, hashes the completed prefix with SHA-256 *while* the rest
//! arrives, and publishes `<out>` by an atomic rename only once every byte is
//! written, flushed and — when a hash was given — verified.
//!
//! The pipeline, one module per stage: [`probe`] (size, ranges, validator)
//! → [`plan`] (the chunk scheduler) → `fetch` (the connection pool) →
//! [`store`] (the part file) → [`verify`] (streaming SHA-256) → commit (in
//! [`download`]). Pure parsers of untrusted input live in [`range`],
//! [`header`], [`checksums`], [`name`] and [`size`].
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
//!   connections stop, the part file is flushed, the resume journal
//!   (`<out>.part.state`) records what is on disk, and `run` returns an
//!   error of kind [`ErrorKind::Cancelled`].
//! - Drop the future returned by [`Download::run`]: every connection stops at
//!   its next await point. The journal then holds the last periodic
//!   checkpoint (taken every 25 ms or so), which only ever names bytes that
//!   were flushed before it was written.
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
pub mod probe;
// Every response is checked against the probe before a byte is written.
mod admit;
// Stage 2: the chunk scheduler.
pub mod plan;
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
pub mod store;
// Stage 5: streaming SHA-256.
pub mod verify;
// The journal's checkpoints and the resume decision.
mod resume;
// Stage 6: publish.
mod commit;
// Finishing without fetching: an output in place, the cache.
mod reuse;
// The public face and the orchestrator.
pub mod download;
// Policies and parsers of untrusted input, used by the stages.
pub mod cache;
pub mod cancel;
pub mod checksums;
pub mod error;
pub mod event;
pub mod header;
pub mod journal;
pub mod name;
pub mod range;
pub mod retry;
pub mod size;
// The only `unsafe`.
#[doc(hidden)]
pub mod sys;

pub use cancel::CancelToken;
pub use checksums::Sha256Hex;
pub use download::{Config, Download, DownloadBuilder, Outcome};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventSink};
pub use resume::{part_path, state_path};
pub use store::WriteMode;
pub use transport::fetch_text;
