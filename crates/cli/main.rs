//! The `rangefetch` binary: parse the command line, start a runtime, run
//! one command (`get`, `image`, `verify`, `hash`, `completions`, `man`) and exit with
//! the code docs/CONTRACT.md gives its outcome.
//!
//! Beside it, one concern per file: `args` (the flags), `settings` (flags
//! plus environment → the core `Config`; the only reader of the
//! environment), `batch` (`get -i`: many files under one connection
//! budget), `checksum_file` (the expected hash), `image` (a cloud
//! image found by name in a simplestreams tree), `render` (events and
//! summaries), `exit` (exit codes, error lines, hints), `signals` (Ctrl-C).

mod args;
mod batch;
mod checksum_file;
mod exit;
mod image;
mod metalink_input;
mod render;
mod settings;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rangefetch_core::{CancelToken, Download, ErrorKind, Sha256Hex};

use crate::args::{Cli, Command, GetArgs, HashArgs, Transfer, VerifyArgs};
use crate::exit::Failure;
use crate::render::Render;

/// How much nicer than the process the runtime's threads run: the engine
/// starts its hasher threads from the thread that awaits the download (here
/// the main thread, at the process's priority), and on a fast link the
/// hash is the one sequential job. With the connections at the same
/// priority, copying into the page cache took the hasher's core often
/// enough that it finished 0.3-0.9 s after the last byte (2 GiB from
/// loopback nginx into tmpfs on two cores, 2.4 s median); five steps nicer,
/// the hasher keeps up and the whole download takes 2.15 s. Where the CPU
/// is not the limit this changes nothing, and another process's work still
/// gets its fair share against rangefetch's.
#[cfg(target_os = "linux")]
const RUNTIME_NICENESS: libc::c_int = 5;

/// The priority for the runtime's threads: [`RUNTIME_NICENESS`] steps below
/// the calling thread's (the main thread's, before the runtime exists). An
/// absolute value, so that a blocking thread a runtime thread spawns (and
/// which inherits its priority) is not lowered twice. `None` where the nice
/// value is per process (lowering it would slow the hasher too) or cannot
/// be read.
#[cfg(target_os = "linux")]
fn runtime_priority() -> Option<libc::c_int> {
    // SAFETY: getpriority(2) only reads; -1 is a valid answer, so errno,
    // cleared first, tells an error apart.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let failed = nice == -1 && std::io::Error::last_os_error().raw_os_error() != Some(0);
    (!failed).then(|| (nice + RUNTIME_NICENESS).min(19))
}

#[cfg(not(target_os = "linux"))]
fn runtime_priority() -> Option<i32> {
    None
}

/// Puts the calling thread at `priority` (Linux: per thread). A failure
/// leaves the thread where it was, which is fine.
#[cfg(target_os = "linux")]
fn set_thread_priority(priority: libc::c_int) {
    // SAFETY: setpriority(2) on this thread's own id changes only its
    // scheduling priority.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, priority) };
}

#[cfg(not(target_os = "linux"))]
fn set_thread_priority(_priority: i32) {}

fn main() -> ExitCode {
    render::start_clock();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return exit::parse_error(&error, args::asks_for_json(std::env::args_os())),
    };
    let json = match &cli.command {
        Command::Get(args) => args.transfer.json,
        Command::Image(args) => args.transfer.json,
        _ => false,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Poll for I/O every 7 scheduler ticks instead of 61: part-file writes
    // hold a worker for a few hundred microseconds each, and with the
    // default a connection whose socket filled waited that long many times
    // over, fell behind its peers, and had its range stolen with what it had
    // in flight thrown away (512 MiB from loopback nginx, 16 runs each:
    // bytes served up to 1.033x the file with 61, at most 1.010x with 7).
    builder.event_interval(7);
    if let Some(priority) = runtime_priority() {
        builder.on_thread_start(move || set_thread_priority(priority));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let error = anyhow::Error::new(error).context("cannot start the async runtime");
            return Failure::new(exit::IO, error).report(json);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Get(args) => match args.input_file.clone() {
                Some(list) => batch::run(&list, &args).await,
                None => get(args).await,
            },
            Command::Image(args) => image::image(args).await,
            Command::Verify(args) => verify(args).await,
            Command::Hash(args) => hash(args).await,
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut command, "rangefetch", &mut script);
                write_stdout(&script)
            }
            Command::Man => {
                let command = <Cli as clap::CommandFactory>::command();
                let mut page = Vec::new();
                clap_mangen::Man::new(command)
                    .render(&mut page)
                    .context("cannot render the manual page")
                    .map_err(|e| Failure::new(exit::IO, e))?;
                write_stdout(&page)
            }
        }
    });
    // Do not wait for connections still draining after an error.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(json),
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::new(
            exit::IO,
            anyhow::Error::new(error).context("cannot write to stdout"),
        )),
        _ => Ok(()),
    }
}

