//! Simplestreams, the catalogue format Ubuntu publishes its cloud images in
//! (`streams/v1/index.json` → the `image-downloads` products file): parse
//! both, and pick the image a name asks for — a release, codename, version
//! or alias (`noble`, `24.04`, `lts`) for an architecture, its newest
//! version, and the item of a file type. Pure: no I/O; the caller fetches
//! the files, and checks their clearsigned `.sjson` form first when it has
//! a keyring.
//!
//! The parser walks [`serde_json::Value`]s, so unknown fields, odd types and
//! missing optional fields are tolerated; only what a download needs
//! (an item's `path` and `sha256`) is required, when that item is picked.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Value};

use crate::checksums::Sha256Hex;

/// The `datatype` of the products file that lists downloadable images.
pub const IMAGE_DOWNLOADS: &str = "image-downloads";

/// The file types tried, in this order, when none is asked for: what VM
/// managers boot (a UEFI disk image, a compressed image, a BIOS one).
pub const DEFAULT_FTYPES: [&str; 3] = ["uefi1.img", "img.xz", "disk1.img"];

/// Why a simplestreams file cannot be used, or no image fits the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamsError {
    /// Not JSON, or not a JSON object where one must be.
    #[error("not a simplestreams {what}: {reason}")]
    Malformed {
        /// "index" or "products file".
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The index lists no products file of datatype `image-downloads`.
    #[error("the index lists no image-downloads products file (datatypes present: {present})")]
    NoImageDownloads {
        /// The datatypes the index does list, comma-separated, or "none".
        present: String,
    },
    /// No product matches the release for the architecture.
    #[error("no image of release {release:?} for {arch}; releases for {arch}: {available}")]
    NoRelease {
        /// The release asked for.
        release: String,
        /// The architecture asked for.
        arch: String,
        /// The releases that exist for `arch` (`noble (24.04)`, …), or "none".
        available: String,
    },
    /// Several products match the release for the architecture.
    #[error("release {release:?} for {arch} is ambiguous: {products}")]
    Ambiguous {
        /// The release asked for.
        release: String,
        /// The architecture asked for.
        arch: String,
        /// The product names that match.
        products: String,
    },
    /// The product has no version with items.
    #[error("product {product} has no version")]
    NoVersion {
        /// The product's name.
        product: String,
    },
    /// The newest version has no item of the file type.
    #[error("{product} version {version} has no {wanted} item; its file types: {available}")]
    NoFtype {
        /// The product's name.
        product: String,
        /// The version's serial.
        version: String,
        /// The file type(s) asked for.
        wanted: String,
        /// The file types it has.
        available: String,
    },
    /// The picked item lacks a field a download needs, or has an invalid one.
    #[error("{product} version {version} item {item}: {reason}")]
    BadItem {
        /// The product's name.
        product: String,
        /// The version's serial.
        version: String,
        /// The item's name.
        item: String,
        /// What is wrong.
        reason: String,
    },
}

/// One entry of an index: a products file and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The entry's key (its content id), e.g. `com.ubuntu.cloud:released:download`.
    pub content_id: String,
    /// `datatype`, e.g. `image-downloads`.
    pub datatype: Option<String>,
    /// `path` of the products file, relative to the mirror.
    pub path: Option<String>,
}

/// Parses `streams/v1/index.json`.
pub fn parse_index(text: &str) -> Result<Vec<IndexEntry>, StreamsError> {
    let malformed = |reason: String| StreamsError::Malformed {
        what: "index",
        reason,
    };
    let root: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let index = root
        .get("index")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("no \"index\" object".to_owned()))?;
    Ok(index
        .iter()
        .map(|(content_id, entry)| IndexEntry {
            content_id: content_id.clone(),
            datatype: string_field(entry, "datatype"),
            path: string_field(entry, "path"),
        })
        .collect())
}

