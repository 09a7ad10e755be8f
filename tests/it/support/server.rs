//! The test server, started with a fault script, for a test that keeps it: to run against it
//! twice, to change it between runs, or to serve as one of several mirrors. A single run
//! against a fresh server is a [`Scenario`](super::Scenario) instead.

use rangefetch_testserver::{FaultRule, FaultScript, FileSpec, ServerConfig, TestServer};

/// A server for `files` with these fault rules (script seed 0).
pub fn start_server(files: Vec<FileSpec>, rules: Vec<FaultRule>) -> TestServer {
    TestServer::start(ServerConfig {
        files,
        faults: FaultScript::new(rules),
    })
}