async fn get(mut args: GetArgs) -> Result<(), Failure> {
    match get_once(&mut args, false).await {
        // The URL answered with a Metalink (by its Content-Type): download
        // the file it describes instead, once.
        Err(failure) if failure.serves_metalink() => get_once(&mut args, true).await,
        other => other,
    }
}

async fn get_once(args: &mut GetArgs, served_metalink: bool) -> Result<(), Failure> {
    // A Metalink operand rewrites the URLs and output to its file's.
    let (settings, metalink) = metalink_input::settle(args, served_metalink).await?;
    let mut builder = Download::builder(args.urls[0].clone());
    for mirror in &args.urls[1..] {
        builder = builder.mirror(mirror.clone());
    }
    if let Some(output) = &args.output {
        builder = builder.output(output.clone());
    }
    let render = Arc::new(Render::new(
        args.transfer.json,
        args.transfer.quiet,
        settings::color(),
    ));
    let mut provenance = render::Provenance::default();
    for message in metalink.iter().flat_map(|m| m.notices()) {
        render.event(&rangefetch_core::Event::Notice { message });
    }
    let expectation =
        checksum_file::for_url(&args.expected, &args.trust, &args.urls[0], &settings.config)
            .await?;
    if let Some((signer, file)) = expectation.as_ref().and_then(|e| e.signed.as_ref()) {
        render.event(&rangefetch_core::Event::Notice {
            message: format!("checksum file {file}: good signature by {signer}"),
        });
        provenance.signed_by = Some(signer.fingerprint.clone());
        provenance.signed_file = Some(file.clone());
    }
    let mut expected = expectation.map(|e| e.sha256);
    if let Some(metalink) = &metalink {
        expected = metalink.expected(expected)?;
    }
    if expected.is_none() && args.trust_server_digest {
        expected = trusted_server_digest(&args.urls[0], &settings, &render).await?;
        provenance.from_server_digest = expected.is_some();
    }
    if let Some(hash) = expected {
        builder = builder.sha256(hash);
    }
    if let Some(pieces) = metalink.as_ref().and_then(|m| m.file.pieces.clone()) {
        builder = builder.piece_hashes(pieces);
    }
    let size = metalink.as_ref().and_then(|m| m.size());
    download(builder, &args.transfer, settings, render, &provenance, size).await
}

