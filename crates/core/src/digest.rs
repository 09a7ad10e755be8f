//! The file's SHA-256 as a server states it in response headers, so that a
//! wrong file is refused at the probe instead of after the whole download:
//! `Repr-Digest` (RFC 9530), the older `Digest` (RFC 3230, sent by
//! MirrorBrain and MirrorCache), and Hugging Face's `X-Linked-ETag` (the
//! hex SHA-256 of an LFS file) with its `X-Linked-Size`.
//!
//! `Content-Digest` is the digest of the message body: the file only on a
//! `200` in identity coding; on a `206` it covers the range sent, never the
//! file, and is not read. Digests of an encoded representation (gzip…) are
//! not the file's either and are ignored. The parsers and [`judge`] are
//! pure; [`at_probe`] turns the verdict into an error or events.

use std::fmt;

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::checksums::Sha256Hex;
use crate::error::{Error, ErrorKind, Result, redact_url};
use crate::event::Event;
use crate::header::parse_etag;

/// What the probe sends to ask for a digest: RFC 9530's `Want-Repr-Digest`
/// and RFC 3230's `Want-Digest` (which MirrorBrain answers).
pub(crate) const WANT_HEADERS: [(&str, &str); 2] = [
    ("want-repr-digest", "sha-256=10"),
    ("want-digest", "SHA-256"),
];

/// Standard base64, padding optional: RFC 8941 byte sequences are padded,
/// but servers are not all careful.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which header stated a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestHeader {
    /// `Repr-Digest: sha-256=:BASE64:` (RFC 9530).
    ReprDigest,
    /// `Content-Digest: sha-256=:BASE64:` on a `200` whose body is the file.
    ContentDigest,
    /// `Digest: SHA-256=BASE64` (RFC 3230 with RFC 5843).
    Digest,
    /// `X-Linked-ETag: "HEX"` with `X-Linked-Size` (Hugging Face).
    LinkedEtag,
}

impl DigestHeader {
    /// The header's name as servers spell it.
    pub fn name(self) -> &'static str {
        match self {
            DigestHeader::ReprDigest => "Repr-Digest",
            DigestHeader::ContentDigest => "Content-Digest",
            DigestHeader::Digest => "Digest",
            DigestHeader::LinkedEtag => "X-Linked-ETag",
        }
    }
}

impl fmt::Display for DigestHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A SHA-256 of the whole file, as one response header states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerDigest {
    /// The digest.
    pub sha256: Sha256Hex,
    /// The header it came from.
    pub header: DigestHeader,
}

/// What a response was, beside its headers, for telling which digests are
/// of the file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResponseKind {
    /// The status code.
    pub status: u16,
    /// The file's size, when the response told it.
    pub total: Option<u64>,
    /// Whether the body is in a content coding (gzip…) rather than identity.
    pub encoded: bool,
}

/// The SHA-256 digests of the whole file among `headers` (name, value
/// pairs, names in any case), in the order `Repr-Digest`,
/// `Content-Digest` (a `200` only), `Digest`, `X-Linked-ETag`. Unknown
/// algorithms and malformed values are skipped; two digests that disagree
/// are both kept, for [`judge`] to refuse.
pub(crate) fn file_digests<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h str)> + Clone,
    response: ResponseKind,
) -> Vec<ServerDigest> {
    let values = |name: &'static str| {
        headers
            .clone()
            .into_iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    };
    let mut found = Vec::new();
    let mut add = |header: DigestHeader, digests: Vec<Sha256Hex>| {
        for sha256 in digests {
            let digest = ServerDigest { sha256, header };
            if !found.contains(&digest) {
                found.push(digest);
            }
        }
    };
    if !response.encoded {
        add(
            DigestHeader::ReprDigest,
            values("repr-digest").flat_map(parse_repr_digest).collect(),
        );
        if response.status == 200 {
            add(
                DigestHeader::ContentDigest,
                values("content-digest")
                    .flat_map(parse_repr_digest)
                    .collect(),
            );
        }
        add(
            DigestHeader::Digest,
            values("digest").flat_map(parse_rfc3230_digest).collect(),
        );
    }
    // The linked ETag names the file in the repository whatever coding the
    // CDN applies, but only when the linked size is the size served.
    let linked_size = values("x-linked-size")
        .next()
        .and_then(|size| size.trim().parse::<u64>().ok());
    if let Some(linked_size) = linked_size
        && response.total.is_none_or(|total| total == linked_size)
    {
        add(
            DigestHeader::LinkedEtag,
            values("x-linked-etag")
                .filter_map(parse_linked_etag)
                .collect(),
        );
    }
    found
}

