//! The properties the fuzz targets check, one `check_*` function per target.
//!
//! Each takes the raw fuzzer input and panics when a property fails. They
//! live here, not in the targets, because `crates/core/tests/fuzz_regressions.rs`
//! includes this file to replay every saved input under `fuzz/regressions/`
//! through the same checks in an ordinary `cargo test`. So this file may use
//! only `rangefetch_core` and `std`.

use std::time::{Duration, SystemTime};

use rangefetch_core::file_name_from_url;
use rangefetch_core::internals::Journal;
use rangefetch_core::internals::sanitize_file_name;
use rangefetch_core::internals::{LOWEST_PRIORITY, duplicate_links};
use rangefetch_core::internals::{format_content_range, parse_content_range};
use rangefetch_core::internals::{
    format_repr_digest, parse_linked_etag, parse_repr_digest, parse_rfc3230_digest,
};
use rangefetch_core::internals::{
    parse_content_length, parse_etag, parse_http_date, parse_retry_after,
};
use rangefetch_core::{ChecksumLookupError, Sha256Hex, find_checksum, parse_checksums};
use rangefetch_core::{DEFAULT_FTYPES, image_downloads_path, parse_index, parse_products, select};
use rangefetch_core::{MetalinkVersion, parse_metalink};
use rangefetch_core::{format_size, parse_size};

/// `Content-Range`: whatever parses formats back to itself, and a range lies
/// inside the complete length when both are known.
pub fn check_content_range(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = parse_content_range(&text) else {
        return;
    };
    let formatted = format_content_range(&parsed);
    assert_eq!(parse_content_range(&formatted), Ok(parsed), "{formatted:?}");
    if let Some(range) = parsed.range {
        assert!(!range.is_empty(), "{text:?} parsed to an empty range");
        if let Some(total) = parsed.total {
            assert!(range.end <= total, "{text:?} parsed past its length");
        }
    }
}

/// Checksum files: every entry has a name and a hash that prints as 64
/// lowercase hex digits, reads back from its own GNU and BSD lines, and is
/// found by its name (or reported as a conflict with another entry).
pub fn check_checksums(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let entries = parse_checksums(&text);
    for entry in &entries {
        assert!(!entry.name.is_empty());
        let hex = entry.sha256.to_string();
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{hex:?}"
        );
        assert_eq!(Sha256Hex::parse(&hex), Ok(entry.sha256));
        for line in [entry.gnu_line(), entry.bsd_line()] {
            assert_eq!(
                parse_checksums(&line),
                std::slice::from_ref(entry),
                "{line:?}"
            );
        }
        match find_checksum(&entries, &entry.name) {
            Ok(_) | Err(ChecksumLookupError::Conflict { .. }) => {}
            Err(other) => panic!("{:?} listed but not found: {other}", entry.name),
        }
    }
}

/// File names from URLs and arbitrary text are safe, and sanitising is
/// idempotent.
pub fn check_file_name(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for name in [file_name_from_url(&text), sanitize_file_name(&text)]
        .into_iter()
        .flatten()
    {
        assert_safe_name(&name);
    }
}

/// Sizes: parsing never panics, plain digits mean bytes, and a parsed size
/// formats to text that parses back to at most itself.
pub fn check_size(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_size(&text);
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        assert_eq!(
            parsed.clone().ok(),
            trimmed.parse::<u64>().ok(),
            "{trimmed:?}"
        );
    }
    if let Ok(bytes) = parsed {
        let formatted = format_size(bytes);
        let back = parse_size(&formatted);
        assert!(
            back.as_ref().is_ok_and(|&back| back <= bytes),
            "{formatted:?} -> {back:?}"
        );
    }
}