/// The path of the index's `image-downloads` products file (the first such
/// entry with a path).
pub fn image_downloads_path(entries: &[IndexEntry]) -> Result<String, StreamsError> {
    entries
        .iter()
        .filter(|entry| entry.datatype.as_deref() == Some(IMAGE_DOWNLOADS))
        .find_map(|entry| entry.path.clone())
        .ok_or_else(|| {
            let mut present: Vec<&str> = entries
                .iter()
                .filter_map(|entry| entry.datatype.as_deref())
                .collect();
            present.sort_unstable();
            present.dedup();
            StreamsError::NoImageDownloads {
                present: list_or_none(&present),
            }
        })
}

/// A product: one release of one image for one architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    /// Its key, e.g. `com.ubuntu.cloud:server:24.04:amd64`.
    pub name: String,
    /// `arch`, e.g. `amd64`.
    pub arch: Option<String>,
    /// `release`, the codename, e.g. `noble`.
    pub release: Option<String>,
    /// `version`, e.g. `24.04`.
    pub version: Option<String>,
    /// `aliases`, split at commas.
    pub aliases: Vec<String>,
    /// `release_codename`, e.g. `Noble Numbat`.
    pub release_codename: Option<String>,
    /// `release_title`, e.g. `24.04 LTS`.
    pub release_title: Option<String>,
    /// Its versions, oldest first (by serial).
    pub versions: Vec<ProductVersion>,
}

/// One version (serial) of a product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductVersion {
    /// The serial, e.g. `20240423` or `20240423.1`.
    pub serial: String,
    /// Its items, in the file's order.
    pub items: Vec<Item>,
}

/// One file of a version, as the products file states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Its key, e.g. `disk1.img`.
    pub name: String,
    /// `ftype`, e.g. `disk1.img` (the key when absent).
    pub ftype: String,
    /// `path`, relative to the mirror.
    pub path: Option<String>,
    /// `sha256`, as written (checked when the item is picked).
    pub sha256: Option<String>,
    /// `size` in bytes.
    pub size: Option<u64>,
}

/// Parses an `image-downloads` products file (`products:1.0`).
pub fn parse_products(text: &str) -> Result<Vec<Product>, StreamsError> {
    let malformed = |reason: String| StreamsError::Malformed {
        what: "products file",
        reason,
    };
    let root: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let products = root
        .get("products")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("no \"products\" object".to_owned()))?;
    // Simplestreams lets a field set higher up stand for all entries below.
    let top = root.as_object();
    Ok(products
        .iter()
        .filter_map(|(name, product)| Some((name, product.as_object()?)))
        .map(|(name, product)| parse_product(name, product, top))
        .collect())
}

