//! The interop matrix: rangefetch against real servers and caches installed from Debian
//! packages; `quirks` replays what the matrix found against the test server.

mod quirks;