/// Response headers: no panics, an entity tag survives re-formatting, a
/// `Retry-After` date is measured from `now`, a `Content-Length` is what
/// every element of the list says.
pub fn check_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);

    let retry_after = parse_retry_after(&text, now);
    let trimmed = text.trim();
    if let Ok(seconds) = trimmed.parse::<u64>()
        && trimmed.bytes().all(|b| b.is_ascii_digit())
    {
        assert_eq!(retry_after, Some(Duration::from_secs(seconds)));
    }
    if let Some(date) = parse_http_date(&text) {
        let expected = date.duration_since(now).unwrap_or(Duration::ZERO);
        assert_eq!(retry_after, Some(expected), "{text:?}");
    }

    if let Some(tag) = parse_etag(&text) {
        assert_eq!(parse_etag(&tag.header_value()), Some(tag));
    }

    if let Some(length) = parse_content_length(&text) {
        for element in text.split(',') {
            assert_eq!(element.trim().parse::<u64>(), Ok(length), "{text:?}");
        }
    }
}

/// A name safe to create in the current directory, and a fixed point of
/// sanitising.
fn assert_safe_name(name: &str) {
    assert!(!name.is_empty() && name != "." && name != "..", "{name:?}");
    assert!(!name.starts_with('.'), "{name:?} is hidden");
    assert!(
        !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control()),
        "{name:?} has a separator or control character"
    );
    assert!(name.len() <= 255, "{name:?} is too long");
    assert_eq!(sanitize_file_name(name).as_deref(), Ok(name));
}

/// The resume journal: any input either fails to decode, or decodes to a
/// journal that re-encodes to a journal decoding to itself (nothing read is
/// silently changed), whose blocks are disjoint and inside the file, and
/// whose hash states lie inside the file. A cut inside the header is
/// rejected; a cut among the appended lines keeps a prefix of them.
pub fn check_journal(data: &[u8]) {
    let Ok(journal) = Journal::decode(data) else {
        return;
    };
    let encoded = journal.encode();
    let whole = Journal {
        torn: false,
        ..journal.clone()
    };
    assert_eq!(
        Journal::decode(&encoded).as_ref(),
        Ok(&whole),
        "a decoded journal re-encodes to another journal"
    );
    let mut covered = 0;
    for block in &journal.blocks {
        assert!(block.range.start < block.range.end && block.range.end <= journal.total);
        covered += block.range.len();
    }
    assert_eq!(covered, journal.done().covered(), "blocks overlap");
    assert!(
        journal
            .hash_points
            .iter()
            .all(|p| p.hashed <= journal.total)
    );
    let header = journal.encode_header().len();
    for cut in [0, header / 2, header.saturating_sub(1)] {
        assert!(
            Journal::decode(&encoded[..cut]).is_err(),
            "a journal whose header is cut at {cut} decoded"
        );
    }
    if let Ok(prefix) = Journal::decode(&encoded[..(header + encoded.len()) / 2]) {
        assert_eq!(prefix.blocks[..], journal.blocks[..prefix.blocks.len()]);
    }
}

/// Digest headers (`Repr-Digest`, `Digest`, `X-Linked-ETag`): no panics;
/// every digest found formats back to a `Repr-Digest` that states it alone,
/// and appending that member to the input finds it too.
pub fn check_digest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let found: Vec<Sha256Hex> = parse_repr_digest(&text)
        .into_iter()
        .chain(parse_rfc3230_digest(&text))
        .chain(parse_linked_etag(&text))
        .collect();
    for digest in found {
        let value = format_repr_digest(&digest);
        assert_eq!(parse_repr_digest(&value), vec![digest], "{value:?}");
        assert_eq!(Sha256Hex::parse(&digest.to_string()), Ok(digest));
    }
    if !text.contains([':', ';']) {
        let zero = Sha256Hex::from_bytes([0; 32]);
        let appended = format!("{text}, {}", format_repr_digest(&zero));
        assert!(
            parse_repr_digest(&appended).contains(&zero),
            "{appended:?} lost its last member"
        );
    }
}