/// [`file_digests`] of a response's header map (values that are not text
/// are skipped).
pub(crate) fn from_header_map(
    headers: &reqwest::header::HeaderMap,
    response: ResponseKind,
) -> Vec<ServerDigest> {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    file_digests(pairs.iter().copied(), response)
}

/// The SHA-256 members of an RFC 9530 `Repr-Digest` or `Content-Digest`
/// dictionary (`sha-256=:BASE64:`, members separated by commas, parameters
/// after `;` ignored).
pub fn parse_repr_digest(value: &str) -> Vec<Sha256Hex> {
    value
        .split(',')
        .filter_map(|member| {
            let (key, rest) = member.split_once('=')?;
            if !key.trim().eq_ignore_ascii_case("sha-256") {
                return None;
            }
            let item = rest.split(';').next()?.trim();
            let bytes = item.strip_prefix(':')?.strip_suffix(':')?;
            decode_base64(bytes)
        })
        .collect()
}

/// The SHA-256 instance digests of an RFC 3230 `Digest` header
/// (`SHA-256=BASE64`, the algorithm in any case); 64 hex digits are taken
/// too, since some servers send those.
pub fn parse_rfc3230_digest(value: &str) -> Vec<Sha256Hex> {
    value
        .split(',')
        .filter_map(|member| {
            let (algorithm, encoded) = member.split_once('=')?;
            if !algorithm.trim().eq_ignore_ascii_case("sha-256") {
                return None;
            }
            let encoded = encoded.trim();
            let encoded = encoded
                .strip_prefix('"')
                .and_then(|e| e.strip_suffix('"'))
                .unwrap_or(encoded);
            if encoded.len() == 64 {
                Sha256Hex::parse(encoded).ok()
            } else {
                decode_base64(encoded)
            }
        })
        .collect()
}

/// Hugging Face's `X-Linked-ETag`: a quoted (or bare) 64-digit hex SHA-256.
/// A 40-digit git blob id, or a weak tag, is no SHA-256 of the file.
pub fn parse_linked_etag(value: &str) -> Option<Sha256Hex> {
    let tag = parse_etag(value)?;
    if tag.weak {
        return None;
    }
    Sha256Hex::parse(&tag.tag).ok()
}

/// The `Repr-Digest` value stating `sha256`, as a server would send it.
pub fn format_repr_digest(sha256: &Sha256Hex) -> String {
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha256.as_bytes())
    )
}

fn decode_base64(text: &str) -> Option<Sha256Hex> {
    let bytes = BASE64.decode(text.trim()).ok()?;
    let array: [u8; 32] = bytes.try_into().ok()?;
    Some(Sha256Hex::from_bytes(array))
}

/// Why the server's digests cannot be trusted as they stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Disagreement {
    /// A digest of the server differs from the expected hash.
    WithExpected {
        /// What the server said.
        server: ServerDigest,
        /// What the file must have.
        expected: Sha256Hex,
    },
    /// Two of the server's digests differ from each other.
    WithItself(ServerDigest, ServerDigest),
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disagreement::WithExpected { server, expected } => write!(
                f,
                "the server's {} says sha256 {}, but the expected sha256 is {expected}; nothing was downloaded",
                server.header, server.sha256
            ),
            Disagreement::WithItself(first, second) => write!(
                f,
                "the server's digests disagree: {} says sha256 {}, {} says sha256 {}; nothing was downloaded",
                first.header, first.sha256, second.header, second.sha256
            ),
        }
    }
}

/// Checks the server's digests against the expected hash (every one must
/// equal it) or, without one, against each other; gives the digest the
/// file will be held to, if the server stated one.
pub(crate) fn judge(
    expected: Option<Sha256Hex>,
    digests: &[ServerDigest],
) -> Result<Option<ServerDigest>, Disagreement> {
    let Some(first) = digests.first() else {
        return Ok(None);
    };
    for digest in digests {
        match expected {
            Some(expected) if digest.sha256 != expected => {
                return Err(Disagreement::WithExpected {
                    server: *digest,
                    expected,
                });
            }
            None if digest.sha256 != first.sha256 => {
                return Err(Disagreement::WithItself(*first, *digest));
            }
            _ => {}
        }
    }
    Ok(Some(*first))
}