fn parse_product(
    name: &str,
    product: &Map<String, Value>,
    top: Option<&Map<String, Value>>,
) -> Product {
    let field = |key: &str| {
        product
            .get(key)
            .and_then(scalar_string)
            .or_else(|| top.and_then(|top| top.get(key)).and_then(scalar_string))
    };
    let aliases = field("aliases")
        .map(|aliases| {
            aliases
                .split(',')
                .map(str::trim)
                .filter(|alias| !alias.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut versions: Vec<ProductVersion> = product
        .get("versions")
        .and_then(Value::as_object)
        .map(|versions| {
            versions
                .iter()
                .map(|(serial, version)| ProductVersion {
                    serial: serial.clone(),
                    items: parse_items(version),
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by(|a, b| compare_serials(&a.serial, &b.serial));
    Product {
        name: name.to_owned(),
        arch: field("arch"),
        release: field("release"),
        version: field("version"),
        aliases,
        release_codename: field("release_codename"),
        release_title: field("release_title"),
        versions,
    }
}

fn parse_items(version: &Value) -> Vec<Item> {
    let Some(items) = version.get("items").and_then(Value::as_object) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|(name, item)| Item {
            name: name.clone(),
            ftype: string_field(item, "ftype").unwrap_or_else(|| name.clone()),
            path: string_field(item, "path"),
            sha256: string_field(item, "sha256"),
            size: item.get("size").and_then(|size| match size {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }),
        })
        .collect()
}

fn string_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(scalar_string)
}

/// A string, or a number written as one (`"version": 24.04` is not unheard of).
fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Orders serials: dot-separated parts, numeric ones by value
/// (`20240423` < `20240423.1` < `20240501`), others as text.
pub fn compare_serials(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                let order = if numeric(x) && numeric(y) {
                    let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
                } else {
                    x.cmp(y)
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

impl Product {
    /// Whether `name` is its release, codename, version, release title or
    /// one of its aliases (ASCII case ignored).
    pub fn answers_to(&self, name: &str) -> bool {
        let name = name.trim();
        let codename_word = self
            .release_codename
            .as_deref()
            .and_then(|codename| codename.split_whitespace().next());
        [
            self.release.as_deref(),
            self.version.as_deref(),
            self.release_codename.as_deref(),
            codename_word,
            self.release_title.as_deref(),
        ]
        .into_iter()
        .flatten()
        .chain(self.aliases.iter().map(String::as_str))
        .any(|candidate| !name.is_empty() && candidate.eq_ignore_ascii_case(name))
    }

    /// `noble (24.04)`, or the product's name when it has no release.
    fn label(&self) -> String {
        match (&self.release, &self.version) {
            (Some(release), Some(version)) if release != version => {
                format!("{release} ({version})")
            }
            (Some(release), _) => release.clone(),
            (None, Some(version)) => version.clone(),
            (None, None) => self.name.clone(),
        }
    }
}

/// An image picked from a products file: where it is and what it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The product's name.
    pub product: String,
    /// Its `release` (codename), if stated.
    pub release: Option<String>,
    /// Its `version`, if stated.
    pub release_version: Option<String>,
    /// The version's serial.
    pub serial: String,
    /// The item's name.
    pub item: String,
    /// The item's file type.
    pub ftype: String,
    /// The item's path, relative to the mirror.
    pub path: String,
    /// Its SHA-256.
    pub sha256: Sha256Hex,
    /// Its size in bytes, if stated.
    pub size: Option<u64>,
}

/// Picks the image `release` names for `arch`: the one matching product,
/// its newest version, and the item of the first of `ftypes` it has.
pub fn select(
    products: &[Product],
    release: &str,
    arch: &str,
    ftypes: &[&str],
) -> Result<Selection, StreamsError> {
    let for_arch: Vec<&Product> = products
        .iter()
        .filter(|product| product.arch.as_deref() == Some(arch))
        .collect();
    let matching: Vec<&Product> = for_arch
        .iter()
        .copied()
        .filter(|product| product.answers_to(release))
        .collect();
    let product = match matching.as_slice() {
        [] => {
            let mut labels: Vec<(&Product, String)> =
                for_arch.iter().map(|p| (*p, p.label())).collect();
            labels.sort_by(|(a, _), (b, _)| {
                compare_serials(
                    a.version.as_deref().unwrap_or(""),
                    b.version.as_deref().unwrap_or(""),
                )
                .then_with(|| a.name.cmp(&b.name))
            });
            let mut labels: Vec<&str> = labels.iter().map(|(_, label)| label.as_str()).collect();
            labels.dedup();
            return Err(StreamsError::NoRelease {
                release: release.to_owned(),
                arch: arch.to_owned(),
                available: list_or_none(&labels),
            });
        }
        [one] => *one,
        several => {
            let names: Vec<&str> = several.iter().map(|p| p.name.as_str()).collect();
            return Err(StreamsError::Ambiguous {
                release: release.to_owned(),
                arch: arch.to_owned(),
                products: names.join(", "),
            });
        }
    };
    let version = product
        .versions
        .iter()
        .rev()
        .find(|version| !version.items.is_empty())
        .ok_or_else(|| StreamsError::NoVersion {
            product: product.name.clone(),
        })?;
    let item = ftypes
        .iter()
        .find_map(|ftype| version.items.iter().find(|item| item.ftype == *ftype))
        .ok_or_else(|| {
            let mut available: Vec<&str> = version
                .items
                .iter()
                .map(|item| item.ftype.as_str())
                .collect();
            available.sort_unstable();
            available.dedup();
            StreamsError::NoFtype {
                product: product.name.clone(),
                version: version.serial.clone(),
                wanted: ftypes.join(" or "),
                available: list_or_none(&available),
            }
        })?;
    let bad = |reason: &str| StreamsError::BadItem {
        product: product.name.clone(),
        version: version.serial.clone(),
        item: item.name.clone(),
        reason: reason.to_owned(),
    };
    let path = item
        .path
        .clone()
        .filter(|path| !path.trim().is_empty())
        .ok_or_else(|| bad("no path"))?;
    if path.contains("://") || path.starts_with("//") {
        return Err(bad("its path is not relative to the mirror"));
    }
    let sha256 = item
        .sha256
        .as_deref()
        .ok_or_else(|| bad("no sha256"))
        .and_then(|hex| Sha256Hex::parse(hex).map_err(|e| bad(&format!("sha256: {e}"))))?;
    Ok(Selection {
        product: product.name.clone(),
        release: product.release.clone(),
        release_version: product.version.clone(),
        serial: version.serial.clone(),
        item: item.name.clone(),
        ftype: item.ftype.clone(),
        path: path.trim_start_matches('/').to_owned(),
        sha256,
        size: item.size,
    })
}

/// The URL of `path` under `mirror` (a directory URL, slash or not).
pub fn mirror_url(mirror: &str, path: &str) -> String {
    format!(
        "{}/{}",
        mirror.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// The clearsigned twin of a simplestreams file: `x.json` → `x.sjson`.
pub fn signed_path(path: &str) -> String {
    match path.strip_suffix(".json") {
        Some(stem) => format!("{stem}.sjson"),
        None => path.to_owned(),
    }
}

/// The Debian/Ubuntu name of a Rust `target_arch` (`x86_64` → `amd64`),
/// which simplestreams products use; unknown names pass through.
pub fn debian_arch(rust_arch: &str, little_endian: bool) -> String {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" if little_endian => "ppc64el",
        "powerpc64" => "ppc64",
        "powerpc" => "powerpc",
        "loongarch64" => "loong64",
        other => other,
    }
    .to_owned()
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} version {} item {} ({})",
            self.product, self.serial, self.item, self.ftype
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    const INDEX: &str = r#"{
      "format": "index:1.0", "updated": "Tue, 23 Apr 2024 12:00:00 +0000",
      "index": {
        "com.ubuntu.cloud:released:aws": {"datatype": "image-ids", "path": "streams/v1/aws.json"},
        "com.ubuntu.cloud:released:download": {
          "datatype": "image-downloads", "format": "products:1.0",
          "path": "streams/v1/com.ubuntu.cloud:released:download.json",
          "products": ["com.ubuntu.cloud:server:24.04:amd64"]
        }
      }
    }"#;

    fn products() -> String {
        format!(
            r#"{{
          "content_id": "com.ubuntu.cloud:released:download", "datatype": "image-downloads",
          "format": "products:1.0",
          "products": {{
            "com.ubuntu.cloud:server:24.04:amd64": {{
              "arch": "amd64", "release": "noble", "version": "24.04", "os": "ubuntu",
              "aliases": "24.04,default,lts,n,noble", "release_codename": "Noble Numbat",
              "release_title": "24.04 LTS",
              "versions": {{
                "20240423": {{"items": {{
                  "disk1.img": {{"ftype": "disk1.img", "path": "server/noble/old.img", "sha256": "{SHA_A}", "size": 10}}
                }}}},
                "20240501.1": {{"items": {{
                  "disk1.img": {{"ftype": "disk1.img", "path": "server/noble/new-disk1.img", "sha256": "{SHA_A}", "size": 11}},
                  "img.xz": {{"ftype": "img.xz", "path": "server/noble/new.img.xz", "sha256": "{SHA_B}", "size": "12"}},
                  "manifest": {{"ftype": "manifest", "path": "server/noble/new.manifest"}}
                }}}},
                "20240501": {{"items": {{
                  "disk1.img": {{"ftype": "disk1.img", "path": "server/noble/mid.img", "sha256": "{SHA_A}"}}
                }}}}
              }}
            }},
            "com.ubuntu.cloud:server:22.04:amd64": {{
              "arch": "amd64", "release": "jammy", "version": "22.04",
              "aliases": "22.04,j,jammy", "release_codename": "Jammy Jellyfish",
              "versions": {{"20240301": {{"items": {{
                  "uefi1.img": {{"ftype": "uefi1.img", "path": "server/jammy/u.img", "sha256": "{SHA_B}"}},
                  "disk1.img": {{"ftype": "disk1.img", "path": "server/jammy/d.img", "sha256": "{SHA_A}"}}
              }}}}}}
            }},
            "com.ubuntu.cloud:server:24.04:arm64": {{
              "arch": "arm64", "release": "noble", "version": "24.04", "aliases": "lts",
              "versions": {{"20240423": {{"items": {{
                  "disk1.img": {{"path": "server/noble/arm.img", "sha256": "{SHA_B}"}}
              }}}}}}
            }}
          }}
        }}"#
        )
    }

    fn parsed() -> Vec<Product> {
        parse_products(&products()).expect("the test products file parses")
    }

    #[test]
    fn the_index_names_the_image_downloads_file() {
        let entries = parse_index(INDEX).expect("parses");
        assert_eq!(entries.len(), 2);
        assert_eq!(
            image_downloads_path(&entries).as_deref(),
            Ok("streams/v1/com.ubuntu.cloud:released:download.json")
        );
        let without = parse_index(r#"{"index": {"x": {"datatype": "image-ids", "path": "p"}}}"#)
            .expect("parses");
        assert_eq!(
            image_downloads_path(&without),
            Err(StreamsError::NoImageDownloads {
                present: "image-ids".to_owned()
            })
        );
        assert!(matches!(
            parse_index("[1]"),
            Err(StreamsError::Malformed { what: "index", .. })
        ));
    }

    #[test]
    fn a_codename_version_alias_or_title_word_picks_the_product_and_its_newest_version() {
        let products = parsed();
        for name in [
            "noble",
            "24.04",
            "lts",
            "Noble",
            "NOBLE NUMBAT",
            "n",
            "default",
        ] {
            let picked = select(&products, name, "amd64", &DEFAULT_FTYPES).expect(name);
            assert_eq!(
                picked.product, "com.ubuntu.cloud:server:24.04:amd64",
                "{name}"
            );
            // 20240501.1 is newer than 20240501, which is newer than 20240423.
            assert_eq!(picked.serial, "20240501.1", "{name}");
            // No uefi1.img in that version: img.xz comes before disk1.img.
            assert_eq!(picked.ftype, "img.xz");
            assert_eq!(picked.path, "server/noble/new.img.xz");
            assert_eq!(picked.size, Some(12));
            assert_eq!(picked.sha256.to_string(), SHA_B);
        }
        let jammy = select(&products, "jammy", "amd64", &DEFAULT_FTYPES).expect("jammy");
        assert_eq!(jammy.ftype, "uefi1.img", "uefi1.img comes first");
        let arm = select(&products, "lts", "arm64", &DEFAULT_FTYPES).expect("arm64");
        assert_eq!(
            (arm.item.as_str(), arm.ftype.as_str()),
            ("disk1.img", "disk1.img"),
            "a missing ftype is the item's key"
        );
    }

    #[test]
    fn an_explicit_ftype_is_taken_or_the_present_ones_are_named() {
        let products = parsed();
        let disk = select(&products, "noble", "amd64", &["disk1.img"]).expect("disk1.img");
        assert_eq!(disk.path, "server/noble/new-disk1.img");
        assert_eq!(
            select(&products, "noble", "amd64", &["root.tar.xz"]),
            Err(StreamsError::NoFtype {
                product: "com.ubuntu.cloud:server:24.04:amd64".to_owned(),
                version: "20240501.1".to_owned(),
                wanted: "root.tar.xz".to_owned(),
                available: "disk1.img, img.xz, manifest".to_owned(),
            })
        );
        let error = select(&products, "noble", "amd64", &["manifest"]).expect_err("no sha256");
        assert!(error.to_string().contains("no sha256"), "{error}");
    }

    #[test]
    fn no_match_names_the_releases_of_that_arch() {
        let products = parsed();
        let error = select(&products, "focal", "amd64", &DEFAULT_FTYPES).expect_err("no focal");
        assert_eq!(
            error.to_string(),
            "no image of release \"focal\" for amd64; releases for amd64: jammy (22.04), noble (24.04)"
        );
        let error = select(&products, "jammy", "arm64", &DEFAULT_FTYPES).expect_err("not on arm64");
        assert!(
            error
                .to_string()
                .ends_with("releases for arm64: noble (24.04)"),
            "{error}"
        );
        let error = select(&products, "noble", "riscv64", &DEFAULT_FTYPES).expect_err("no arch");
        assert!(
            error.to_string().ends_with("releases for riscv64: none"),
            "{error}"
        );
        let error = select(&products, "", "amd64", &DEFAULT_FTYPES).expect_err("empty name");
        assert!(matches!(error, StreamsError::NoRelease { .. }), "{error}");
    }

    #[test]
    fn two_products_answering_to_one_name_are_ambiguous() {
        let text = products().replace(r#""aliases": "22.04,j,jammy""#, r#""aliases": "lts""#);
        let products = parse_products(&text).expect("parses");
        let error = select(&products, "lts", "amd64", &DEFAULT_FTYPES).expect_err("ambiguous");
        assert!(matches!(error, StreamsError::Ambiguous { .. }), "{error}");
    }

    #[test]
    fn fields_may_be_inherited_from_the_top_and_items_must_be_relative() {
        let text = format!(
            r#"{{"arch": "amd64", "products": {{"p": {{"release": "r", "versions": {{"1": {{"items":
                {{"disk1.img": {{"path": "https://elsewhere/x.img", "sha256": "{SHA_A}"}}}}}}}}}}}}}}"#
        );
        let products = parse_products(&text).expect("parses");
        assert_eq!(products[0].arch.as_deref(), Some("amd64"));
        let error = select(&products, "r", "amd64", &DEFAULT_FTYPES).expect_err("absolute");
        assert!(error.to_string().contains("not relative"), "{error}");
    }

    #[test]
    fn serials_order_numerically_by_part() {
        use Ordering::*;
        for (a, b, order) in [
            ("20240423", "20240501", Less),
            ("20240501", "20240501.1", Less),
            ("20240501.10", "20240501.9", Greater),
            ("9", "10", Less),
            ("010", "10", Less),
            ("b", "a", Greater),
        ] {
            assert_eq!(compare_serials(a, b), order, "{a} vs {b}");
        }
    }

    #[test]
    fn urls_paths_and_arches() {
        assert_eq!(
            mirror_url("http://m/releases/", "/streams/v1/index.json"),
            "http://m/releases/streams/v1/index.json"
        );
        assert_eq!(mirror_url("http://m", "a/b"), "http://m/a/b");
        assert_eq!(
            signed_path("streams/v1/x:download.json"),
            "streams/v1/x:download.sjson"
        );
        assert_eq!(debian_arch("x86_64", true), "amd64");
        assert_eq!(debian_arch("aarch64", true), "arm64");
        assert_eq!(debian_arch("powerpc64", true), "ppc64el");
        assert_eq!(debian_arch("s390x", false), "s390x");
        assert_eq!(debian_arch("riscv64", true), "riscv64");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9.:,]{0,12}".prop_map(Value::from),
            Just(Value::from("amd64")),
            Just(Value::from(SHA_A)),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            let keys = prop_oneof![
                Just("products".to_owned()),
                Just("index".to_owned()),
                Just("versions".to_owned()),
                Just("items".to_owned()),
                Just("arch".to_owned()),
                Just("release".to_owned()),
                Just("aliases".to_owned()),
                Just("path".to_owned()),
                Just("sha256".to_owned()),
                Just("size".to_owned()),
                Just("ftype".to_owned()),
                Just("datatype".to_owned()),
                "[a-z0-9.]{0,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(value in json_value(), name in "[a-z0-9.]{0,6}") {
            let text = value.to_string();
            if let Ok(entries) = parse_index(&text) {
                let _ = image_downloads_path(&entries);
            }
            if let Ok(products) = parse_products(&text) {
                for arch in ["amd64", "arm64"] {
                    if let Ok(picked) = select(&products, &name, arch, &DEFAULT_FTYPES) {
                        prop_assert!(!picked.path.is_empty());
                        prop_assert!(DEFAULT_FTYPES.contains(&picked.ftype.as_str()));
                    }
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_index(&text);
            let _ = parse_products(&text);
        }
    }
}
