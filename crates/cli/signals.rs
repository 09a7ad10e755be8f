//! SIGINT and SIGTERM during `get`: the first cancels the download, which
//! flushes and records its progress for a resume; the second exits at once.

use rangefetch_core::CancelToken;

use crate::exit;

/// Waits for signals and acts on them; abort the task once the download
/// is over. A second signal needs no cleanup: the journal only ever names
/// flushed bytes, so it is consistent at any moment.
pub async fn watch(cancel: CancelToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    cancel.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("rangefetch: interrupted twice; exiting now");
    std::process::exit(i32::from(exit::INTERRUPTED));
}
