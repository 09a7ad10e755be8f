//! What a VM manager would copy: download an image with progress, cancel on
//! Ctrl-C, and resume on the next run.
//!
//! ```text
//! cargo run -p rangefetch-core --example embed -- URL OUTPUT [SHA256]
//! ```
//!
//! Run it, press Ctrl-C half-way, run it again: the second run fetches only
//! what the first did not record as written.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rangefetch_core::{CancelToken, Download, ErrorKind, Event, Sha256Hex};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(output)) = (args.next(), args.next()) else {
        eprintln!("usage: embed URL OUTPUT [SHA256]");
        std::process::exit(2);
    };
    let expected = args.next().map(|hex| Sha256Hex::parse(&hex)).transpose()?;

    // Cancellation: the token is cheap to clone; cancelling it makes the
    // download stop its connections, flush, record its progress and return
    // `ErrorKind::Cancelled`, leaving `<OUTPUT>.part` for the next run.
    let cancel = CancelToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });

    // Progress: events arrive on engine threads; keep the callback short.
    let last_percent = Arc::new(AtomicU64::new(u64::MAX));
    let mut builder = Download::builder(url)
        .output(&output)
        .connections(8)
        .cancel_token(cancel)
        .on_event(move |event| match event {
            Event::Started {
                total,
                resumed_bytes,
                ..
            } if resumed_bytes > 0 => {
                eprintln!("resuming: {resumed_bytes} of {total:?} bytes already here");
            }
            Event::Progress {
                bytes,
                total: Some(total),
                rate_bps,
                ..
            } if total > 0 => {
                let percent = bytes * 100 / total;
                if last_percent.swap(percent, Ordering::Relaxed) != percent {
                    eprint!("\r{percent:3}%  {:.1} MB/s ", rate_bps as f64 / 1e6);
                    let _ = std::io::stderr().flush();
                }
            }
            Event::Retry { message, delay, .. } => eprintln!("\nretrying in {delay:?}: {message}"),
            Event::RemoteChanged { reason } => eprintln!("\n{reason}"),
            _ => {}
        });
    if let Some(hash) = expected {
        builder = builder.sha256(hash);
    }
    match builder.build()?.run().await {
        Ok(outcome) => {
            eprintln!();
            println!(
                "{}  {} (verified: {})",
                outcome.sha256,
                outcome.path.display(),
                outcome.verified
            );
            Ok(())
        }
        Err(error) if error.kind() == ErrorKind::Cancelled => {
            eprintln!("\ncancelled; run again to resume");
            std::process::exit(130);
        }
        Err(error) if error.kind() == ErrorKind::ChecksumMismatch => {
            // The part file is gone: these bytes were not the image asked for.
            eprintln!("\n{error}");
            std::process::exit(3);
        }
        Err(error) => {
            // Retryable or not, the partial data is kept for the next run.
            eprintln!("\ndownload failed ({}): {error}", error.kind().class());
            std::process::exit(1);
        }
    }
}
