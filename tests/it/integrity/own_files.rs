//! The part file, its journal and the published output are the engine's own regular files: a
//! symlink in their place (dangling or not) is never followed or written through, anything else
//! that is not a regular file is refused with a clear error, and an output path that is a
//! directory is refused before any byte is fetched.

use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::Path;

use rangefetch_testserver::FileSpec;

use crate::support::{Expect, MIB, Scenario, tempdir, with_suffix};

const PRECIOUS: &[u8] = b"a file the download must never touch\n";

fn file() -> FileSpec {
    FileSpec::new("/img.bin", 2 * MIB, 340)
}

/// Writes the file a symlink points at, for the test to check afterwards.
fn victim(dir: &Path) -> std::path::PathBuf {
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, PRECIOUS).expect("write the victim file");
    victim
}

fn assert_untouched(victim: &Path) {
    assert_eq!(
        std::fs::read(victim).expect("read the victim file"),
        PRECIOUS,
        "the download wrote through a symlink into {}",
        victim.display()
    );
}

#[test]
fn a_symlink_at_the_part_file_is_replaced_never_written_through() {
    let dir = tempdir();
    let victim = victim(dir.path());
    symlink(&victim, dir.path().join("img.bin.part")).expect("symlink the part file");
    let run = Scenario::new(file())
        .in_dir(dir.path())
        .expect(Expect::success_of_file().stderr_has("symbolic link"));
    assert_untouched(&victim);
    let meta = std::fs::symlink_metadata(&run.out).expect("stat the output");
    assert!(
        meta.file_type().is_file(),
        "the output is not a regular file"
    );
}

#[test]
fn a_dangling_symlink_at_the_part_file_creates_nothing_at_its_target() {
    let dir = tempdir();
    let target = dir.path().join("elsewhere.bin");
    symlink(&target, dir.path().join("img.bin.part")).expect("symlink the part file");
    Scenario::new(file())
        .in_dir(dir.path())
        .expect(Expect::success_of_file());
    assert!(
        !target.exists(),
        "the download created {} through a dangling link",
        target.display()
    );
}

#[test]
fn symlinks_at_the_journal_and_its_temporary_are_never_written_through() {
    let dir = tempdir();
    let victim = victim(dir.path());
    let out = dir.path().join("img.bin");
    symlink(&victim, with_suffix(&out, ".part.state")).expect("symlink the journal");
    symlink(&victim, with_suffix(&out, ".part.state.tmp")).expect("symlink its temporary");
    Scenario::new(file())
        .in_dir(dir.path())
        .args(&["--chunk-size", "256KiB"])
        .expect(Expect::success_of_file());
    assert_untouched(&victim);
}

#[test]
fn a_fifo_at_the_part_file_is_refused_with_a_clear_error() {
    let dir = tempdir();
    let part = dir.path().join("img.bin.part");
    let status = std::process::Command::new("mkfifo")
        .arg(&part)
        .status()
        .expect("run mkfifo (coreutils)");
    assert!(status.success(), "mkfifo failed");
    Scenario::new(file())
        .in_dir(dir.path())
        .expect(Expect::failure(4).stderr_has("not a regular file"));
    assert!(
        std::fs::symlink_metadata(&part)
            .expect("the fifo is still there")
            .file_type()
            .is_fifo(),
        "the fifo was replaced"
    );
}

#[test]
fn an_output_that_is_a_directory_is_refused_before_any_byte() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("img.bin")).expect("make the directory");
    let run = Scenario::new(file()).in_dir(dir.path()).run();
    assert_eq!(run.code(), 2, "\n{}", run.describe());
    assert!(
        run.stderr.contains("is a directory"),
        "\n{}",
        run.describe()
    );
    assert_eq!(
        run.served.as_ref().map(|served| served.requests.len()),
        Some(0),
        "something was fetched for an output that can never be written\n{}",
        run.describe()
    );
}
