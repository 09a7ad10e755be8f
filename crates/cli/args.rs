//! Command-line flags, as docs/CONTRACT.md fixes them. The environment is
//! read in settings.rs, not here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use rangefetch_core::Sha256Hex;

/// Parallel segmented downloads, verified with SHA-256.
#[derive(Debug, Parser)]
#[command(name = "rangefetch", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download one file (several URLs = mirrors of the same bytes).
    Get(GetArgs),
    /// Check a local file against an expected SHA-256.
    Verify(VerifyArgs),
    /// Print `<hex>  <path>` lines, like sha256sum.
    Hash(HashArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Download an Ubuntu cloud image by name (noble, 24.04, lts) from a
    /// simplestreams mirror, verified against its published sha256.
    Image(ImageArgs),
    /// Print the manual page (roff) on stdout.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// URL of the file; further URLs are mirrors of the same bytes.
    #[arg(required_unless_present = "input_file", value_name = "URL")]
    pub urls: Vec<String>,
    /// Download every file a list names (`-` reads standard input): one
    /// per line, `HASH  URL [PATH]` (a SHA256SUMS-style line) or a bare
    /// `URL`; mirrors of the same file follow its URL, separated by tabs;
    /// `#` starts a comment.
    #[arg(short = 'i', long, value_name = "FILE", conflicts_with_all = ["urls", "output", "sha256", "sha256_sums"])]
    pub input_file: Option<PathBuf>,
    /// Files downloaded at once from an --input-file list; `-c` stays the
    /// ceiling on connections in total, shared between them.
    #[arg(short = 'j', long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Most connections to any one host, over all the files of a list
    /// [default: the -c value, at most 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_per_host: Option<u16>,
    /// Destination file [default: the URL's file name, in the current directory].
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub expected: Expected,
    #[command(flatten)]
    pub trust: Trust,
    /// Take the expected hash from the server's Repr-Digest, Digest or
    /// X-Linked-ETag header when none is given.
    #[arg(long)]
    pub trust_server_digest: bool,
    #[command(flatten)]
    pub transfer: Transfer,
}

/// How a download runs and reports: the options `get` and `image` share.
#[derive(Debug, Args)]
pub struct Transfer {
    /// Most concurrent connections (1..=64).
    #[arg(short = 'c', long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: u16,
    /// Bytes per ranged request (K, M, G, KiB, MiB, GiB suffixes).
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_chunk_size)]
    pub chunk_size: u64,
    /// Start and split chunks only on multiples of SIZE, a site cache's slice size (0: anywhere).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_any_size)]
    pub align: u64,
    /// Start at an offset of this run's own, wrapping around, so that clients fetching one
    /// file through one cache fill different slices (the hash then finishes after the bytes).
    #[arg(long)]
    pub rotate: bool,
    /// Failed attempts without progress allowed per range.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Drop a connection that receives no byte for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 20.0, value_parser = parse_seconds)]
    pub stall_timeout: f64,
    /// Wait this many seconds for a response to begin (headers and first byte)
    /// [default: --stall-timeout; through a proxy at least 60, as a filling cache holds answers back].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub first_byte_timeout: Option<f64>,
    /// TCP + TLS connect timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 15.0, value_parser = parse_seconds)]
    pub connect_timeout: f64,
    /// Proxy for all requests: http://, https://, socks5:// or socks5h:// (DNS by the proxy)
    /// [default: from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY].
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Extra trusted root certificate(s), PEM.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Vec<PathBuf>,
    /// Most bytes per second over all connections and files (K, M, G,
    /// KiB, MiB suffixes; binary units: 8M is 8 MiB/s).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
    /// An extra request header, `Name: value` (repeatable). Credentials
    /// (Authorization, Cookie) go only to the hosts of the URLs given,
    /// never to another host a redirect leads to; values are never shown.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The User-Agent header [default: rangefetch/VERSION].
    #[arg(long, value_name = "STRING")]
    pub user_agent: Option<String>,
    /// Most bytes fetched again to repair a file whose SHA-256 does not
    /// match (K, M, G suffixes; 0: no repair) [default: the file's size].
    #[arg(long, value_name = "SIZE", value_parser = parse_any_size)]
    pub repair_budget: Option<u64>,
    /// What the proxy is: `dragonfly` for a Dragonfly dfdaemon (prefetch,
    /// content-keyed tasks with --sha256, 4 MiB pieces, at most 8 connections).
    #[arg(long, value_name = "FLAVOR", value_enum, default_value_t = Flavor::Plain)]
    pub proxy_flavor: Flavor,
    /// Content-addressed cache of verified files [default: $RANGEFETCH_CACHE_DIR].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Largest total size of the cache; least recently used files are evicted beyond it.
    #[arg(long, value_name = "SIZE", value_parser = parse_any_size)]
    pub cache_max_size: Option<u64>,
    /// JSON lines on stdout: progress events, then one summary object.
    #[arg(long)]
    pub json: bool,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--proxy-flavor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// An ordinary HTTP proxy or cache.
    Plain,
    /// A Dragonfly dfdaemon.
    Dragonfly,
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct Expected {
    /// Expected SHA-256 (64 hex digits, either case).
    #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
    pub sha256: Option<Sha256Hex>,
    /// A checksum file (GNU or BSD format), local path or URL; the entry
    /// named like the URL's file is the expected hash.
    #[arg(long, value_name = "URL|PATH")]
    pub sha256_sums: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The file to check.
    pub path: PathBuf,
    #[command(flatten)]
    pub expected: VerifyExpected,
    #[command(flatten)]
    pub trust: Trust,
}

