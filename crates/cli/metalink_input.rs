//! `rangefetch get FILE.meta4` (or `.metalink`, or a URL ending so): the
//! Metalink's file becomes the download. Its URLs, best priority first,
//! are the primary and the mirrors (any further operands follow as more
//! mirrors); its size and SHA-256 are the expected values; its file name,
//! sanitised, is the output unless `-o` names one. A Metalink without a
//! SHA-256 leaves the download unverified, as a `get` without `--sha256`;
//! a `--sha256` that disagrees with the Metalink's is exit 3 before
//! anything is fetched.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use rangefetch_core::{MetalinkFile, MetalinkVersion, Sha256Hex};

use crate::args::GetArgs;
use crate::exit::{self, Failure};
use crate::settings::{self, GetSettings};

/// The most bytes a Metalink document may have.
const MAX_METALINK: usize = rangefetch_core::internals::MAX_METALINK_BYTES;

/// The file a Metalink describes, and where the Metalink came from.
pub struct FromMetalink {
    /// The Metalink's path or URL.
    pub source: String,
    /// Its file.
    pub file: MetalinkFile,
}

/// Whether a `get` operand names a Metalink: a URL or path whose name ends
/// in `.meta4` or `.metalink`.
pub fn names_metalink(operand: &str) -> bool {
    MetalinkVersion::from_name(operand).is_some()
}

/// The settings of `get`; when its first operand is a Metalink, `args`
/// rewritten to the Metalink's file first (URLs, output), with the
/// settings chosen for its first URL, and the Metalink's file.
///
/// `served` says the first operand is a URL whose response was a Metalink
/// (its `Content-Type`), whatever its name.
pub async fn settle(
    args: &mut GetArgs,
    served: bool,
) -> Result<(GetSettings, Option<FromMetalink>), Failure> {
    let settings = settings::for_get(args)?;
    let Some(first) = args
        .urls
        .first()
        .filter(|first| served || names_metalink(first))
    else {
        return Ok((settings, None));
    };
    let source = first.clone();
    let (bytes, base) = if is_url(&source) {
        let bytes = rangefetch_core::fetch_bytes(&source, &settings.config, MAX_METALINK)
            .await
            .map_err(|error| exit::from_core(error, settings.proxy_shown.as_deref()))?;
        (bytes, Some(source.as_str()))
    } else {
        (read_local(Path::new(&source))?, None)
    };
    let metalink = rangefetch_core::parse_metalink(&bytes, base).map_err(|error| {
        Failure::new(
            exit::USAGE,
            anyhow::Error::new(error).context(format!("Metalink {source}")),
        )
        .hint("nothing was downloaded; check the Metalink file")
    })?;
    let file = pick(metalink.files, &source)?;
    if file.urls.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!(
                "Metalink {source}: file {:?} has no http or https URL",
                file.raw_name
            ),
        )
        .hint("rangefetch fetches over http and https only"));
    }
    let extra: Vec<String> = args.urls.drain(1..).collect();
    args.urls = file.urls.iter().map(|url| url.url.clone()).collect();
    args.urls.extend(extra);
    if args.output.is_none() {
        args.output = Some(PathBuf::from(&file.name));
    }
    // The proxy is chosen for the first URL the download will fetch.
    let settings = settings::for_get(args)?;
    Ok((settings, Some(FromMetalink { source, file })))
}

impl FromMetalink {
    /// The expected hash: the Metalink's SHA-256, which one given on the
    /// command line (or by a checksum file) must equal; the given one when
    /// the Metalink states none.
    pub fn expected(&self, given: Option<Sha256Hex>) -> Result<Option<Sha256Hex>, Failure> {
        match (self.file.sha256, given) {
            (Some(stated), Some(given)) if stated != given => Err(Failure::new(
                exit::CHECKSUM,
                anyhow::anyhow!(
                    "hash conflict: the expected sha256 is {given}, Metalink {} states {stated}",
                    self.source
                ),
            )
            .hint("nothing was downloaded; one of the two is for another file")),
            (Some(stated), _) => Ok(Some(stated)),
            (None, given) => Ok(given),
        }
    }

    /// The size the Metalink states.
    pub fn size(&self) -> Option<u64> {
        self.file.size
    }