/// The probe's verdict on the server's digests: a [`Disagreement`] is an
/// integrity error before any body beyond the probe's is fetched; a digest
/// is announced (an [`Event::ServerDigest`], and without an expected hash a
/// notice); gives the hash the finished file must have.
pub(crate) fn at_probe(
    expected: Option<Sha256Hex>,
    remote: &crate::probe::Remote,
    emit: &dyn Fn(Event),
) -> Result<Option<Sha256Hex>> {
    let stated = judge(expected, &remote.digests).map_err(|disagreement| {
        Error::new(ErrorKind::ChecksumMismatch, disagreement.to_string()).with_url(&remote.url)
    })?;
    let Some(stated) = stated else {
        return Ok(expected);
    };
    emit(Event::ServerDigest {
        sha256: stated.sha256,
        header: stated.header,
    });
    if expected.is_none() {
        emit(Event::Notice {
            message: format!(
                "{} states sha256 {} in its {} header; the file is checked against it (only --sha256 or a signed checksum file proves it is the right file)",
                redact_url(&remote.url),
                stated.sha256,
                stated.header
            ),
        });
    }
    Ok(Some(expected.unwrap_or(stated.sha256)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// SHA-256 of the empty string, in its three spellings.
    const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_B64: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    fn empty() -> Sha256Hex {
        Sha256Hex::parse(EMPTY_HEX).expect("valid hex")
    }

    fn other() -> Sha256Hex {
        Sha256Hex::from_bytes([7; 32])
    }

    const PARTIAL: ResponseKind = ResponseKind {
        status: 206,
        total: Some(1000),
        encoded: false,
    };

    #[test]
    fn repr_digest_picks_sha256_among_members_and_parameters() {
        let value = format!("sha-512=:AAAA:, sha-256=:{EMPTY_B64}:;x=1");
        assert_eq!(parse_repr_digest(&value), vec![empty()]);
        let unpadded = format!("sha-256=:{}:", EMPTY_B64.trim_end_matches('='));
        assert_eq!(parse_repr_digest(&unpadded), vec![empty()]);
        assert_eq!(
            parse_repr_digest(&format!("SHA-256=:{EMPTY_B64}:")),
            vec![empty()]
        );
        for bad in [
            format!("sha-256={EMPTY_B64}"),
            "sha-256=:AAAA:".to_owned(),
            "sha-256=:!!!:".to_owned(),
            format!("md5=:{EMPTY_B64}:"),
            String::new(),
        ] {
            assert_eq!(parse_repr_digest(&bad), vec![], "{bad:?}");
        }
    }

    #[test]
    fn rfc3230_digest_takes_base64_or_hex_in_any_case() {
        assert_eq!(
            parse_rfc3230_digest(&format!(
                "MD5=HUXZLQLMuI/KZ5KDcJPcOA==, SHA-256={EMPTY_B64}"
            )),
            vec![empty()]
        );
        assert_eq!(
            parse_rfc3230_digest(&format!("sha-256={EMPTY_HEX}")),
            vec![empty()]
        );
        assert_eq!(
            parse_rfc3230_digest(&format!("SHA-256=\"{EMPTY_B64}\"")),
            vec![empty()]
        );
        assert_eq!(
            parse_rfc3230_digest(&format!("SHA=abc, SHA-512={EMPTY_B64}")),
            vec![]
        );
    }

    #[test]
    fn linked_etag_is_a_strong_64_digit_hex_tag() {
        assert_eq!(
            parse_linked_etag(&format!("\"{EMPTY_HEX}\"")),
            Some(empty())
        );
        assert_eq!(parse_linked_etag(EMPTY_HEX), Some(empty()));
        assert_eq!(parse_linked_etag(&format!("W/\"{EMPTY_HEX}\"")), None);
        assert_eq!(
            parse_linked_etag("\"2f4a6e1c0c1a6d1d1d2e9b6f6d8a1c2b3e4f5a6b\""),
            None,
            "a git blob id"
        );
    }

    #[test]
    fn content_digest_counts_on_a_200_only() {
        let value = format!("sha-256=:{EMPTY_B64}:");
        let headers = [("Content-Digest", value.as_str())];
        assert_eq!(file_digests(headers, PARTIAL), vec![]);
        let whole = ResponseKind {
            status: 200,
            ..PARTIAL
        };
        assert_eq!(
            file_digests(headers, whole),
            vec![ServerDigest {
                sha256: empty(),
                header: DigestHeader::ContentDigest
            }]
        );
    }

    #[test]
    fn an_encoded_body_has_no_file_digest_but_the_linked_etag() {
        let repr = format!("sha-256=:{EMPTY_B64}:");
        let linked = format!("\"{}\"", other());
        let headers = [
            ("repr-digest", repr.as_str()),
            ("x-linked-etag", linked.as_str()),
            ("x-linked-size", "1000"),
        ];
        let encoded = ResponseKind {
            encoded: true,
            ..PARTIAL
        };
        assert_eq!(
            file_digests(headers, encoded),
            vec![ServerDigest {
                sha256: other(),
                header: DigestHeader::LinkedEtag
            }]
        );
    }

    #[test]
    fn linked_etag_needs_the_linked_size_of_the_file_served() {
        let linked = format!("\"{EMPTY_HEX}\"");
        let with_size = |size: &'static str| {
            file_digests(
                [("X-Linked-Etag", linked.as_str()), ("X-Linked-Size", size)],
                PARTIAL,
            )
        };
        assert_eq!(with_size("1000").len(), 1);
        assert_eq!(with_size("999"), vec![], "another file's size");
        assert_eq!(
            file_digests([("X-Linked-Etag", linked.as_str())], PARTIAL),
            vec![],
            "no size at all"
        );
    }

    #[test]
    fn every_header_in_order_and_duplicates_once() {
        let repr = format!("sha-256=:{EMPTY_B64}:");
        let digest = format!("SHA-256={EMPTY_B64}");
        let headers = [
            ("Digest", digest.as_str()),
            ("Repr-Digest", repr.as_str()),
            ("Repr-Digest", repr.as_str()),
        ];
        let found = file_digests(headers, PARTIAL);
        let names: Vec<_> = found.iter().map(|d| d.header).collect();
        assert_eq!(names, [DigestHeader::ReprDigest, DigestHeader::Digest]);
    }

    #[test]
    fn judge_holds_every_digest_to_the_expected_hash_or_to_each_other() {
        let said = |sha256, header| ServerDigest { sha256, header };
        let repr = said(empty(), DigestHeader::ReprDigest);
        let digest = said(other(), DigestHeader::Digest);
        assert_eq!(judge(Some(empty()), &[]), Ok(None));
        assert_eq!(judge(Some(empty()), &[repr]), Ok(Some(repr)));
        assert_eq!(judge(None, &[repr]), Ok(Some(repr)));
        assert_eq!(
            judge(Some(empty()), &[repr, digest]),
            Err(Disagreement::WithExpected {
                server: digest,
                expected: empty()
            })
        );
        assert_eq!(
            judge(None, &[repr, digest]),
            Err(Disagreement::WithItself(repr, digest))
        );
        let message = judge(Some(other()), &[repr])
            .expect_err("a mismatch")
            .to_string();
        assert!(
            message.contains(EMPTY_HEX) && message.contains(&other().to_string()),
            "names both hashes: {message}"
        );
        assert!(message.contains("Repr-Digest"), "{message}");
    }

    proptest! {
        #[test]
        fn formatted_digest_parses_back(bytes in any::<[u8; 32]>(), other_alg in "[a-z0-9-]{1,10}") {
            let sha256 = Sha256Hex::from_bytes(bytes);
            let value = format_repr_digest(&sha256);
            prop_assert_eq!(parse_repr_digest(&value), vec![sha256]);
            let b64 = value.trim_start_matches("sha-256=:").trim_end_matches(':').to_owned();
            prop_assert_eq!(parse_rfc3230_digest(&format!("sha-256={b64}")), vec![sha256]);
            prop_assert_eq!(parse_linked_etag(&format!("\"{sha256}\"")), Some(sha256));
            if other_alg != "sha-256" {
                let mixed = format!("{other_alg}=:{b64}:, {value}");
                prop_assert_eq!(parse_repr_digest(&mixed), vec![sha256]);
            }
        }

        #[test]
        fn parsers_never_panic_and_find_only_sha256(text in ".{0,200}") {
            for digest in parse_repr_digest(&text)
                .into_iter()
                .chain(parse_rfc3230_digest(&text))
                .chain(parse_linked_etag(&text))
            {
                prop_assert_eq!(digest.to_string().len(), 64);
            }
        }
    }
}
