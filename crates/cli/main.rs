//! The `rangefetch` binary: flags → a core [`Download`], events → a progress
//! bar or JSON lines, errors → the exit codes of CONTRACT.md.

mod args;
mod render;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rangefetch_core::checksums::{find_checksum, parse_checksums};
use rangefetch_core::{CancelToken, Config, Download, ErrorKind, Sha256Hex};
use serde_json::json;

use crate::args::{Cli, Command, GetArgs, HashArgs, VerifyArgs};
use crate::render::{Render, print_json};

/// Exit codes, as CONTRACT.md fixes them.
mod exit {
    pub const DOWNLOAD: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CHECKSUM: u8 = 3;
    pub const IO: u8 = 4;
    pub const INTERRUPTED: u8 = 130;
}

/// A failure on its way to the user: what to print and which code to exit with.
struct Failure {
    code: u8,
    error: anyhow::Error,
    hint: Option<String>,
}

impl Failure {
    fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The whole cause chain on one line.
    fn message(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for cause in self.error.chain() {
            let text = cause.to_string();
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
        }
        parts.join(": ")
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { exit::USAGE } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rangefetch: error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::IO);
        }
    };
    let json = matches!(&cli.command, Command::Get(args) if args.json);
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Get(args) => get(args).await,
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
        Err(failure) => {
            let message = failure.message();
            eprintln!("rangefetch: error: {message}");
            if let Some(hint) = &failure.hint {
                eprintln!("hint: {hint}");
            }
            if json {
                print_json(
                    &json!({"event": "done", "ok": false, "exit_code": failure.code, "error": message,
                                   "class": class_of(failure.code, &failure.error)}),
                );
            }
            ExitCode::from(failure.code)
        }
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

fn class_of(code: u8, error: &anyhow::Error) -> &'static str {
    if let Some(core) = error.downcast_ref::<rangefetch_core::Error>() {
        return core.kind().class();
    }
    match code {
        exit::USAGE => "input",
        exit::CHECKSUM => "integrity",
        exit::IO => "io",
        exit::INTERRUPTED => "cancelled",
        _ => "network",
    }
}

/// Maps an engine error to an exit code and a hint.
fn from_core(error: rangefetch_core::Error, proxy: Option<&str>) -> Failure {
    let kind = error.kind();
    let status = error.status();
    let retryable_network = kind == ErrorKind::Network && error.is_retryable();
    let certificate = kind == ErrorKind::Network && error.to_string().contains("certificate");
    let code = match kind {
        ErrorKind::ChecksumMismatch => exit::CHECKSUM,
        ErrorKind::Io => exit::IO,
        ErrorKind::InvalidInput => exit::USAGE,
        ErrorKind::Cancelled => exit::INTERRUPTED,
        _ => exit::DOWNLOAD,
    };
    let failure = Failure::new(code, error);
    match (kind, status) {
        (ErrorKind::ChecksumMismatch, _) => failure.hint(
            "the received bytes were discarded; check the expected hash, or the mirror you are using",
        ),
        (ErrorKind::HttpStatus(_), Some(404 | 410)) => failure.hint("check the URL: the server has no such file"),
        (ErrorKind::HttpStatus(_), Some(407)) => failure.hint(match proxy {
            Some(proxy) => format!("proxy {proxy} wants credentials: put them in the proxy URL (http://user:password@host:port)"),
            None => "a proxy on the way wants credentials: set --proxy http://user:password@host:port".to_owned(),
        }),
        // Over a plain-HTTP proxy the proxy itself may answer 401 to wrong
        // credentials; name both suspects.
        (ErrorKind::HttpStatus(_), Some(401)) if proxy.is_some() => failure.hint(format!(
            "authentication failed: check the credentials for proxy {}, or whether the server needs its own",
            proxy.unwrap_or_default()
        )),
        (ErrorKind::HttpStatus(_), Some(403 | 401)) => {
            failure.hint("the server refused access; a signed URL may have expired")
        }
        _ if certificate => failure.hint("pass --ca-cert PEM for a private CA or a TLS-inspecting proxy"),
        _ if retryable_network => match proxy {
            Some(proxy) => failure.hint(format!("the download went through proxy {proxy}; check that it is reachable")),
            None => failure.hint("check the network; behind a proxy, set --proxy or HTTPS_PROXY"),
        },
        (ErrorKind::Io, _) => failure.hint("check free space and permissions of the output directory"),
        _ => failure,
    }
}

