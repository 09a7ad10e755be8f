//! System packages the tests rely on (real nginx, tinyproxy, openssl, the
//! servers and caches of the interop matrix, and a C++ compiler for
//! libFuzzer), installed with apt-get when missing, plus the rustup
//! components the checks call.

use anyhow::{Result, bail};

use crate::cmd::{Cmd, find_program};

/// A program some step needs and the Debian package that provides it.
pub struct Requirement {
    pub program: &'static str,
    pub package: &'static str,
    /// The service Debian may start on install; stopped again, because the
    /// tests start their own instances with their own configs and ports.
    pub service: Option<&'static str>,
}

/// What the integration tests start themselves: nginx and tinyproxy on
/// loopback ports, openssl to make the HTTPS tests' certificate authority,
/// and the interop matrix's servers and caches (lighttpd, Apache, Caddy,
/// busybox httpd, Python's http.server, Squid, Varnish).
pub const FOR_TESTS: &[Requirement] = &[
    Requirement {
        program: "nginx",
        package: "nginx-light",
        service: Some("nginx"),
    },
    Requirement {
        program: "tinyproxy",
        package: "tinyproxy",
        service: Some("tinyproxy"),
    },
    // SOCKS5 (tests/it/proxy.rs): a real server, started per test.
    Requirement {
        program: "microsocks",
        package: "microsocks",
        service: None,
    },
    Requirement {
        program: "openssl",
        package: "openssl",
        service: None,
    },
    // The interop matrix (tests/it/interop/): each starts in the foreground
    // on its own loopback port with a configuration the test writes.
    Requirement {
        program: "lighttpd",
        package: "lighttpd",
        service: Some("lighttpd"),
    },
    Requirement {
        program: "apache2",
        package: "apache2",
        service: Some("apache2"),
    },
    Requirement {
        program: "caddy",
        package: "caddy",
        service: Some("caddy"),
    },
    Requirement {
        program: "busybox",
        package: "busybox",
        service: None,
    },
    Requirement {
        program: "python3",
        package: "python3",
        service: None,
    },
    Requirement {
        program: "squid",
        package: "squid",
        service: Some("squid"),
    },
    Requirement {
        program: "varnishd",
        package: "varnish",
        service: Some("varnish"),
    },
];

/// libfuzzer-sys compiles libFuzzer's C++ sources when a fuzz target builds.
pub const FOR_FUZZ: &[Requirement] = &[Requirement {
    program: "c++",
    package: "g++",
    service: None,
}];

/// Installs the packages of whichever required programs are missing, with
/// one `apt-get install`; as a non-root user, says what to install and fails.
pub fn ensure(requirements: &[&Requirement]) -> Result<()> {
    let missing: Vec<&Requirement> = requirements
        .iter()
        .copied()
        .filter(|requirement| find_program(requirement.program).is_none())
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = requirements.iter().map(|r| r.program).collect();
        eprintln!("system packages: all present ({})", names.join(", "));
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|r| r.package).collect();
    let programs: Vec<&str> = missing.iter().map(|r| r.program).collect();
    eprintln!("system packages: missing {}", programs.join(", "));
    if !is_root() {
        bail!(
            "missing programs: {}; install them with `sudo apt-get install -y {}` and run again",
            programs.join(", "),
            packages.join(" ")
        );
    }
    if find_program("apt-get").is_none() {
        bail!(
            "missing programs: {} and there is no apt-get here; install the equivalents of the \
             Debian packages {} and run again",
            programs.join(", "),
            packages.join(" ")
        );
    }
    // Another process may hold the dpkg lock for a while (unattended upgrades,
    // a neighbour's install): wait for it rather than fail.
    let apt_get = || {
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .no_stdin()
    };
    apt_get().arg("update").run()?;
    apt_get()
        .args([
            "-o",
            "Dpkg::Options::=--force-confold",
            "install",
            "-y",
            "--no-install-recommends",
        ])
        .args(packages)
        .run()?;
    for requirement in &missing {
        if find_program(requirement.program).is_none() {
            bail!(
                "installed {} but `{}` is still not found",
                requirement.package,
                requirement.program
            );
        }
        if let Some(service) = requirement.service {
            stop_service(service);
        }
    }
    Ok(())
}

/// Stops a service the package install may have started. Harmless if it was
/// not running or there is no init system (a container): never fails.
fn stop_service(service: &str) {
    let systemd_running = std::path::Path::new("/run/systemd/system").exists();
    let stopped = if systemd_running && find_program("systemctl").is_some() {
        Cmd::new("systemctl")
            .args(["stop", service])
            .no_stdin()
            .status()
    } else if find_program("service").is_some() {
        Cmd::new("service")
            .args([service, "stop"])
            .no_stdin()
            .status()
    } else {
        return;
    };
    if !stopped.is_ok_and(|status| status.success()) {
        eprintln!("(could not stop service {service}; continuing: the tests use their own ports)");
    }
}

/// Makes sure `cargo fmt` and `cargo clippy` exist, adding the rustup
/// components when they do not (a minimal toolchain lacks both).
pub fn ensure_rust_components() -> Result<()> {
    let components = [("fmt", "rustfmt"), ("clippy", "clippy")];
    let missing: Vec<&str> = components
        .iter()
        .filter(|(subcommand, _)| !Cmd::cargo().args([*subcommand, "--version"]).probe())
        .map(|(_, component)| *component)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if find_program("rustup").is_none() {
        bail!(
            "cargo lacks {}; install those toolchain components",
            missing.join(" and ")
        );
    }
    Cmd::new("rustup")
        .args(["component", "add"])
        .args(missing)
        .no_stdin()
        .run()
}

fn is_root() -> bool {
    // The effective uid (second field of `Uid:`), without a libc dependency.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            .is_some_and(|effective_uid| effective_uid == "0")
    })
}
