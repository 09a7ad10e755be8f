//! The harness of the integration tests, one noun per module. Tests import from here
//! (`use crate::support::{…}`); the modules below say where each thing lives.

pub mod binary;
pub mod check;
pub mod files;
pub mod nginx;
pub mod pki;
pub mod port;
pub mod program;
pub mod proxy;
pub mod relay;
pub mod rng;
pub mod scenario;
pub mod server;
pub mod servers;
pub mod socks;

pub use binary::{Run, run, settled_body_bytes};
pub use check::{Expect, assert_exit};
pub use files::{
    KIB, MIB, WRONG_SHA256, files_under, journal_blocks, journal_recorded, sha256_bytes,
    sha256_file, tempdir, with_suffix,
};
pub use nginx::{Nginx, NginxOptions};
pub use pki::TestPki;
pub use port::closed_port;
pub use proxy::{Tinyproxy, TinyproxyOptions};
pub use rng::SeededRng;
pub use scenario::{Ran, Scenario};
pub use server::start_server;
pub use socks::Microsocks;