/// The proxy to use: `--proxy`, else the environment, honouring NO_PROXY.
fn proxy_for(args: &GetArgs) -> Option<String> {
    if args.proxy.is_some() {
        return args.proxy.clone();
    }
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let first = args.urls.first()?;
    let https = first.starts_with("https:");
    let proxy = if https {
        env(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
    } else {
        env(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
    }?;
    let host = first.split("://").nth(1)?.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?;
    let host = host.trim_start_matches('[').split(']').next()?;
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    if let Some(no_proxy) = env(&["NO_PROXY", "no_proxy"]) {
        let excluded = no_proxy
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .any(|pattern| {
                pattern == "*" || {
                    let pattern = pattern.trim_start_matches('.');
                    host == pattern || host.ends_with(&format!(".{pattern}"))
                }
            });
        if excluded {
            return None;
        }
    }
    Some(proxy)
}

/// Redacts `user:pass@` from a proxy URL for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let host = rest.rsplit('@').next().unwrap_or(rest);
            format!("{scheme}://***@{host}")
        }
        _ => url.to_owned(),
    }
}

async fn read_checksums(source: &str, config: &Config) -> Result<String, Failure> {
    if source.starts_with("http://") || source.starts_with("https://") {
        rangefetch_core::download::fetch_text(source, config, 16 << 20)
            .await
            .map_err(|e| from_core(e, None))
    } else {
        std::fs::read_to_string(source)
            .with_context(|| format!("cannot read checksum file {source}"))
            .map_err(|e| Failure::new(exit::USAGE, e))
    }
}

async fn expected_from_sums(
    source: &str,
    file_name: &str,
    config: &Config,
) -> Result<Sha256Hex, Failure> {
    let text = read_checksums(source, config).await?;
    let entries = parse_checksums(&text);
    find_checksum(&entries, file_name)
        .with_context(|| format!("checksum file {source}"))
        .map_err(|e| Failure::new(exit::USAGE, e))
}

fn config_for(args: &GetArgs) -> Result<Config, Failure> {
    let mut config = Config::default();
    config.connections = usize::from(args.connections);
    config.chunk_size = args.chunk_size;
    config.retries = args.retries;
    config.stall_timeout = Duration::from_secs_f64(args.stall_timeout);
    config.connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    config.proxy = proxy_for(args);
    for path in &args.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read CA certificate {}", path.display()))
            .map_err(|e| Failure::new(exit::USAGE, e))?;
        config.ca_certs_pem.push(pem);
    }
    Ok(config)
}

