//! The expected hash of a run: `--sha256`, or the entry of a `--sha256-sums`
//! checksum file (a local path or a URL) named like the file in question.
//! With `--keyring`, the checksum file is used only if its OpenPGP signature
//! (detached with `--signature`, or clearsigned) verifies; every failure of
//! that check is exit 3, before anything is downloaded.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context as _;
use rangefetch_core::{Config, ErrorKind, Keyring, Sha256Hex, Signer};
use rangefetch_core::{find_checksum, parse_checksums};

use crate::args::{Expected, Trust, VerifyExpected};
use crate::exit::{self, Failure};

/// The most bytes a checksum file or a signature fetched over HTTP may have.
const MAX_CHECKSUM_FILE: usize = 16 << 20;

/// The expected hash, and who vouched for it.
pub struct Expectation {
    pub sha256: Sha256Hex,
    /// The key whose signature of the checksum file verified, with the
    /// checksum file's name.
    pub signed: Option<(Signer, String)>,
}

impl Expectation {
    fn given(sha256: Sha256Hex) -> Self {
        Self {
            sha256,
            signed: None,
        }
    }
}

/// The expected hash of `get`: `--sha256`, else the checksum file's entry
/// for the first URL's file name, else none.
pub async fn for_url(
    expected: &Expected,
    trust: &Trust,
    url: &str,
    config: &Config,
) -> Result<Option<Expectation>, Failure> {
    match (&expected.sha256, &expected.sha256_sums) {
        (Some(hash), _) => Ok(Some(Expectation::given(*hash))),
        (None, Some(sums)) => {
            let name = rangefetch_core::file_name_from_url(url)
                .context("cannot tell which checksum entry applies")
                .map_err(|e| Failure::new(exit::USAGE, e))?;
            Ok(Some(lookup(sums, &name, trust, config).await?))
        }
        (None, None) => Ok(None),
    }
}

/// The expected hash of `verify`: `--sha256`, else the checksum file's
/// entry for the path's file name.
pub async fn for_path(
    expected: &VerifyExpected,
    trust: &Trust,
    path: &Path,
    config: &Config,
) -> Result<Expectation, Failure> {
    match (&expected.sha256, &expected.sha256_sums) {
        (Some(hash), _) => Ok(Expectation::given(*hash)),
        (None, Some(sums)) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            lookup(sums, &name, trust, config).await
        }
        // clap requires one of the two; this is for a caller that did not.
        (None, None) => Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("give --sha256 or --sha256-sums"),
        )),
    }
}

/// The entry for `file_name` in the checksum file at `source`, from its
/// signed text when a keyring is given.
async fn lookup(
    source: &str,
    file_name: &str,
    trust: &Trust,
    config: &Config,
) -> Result<Expectation, Failure> {
    let bytes = read(source, "checksum file", config)
        .await
        .map_err(|unread| unread.failure)?;
    let (text, signed) = match &trust.keyring {
        Some(keyring) => {
            let (text, signer) = signed_text(source, &bytes, keyring, trust, config).await?;
            (text, Some((signer, source.to_owned())))
        }
        None => (String::from_utf8_lossy(&bytes).into_owned(), None),
    };
    let entries = parse_checksums(&text);
    let sha256 = find_checksum(&entries, file_name)
        .with_context(|| format!("checksum file {source}"))
        .map_err(|e| Failure::new(exit::USAGE, e))?;
    Ok(Expectation { sha256, signed })
}

/// The checksum file's text, once its signature verifies against the
/// keyring: the whole file for a detached signature, the signed part of a
/// clearsigned one.
async fn signed_text(
    source: &str,
    bytes: &[u8],
    keyring_path: &Path,
    trust: &Trust,
    config: &Config,
) -> Result<(String, Signer), Failure> {
    let keyring_bytes = std::fs::read(keyring_path)
        .with_context(|| format!("cannot read keyring {}", keyring_path.display()))
        .map_err(|e| Failure::new(exit::USAGE, e))?;
    let keyring = Keyring::from_bytes(&keyring_bytes)
        .with_context(|| format!("keyring {}", keyring_path.display()))
        .map_err(|e| Failure::new(exit::USAGE, e))?;
    let untrusted = |error: rangefetch_core::SignatureError| {
        Failure::new(
            exit::CHECKSUM,
            anyhow::anyhow!("checksum file {source} is not trusted: {error}"),
        )
        .hint("no hash from it was used and nothing was downloaded; check the file, its signature and the keyring")
    };
    let now = SystemTime::now();
    match &trust.signature {
        Some(signature) => {
            let signature_bytes = read(signature, "signature", config)
                .await
                .map_err(|unread| match unread.missing {
                    // A signature that is not there is an untrusted file, not
                    // a failed download.
                    Some(why) => Failure::new(
                        exit::CHECKSUM,
                        anyhow::anyhow!(
                            "checksum file {source} is not trusted: its signature {signature} is missing ({why})"
                        ),
                    ),
                    None => unread.failure,
                })?;
            let signer = rangefetch_core::verify_detached(&keyring, bytes, &signature_bytes, now)
                .map_err(untrusted)?;
            Ok((String::from_utf8_lossy(bytes).into_owned(), signer))
        }
        None if rangefetch_core::is_cleartext(bytes) => {
            rangefetch_core::verify_cleartext(&keyring, bytes, now).map_err(untrusted)
        }
        None => Err(Failure::new(
            exit::CHECKSUM,
            anyhow::anyhow!("checksum file {source} is not trusted: it is not clearsigned and no --signature was given"),
        )
        .hint("give its detached signature with --signature (SHA256SUMS.gpg, SHA256SUMS.sign, …)")),
    }
}

/// A file that could not be read: the failure, and why, when the file is
/// simply not there (no such path, 404, 410).
struct Unread {
    failure: Failure,
    missing: Option<String>,
}

/// The bytes at `source` (a URL or a path), `what` naming it in errors.
async fn read(source: &str, what: &str, config: &Config) -> Result<Vec<u8>, Unread> {
    if source.starts_with("http://") || source.starts_with("https://") {
        rangefetch_core::fetch_bytes(source, config, MAX_CHECKSUM_FILE)
            .await
            .map_err(|error| Unread {
                missing: matches!(error.kind(), ErrorKind::HttpStatus(404 | 410))
                    .then(|| error.to_string()),
                failure: exit::from_core(error, None),
            })
    } else {
        std::fs::read(source).map_err(|error| Unread {
            missing: (error.kind() == std::io::ErrorKind::NotFound).then(|| error.to_string()),
            failure: Failure::new(
                exit::USAGE,
                anyhow::Error::new(error).context(format!("cannot read {what} {source}")),
            ),
        })
    }
}
