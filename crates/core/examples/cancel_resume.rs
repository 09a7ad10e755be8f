//! Cancel a download half-way and resume it: the first run cancels itself once half the
//! file is in (driven by its own progress events), says how much it kept, and a second run
//! of the same download, with a new token, fetches only the rest.
//!
//! ```text
//! cargo run -p rangefetch-core --example cancel_resume -- URL OUTPUT [SHA256]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rangefetch_core::{CancelToken, Config, Download, ErrorKind, Event, Sha256Hex};

fn download(
    url: &str,
    output: &str,
    expected: Option<Sha256Hex>,
    cancel: CancelToken,
    cancel_at_half: bool,
) -> Result<Download, rangefetch_core::Error> {
    let fired = Arc::new(AtomicBool::new(false));
    let token = cancel.clone();
    let mut builder = Download::builder(url)
        .output(output)
        .config(Config::default().chunk_size(1 << 20))
        .cancel_token(cancel)
        .on_event(move |event| {
            if let Event::Progress {
                bytes,
                total: Some(total),
                ..
            } = event
                && cancel_at_half
                && bytes * 2 >= total
                && !fired.swap(true, Ordering::Relaxed)
            {
                token.cancel();
            }
        });
    if let Some(hash) = expected {
        builder = builder.sha256(hash);
    }
    builder.build()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(output)) = (args.next(), args.next()) else {
        eprintln!("usage: cancel_resume URL OUTPUT [SHA256]");
        std::process::exit(2);
    };
    let expected = args.next().map(|hex| Sha256Hex::parse(&hex)).transpose()?;

    let first = download(&url, &output, expected, CancelToken::new(), true)?;
    let kept = match first.run().await {
        Err(error) if error.kind() == ErrorKind::Cancelled => error.kept_bytes().unwrap_or(0),
        Err(error) => return Err(error.into()),
        Ok(outcome) => {
            // A fast link can finish before the cancel lands.
            println!("finished before the cancel: {}", outcome.sha256);
            return Ok(());
        }
    };
    println!("cancelled, kept {kept} bytes");

    // A token is one-shot: the resume gets a new one.
    let second = download(&url, &output, expected, CancelToken::new(), false)?;
    let outcome = second.run().await?;
    println!(
        "resumed {} bytes, finished {} ({} bytes)",
        outcome.resumed_bytes, outcome.sha256, outcome.bytes
    );
    Ok(())
}
