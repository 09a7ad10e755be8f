//! Loopback ports: a free one for a server that reads its port from a configuration file, and
//! one on which nothing listens.

use std::net::{Ipv4Addr, TcpListener};

/// A loopback port that was free a moment ago, for a server that takes its port from its
/// configuration file; its starter retries another if the port is taken by then.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A loopback port on which nothing listens: connecting to it is refused.
pub fn closed_port() -> u16 {
    // Nothing binds a port the kernel just handed out and took back in the moment a test
    // needs it, except another test doing the same; that would only make the refusal late.
    free_port()
}
