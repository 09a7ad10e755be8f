//! Tree hygiene: markers that must never be committed in Rust sources —
//! skipped or panic-expecting tests and placeholder bodies (docs/STYLE.md, Tests).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Where the project's Rust sources live; `target` directories are skipped.
const SCANNED_DIRS: &[&str] = &[
    "crates",
    "tests",
    "benches",
    "xtask",
    "fuzz/fuzz_targets",
    "fuzz/src",
];

/// The forbidden markers, built from pieces so that this file does not
/// contain the very strings it forbids.
fn forbidden_markers() -> Vec<String> {
    vec![
        format!("#[{}", "ignore"),
        format!("#[{}", "should_panic"),
        format!("{}!(", "todo"),
        format!("{}!(", "unimplemented"),
    ]
}

struct Finding {
    path: PathBuf,
    line_number: usize,
    marker: String,
}

/// Scans every `.rs` file under [`SCANNED_DIRS`]; prints `file:line` for
/// each marker found and fails if there is any.
pub fn check(root: &Path) -> Result<()> {
    let markers = forbidden_markers();
    let mut findings = Vec::new();
    let mut n_files = 0;
    for dir in SCANNED_DIRS {
        let dir = root.join(dir);
        if dir.is_dir() {
            scan_dir(&dir, &markers, &mut findings, &mut n_files)?;
        }
    }
    for finding in &findings {
        let shown = finding.path.strip_prefix(root).unwrap_or(&finding.path);
        eprintln!(
            "{}:{}: contains `{}`",
            shown.display(),
            finding.line_number,
            finding.marker
        );
    }
    if !findings.is_empty() {
        bail!(
            "tree hygiene: {} forbidden marker(s) in Rust sources ({}); \
             tests assert on the `Err` instead of skipping or expecting a panic",
            findings.len(),
            markers.join(", ")
        );
    }
    eprintln!("tree hygiene: {n_files} Rust files clean");
    Ok(())
}

fn scan_dir(
    dir: &Path,
    markers: &[String],
    findings: &mut Vec<Finding>,
    n_files: &mut usize,
) -> Result<()> {
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // `file_type` does not follow symlinks, so a link cannot loop the walk.
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            if name != "target" && !name.starts_with('.') {
                scan_dir(&path, markers, findings, n_files)?;
            }
        } else if file_type.is_file() && name.ends_with(".rs") {
            *n_files += 1;
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            for (line_number, marker) in find_markers(&text, markers) {
                findings.push(Finding {
                    path: path.clone(),
                    line_number,
                    marker,
                });
            }
        }
    }
    Ok(())
}

/// 1-based line numbers and the marker found on each.
fn find_markers(text: &str, markers: &[String]) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .flat_map(|(line_idx, line)| {
            markers
                .iter()
                .filter(|marker| line.contains(marker.as_str()))
                .map(move |marker| (line_idx + 1, marker.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_marker_with_its_line() {
        let markers = forbidden_markers();
        let text = format!(
            "fn ok() {{}}\n{}]\nfn f() {{ {}) }}\nfn g() {{ {}\"x\") }}\n",
            markers[0], markers[2], markers[3]
        );
        let found = find_markers(&text, &markers);
        assert_eq!(
            found,
            vec![
                (2, markers[0].clone()),
                (3, markers[2].clone()),
                (4, markers[3].clone())
            ]
        );
    }

    #[test]
    fn clean_text_has_no_findings() {
        let text = "#[test]\nfn todo_list_is_empty() { assert!(ignored.is_empty()); }\n";
        assert!(find_markers(text, &forbidden_markers()).is_empty());
    }
}