    /// Notices for the user: what was read, and what was left out.
    pub fn notices(&self) -> Vec<String> {
        let file = &self.file;
        let mut notices = vec![format!(
            "Metalink {}: {} ({}), {} URL{}{}",
            self.source,
            file.raw_name,
            file.size
                .map_or_else(|| "size not stated".to_owned(), |s| format!("{s} bytes")),
            file.urls.len(),
            if file.urls.len() == 1 { "" } else { "s" },
            match (&file.sha256, &file.pieces) {
                (Some(_), Some(pieces)) => format!(
                    ", sha256 and {} {} piece hashes",
                    pieces.count(),
                    pieces.algorithm().name()
                ),
                (Some(_), None) => ", sha256".to_owned(),
                (None, _) => ", no sha256: the download will not be verified".to_owned(),
            }
        )];
        notices.extend(
            file.notes
                .iter()
                .map(|note| format!("Metalink {}: {note}", self.source)),
        );
        notices
    }
}

fn is_url(operand: &str) -> bool {
    let lower = operand.get(..8).unwrap_or(operand).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// A local Metalink, at most [`MAX_METALINK`] bytes.
fn read_local(path: &Path) -> Result<Vec<u8>, Failure> {
    let cannot = |error: std::io::Error| {
        Failure::new(
            exit::USAGE,
            anyhow::Error::new(error).context(format!("cannot read Metalink {}", path.display())),
        )
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_METALINK as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > MAX_METALINK {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!(
                "Metalink {} is larger than {MAX_METALINK} bytes",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

/// The one file of a Metalink; several are an error naming them.
fn pick(mut files: Vec<MetalinkFile>, source: &str) -> Result<MetalinkFile, Failure> {
    if files.len() == 1
        && let Some(file) = files.pop()
    {
        return Ok(file);
    }
    let mut names: Vec<String> = files
        .iter()
        .take(5)
        .map(|file| format!("{:?}", file.raw_name))
        .collect();
    if files.len() > 5 {
        names.push(format!("and {} more", files.len() - 5));
    }
    Err(Failure::new(
        exit::USAGE,
        anyhow::anyhow!(
            "Metalink {source} describes {} files ({}); rangefetch downloads one file per Metalink",
            files.len(),
            names.join(", ")
        ),
    )
    .hint("use a Metalink that describes one file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_that_name_a_metalink() {
        assert!(names_metalink("image.iso.meta4"));
        assert!(names_metalink("dir/IMAGE.METALINK"));
        assert!(names_metalink("https://h/x.iso.meta4?mirrors=1"));
        assert!(!names_metalink("https://h/x.iso"));
        assert!(!names_metalink("https://h/x.iso?format=.meta4"));
        assert!(is_url("HTTPS://h/x.meta4"));
        assert!(!is_url("./x.meta4"));
    }

    fn file(sha256: Option<Sha256Hex>) -> FromMetalink {
        FromMetalink {
            source: "x.meta4".to_owned(),
            file: MetalinkFile {
                name: "x".to_owned(),
                raw_name: "x".to_owned(),
                size: Some(3),
                sha256,
                other_hashes: Vec::new(),
                pieces: None,
                urls: Vec::new(),
                notes: Vec::new(),
            },
        }
    }

    #[test]
    fn expected_hash() {
        let a = Sha256Hex::from_bytes([1; 32]);
        let b = Sha256Hex::from_bytes([2; 32]);
        assert_eq!(file(Some(a)).expected(None).ok(), Some(Some(a)));
        assert_eq!(file(Some(a)).expected(Some(a)).ok(), Some(Some(a)));
        assert!(file(Some(a)).expected(Some(b)).is_err());
        assert_eq!(file(None).expected(Some(b)).ok(), Some(Some(b)));
        assert_eq!(file(None).expected(None).ok(), Some(None));
    }

    #[test]
    fn several_files_are_refused_by_name() {
        let one = file(None).file;
        let mut two = one.clone();
        two.raw_name = "y".to_owned();
        assert!(pick(vec![one.clone()], "m").is_ok());
        assert!(pick(vec![one, two], "m").is_err());
    }
}