/// Simplestreams index and products files: no panics on any input; an
/// image picked from a products file has a relative path, one of the file
/// types asked for, and its product answers to the name it was picked by.
pub fn check_simplestreams(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(entries) = parse_index(&text)
        && let Ok(path) = image_downloads_path(&entries)
    {
        assert!(
            entries
                .iter()
                .any(|e| e.path.as_deref() == Some(path.as_str()))
        );
    }
    let Ok(products) = parse_products(&text) else {
        return;
    };
    for product in &products {
        assert!(product.versions.windows(2).all(|pair| {
            rangefetch_core::compare_serials(&pair[0].serial, &pair[1].serial).is_le()
        }));
        let (Some(arch), Some(release)) = (&product.arch, &product.release) else {
            continue;
        };
        if let Ok(picked) = select(&products, release, arch, &DEFAULT_FTYPES) {
            assert!(!picked.path.contains("://"), "{picked:?}");
            assert!(
                DEFAULT_FTYPES.contains(&picked.ftype.as_str()),
                "{picked:?}"
            );
            assert!(
                products
                    .iter()
                    .any(|p| p.name == picked.product && p.answers_to(release)),
                "{picked:?}"
            );
        }
    }
}

/// Metalink 4 and 3 documents, and `Link: rel=duplicate` headers (each
/// line of the input one header value): no panics; a parsed document has
/// a file, every name is a safe file name, every URL `http`/`https` and
/// best first, a piece list fits the stated size; links are `http`/`https`,
/// best first, never repeated, never the response's own URL.
pub fn check_metalink(data: &[u8]) {
    if let Ok(metalink) = parse_metalink(data, None) {
        assert!(!metalink.files.is_empty());
        let worst = match metalink.version {
            MetalinkVersion::V4 => LOWEST_PRIORITY,
            _ => LOWEST_PRIORITY.max(101),
        };
        for file in &metalink.files {
            assert_safe_name(&file.name);
            assert!(
                file.urls
                    .windows(2)
                    .all(|pair| pair[0].priority <= pair[1].priority),
                "{:?}",
                file.urls
            );
            for url in &file.urls {
                assert!(
                    url.url.starts_with("http://") || url.url.starts_with("https://"),
                    "{url:?}"
                );
                assert!((1..=worst).contains(&url.priority), "{url:?}");
            }
            if let (Some(pieces), Some(size)) = (&file.pieces, file.size) {
                assert_eq!(pieces.fit(size), Ok(()), "{file:?}");
                for index in 0..pieces.count() {
                    let range = pieces.range_of(index, size).expect("a piece in the file");
                    assert_eq!(pieces.piece_of(range.start), Some(index));
                }
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    let base = "https://origin.example/pub/file.iso";
    let links = duplicate_links(text.lines(), base);
    assert!(links.len() <= 64);
    for (index, link) in links.iter().enumerate() {
        assert!(
            link.url.starts_with("http://") || link.url.starts_with("https://"),
            "{link:?}"
        );
        assert_ne!(link.url, base);
        assert!((1..=LOWEST_PRIORITY).contains(&link.priority), "{link:?}");
        assert!(links[..index].iter().all(|other| other.url != link.url));
        if index > 0 {
            assert!(links[index - 1].priority <= link.priority);
        }
    }
}

/// `get -i` lists: every entry has a URL, at most the bound of them, and an
/// output path inside the working directory that no other entry has; the
/// entries written back as lines parse to the same entries.
pub fn check_input_list(data: &[u8]) {
    use rangefetch_core::{MAX_LIST_URLS, parse_input_list};
    let Ok(entries) = parse_input_list(data) else {
        return;
    };
    let mut outputs = std::collections::HashSet::new();
    for entry in &entries {
        assert!((1..=MAX_LIST_URLS).contains(&entry.urls.len()), "{entry:?}");
        assert!(
            !entry.output.is_empty() && !entry.output.starts_with('/'),
            "{entry:?}"
        );
        assert!(
            entry
                .output
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
            "{entry:?}"
        );
        assert!(outputs.insert(entry.output.clone()), "{entry:?}");
    }
    let rewritten: String = entries.iter().map(|e| e.to_line() + "\n").collect();
    let reparsed = parse_input_list(rewritten.as_bytes())
        .unwrap_or_else(|error| panic!("{rewritten:?} does not parse back: {error}"));
    assert_eq!(reparsed.len(), entries.len());
    for (again, entry) in reparsed.iter().zip(&entries) {
        assert_eq!(
            (&again.sha256, &again.urls, &again.output),
            (&entry.sha256, &entry.urls, &entry.output)
        );
    }
}
