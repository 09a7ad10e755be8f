//! Replays every input saved under `fuzz/regressions/<target>/` through the
//! property check its fuzz target runs, so a fuzz crash, once fixed, stays
//! fixed in a plain `cargo test` (and in CI, which runs no fuzzer for long).
//! Every target keeps at least one saved input, and a target's folder that is
//! missing or empty fails its replay instead of replaying nothing.

use std::fs;
use std::path::{Path, PathBuf};

use rangefetch_core::internals::Journal;

// The fuzz targets' own checks, compiled here too: one definition of each
// property, whichever way an input reaches it.
#[path = "../../../fuzz/src/lib.rs"]
mod checks;

/// The fuzz project, beside the workspace.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The saved inputs of one target, sorted; panics when there are none.
fn saved_inputs(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("regressions").join(target);
    let read_dir = fs::read_dir(&dir).unwrap_or_else(|error| {
        panic!(
            "{} must hold the saved inputs of fuzz target `{target}` ({error}); \
             see fuzz/regressions/README.md",
            dir.display()
        )
    });
    let mut inputs: Vec<PathBuf> = read_dir
        .map(|entry| entry.expect("readable regressions directory").path())
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "{} holds no saved input for fuzz target `{target}`; see fuzz/regressions/README.md",
        dir.display()
    );
    inputs
}

/// Runs `check` on every saved input of `target`; returns the inputs, read.
fn replay(target: &str, check: fn(&[u8])) -> Vec<(PathBuf, Vec<u8>)> {
    saved_inputs(target)
        .into_iter()
        .map(|path| {
            let data = fs::read(&path).expect("readable regression input");
            // Printed only when the check below panics, naming the input.
            eprintln!("replaying {}", path.display());
            check(&data);
            (path, data)
        })
        .collect()
}

#[test]
fn content_range() {
    replay("content_range", checks::check_content_range);
}

#[test]
fn checksums() {
    replay("checksums", checks::check_checksums);
}

#[test]
fn file_name() {
    replay("file_name", checks::check_file_name);
}

#[test]
fn size() {
    replay("size", checks::check_size);
}

#[test]
fn simplestreams() {
    replay("simplestreams", checks::check_simplestreams);
}

#[test]
fn digest() {
    replay("digest", checks::check_digest);
}

/// Besides the replay: the well-formed documents among the inputs still
/// parse (a parser that refused everything would pass the replay), and the
/// hostile names are still refused.
#[test]
fn metalink() {
    let inputs = replay("metalink", checks::check_metalink);
    let named = |name: &str| {
        inputs
            .iter()
            .find(|(path, _)| path.file_name().is_some_and(|n| n == name))
            .map(|(_, data)| data.as_slice())
            .unwrap_or_else(|| panic!("fuzz/regressions/metalink/{name} is missing"))
    };
    for name in ["meta4-pieces-and-mirrors", "metalink3-preferences"] {
        let parsed = rangefetch_core::parse_metalink(named(name), None)
            .unwrap_or_else(|error| panic!("{name} no longer parses: {error}"));
        assert!(parsed.files[0].sha256.is_some() && parsed.files[0].pieces.is_some());
        assert!(parsed.files[0].urls.len() >= 2, "{name}: {parsed:?}");
    }
    for name in ["traversal-name", "drive-letter-name"] {
        assert!(
            matches!(
                rangefetch_core::parse_metalink(named(name), None),
                Err(rangefetch_core::MetalinkError::UnsafeName { .. })
            ),
            "{name} is accepted"
        );
    }
    let links = String::from_utf8_lossy(named("link-duplicates")).into_owned();
    let links = rangefetch_core::internals::duplicate_links(
        links.lines(),
        "https://origin.example/pub/file.iso",
    );
    assert_eq!(links.len(), 4, "{links:?}");
}

/// Besides the replay: the lists a user writes still parse, and the
/// hostile paths are still refused.
#[test]
fn input_list() {
    let inputs = replay("input_list", checks::check_input_list);
    let parsed = |name: &str| {
        let (_, data) = inputs
            .iter()
            .find(|(path, _)| path.file_name().is_some_and(|n| n == name))
            .unwrap_or_else(|| panic!("fuzz/regressions/input_list/{name} is missing"));
        rangefetch_core::parse_input_list(data)
    };
    for (name, n_entries) in [
        ("sums-with-binary-marker", 2),
        ("mirrors-and-path-crlf", 1),
        ("bom-and-derived-name-with-space", 1),
    ] {
        let entries = parsed(name).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(entries.len(), n_entries, "{name}: {entries:?}");
    }
    for name in ["traversal-path", "absolute-path"] {
        assert!(
            matches!(
                parsed(name),
                Err(rangefetch_core::InputListError::BadPath { line: 1, .. })
            ),
            "{name} is accepted"
        );
    }
}

#[test]
fn headers() {
    replay("headers", checks::check_headers);
}

/// The journal's inputs say by their name what they are: a `valid-` journal
/// must decode (or its replay would only check that garbage is rejected), a
/// `torn-` one must not.
#[test]
fn journal() {
    let inputs = replay("journal", checks::check_journal);
    let named = |prefix: &str| {
        inputs
            .iter()
            .filter(|(path, _)| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(prefix))
            })
            .collect::<Vec<_>>()
    };
    let (valid, torn) = (named("valid-"), named("torn-"));
    assert!(
        !valid.is_empty() && !torn.is_empty(),
        "fuzz/regressions/journal/ needs a `valid-` and a `torn-` journal"
    );
    for (path, data) in valid {
        if let Err(error) = Journal::decode(data) {
            panic!("{} no longer decodes: {error}", path.display());
        }
    }
    for (path, data) in torn {
        assert!(
            Journal::decode(data).is_err(),
            "{} is torn, yet decodes",
            path.display()
        );
    }
}

/// Every fuzz target has a folder of saved inputs, so a new target cannot be
/// added without one (each replay above names its own folder).
#[test]
fn every_fuzz_target_has_saved_inputs() {
    let targets = fs::read_dir(fuzz_dir().join("fuzz_targets")).expect("fuzz/fuzz_targets/");
    let mut names: Vec<String> = targets
        .map(|entry| entry.expect("readable fuzz_targets directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "checksums",
            "content_range",
            "digest",
            "file_name",
            "headers",
            "input_list",
            "journal",
            "metalink",
            "simplestreams",
            "size"
        ],
        "a fuzz target was added or removed: give it a replay here and a folder under \
         fuzz/regressions/"
    );
    for name in &names {
        saved_inputs(name);
    }
}

/// The checks themselves accept ordinary, well-formed inputs (a check that
/// rejected everything would make every replay above meaningless).
#[test]
fn checks_pass_on_well_formed_inputs() {
    checks::check_content_range(b"bytes 0-499/1234");
    checks::check_checksums(
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 *ubuntu.iso\n",
    );
    checks::check_file_name(b"https://example.com/dir/ubuntu.iso?x=1");
    checks::check_size(b"8MiB");
    checks::check_size(b"4096");
    checks::check_digest(b"sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:");
    checks::check_headers(b"W/\"abc\"");
    checks::check_headers(b"Sun, 06 Nov 1994 08:49:37 GMT");
    checks::check_headers(b"5, 5");
    checks::check_headers(b"attachment; filename*=UTF-8''x%20y.iso");
    checks::check_simplestreams(include_bytes!(
        "../../../fuzz/regressions/simplestreams/products-two-releases"
    ));
}