/// Who must have signed the checksum file.
#[derive(Debug, Args)]
pub struct Trust {
    /// Detached OpenPGP signature (binary or armored) of the --sha256-sums
    /// file, local path or URL; a clearsigned checksum file needs none.
    #[arg(long, value_name = "URL|PATH", requires = "keyring")]
    pub signature: Option<String>,
    /// OpenPGP keyring or key file (binary or armored); with it, no hash
    /// of the checksum file is used unless its signature verifies.
    #[arg(long, value_name = "PATH", requires = "sha256_sums")]
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct VerifyExpected {
    /// Expected SHA-256 (64 hex digits, either case).
    #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
    pub sha256: Option<Sha256Hex>,
    /// A checksum file (GNU or BSD format), local path or URL.
    #[arg(long, value_name = "URL|PATH")]
    pub sha256_sums: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The release: codename, version or alias (noble, 24.04, lts).
    #[arg(value_name = "RELEASE")]
    pub release: String,
    /// Architecture, Debian/Ubuntu naming (amd64, arm64, …) [default: this machine's].
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// File type of the item [default: the first present of uefi1.img, img.xz, disk1.img].
    #[arg(long, value_name = "FTYPE")]
    pub ftype: Option<String>,
    /// The simplestreams tree: a mirror's URL, the directory holding streams/v1/.
    #[arg(long, value_name = "URL", default_value = DEFAULT_MIRROR)]
    pub mirror: String,
    /// OpenPGP keyring (binary or armored); with it only the clearsigned
    /// .sjson files are read, and each must verify before it is used.
    #[arg(long, value_name = "PATH")]
    pub keyring: Option<PathBuf>,
    /// Destination file [default: the file name of the item's path].
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Print `<sha256>  <url>` of the image and download nothing.
    #[arg(long)]
    pub print: bool,
    #[command(flatten)]
    pub transfer: Transfer,
}

/// Ubuntu's public release stream of cloud images.
pub const DEFAULT_MIRROR: &str = "https://cloud-images.ubuntu.com/releases/";

#[derive(Debug, Args)]
pub struct HashArgs {
    /// Files to hash (in parallel).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Whether a command line asks for `--json`, looked for before parsing so
/// that a line clap rejects still ends with the `done` object. Arguments
/// after `--` are operands, not flags.
pub fn asks_for_json(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json")
}

fn parse_sha256(value: &str) -> Result<Sha256Hex, String> {
    Sha256Hex::parse(value).map_err(|e| e.to_string())
}

fn parse_chunk_size(value: &str) -> Result<u64, String> {
    match rangefetch_core::parse_size(value) {
        Ok(0) => Err("chunk size must be at least 1 byte".to_owned()),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_rate(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let value = value
        .strip_suffix("/s")
        .or_else(|| value.strip_suffix("ps"))
        .unwrap_or(value);
    match rangefetch_core::parse_size(value) {
        Ok(0) => Err("the rate must be at least 1 byte per second".to_owned()),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(e.to_string()),
    }
}

/// `Name: value`, as curl's -H takes it. The error never repeats the
/// value, which may be a token.
fn parse_header(value: &str) -> Result<(String, String), String> {
    let (name, rest) = value
        .split_once(':')
        .ok_or_else(|| "a header is `Name: value`".to_owned())?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(
            "a header is `Name: value`, with a name of visible ASCII characters".to_owned(),
        );
    }
    Ok((name.to_owned(), rest.trim().to_owned()))
}

fn parse_any_size(value: &str) -> Result<u64, String> {
    rangefetch_core::parse_size(value).map_err(|e| e.to_string())
}

fn parse_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Ok(secs),
        _ => Err(format!(
            "{value:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &[&str]) -> Vec<std::ffi::OsString> {
        words.iter().map(std::ffi::OsString::from).collect()
    }

    #[test]
    fn rates_and_headers_parse_as_users_write_them() {
        assert_eq!(parse_rate("8M"), Ok(8 << 20));
        assert_eq!(parse_rate("500K"), Ok(500 << 10));
        assert_eq!(parse_rate("2MiB/s"), Ok(2 << 20));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(
            parse_header("Authorization: Bearer abc:def"),
            Ok(("Authorization".into(), "Bearer abc:def".into()))
        );
        assert_eq!(
            parse_header("X-Empty:"),
            Ok(("X-Empty".into(), String::new()))
        );
        let bad = parse_header("no colon secret").expect_err("no colon");
        assert!(!bad.contains("secret"), "{bad}");
        assert!(parse_header(": value").is_err());
    }

    #[test]
    fn json_is_seen_before_parsing_but_not_as_an_operand() {
        assert!(asks_for_json(line(&[
            "rangefetch",
            "get",
            "--bogus",
            "--json"
        ])));
        assert!(asks_for_json(line(&["rangefetch", "--json", "get"])));
        assert!(!asks_for_json(line(&[
            "rangefetch",
            "get",
            "u",
            "--",
            "--json"
        ])));
        assert!(
            !asks_for_json(line(&["--json", "get", "u"])),
            "argv[0] is the program"
        );
        assert!(!asks_for_json(line(&["rangefetch", "get", "--jsonx"])));
    }
}
