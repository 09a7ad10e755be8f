//! The expected hash of a run: `--sha256`, or the entry of a `--sha256-sums`
//! checksum file (a local path or a URL) named like the file in question.

use std::path::Path;

use anyhow::Context as _;
use rangefetch_core::{Config, Sha256Hex};
use rangefetch_core::{find_checksum, parse_checksums};

use crate::args::{Expected, VerifyExpected};
use crate::exit::{self, Failure};

/// The most bytes a checksum file fetched over HTTP may have.
const MAX_CHECKSUM_FILE: usize = 16 << 20;

/// The expected hash of `get`: `--sha256`, else the checksum file's entry
/// for the first URL's file name, else none.
pub async fn for_url(
    expected: &Expected,
    url: &str,
    config: &Config,
) -> Result<Option<Sha256Hex>, Failure> {
    match (&expected.sha256, &expected.sha256_sums) {
        (Some(hash), _) => Ok(Some(*hash)),
        (None, Some(sums)) => {
            let name = rangefetch_core::file_name_from_url(url)
                .context("cannot tell which checksum entry applies")
                .map_err(|e| Failure::new(exit::USAGE, e))?;
            Ok(Some(lookup(sums, &name, config).await?))
        }
        (None, None) => Ok(None),
    }
}

/// The expected hash of `verify`: `--sha256`, else the checksum file's
/// entry for the path's file name.
pub async fn for_path(
    expected: &VerifyExpected,
    path: &Path,
    config: &Config,
) -> Result<Sha256Hex, Failure> {
    match (&expected.sha256, &expected.sha256_sums) {
        (Some(hash), _) => Ok(*hash),
        (None, Some(sums)) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            lookup(sums, &name, config).await
        }
        // clap requires one of the two; this is for a caller that did not.
        (None, None) => Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("give --sha256 or --sha256-sums"),
        )),
    }
}

/// The entry for `file_name` in the checksum file at `source`.
async fn lookup(source: &str, file_name: &str, config: &Config) -> Result<Sha256Hex, Failure> {
    let text = read(source, config).await?;
    let entries = parse_checksums(&text);
    find_checksum(&entries, file_name)
        .with_context(|| format!("checksum file {source}"))
        .map_err(|e| Failure::new(exit::USAGE, e))
}

async fn read(source: &str, config: &Config) -> Result<String, Failure> {
    if source.starts_with("http://") || source.starts_with("https://") {
        rangefetch_core::fetch_text(source, config, MAX_CHECKSUM_FILE)
            .await
            .map_err(|e| exit::from_core(e, None))
    } else {
        std::fs::read_to_string(source)
            .with_context(|| format!("cannot read checksum file {source}"))
            .map_err(|e| Failure::new(exit::USAGE, e))
    }
}
