//! The integration tests of the `rangefetch` binary, in one test binary: one module per area,
//! and the harness in `support` (running the binary, the one `check`, the scenario builder,
//! nginx, tinyproxy, certificates, files).

mod support;

mod batch; // `get -i`: many files under one connection budget, resumed, failing alone
// Caching: the verified, content-addressed cache and its hits, misses and eviction.
mod cache;
// Faults: the test server's fault script, one module per kind of fault.
mod faults;
// Integrity: never wrong bytes with exit 0 — validators, encodings, framing, own files.
mod integrity;
mod interop; // real servers and caches from Debian packages, and the quirks they showed
// Get: `get`, `hash` and `verify` against the fault-free test server, and the exit codes.
mod get;
mod image; // `image`: cloud images by name from a simplestreams tree served by nginx, signed or not
// JSON: the `--json` event lines and summary, completions, and no colour on a pipe.
mod json;
mod local_files; // hash, verify and usage errors on local input
mod metalink; // `get FILE.meta4`: Metalink mirrors, hashes and names, and hostile Metalinks
// nginx: a real web server whose range handling we did not write.
mod nginx;
// Over-fetch: the bytes the server sends, against the file's size.
mod overfetch;
// Proxies: `--proxy` and the proxy variables, through a real tinyproxy.
mod proxy;
// Repair: a checksum mismatch located, fetched again from elsewhere, and named.
mod repair;
// Requests: -H, --user-agent, signed URLs redacted and resumed, --limit-rate.
mod requests;
// Resume: Ctrl-C, kill -9, a damaged journal, a changed remote, a full disk.
mod resume;
mod site_cache; // many machines through one nginx or Squid site cache, with the contrib/ recipes
// TLS: HTTPS against nginx with a private CA.
mod tls;
// Trust: server digests checked at the probe, signed checksum files.
mod trust;