/// Runs a download the way `get` does — the cache, the output directory
/// check, Ctrl-C, the summary — once its URLs and expected hash are set.
/// `size` is the total the file must have, when the publisher states it: a
/// download whose probe finds another is stopped as an integrity failure.
async fn download(
    mut builder: rangefetch_core::DownloadBuilder,
    transfer: &Transfer,
    settings: settings::GetSettings,
    render: Arc<Render>,
    provenance: &render::Provenance,
    size: Option<u64>,
) -> Result<(), Failure> {
    if let Some(dir) = &settings.cache_dir {
        let cache = rangefetch_core::Cache::open(dir, transfer.cache_max_size)
            .with_context(|| format!("cannot open cache directory {}", dir.display()))
            .map_err(|e| Failure::new(exit::IO, e))?;
        builder = builder.cache(cache);
    }
    let sink = Arc::clone(&render);
    let cancel = CancelToken::new();
    let wrong_size = Arc::new(std::sync::Mutex::new(None::<u64>));
    let (size_cancel, size_seen) = (cancel.clone(), Arc::clone(&wrong_size));
    let download = builder
        .config(settings.config)
        .cancel_token(cancel.clone())
        .on_event(move |event| {
            if let (
                Some(size),
                rangefetch_core::Event::Started {
                    total: Some(total), ..
                },
            ) = (size, &event)
                && *total != size
            {
                *size_seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(*total);
                size_cancel.cancel();
            }
            sink.event(&event);
        })
        .build()
        .map_err(|e| exit::from_core(e, None))?;
    if let Some(parent) = download
        .output()
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.is_dir())
    {
        return Err(Failure::new(
            exit::IO,
            anyhow::anyhow!("output directory {} does not exist", parent.display()),
        )
        .hint("create it first, or choose another path with -o"));
    }
    let part = rangefetch_core::part_path(download.output());
    let signals = tokio::spawn(signals::watch(cancel));
    let outcome = download.run().await;
    signals.abort();
    render.finish();
    let size_mismatch = |size: u64, found: u64| {
        Failure::new(
            exit::CHECKSUM,
            anyhow::anyhow!(
                "size mismatch: the catalogue states {size} bytes, the server has {found}"
            ),
        )
        .hint("the file on the mirror is not the one the catalogue describes; try another mirror")
    };
    let found = *wrong_size
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let (Some(size), Some(found)) = (size, found) {
        return Err(size_mismatch(size, found));
    }
    let outcome = outcome.map_err(|e| match e.kind() {
        ErrorKind::Cancelled => exit::interrupted(&part),
        _ => exit::from_core(e, settings.proxy_shown.as_deref()),
    })?;
    if let Some(size) = size.filter(|size| *size != outcome.bytes) {
        return Err(size_mismatch(size, outcome.bytes));
    }
    render.done(&outcome, provenance);
    Ok(())
}

/// `--trust-server-digest` without an expected hash: the digest the server
/// states for the file becomes the expected hash, learnt before the
/// download so that an output in place or a cached copy is recognised.
async fn trusted_server_digest(
    url: &str,
    settings: &settings::GetSettings,
    render: &Render,
) -> Result<Option<Sha256Hex>, Failure> {
    let digest = rangefetch_core::server_digest(url, &settings.config)
        .await
        .map_err(|e| exit::from_core(e, settings.proxy_shown.as_deref()))?;
    let message = match &digest {
        Some(digest) => format!(
            "taking sha256 {} from the server's {} header as the expected hash (--trust-server-digest)",
            digest.sha256, digest.header
        ),
        None => {
            "--trust-server-digest: the server states no digest of the file, so it is not verified"
                .to_owned()
        }
    };
    render.event(&rangefetch_core::Event::Notice { message });
    Ok(digest.map(|digest| digest.sha256))
}

/// Hashes local files off the async runtime.
async fn hash_blocking(paths: Vec<PathBuf>) -> Vec<std::io::Result<Sha256Hex>> {
    tokio::task::spawn_blocking(move || rangefetch_core::hash_files(&paths))
        .await
        .unwrap_or_else(|e| vec![Err(std::io::Error::other(e))])
}

async fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let expectation = checksum_file::for_path(
        &args.expected,
        &args.trust,
        &args.path,
        &settings::for_verify(),
    )
    .await?;
    if let Some((signer, file)) = &expectation.signed {
        eprintln!("rangefetch: checksum file {file}: good signature by {signer}");
    }
    let expected = expectation.sha256;
    let digest = hash_blocking(vec![args.path.clone()])
        .await
        .pop()
        .unwrap_or_else(|| Err(std::io::Error::other("no result")))
        .map_err(|error| exit::local_input(&args.path, error))?;
    if digest != expected {
        return Err(Failure::new(
            exit::CHECKSUM,
            anyhow::anyhow!(
                "{}: checksum mismatch: expected sha256 {expected}, got {digest}",
                args.path.display()
            ),
        ));
    }
    println!("{}: OK", args.path.display());
    Ok(())
}

async fn hash(args: HashArgs) -> Result<(), Failure> {
    let results = hash_blocking(args.paths.clone()).await;
    // Every unreadable file gets its line; the last one is left for `main`
    // to print, so each appears exactly once, and its code is the exit code.
    let mut last_failure: Option<Failure> = None;
    for (path, result) in args.paths.iter().zip(results) {
        match result {
            Ok(digest) => println!("{digest}  {}", path.display()),
            Err(error) => {
                if let Some(previous) = last_failure.take() {
                    let _ = previous.report(false);
                }
                last_failure = Some(exit::local_input(path, error));
            }
        }
    }
    match last_failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}
