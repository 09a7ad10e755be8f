//! The programs the tests drive besides rangefetch (nginx, tinyproxy): found in PATH or the
//! sbin directories, or the test fails saying how to install them. A test that needs one
//! never skips.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The executable `name` from PATH or the usual bin and sbin directories; panics naming the
/// Debian `package` that provides it.
pub fn find_program(name: &str, package: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed (looked in PATH, /usr/bin and /usr/sbin): run \
                 `cargo xtask test`, which installs it, or `apt-get install {package}`"
            )
        })
}
