//! Which programs this machine has for the benchmark, after installing the
//! missing ones with one `apt-get update` and one `apt-get install` when
//! running as root. Whatever is still missing is skipped with a note.

use std::path::{Path, PathBuf};

use super::tool::Tool;
use crate::cmd::{Cmd, find_program};

/// The programs found, and notes on what is not there.
pub struct Toolbox {
    /// The requested tools that can run, in the requested order.
    pub tools: Vec<Tool>,
    pub nginx: Option<PathBuf>,
    /// GNU time, for CPU and peak RSS.
    pub time: Option<PathBuf>,
    /// For the report: what was skipped and why.
    pub notes: Vec<String>,
}

/// Programs beside the tools, and their Debian packages.
const NGINX: (&str, &str) = ("nginx", "nginx-light");
const TIME: (&str, &str) = ("time", "time");

impl Toolbox {
    pub fn prepare(requested: &[Tool], need_nginx: bool, install: bool) -> Toolbox {
        let mut wanted: Vec<(&str, &str)> = Vec::new();
        for tool in requested {
            if let (Some(package), Some(program)) = (tool.package(), tool.programs().first()) {
                wanted.push((program, package));
            }
        }
        if need_nginx {
            wanted.push(NGINX);
        }
        wanted.push(TIME);
        let missing: Vec<(&str, &str)> = wanted
            .into_iter()
            .filter(|(program, _)| find_program(program).is_none())
            .collect();
        let mut notes = Vec::new();
        if !missing.is_empty() {
            let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
            if !install {
                notes.push(format!(
                    "not installed, and --no-install: {}",
                    packages.join(" ")
                ));
            } else if !is_root() || find_program("apt-get").is_none() {
                notes.push(format!(
                    "not installed (needs root and apt-get): `apt-get install {}`",
                    packages.join(" ")
                ));
            } else {
                install_packages(&packages, &mut notes);
            }
        }

        let mut tools = Vec::new();
        for &tool in requested {
            let absent: Vec<&str> = tool
                .programs()
                .iter()
                .copied()
                .filter(|program| find_program(program).is_none())
                .collect();
            if absent.is_empty() {
                tools.push(tool);
            } else {
                notes.push(format!(
                    "{} skipped: {} not found",
                    tool.name(),
                    absent.join(", ")
                ));
            }
        }
        let nginx = need_nginx.then(|| find_program("nginx")).flatten();
        if need_nginx && nginx.is_none() {
            notes.push("nginx not found: the scenarios that need it are skipped".to_owned());
        }
        // The shell keyword `time` has no -f; only GNU time reports peak RSS.
        let time = find_program("time");
        if time.is_none() {
            notes.push("GNU time not found: no CPU or peak RSS figures".to_owned());
        }
        Toolbox {
            tools,
            nginx,
            time,
            notes,
        }
    }
}

/// `apt-get update` once, then one install of the packages apt knows.
/// Failures become notes: the benchmark goes on without those tools.
fn install_packages(packages: &[&str], notes: &mut Vec<String>) {
    let apt_get = || {
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .no_stdin()
    };
    if let Err(err) = apt_get().arg("update").run() {
        notes.push(format!("apt-get update failed: {err:#}"));
        return;
    }
    let (known, unknown): (Vec<&str>, Vec<&str>) = packages.iter().partition(|package| {
        Cmd::new("apt-cache")
            .args(["show", "--no-all-versions", package])
            .probe()
    });
    if !unknown.is_empty() {
        notes.push(format!("no such package here: {}", unknown.join(" ")));
    }
    if known.is_empty() {
        return;
    }
    let installed = apt_get()
        .args([
            "-o",
            "Dpkg::Options::=--force-confold",
            "install",
            "-y",
            "--no-install-recommends",
        ])
        .args(known.iter().copied())
        .run();
    if let Err(err) = installed {
        notes.push(format!("apt-get install failed: {err:#}"));
    }
    if known.contains(&NGINX.1) {
        stop_nginx_service();
    }
}

/// Debian starts nginx on port 80 when it is installed; the benchmark runs
/// its own, so the service's is stopped. Never fails.
fn stop_nginx_service() {
    let systemd = Path::new("/run/systemd/system").exists() && find_program("systemctl").is_some();
    let command = if systemd {
        Cmd::new("systemctl").args(["stop", "nginx"])
    } else if find_program("service").is_some() {
        Cmd::new("service").args(["nginx", "stop"])
    } else {
        return;
    };
    if !command
        .no_stdin()
        .status()
        .is_ok_and(|status| status.success())
    {
        eprintln!("(could not stop the nginx service; the benchmark uses its own ports anyway)");
    }
}

/// Whether the effective uid is 0, from /proc (xtask has no libc).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            .is_some_and(|effective_uid| effective_uid == "0")
    })
}
