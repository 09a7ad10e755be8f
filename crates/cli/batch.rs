//! `get -i LIST`: every file a list names, `-j` of them at once, under one
//! connection budget (`-c` in total, `--max-per-host` to any one host) and
//! one `--limit-rate`. Each file is an ordinary download with its own part
//! file, journal and verification, so a rerun resumes each file where it
//! stopped and finds the finished ones in place; the list is parsed by
//! core's `input_list`.
//!
//! The exit code is the worst of the files', in this order (docs/CONTRACT.md):
//! interrupted (130) > integrity (3) > local I/O (4) > bad input (2) >
//! download (1) > success (0).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rangefetch_core::{
    Cache, CancelToken, Config, ConnectionBudget, Download, ErrorKind, InputEntry, MAX_LIST_BYTES,
    parse_input_list,
};
use tokio::sync::Semaphore;

use crate::args::GetArgs;
use crate::exit::{self, Failure};
use crate::render::{Batch, FileFailure, FileResult};
use crate::{settings, signals};

/// Most connections to one host when `--max-per-host` is not given: the
/// `-c` value, but no more than this.
const DEFAULT_MAX_PER_HOST: usize = 16;

/// What every file's task shares.
struct Shared {
    config: Config,
    cache: Option<Cache>,
    cancel: CancelToken,
    /// One permit per file running (`-j`).
    jobs: Semaphore,
    batch: Batch,
    proxy_shown: Option<String>,
    /// `--proxy`; without it each file's proxy comes from the environment,
    /// for its own URL.
    proxy_flag: Option<String>,
}

/// Runs the batch `list` names, with the other flags of `args`.
pub async fn run(list: &Path, args: &GetArgs) -> Result<(), Failure> {
    if args.trust_server_digest {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("--trust-server-digest does not apply to -i"),
        )
        .hint("give each file's hash in the list: `HASH  URL [PATH]`"));
    }
    let settings = settings::for_get(args)?;
    let text = read_list(list).await?;
    let entries = parse_input_list(&text).map_err(|error| {
        Failure::new(
            exit::USAGE,
            anyhow::Error::new(error).context(format!("cannot use the list {}", shown(list))),
        )
        .hint("each line is `HASH  URL [PATH]` or `URL [PATH]`; mirrors follow the URL, tab-separated")
    })?;
    let connections = usize::from(args.transfer.connections);
    let per_host = args
        .max_per_host
        .map_or(connections.min(DEFAULT_MAX_PER_HOST), usize::from);
    let mut config = settings.config;
    // `connections` stays each file's own ceiling: a file alone may use
    // the whole budget.
    config.budget = Some(ConnectionBudget::new(connections, per_host));
    let cache = match &settings.cache_dir {
        Some(dir) => Some(Cache::open(dir, args.transfer.cache_max_size).map_err(|e| {
            Failure::new(
                exit::IO,
                anyhow::Error::new(e)
                    .context(format!("cannot open cache directory {}", dir.display())),
            )
        })?),
        None => None,
    };
    let shared = Arc::new(Shared {
        config,
        cache,
        cancel: CancelToken::new(),
        jobs: Semaphore::new(usize::from(args.jobs)),
        batch: Batch::new(
            args.transfer.json,
            args.transfer.quiet,
            settings::color(),
            entries.len(),
        ),
        proxy_shown: settings.proxy_shown,
        proxy_flag: args.transfer.proxy.clone(),
    });
    let started = Instant::now();
    let signals = tokio::spawn(signals::watch(shared.cancel.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    let n_files = entries.len();
    let placeholders: Vec<(usize, String, String)> = entries
        .iter()
        .map(|entry| (entry.line, entry.output.clone(), entry.shown_url()))
        .collect();
    for (file_idx, entry) in entries.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        tasks.spawn(async move { (file_idx, one_file(entry, &shared).await) });
    }
    let mut results: Vec<Option<FileResult>> = (0..n_files).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((file_idx, result)) = joined {
            results[file_idx] = Some(result);
        }
    }
    signals.abort();
    // A task that panicked left no result: its file failed.
    let results: Vec<FileResult> = results
        .into_iter()
        .zip(placeholders)
        .map(|(result, (line, path, url))| {
            result.unwrap_or(FileResult {
                line,
                path,
                url,
                outcome: Err(FileFailure {
                    code: exit::DOWNLOAD,
                    class: "network",
                    error: "the download's task ended without a result".to_owned(),
                }),
            })
        })
        .collect();
    shared.batch.summary(&results, started.elapsed());
    outcome(&results)
}

/// The batch's result: `Ok` when every file succeeded, else the worst
/// file's code with a line that counts the failures and, with `--json`,
/// every file's result in the `done` line.
fn outcome(results: &[FileResult]) -> Result<(), Failure> {
    let failures: Vec<&FileFailure> = results
        .iter()
        .filter_map(|r| r.outcome.as_ref().err())
        .collect();
    let Some(worst) = failures.iter().max_by_key(|f| severity(f.code)) else {
        return Ok(());
    };
    let mut fields = serde_json::Map::new();
    fields.insert(
        "files".into(),
        results.iter().map(FileResult::to_json).collect(),
    );
    fields.insert("n_files".into(), results.len().into());
    fields.insert("failed".into(), failures.len().into());
    let failure = Failure::new(
        worst.code,
        anyhow::anyhow!("{} of {} files failed", failures.len(), results.len()),
    )
    .json_fields(fields);
    Err(if worst.code == exit::INTERRUPTED {
        failure.hint("run the same command again: each file resumes where it stopped")
    } else {
        failure.hint("the lines above name each failure; a rerun fetches only what is missing")
    })
}