async fn get(args: GetArgs) -> Result<(), Failure> {
    let config = config_for(&args)?;
    let proxy_shown = config.proxy.as_deref().map(redact);
    let mut builder = Download::builder(args.urls[0].clone());
    for mirror in &args.urls[1..] {
        builder = builder.mirror(mirror.clone());
    }
    if let Some(output) = &args.output {
        builder = builder.output(output.clone());
    }
    let expected = match (&args.expected.sha256, &args.expected.sha256_sums) {
        (Some(hash), _) => Some(*hash),
        (None, Some(sums)) => {
            let name = rangefetch_core::name::file_name_from_url(&args.urls[0])
                .context("cannot tell which checksum entry applies")
                .map_err(|e| Failure::new(exit::USAGE, e))?;
            Some(expected_from_sums(sums, &name, &config).await?)
        }
        (None, None) => None,
    };
    if let Some(hash) = expected {
        builder = builder.sha256(hash);
    }
    if let Some(dir) = &args.cache_dir {
        let cache = rangefetch_core::cache::Cache::open(dir, args.cache_max_size)
            .with_context(|| format!("cannot open cache directory {}", dir.display()))
            .map_err(|e| Failure::new(exit::IO, e))?;
        builder = builder.cache(cache);
    }
    let render = Arc::new(Render::new(args.json, args.quiet));
    let sink = Arc::clone(&render);
    let cancel = CancelToken::new();
    let download = builder
        .config(config)
        .cancel_token(cancel.clone())
        .on_event(move |event| sink.event(&event))
        .build()
        .map_err(|e| from_core(e, None))?;
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
    let signals = tokio::spawn(watch_signals(cancel));
    let outcome = download.run().await;
    signals.abort();
    render.finish();
    let outcome = outcome.map_err(|e| match e.kind() {
        ErrorKind::Cancelled => Failure::new(exit::INTERRUPTED, anyhow::anyhow!("interrupted"))
            .hint(format!(
                "partial data is kept in {}; run the same command again to resume",
                part.display()
            )),
        _ => from_core(e, proxy_shown.as_deref()),
    })?;
    if args.json {
        let mut summary = json!({
            "event": "done", "ok": true, "path": outcome.path, "bytes": outcome.bytes,
            "sha256": outcome.sha256.to_string(), "verified": outcome.verified,
            "elapsed_s": outcome.elapsed.as_secs_f64(), "retries": outcome.retries,
            "resumed_bytes": outcome.resumed_bytes, "connections": outcome.connections,
            "already_present": outcome.already_present, "from_cache": outcome.from_cache,
        });
        render.stamp(&mut summary);
        print_json(&summary);
    } else if !args.quiet {
        let secs = outcome.elapsed.as_secs_f64().max(1e-9);
        let status = if outcome.already_present {
            "already present, verified"
        } else if outcome.from_cache {
            "from the verified cache"
        } else if outcome.verified {
            "verified"
        } else {
            "not verified: no expected hash given"
        };
        let resumed = if outcome.resumed_bytes > 0 && !outcome.already_present {
            format!(
                ", {} bytes resumed from an earlier run",
                outcome.resumed_bytes
            )
        } else {
            String::new()
        };
        eprintln!(
            "{}: {} bytes in {:.2} s ({:.1} MB/s), {} connections, {} retries{resumed}, sha256 {} ({status})",
            outcome.path.display(),
            outcome.bytes,
            secs,
            outcome.bytes.saturating_sub(outcome.resumed_bytes) as f64 / secs / 1e6,
            outcome.connections,
            outcome.retries,
            outcome.sha256,
        );
    }
    if !args.json {
        // Always a hash, even without an expected one (CONTRACT.md, 4).
        println!("{}  {}", outcome.sha256, outcome.path.display());
    }
    Ok(())
}

/// First SIGINT or SIGTERM: cancel (the engine flushes and records its
/// progress). A second one: exit at once; the journal is consistent anyway,
/// since it only ever names flushed bytes.
async fn watch_signals(cancel: CancelToken) {
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

async fn hash_blocking(paths: Vec<std::path::PathBuf>) -> Vec<std::io::Result<Sha256Hex>> {
    tokio::task::spawn_blocking(move || rangefetch_core::verify::hash_files(&paths))
        .await
        .unwrap_or_else(|e| vec![Err(std::io::Error::other(e))])
}

async fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let expected = match (&args.expected.sha256, &args.expected.sha256_sums) {
        (Some(hash), _) => *hash,
        (None, Some(sums)) => {
            let name = args
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            expected_from_sums(sums, &name, &Config::default()).await?
        }
        (None, None) => {
            return Err(Failure::new(
                exit::USAGE,
                anyhow::anyhow!("give --sha256 or --sha256-sums"),
            ));
        }
    };
    let digest = hash_blocking(vec![args.path.clone()])
        .await
        .pop()
        .unwrap_or_else(|| Err(std::io::Error::other("no result")))
        .with_context(|| format!("cannot read {}", args.path.display()))
        .map_err(|e| Failure::new(exit::IO, e))?;
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
    // to print, so each appears exactly once.
    let mut last_error: Option<anyhow::Error> = None;
    for (path, result) in args.paths.iter().zip(results) {
        match result {
            Ok(digest) => println!("{digest}  {}", path.display()),
            Err(error) => {
                if let Some(previous) = last_error.take() {
                    eprintln!("rangefetch: error: {previous}");
                }
                last_error = Some(anyhow::anyhow!("cannot read {}: {error}", path.display()));
            }
        }
    }
    match last_error {
        Some(error) => Err(Failure::new(exit::IO, error)),
        None => Ok(()),
    }
}
