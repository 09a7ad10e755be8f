//! Flags plus environment → the core [`Config`] and the other settings of a
//! run. The only file of the CLI that reads environment variables (core
//! reads none): `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` in
//! either case, `RANGEFETCH_CACHE_DIR` and `NO_COLOR`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use rangefetch_core::{Config, ProxyFlavor, RateLimit};

use crate::args::{Flavor, GetArgs, ImageArgs, Transfer};
use crate::exit::{self, Failure};

/// What `get` runs with, besides its URLs and expected hash.
pub struct GetSettings {
    pub config: Config,
    /// `--cache-dir`, else `RANGEFETCH_CACHE_DIR`.
    pub cache_dir: Option<PathBuf>,
    /// The proxy in use with its credentials replaced, for messages.
    pub proxy_shown: Option<String>,
}

/// One environment variable; set but empty counts as unset.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// The settings of `get`, from its flags and the process environment.
pub fn for_get(args: &GetArgs) -> Result<GetSettings, Failure> {
    get_settings(args, &process_env)
}

/// The settings of `image`: those of `get`, the proxy chosen for the mirror.
pub fn for_image(args: &ImageArgs) -> Result<GetSettings, Failure> {
    transfer_settings(&args.transfer, Some(&args.mirror), &process_env)
}

fn get_settings(
    args: &GetArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GetSettings, Failure> {
    transfer_settings(&args.transfer, args.urls.first(), env)
}

fn transfer_settings(
    args: &Transfer,
    first_url: Option<&String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GetSettings, Failure> {
    let mut config = Config::default();
    config.connections = usize::from(args.connections);
    config.chunk_size = args.chunk_size;
    config.align = args.align;
    // Another seed for every client: its pid, and the time for clients on other hosts.
    config.rotation_seed = args.rotate.then(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    });
    config.retries = args.retries;
    config.stall_timeout = Duration::from_secs_f64(args.stall_timeout);
    config.connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    config.proxy = match &args.proxy {
        Some(proxy) => Some(proxy.clone()),
        None => first_url.and_then(|url| proxy_from_env(url, env)),
    };
    for path in &args.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read CA certificate {}", path.display()))
            .map_err(|e| Failure::new(exit::USAGE, e))?;
        config.ca_certs_pem.push(pem);
    }
    config.rate_limit = args.limit_rate.map(RateLimit::new);
    for (name, value) in &args.headers {
        config.headers.push(name, value);
    }
    config.user_agent = args.user_agent.clone();
    config.first_byte_timeout = args.first_byte_timeout.map(Duration::from_secs_f64);
    config.repair_budget = args.repair_budget;
    config.proxy_flavor = match args.proxy_flavor {
        Flavor::Plain => ProxyFlavor::Plain,
        Flavor::Dragonfly => ProxyFlavor::Dragonfly,
    };
    let proxy_shown = config.proxy.as_deref().map(redact);
    let cache_dir = args
        .cache_dir
        .clone()
        .or_else(|| env("RANGEFETCH_CACHE_DIR").map(PathBuf::from));
    Ok(GetSettings {
        config,
        cache_dir,
        proxy_shown,
    })
}

/// The proxy for one file of a `-i` list: `--proxy`, else what the
/// environment names for its URL (`NO_PROXY` honoured per host).
pub fn proxy_for_url(flag: Option<&String>, url: &str) -> Option<String> {
    match flag {
        Some(proxy) => Some(proxy.clone()),
        None => proxy_from_env(url, &process_env),
    }
}

/// The settings of `verify`: it fetches at most a checksum file, with the
/// engine's defaults.
pub fn for_verify() -> Config {
    Config::default()
}

/// Whether the progress bar may use colour (`NO_COLOR` unset).
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none()
}

/// The proxy the environment names for `url`, honouring `NO_PROXY`.
fn proxy_from_env(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let first_set = |names: &[&str]| names.iter().find_map(|name| env(name));
    let proxy = if url.starts_with("https:") {
        first_set(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
    } else {
        first_set(&["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
    }?;
    let host = url.split("://").nth(1)?.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?;
    let host = host.trim_start_matches('[').split(']').next()?;
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    if let Some(no_proxy) = first_set(&["NO_PROXY", "no_proxy"]) {
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::args::{Cli, Command};

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    fn settings(line: &[&str], vars: &[(&str, &str)]) -> GetSettings {
        let args = match Cli::try_parse_from(line).map(|cli| cli.command) {
            Ok(Command::Get(args)) => args,
            other => panic!("{line:?} is not a get command line: {other:?}"),
        };
        match get_settings(&args, &env_of(vars)) {
            Ok(settings) => settings,
            Err(_) => panic!("{line:?} should give settings"),
        }
    }

    #[test]
    fn proxy_by_scheme_with_no_proxy_by_host_suffix() {
        let vars = [
            ("HTTPS_PROXY", "http://user:secret@proxy:3128"),
            ("http_proxy", "http://plain:8080"),
            ("NO_PROXY", "internal.example, .lan"),
        ];
        let https = settings(&["rangefetch", "get", "https://example.org/f"], &vars);
        assert_eq!(
            https.config.proxy.as_deref(),
            Some("http://user:secret@proxy:3128")
        );
        assert_eq!(https.proxy_shown.as_deref(), Some("http://***@proxy:3128"));
        let http = settings(&["rangefetch", "get", "http://example.org/f"], &vars);
        assert_eq!(http.config.proxy.as_deref(), Some("http://plain:8080"));
        for excluded in [
            "https://internal.example/f",
            "https://a.internal.example:8443/f",
            "http://box.lan/f",
            "http://user@box.lan:80/f",
        ] {
            let run = settings(&["rangefetch", "get", excluded], &vars);
            assert_eq!(run.config.proxy, None, "{excluded}");
        }
    }

    #[test]
    fn the_flag_beats_the_environment() {
        let vars = [
            ("ALL_PROXY", "socks5://env:1080"),
            ("NO_PROXY", "*"),
            ("RANGEFETCH_CACHE_DIR", "/env/cache"),
        ];
        let flags = settings(
            &[
                "rangefetch",
                "get",
                "http://h/f",
                "--proxy",
                "http://flag:1",
                "--cache-dir",
                "/flag/cache",
            ],
            &vars,
        );
        assert_eq!(flags.config.proxy.as_deref(), Some("http://flag:1"));
        assert_eq!(flags.cache_dir, Some(PathBuf::from("/flag/cache")));
        let env = settings(&["rangefetch", "get", "http://h/f"], &vars);
        assert_eq!(env.config.proxy, None, "NO_PROXY=* excludes every host");
        assert_eq!(env.cache_dir, Some(PathBuf::from("/env/cache")));
        let bare = settings(&["rangefetch", "get", "http://h/f"], &[]);
        assert_eq!((bare.config.proxy, bare.cache_dir), (None, None));
    }

    #[test]
    fn flags_reach_the_config() {
        let run = settings(
            &[
                "rangefetch",
                "get",
                "http://h/f",
                "-c",
                "3",
                "--chunk-size",
                "1MiB",
                "--retries",
                "7",
                "--stall-timeout",
                "2.5",
            ],
            &[],
        );
        assert_eq!(run.config.connections, 3);
        assert_eq!(run.config.chunk_size, 1 << 20);
        assert_eq!(run.config.retries, 7);
        assert_eq!(run.config.stall_timeout, Duration::from_millis(2500));
    }
}