/// The order of exit codes in a batch: the largest is the batch's code.
/// An interruption wins (the batch is incomplete by request); a wrong
/// hash must never hide behind another failure; a local I/O error (a full
/// disk) needs the machine fixed before a rerun helps; bad input needs the
/// list fixed; a download failure may pass by itself.
fn severity(code: u8) -> u8 {
    match code {
        exit::INTERRUPTED => 5,
        exit::CHECKSUM => 4,
        exit::IO => 3,
        exit::USAGE => 2,
        0 => 0,
        _ => 1,
    }
}

/// One file: waits for its turn, downloads, reports.
async fn one_file(entry: InputEntry, shared: &Shared) -> FileResult {
    let mut result = FileResult {
        line: entry.line,
        path: entry.output.clone(),
        url: entry.shown_url(),
        outcome: Err(FileFailure {
            code: exit::INTERRUPTED,
            class: "cancelled",
            error: "interrupted before it started".to_owned(),
        }),
    };
    let turn = tokio::select! {
        biased;
        () = shared.cancel.cancelled() => None,
        turn = shared.jobs.acquire() => turn.ok(),
    };
    if turn.is_none() || shared.cancel.is_cancelled() {
        shared.batch.finished(None, &result);
        return result;
    }
    let view = Arc::new(shared.batch.file(entry.line, &entry.output));
    result.outcome = download(&entry, shared, Arc::clone(&view)).await;
    shared.batch.finished(Some(&view), &result);
    result
}

async fn download(
    entry: &InputEntry,
    shared: &Shared,
    view: Arc<crate::render::FileView>,
) -> Result<rangefetch_core::Outcome, FileFailure> {
    let output = PathBuf::from(&entry.output);
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|error| {
            failed(&Failure::new(
                exit::IO,
                anyhow::Error::new(error)
                    .context(format!("cannot create directory {}", parent.display())),
            ))
        })?;
    }
    let mut builder = Download::builder(entry.urls[0].clone()).output(output);
    for mirror in &entry.urls[1..] {
        builder = builder.mirror(mirror.clone());
    }
    if let Some(sha256) = entry.sha256 {
        builder = builder.sha256(sha256);
    }
    if let Some(cache) = &shared.cache {
        builder = builder.cache(cache.clone());
    }
    let mut config = shared.config.clone();
    config.proxy = settings::proxy_for_url(shared.proxy_flag.as_ref(), &entry.urls[0]);
    let download = builder
        .config(config)
        .cancel_token(shared.cancel.clone())
        .on_event(move |event| view.event(&event))
        .build()
        .map_err(|e| failed(&exit::from_core(e, shared.proxy_shown.as_deref())))?;
    download.run().await.map_err(|e| {
        failed(&match e.kind() {
            ErrorKind::Cancelled => {
                exit::interrupted(&rangefetch_core::part_path(Path::new(&entry.output)))
            }
            _ => exit::from_core(e, shared.proxy_shown.as_deref()),
        })
    })
}

fn failed(failure: &Failure) -> FileFailure {
    FileFailure {
        code: failure.code(),
        class: failure.class(),
        error: failure.message(),
    }
}

/// The list, from a file or (`-`) standard input, at most one byte more
/// than the parser takes (so that a larger list is refused, not cut).
async fn read_list(list: &Path) -> Result<Vec<u8>, Failure> {
    let list = list.to_owned();
    let shown_list = shown(&list);
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let limit = u64::try_from(MAX_LIST_BYTES).unwrap_or(u64::MAX) + 1;
        let mut bytes = Vec::new();
        if list.as_os_str() == "-" {
            std::io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut bytes)?;
        } else {
            std::fs::File::open(&list)?
                .take(limit)
                .read_to_end(&mut bytes)?;
        }
        Ok(bytes)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    read.map_err(|error| {
        Failure::new(
            exit::IO,
            anyhow::Error::new(error).context(format!("cannot read the list {shown_list}")),
        )
    })
}

fn shown(list: &Path) -> String {
    if list.as_os_str() == "-" {
        "on standard input".to_owned()
    } else {
        list.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_with(line: usize, code: u8) -> FileResult {
        FileResult {
            line,
            path: format!("f{line}"),
            url: format!("http://h/f{line}"),
            outcome: Err(FileFailure {
                code,
                class: "network",
                error: "x".to_owned(),
            }),
        }
    }

    #[test]
    fn the_worst_file_decides_the_exit_code() {
        let code_of = |codes: &[u8]| {
            let results: Vec<FileResult> = codes
                .iter()
                .enumerate()
                .map(|(idx, &code)| failed_with(idx + 1, code))
                .collect();
            outcome(&results).map_err(|failure| failure.code())
        };
        assert_eq!(code_of(&[]), Ok(()));
        assert_eq!(code_of(&[exit::DOWNLOAD, exit::USAGE]), Err(exit::USAGE));
        assert_eq!(
            code_of(&[exit::USAGE, exit::IO, exit::DOWNLOAD]),
            Err(exit::IO)
        );
        assert_eq!(code_of(&[exit::IO, exit::CHECKSUM]), Err(exit::CHECKSUM));
        assert_eq!(
            code_of(&[exit::CHECKSUM, exit::INTERRUPTED, exit::IO]),
            Err(exit::INTERRUPTED)
        );
        let failure = outcome(&[
            failed_with(3, exit::DOWNLOAD),
            failed_with(5, exit::CHECKSUM),
        ])
        .expect_err("two failures");
        assert_eq!(failure.message(), "2 of 2 files failed");
    }
}
