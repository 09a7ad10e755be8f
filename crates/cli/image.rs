//! `rangefetch image RELEASE`: a cloud image found by name in a
//! simplestreams tree (`streams/v1/index.json` → the `image-downloads`
//! products file), downloaded through the engine with the item's sha256 and
//! size as the expected values. With `--keyring` only the clearsigned
//! `.sjson` files are read, and each must verify before its content is
//! used: a failure is exit 3, before any byte of the image is requested.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use rangefetch_core::{Config, Download, ErrorKind, Keyring, Selection, Signer};
use serde_json::json;

use crate::args::ImageArgs;
use crate::exit::{self, Failure};
use crate::render::{Provenance, Render};
use crate::settings;

/// The most bytes an index or products file may have (Ubuntu's released
/// download stream is a few MiB).
const MAX_CATALOGUE: usize = 64 << 20;

pub async fn image(args: ImageArgs) -> Result<(), Failure> {
    let settings = settings::for_image(&args)?;
    let keyring = args.keyring.as_deref().map(read_keyring).transpose()?;
    let catalogue = Catalogue {
        mirror: &args.mirror,
        keyring: keyring.as_ref(),
        config: &settings.config,
        proxy: settings.proxy_shown.as_deref(),
    };
    let (index, _) = catalogue.read("index", "streams/v1/index.json").await?;
    let entries = rangefetch_core::parse_index(&index).map_err(bad_catalogue)?;
    let products_path = rangefetch_core::image_downloads_path(&entries).map_err(bad_catalogue)?;
    let (products, signed) = catalogue.read("products file", &products_path).await?;
    let products = rangefetch_core::parse_products(&products).map_err(bad_catalogue)?;
    let arch = args.arch.clone().unwrap_or_else(|| {
        rangefetch_core::debian_arch(std::env::consts::ARCH, cfg!(target_endian = "little"))
    });
    let ftypes: Vec<&str> = match &args.ftype {
        Some(ftype) => vec![ftype.as_str()],
        None => rangefetch_core::DEFAULT_FTYPES.to_vec(),
    };
    let picked =
        rangefetch_core::select(&products, &args.release, &arch, &ftypes).map_err(|error| {
            Failure::new(exit::USAGE, error).hint(
                "choose another release, --arch or --ftype, or point --mirror at another tree",
            )
        })?;
    let url = rangefetch_core::mirror_url(&args.mirror, &picked.path);
    if args.print {
        println!("{}  {url}", picked.sha256);
        return Ok(());
    }
    let output = match &args.output {
        Some(output) => output.clone(),
        None => rangefetch_core::file_name_from_url(&url)
            .context("cannot name the output after the item's path; give -o")
            .map_err(|e| Failure::new(exit::USAGE, e))?
            .into(),
    };
    let render = Arc::new(Render::new(
        args.transfer.json,
        args.transfer.quiet,
        settings::color(),
    ));
    let mut provenance = Provenance {
        image: Some(summary(&picked, &arch, &url)),
        ..Provenance::default()
    };
    if let Some((signer, file)) = signed {
        render.event(&rangefetch_core::Event::Notice {
            message: format!("simplestreams {file}: good signature by {signer}"),
        });
        provenance.signed_by = Some(signer.fingerprint);
        provenance.signed_file = Some(file);
    }
    render.event(&rangefetch_core::Event::Notice {
        message: format!("image: {picked}, {url}"),
    });
    let builder = Download::builder(url).output(output).sha256(picked.sha256);
    crate::download(
        builder,
        &args.transfer,
        settings,
        render,
        &provenance,
        picked.size,
    )
    .await
}

/// What the `--json` summary says was picked.
fn summary(picked: &Selection, arch: &str, url: &str) -> serde_json::Value {
    json!({
        "product": picked.product, "release": picked.release,
        "release_version": picked.release_version, "arch": arch,
        "version": picked.serial, "item": picked.item, "ftype": picked.ftype,
        "url": url, "sha256": picked.sha256.to_string(), "size": picked.size,
    })
}

fn bad_catalogue(error: rangefetch_core::StreamsError) -> Failure {
    Failure::new(exit::USAGE, error)
        .hint("check --mirror: it should be the directory that holds streams/v1/")
}

fn read_keyring(path: &Path) -> Result<Keyring, Failure> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read keyring {}", path.display()))
        .map_err(|e| Failure::new(exit::USAGE, e))?;
    Keyring::from_bytes(&bytes)
        .with_context(|| format!("keyring {}", path.display()))
        .map_err(|e| Failure::new(exit::USAGE, e))
}

/// The simplestreams tree under a mirror.
struct Catalogue<'a> {
    mirror: &'a str,
    keyring: Option<&'a Keyring>,
    config: &'a Config,
    proxy: Option<&'a str>,
}

impl Catalogue<'_> {
    /// The text of the file at `path` (`x.json`); with a keyring, of its
    /// clearsigned twin `x.sjson`, once that verifies, with who signed it.
    async fn read(
        &self,
        what: &str,
        path: &str,
    ) -> Result<(String, Option<(Signer, String)>), Failure> {
        let path = match self.keyring {
            Some(_) => rangefetch_core::signed_path(path),
            None => path.to_owned(),
        };
        let url = rangefetch_core::mirror_url(self.mirror, &path);
        let untrusted = |why: String| {
            Failure::new(
                exit::CHECKSUM,
                anyhow::anyhow!("simplestreams {what} {url} is not trusted: {why}"),
            )
            .hint("nothing was downloaded; check the mirror and the keyring (Ubuntu's is ubuntu-cloudimage-keyring.gpg)")
        };
        let bytes = match rangefetch_core::fetch_bytes(&url, self.config, MAX_CATALOGUE).await {
            Ok(bytes) => bytes,
            Err(error)
                if self.keyring.is_some()
                    && matches!(error.kind(), ErrorKind::HttpStatus(404 | 410)) =>
            {
                return Err(untrusted(format!("the signed file is missing ({error})")));
            }
            Err(error) => return Err(exit::from_core(error, self.proxy)),
        };
        match self.keyring {
            None => Ok((String::from_utf8_lossy(&bytes).into_owned(), None)),
            Some(keyring) => {
                if !rangefetch_core::is_cleartext(&bytes) {
                    return Err(untrusted("it is not clearsigned".to_owned()));
                }
                let (text, signer) =
                    rangefetch_core::verify_cleartext(keyring, &bytes, SystemTime::now())
                        .map_err(|error| untrusted(error.to_string()))?;
                Ok((text, Some((signer, url.clone()))))
            }
        }
    }
}
