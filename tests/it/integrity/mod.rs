//! Never publish wrong bytes: each module is one class of the ways a download can be wrong
//! with exit 0 — versions spliced whatever validators the server offers, encoded bodies,
//! framing that lies, part files that are not the engine's own, resumed bytes that changed,
//! two runs on one output, a server that never answers. Every test asserts the output's
//! SHA-256 (or its absence) and what the server was asked.

// Validators: weak, disappearing, flipping between backends; another origin; mirrors.
mod validators;
// Encodings: gzip forced on the file, encoded ranges, transfer codings, undecodable codings.
mod encodings;
// Framing: Content-Length against Content-Range, duplicated headers, recoverable oddities.
mod framing;
// The part file, its journal and the output belong to the engine.
mod own_files;
// Resumed bytes that changed behind the journal, and two runs on one output.
mod resume;
// A server that accepts and never answers is a stall.
mod timeouts;
