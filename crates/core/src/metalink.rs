//! Metalink documents and `Link: rel=duplicate` headers: where else a file
//! can be fetched, and what it must hash to.
//!
//! - [`parse_metalink`] reads Metalink 4 (RFC 5854, `.meta4`, namespace
//!   `urn:ietf:params:xml:ns:metalink`) and the older Metalink 3
//!   (`.metalink`, `http://www.metalinker.org/`) on quick-xml: per file its
//!   name, size, SHA-256, piece hashes and `http`/`https` URLs best first.
//! - [`duplicate_links`] reads RFC 6249 `Link: <url>; rel=duplicate; pri=N`
//!   header values: the mirrors a server names for the file it serves.
//!
//! Both are pure and take untrusted input: bounded in size and count, every
//! malformed document a typed [`MetalinkError`], no panic on any input. A
//! Metalink file name is a remote's choice: one that climbs out of the
//! directory (`..`, an absolute path) is refused, and the rest goes through
//! [`sanitize_file_name`].

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;
use reqwest::Url;

use crate::checksums::Sha256Hex;
use crate::name::{NameError, sanitize_file_name};
use crate::pieces::{PieceAlgorithm, PieceError, PieceHashes, normalize_hash_name};

/// The namespace of Metalink 4 (RFC 5854).
pub const METALINK4_NAMESPACE: &str = "urn:ietf:params:xml:ns:metalink";
/// The namespace of Metalink 3.
pub const METALINK3_NAMESPACE: &str = "http://www.metalinker.org/";

/// The most bytes a Metalink document may have (a 10 GiB image in 256 KiB
/// pieces lists 40 960 SHA-256 piece hashes, about 4 MiB).
pub const MAX_METALINK_BYTES: usize = 32 << 20;
/// The most files one document may describe.
pub const MAX_FILES: usize = 1024;
/// The most URLs one file may list.
pub const MAX_URLS: usize = 1024;
/// The most piece hashes one file may list.
pub const MAX_PIECES: usize = 1 << 20;
/// The lowest priority, and that of a URL that states none (RFC 5854 and
/// RFC 6249 both count 1 as the best and 999999 as the worst).
pub const LOWEST_PRIORITY: u32 = 999_999;

/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 32;
/// Most bytes of text in one element (a URL, a hash, a size).
const MAX_TEXT: usize = 16 << 10;
/// Most characters of untrusted text echoed in an error.
const MAX_ECHO_CHARS: usize = 120;
/// Most `Link` values read from one response.
const MAX_LINKS: usize = 64;
/// Most bytes of `Link` header text read from one response.
const MAX_LINK_HEADER: usize = 64 << 10;

/// Which Metalink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetalinkVersion {
    /// Metalink 4, RFC 5854 (`.meta4`, `application/metalink4+xml`).
    V4,
    /// Metalink 3 (`.metalink`, `application/metalink+xml`).
    V3,
}

impl MetalinkVersion {
    /// The version a `Content-Type` value names, `None` for any other type.
    pub fn from_media_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/metalink4+xml") {
            Some(Self::V4)
        } else if essence.eq_ignore_ascii_case("application/metalink+xml") {
            Some(Self::V3)
        } else {
            None
        }
    }

    /// The version a path or URL's name says (`.meta4`, `.metalink`, ASCII
    /// case ignored; a URL's query and fragment do not count).
    pub fn from_name(path_or_url: &str) -> Option<Self> {
        let path = match path_or_url.split_once("://") {
            Some((_, rest)) => rest.split(['?', '#']).next().unwrap_or_default(),
            None => path_or_url,
        };
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".meta4") {
            Some(Self::V4)
        } else if lower.ends_with(".metalink") {
            Some(Self::V3)
        } else {
            None
        }
    }
}

/// A parsed Metalink document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metalink {
    /// Which format it was.
    pub version: MetalinkVersion,
    /// The files it describes, in document order (at least one).
    pub files: Vec<MetalinkFile>,
}

/// One file of a Metalink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetalinkFile {
    /// A safe single file name: the last component of the document's name,
    /// [sanitised](sanitize_file_name).
    pub name: String,
    /// The name as the document gives it (possibly with directories), for
    /// messages and for picking a file by name.
    pub raw_name: String,
    /// The size in bytes, when stated.
    pub size: Option<u64>,
    /// The whole file's SHA-256, when stated.
    pub sha256: Option<Sha256Hex>,
    /// The other whole-file hash types present (`sha-1`, `md5`, `sha-512`
    /// …, as the document names them, lowercase), not used.
    pub other_hashes: Vec<String>,
    /// The piece hashes, SHA-256 preferred over SHA-1. When `size` is
    /// stated they fit it ([`PieceHashes::fit`]); otherwise check them
    /// against the size the server reports before using them.
    pub pieces: Option<PieceHashes>,
    /// Its `http`/`https` URLs, best first (lowest [`MetalinkUrl::priority`];
    /// equal priorities keep document order).
    pub urls: Vec<MetalinkUrl>,
    /// What was left out and why (URLs of other schemes, metaurls, piece
    /// hashes of another type …), one sentence each.
    pub notes: Vec<String>,
}

/// A URL of a [`MetalinkFile`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetalinkUrl {
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// 1 is the best, [`LOWEST_PRIORITY`] the worst (Metalink 4's
    /// `priority`; Metalink 3's `preference` 100..=0 maps to 1..=101).
    pub priority: u32,
    /// The ISO 3166-1 country code of the mirror, lowercase, when stated.
    pub location: Option<String>,
}

/// Why a document is not a usable Metalink.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetalinkError {
    /// Larger than [`MAX_METALINK_BYTES`].
    #[error("the Metalink document has {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8.
    #[error("the Metalink document is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// Not well-formed XML.
    #[error("the Metalink document is not well-formed XML at byte {offset}: {message}")]
    Xml {
        /// Where the reader stopped.
        offset: u64,
        /// What the XML reader said.
        message: String,
    },
    /// A `<!DOCTYPE>`: no Metalink has one, and entities are not expanded.
    #[error("the Metalink document has a DOCTYPE, which Metalink does not use")]
    Doctype,
    /// The root element is not a Metalink 3 or 4 `metalink`.
    #[error("not a Metalink document: the root element is {found}")]
    NotMetalink {
        /// The root element, with its namespace.
        found: String,
    },
    /// Elements nested deeper than any Metalink needs.
    #[error("the Metalink document nests elements more than {limit} deep")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More files, URLs or pieces than allowed.
    #[error("the Metalink document lists more than {limit} {what}")]
    TooMany {
        /// `files`, `URLs of one file`, `piece hashes of one file`.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// An element's text is longer than any URL, hash or size.
    #[error("a <{element}> of the Metalink document holds more than {limit} bytes of text")]
    TextTooLong {
        /// The element.
        element: &'static str,
        /// The limit.
        limit: usize,
    },
    /// An entity other than XML's five and character references.
    #[error("the Metalink document uses an unknown entity &{name};")]
    UnknownEntity {
        /// The entity, truncated.
        name: String,
    },
    /// No `<file>`.
    #[error("the Metalink document describes no file")]
    NoFile,
    /// A `<file>` without a `name`.
    #[error("a <file> of the Metalink document has no name")]
    MissingName,
    /// A name that climbs out of the download directory.
    #[error("the Metalink file name {name:?} is unsafe: {reason}")]
    UnsafeName {
        /// The name, truncated.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A name nothing usable is left of once sanitised.
    #[error("the Metalink file name is unusable: {0}")]
    BadName(NameError),
    /// A number that does not parse or is out of range.
    #[error("file {file:?}: {what} {value:?} is not valid")]
    BadNumber {
        /// The file's name, truncated.
        file: String,
        /// `size`, `priority`, `preference`, `piece length`, `piece index`.
        what: &'static str,
        /// The text, truncated.
        value: String,
    },
    /// A hash that is not hex of the right length.
    #[error("file {file:?}: the {kind} hash {value:?} is not valid")]
    BadHash {
        /// The file's name, truncated.
        file: String,
        /// The hash type.
        kind: String,
        /// The text, truncated.
        value: String,
    },
    /// Two different SHA-256 values for one file.
    #[error("file {file:?}: two different sha-256 hashes")]
    ConflictingHash {
        /// The file's name, truncated.
        file: String,
    },
    /// A piece list that does not hold together.
    #[error("file {file:?}: its piece hashes are unusable: {reason}")]
    BadPieces {
        /// The file's name, truncated.
        file: String,
        /// Why.
        reason: String,
    },
}

/// Reads a Metalink 4 or Metalink 3 document. `base` (the document's own
/// URL, when it was fetched) resolves relative URLs; without it (or when it
/// does not parse) they are left out, with a note.
pub fn parse_metalink(input: &[u8], base: Option<&str>) -> Result<Metalink, MetalinkError> {
    let base = base.and_then(|base| Url::parse(base).ok());
    if input.len() > MAX_METALINK_BYTES {
        return Err(MetalinkError::TooLarge {
            size: input.len(),
            limit: MAX_METALINK_BYTES,
        });
    }
    let text = std::str::from_utf8(input).map_err(|e| MetalinkError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Parser::new(base.as_ref()).run(text)
}

/// What an element is to the parser, by its place in the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    File,
    Size,
    Hash,
    Pieces,
    PieceHash,
    Url,
    MetaUrl,
    Other,
}

impl Role {
    /// The role of the element at `path` (local names from the root).
    fn of(version: MetalinkVersion, path: &[String]) -> Role {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        match (version, path.as_slice()) {
            (MetalinkVersion::V4, ["metalink", "file"])
            | (MetalinkVersion::V3, ["metalink", "files", "file"]) => Role::File,
            (MetalinkVersion::V4, ["metalink", "file", "size"])
            | (MetalinkVersion::V3, ["metalink", "files", "file", "size"]) => Role::Size,
            (MetalinkVersion::V4, ["metalink", "file", "hash"])
            | (MetalinkVersion::V3, ["metalink", "files", "file", "verification", "hash"]) => {
                Role::Hash
            }
            (MetalinkVersion::V4, ["metalink", "file", "pieces"])
            | (MetalinkVersion::V3, ["metalink", "files", "file", "verification", "pieces"]) => {
                Role::Pieces
            }
            (MetalinkVersion::V4, ["metalink", "file", "pieces", "hash"])
            | (
                MetalinkVersion::V3,
                [
                    "metalink",
                    "files",
                    "file",
                    "verification",
                    "pieces",
                    "hash",
                ],
            ) => Role::PieceHash,
            (MetalinkVersion::V4, ["metalink", "file", "url"])
            | (MetalinkVersion::V3, ["metalink", "files", "file", "resources", "url"]) => Role::Url,
            (MetalinkVersion::V4, ["metalink", "file", "metaurl"]) => Role::MetaUrl,
            _ => Role::Other,
        }
    }

    /// The element's name, for errors about its text.
    fn element(self) -> &'static str {
        match self {
            Role::Size => "size",
            Role::Hash | Role::PieceHash => "hash",
            Role::Url => "url",
            Role::MetaUrl => "metaurl",
            Role::File => "file",
            Role::Pieces => "pieces",
            Role::Other => "element",
        }
    }

    /// Whether the parser needs the element's text.
    fn wants_text(self) -> bool {
        matches!(self, Role::Size | Role::Hash | Role::PieceHash | Role::Url)
    }
}

/// An open element.
enum Frame {
    /// In a Metalink namespace: its local name and role.
    Ours(Role),
    /// In another namespace (an extension): its whole subtree is skipped.
    Foreign,
}

/// A `<pieces>` being read.
struct PiecesBuilder {
    length: Option<u64>,
    /// `None` for a type the engine cannot check (its hashes are skipped).
    algorithm: Option<PieceAlgorithm>,
    kind: String,
    digests: Vec<Box<[u8]>>,
}

/// A `<file>` being read.
struct FileBuilder {
    raw_name: String,
    name: String,
    size: Option<u64>,
    sha256: Option<Sha256Hex>,
    other_hashes: Vec<String>,
    pieces: Option<PieceHashes>,
    /// URL, priority, location, document position.
    urls: Vec<MetalinkUrl>,
    notes: Vec<String>,
}

/// The attributes of the leaf whose text is being read.
#[derive(Default)]
struct LeafAttributes {
    kind: Option<String>,
    piece: Option<String>,
    priority: Option<String>,
    location: Option<String>,
    scheme: Option<String>,
}

struct Parser<'b> {
    base: Option<&'b Url>,
    version: Option<MetalinkVersion>,
    path: Vec<String>,
    frames: Vec<Frame>,
    files: Vec<MetalinkFile>,
    file: Option<FileBuilder>,
    pieces: Option<PiecesBuilder>,
    text: String,
    leaf: LeafAttributes,
}

impl<'b> Parser<'b> {
    fn new(base: Option<&'b Url>) -> Self {
        Self {
            base,
            version: None,
            path: Vec::new(),
            frames: Vec::new(),
            files: Vec::new(),
            file: None,
            pieces: None,
            text: String::new(),
            leaf: LeafAttributes::default(),
        }
    }

    fn run(mut self, text: &str) -> Result<Metalink, MetalinkError> {
        let mut reader = NsReader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        loop {
            let (namespace, event) = match reader.read_resolved_event() {
                Ok((namespace, event)) => (namespace_version(&namespace), event),
                Err(error) => {
                    return Err(MetalinkError::Xml {
                        offset: reader.error_position(),
                        message: truncate(&error.to_string()),
                    });
                }
            };
            match event {
                Event::Start(start) => self.start(namespace, &start)?,
                Event::Empty(start) => {
                    self.start(namespace, &start)?;
                    self.end()?;
                }
                Event::End(_) => self.end()?,
                Event::Text(text) => self.push_text(&text.xml10_content())?,
                Event::CData(data) => self.push_text(&data.xml10_content())?,
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let name = reference.xml10_content();
                            match resolve_predefined_entity(&name) {
                                Some(text) => text.to_owned(),
                                None => {
                                    return Err(MetalinkError::UnknownEntity {
                                        name: truncate(&name),
                                    });
                                }
                            }
                        }
                        Err(error) => {
                            return Err(MetalinkError::Xml {
                                offset: reader.buffer_position(),
                                message: truncate(&error.to_string()),
                            });
                        }
                    };
                    self.push_text(&resolved)?;
                }
                Event::DocType(_) => return Err(MetalinkError::Doctype),
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if !self.frames.is_empty() {
            return Err(MetalinkError::Xml {
                offset: reader.buffer_position(),
                message: "the document ends inside an element".to_owned(),
            });
        }
        let Some(version) = self.version else {
            return Err(MetalinkError::NotMetalink {
                found: "missing (no element at all)".to_owned(),
            });
        };
        if self.files.is_empty() {
            return Err(MetalinkError::NoFile);
        }
        Ok(Metalink {
            version,
            files: self.files,
        })
    }

    fn start(
        &mut self,
        namespace: Option<MetalinkVersion>,
        start: &BytesStart<'_>,
    ) -> Result<(), MetalinkError> {
        if self.frames.len() >= MAX_DEPTH {
            return Err(MetalinkError::TooDeep { limit: MAX_DEPTH });
        }
        let local = start.local_name().as_ref().to_owned();
        let Some(version) = self.version else {
            // The root.
            return match namespace {
                Some(version) if local == "metalink" && self.frames.is_empty() => {
                    self.version = Some(version);
                    self.path.push(local);
                    self.frames.push(Frame::Ours(Role::Other));
                    Ok(())
                }
                _ => Err(MetalinkError::NotMetalink {
                    found: format!("<{}>", truncate(start.name().as_ref())),
                }),
            };
        };
        if self.frames.is_empty() {
            return Err(MetalinkError::Xml {
                offset: 0,
                message: "a second root element".to_owned(),
            });
        }
        let skipping = matches!(self.frames.last(), Some(Frame::Foreign));
        if skipping || namespace != Some(version) {
            self.frames.push(Frame::Foreign);
            return Ok(());
        }
        self.path.push(local);
        let role = Role::of(version, &self.path);
        self.frames.push(Frame::Ours(role));
        let attributes = attributes(start)?;
        let get = |key: &str| {
            attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        match role {
            Role::File => {
                if self.files.len() >= MAX_FILES {
                    return Err(MetalinkError::TooMany {
                        what: "files",
                        limit: MAX_FILES,
                    });
                }
                let raw_name = get("name").ok_or(MetalinkError::MissingName)?;
                let name = safe_name(&raw_name)?;
                self.file = Some(FileBuilder {
                    raw_name,
                    name,
                    size: None,
                    sha256: None,
                    other_hashes: Vec::new(),
                    pieces: None,
                    urls: Vec::new(),
                    notes: Vec::new(),
                });
            }
            Role::Pieces => {
                let file = self.file_label();
                let kind = get("type").unwrap_or_default();
                let length = match get("length") {
                    Some(value) => Some(
                        value
                            .trim()
                            .parse::<u64>()
                            .ok()
                            .filter(|l| *l > 0)
                            .ok_or_else(|| MetalinkError::BadNumber {
                                file,
                                what: "piece length",
                                value: truncate(&value),
                            })?,
                    ),
                    None => None,
                };
                self.pieces = Some(PiecesBuilder {
                    length,
                    algorithm: PieceAlgorithm::from_name(&kind),
                    kind,
                    digests: Vec::new(),
                });
            }
            Role::Size | Role::Hash | Role::PieceHash | Role::Url => {
                self.text.clear();
                self.leaf = LeafAttributes {
                    kind: get("type"),
                    piece: get("piece"),
                    priority: match version {
                        MetalinkVersion::V4 => get("priority"),
                        MetalinkVersion::V3 => get("preference"),
                    },
                    location: get("location"),
                    scheme: get("type"),
                };
            }
            Role::MetaUrl => {
                let mediatype = get("mediatype").unwrap_or_default();
                if let Some(file) = &mut self.file {
                    file.notes.push(format!(
                        "a metaurl of type {:?} was left out: only http and https URLs are used",
                        truncate(&mediatype)
                    ));
                }
            }
            Role::Other => {}
        }
        Ok(())
    }

    fn push_text(&mut self, text: &str) -> Result<(), MetalinkError> {
        let Some(Frame::Ours(role)) = self.frames.last() else {
            return Ok(());
        };
        if !role.wants_text() {
            return Ok(());
        }
        if self.text.len() + text.len() > MAX_TEXT {
            return Err(MetalinkError::TextTooLong {
                element: role.element(),
                limit: MAX_TEXT,
            });
        }
        self.text.push_str(text);
        Ok(())
    }

    fn end(&mut self) -> Result<(), MetalinkError> {
        let Some(frame) = self.frames.pop() else {
            return Ok(());
        };
        let Frame::Ours(role) = frame else {
            return Ok(());
        };
        self.path.pop();
        let text = std::mem::take(&mut self.text);
        let leaf = std::mem::take(&mut self.leaf);
        match role {
            Role::File => self.end_file()?,
            Role::Size => self.end_size(text.trim())?,
            Role::Hash => self.end_hash(text.trim(), leaf.kind.unwrap_or_default())?,
            Role::Pieces => self.end_pieces()?,
            Role::PieceHash => self.end_piece_hash(text.trim(), leaf.piece)?,
            Role::Url => self.end_url(text.trim(), leaf)?,
            Role::MetaUrl | Role::Other => {}
        }
        Ok(())
    }

    /// The current file's name for an error message.
    fn file_label(&self) -> String {
        self.file
            .as_ref()
            .map(|file| truncate(&file.raw_name))
            .unwrap_or_default()
    }

    fn end_size(&mut self, text: &str) -> Result<(), MetalinkError> {
        let file_label = self.file_label();
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let size = text
            .parse::<u64>()
            .ok()
            .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| MetalinkError::BadNumber {
                file: file_label,
                what: "size",
                value: truncate(text),
            })?;
        file.size = Some(size);
        Ok(())
    }

    fn end_hash(&mut self, text: &str, kind: String) -> Result<(), MetalinkError> {
        let file_label = self.file_label();
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let kind = kind.trim().to_ascii_lowercase();
        if normalize_hash_name(&kind) != "sha256" {
            let kind = truncate(&kind);
            if !file.other_hashes.contains(&kind) {
                file.other_hashes.push(kind);
            }
            return Ok(());
        }
        let sha256 = Sha256Hex::parse(text).map_err(|_| MetalinkError::BadHash {
            file: file_label.clone(),
            kind: kind.clone(),
            value: truncate(text),
        })?;
        match file.sha256 {
            Some(known) if known != sha256 => {
                Err(MetalinkError::ConflictingHash { file: file_label })
            }
            _ => {
                file.sha256 = Some(sha256);
                Ok(())
            }
        }
    }

    fn end_piece_hash(&mut self, text: &str, piece: Option<String>) -> Result<(), MetalinkError> {
        let file_label = self.file_label();
        let Some(pieces) = &mut self.pieces else {
            return Ok(());
        };
        let Some(algorithm) = pieces.algorithm else {
            return Ok(());
        };
        if pieces.digests.len() >= MAX_PIECES {
            return Err(MetalinkError::TooMany {
                what: "piece hashes of one file",
                limit: MAX_PIECES,
            });
        }
        if let Some(piece) = piece {
            // Metalink 3 numbers its pieces; they must come in order.
            let index = piece.trim().parse::<usize>().ok();
            if index != Some(pieces.digests.len()) {
                return Err(MetalinkError::BadPieces {
                    file: file_label,
                    reason: format!(
                        "piece {:?} comes where piece {} belongs",
                        truncate(&piece),
                        pieces.digests.len()
                    ),
                });
            }
        }
        let digest = decode_hex(text)
            .filter(|digest| digest.len() == algorithm.digest_len())
            .ok_or_else(|| MetalinkError::BadHash {
                file: file_label,
                kind: format!("{} piece", algorithm.name()),
                value: truncate(text),
            })?;
        pieces.digests.push(digest);
        Ok(())
    }

    fn end_pieces(&mut self) -> Result<(), MetalinkError> {
        let file_label = self.file_label();
        let (Some(builder), Some(file)) = (self.pieces.take(), &mut self.file) else {
            return Ok(());
        };
        let Some(algorithm) = builder.algorithm else {
            file.notes.push(format!(
                "piece hashes of type {:?} were left out: only sha-256 and sha-1 are checked",
                truncate(&builder.kind)
            ));
            return Ok(());
        };
        let bad = |reason: String| MetalinkError::BadPieces {
            file: file_label.clone(),
            reason,
        };
        let length = builder
            .length
            .ok_or_else(|| bad("no piece length".to_owned()))?;
        let pieces = PieceHashes::new(length, algorithm, builder.digests)
            .map_err(|e: PieceError| bad(e.to_string()))?;
        match &file.pieces {
            Some(kept)
                if kept.algorithm() == PieceAlgorithm::Sha256
                    || algorithm == PieceAlgorithm::Sha1 =>
            {
                file.notes.push(format!(
                    "a second list of {} piece hashes was left out",
                    algorithm.name()
                ));
            }
            _ => file.pieces = Some(pieces),
        }
        Ok(())
    }

    fn end_url(&mut self, text: &str, leaf: LeafAttributes) -> Result<(), MetalinkError> {
        let version = self.version;
        let file_label = self.file_label();
        let base = self.base;
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        if file.urls.len() >= MAX_URLS {
            return Err(MetalinkError::TooMany {
                what: "URLs of one file",
                limit: MAX_URLS,
            });
        }
        let bad_number = |what, value: &str| MetalinkError::BadNumber {
            file: file_label.clone(),
            what,
            value: truncate(value),
        };
        let priority = match (version, leaf.priority) {
            (_, None) => LOWEST_PRIORITY,
            (Some(MetalinkVersion::V3), Some(value)) => {
                let preference = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| bad_number("preference", &value))?;
                101 - preference
            }
            (_, Some(value)) => value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|p| (1..=LOWEST_PRIORITY).contains(p))
                .ok_or_else(|| bad_number("priority", &value))?,
        };
        if version == Some(MetalinkVersion::V3)
            && let Some(scheme) = &leaf.scheme
            && !matches!(
                scheme.trim().to_ascii_lowercase().as_str(),
                "http" | "https"
            )
        {
            file.notes.push(format!(
                "a URL of type {:?} was left out: only http and https URLs are used",
                truncate(scheme)
            ));
            return Ok(());
        }
        let resolved = match base {
            Some(base) => base.join(text),
            None => Url::parse(text),
        };
        let url = match resolved {
            // An empty or fragment-only reference would name the Metalink itself.
            Ok(url) if text.is_empty() || base.is_some_and(|base| same_document(base, &url)) => {
                file.notes
                    .push("a URL naming the Metalink itself was left out".to_owned());
                return Ok(());
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
            Ok(url) => {
                file.notes.push(format!(
                    "the URL {} was left out: only http and https URLs are used",
                    truncate(url.as_str())
                ));
                return Ok(());
            }
            Err(_) => {
                file.notes.push(format!(
                    "the URL {:?} was left out: it is not an absolute http or https URL",
                    truncate(text)
                ));
                return Ok(());
            }
        };
        let location = leaf
            .location
            .map(|l| l.trim().to_ascii_lowercase())
            .filter(|l| {
                !l.is_empty() && l.len() <= 8 && l.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        file.urls.push(MetalinkUrl {
            url: url.into(),
            priority,
            location,
        });
        Ok(())
    }

    fn end_file(&mut self) -> Result<(), MetalinkError> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        if let (Some(pieces), Some(size)) = (&file.pieces, file.size)
            && let Err(error) = pieces.fit(size)
        {
            return Err(MetalinkError::BadPieces {
                file: truncate(&file.raw_name),
                reason: error.to_string(),
            });
        }
        if file.pieces.is_some() && file.size.is_none() {
            file.notes.push(
                "the piece hashes cannot be checked against a size: the Metalink states none"
                    .to_owned(),
            );
        }
        if file.urls.is_empty() {
            file.notes.push("no http or https URL".to_owned());
        }
        // Stable: equal priorities keep the document's order.
        file.urls.sort_by_key(|url| url.priority);
        self.files.push(MetalinkFile {
            name: file.name,
            raw_name: file.raw_name,
            size: file.size,
            sha256: file.sha256,
            other_hashes: file.other_hashes,
            pieces: file.pieces,
            urls: file.urls,
            notes: file.notes,
        });
        Ok(())
    }
}

/// Whether `url` is `base` but for the fragment.
fn same_document(base: &Url, url: &Url) -> bool {
    let mut base = base.clone();
    let mut url = url.clone();
    base.set_fragment(None);
    url.set_fragment(None);
    base == url
}

/// The Metalink version a resolved namespace is.
fn namespace_version(namespace: &ResolveResult<'_>) -> Option<MetalinkVersion> {
    match namespace {
        ResolveResult::Bound(Namespace(METALINK4_NAMESPACE)) => Some(MetalinkVersion::V4),
        ResolveResult::Bound(Namespace(METALINK3_NAMESPACE)) => Some(MetalinkVersion::V3),
        _ => None,
    }
}

/// The unprefixed attributes of an element, values unescaped.
fn attributes(start: &BytesStart<'_>) -> Result<Vec<(String, String)>, MetalinkError> {
    let mut found = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|error| MetalinkError::Xml {
            offset: 0,
            message: truncate(&error.to_string()),
        })?;
        let key = attribute.key.as_ref();
        if key.contains(':') {
            continue;
        }
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|error| MetalinkError::Xml {
                offset: 0,
                message: truncate(&error.to_string()),
            })?;
        if value.len() > MAX_TEXT {
            return Err(MetalinkError::TextTooLong {
                element: "attribute",
                limit: MAX_TEXT,
            });
        }
        found.push((key.to_owned(), value.into_owned()));
    }
    Ok(found)
}

/// A Metalink name made a safe file name: one that climbs out of the
/// directory is refused; directories are dropped; the rest is sanitised.
fn safe_name(raw: &str) -> Result<String, MetalinkError> {
    let unsafe_name = |reason| MetalinkError::UnsafeName {
        name: truncate(raw),
        reason,
    };
    let trimmed = raw.trim();
    if trimmed.starts_with(['/', '\\']) {
        return Err(unsafe_name("an absolute path"));
    }
    let bytes = trimmed.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(unsafe_name("a drive-letter path"));
    }
    if trimmed.split(['/', '\\']).any(|part| part.trim() == "..") {
        return Err(unsafe_name("a `..` component climbs out of the directory"));
    }
    let last = trimmed
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())
        .unwrap_or_default();
    sanitize_file_name(last).map_err(MetalinkError::BadName)
}

/// Hex text as bytes, `None` when it is not an even number of hex digits.
fn decode_hex(text: &str) -> Option<Box<[u8]>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    bytes
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

/// Untrusted text cut short for an error message.
fn truncate(text: &str) -> String {
    let mut chars = text.chars();
    let mut kept: String = chars.by_ref().take(MAX_ECHO_CHARS).collect();
    if chars.next().is_some() {
        kept.push('…');
    }
    kept
}

/// A mirror a server names with `Link: <url>; rel=duplicate` (RFC 6249).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateLink {
    /// An absolute `http` or `https` URL (a relative one resolved against
    /// the response's URL).
    pub url: String,
    /// `pri`: 1 is the best, [`LOWEST_PRIORITY`] (the default) the worst.
    pub priority: u32,
    /// `geo`: the mirror's ISO 3166-1 country code, lowercase.
    pub geo: Option<String>,
    /// `pref`: the server prefers this mirror.
    pub pref: bool,
}

/// The mirrors named by a response's `Link` header values (each value may
/// hold several links): those whose `rel` includes `duplicate`, resolved
/// against `base` (the response's URL; none when it does not parse), `http`/`https` only, without the
/// response's own URL and without repeats, best `pri` first (equal ones in
/// header order). At most 64 links and 64 KiB of header text are read.
pub fn duplicate_links<'v>(
    values: impl IntoIterator<Item = &'v str>,
    base: &str,
) -> Vec<DuplicateLink> {
    let Ok(base) = Url::parse(base) else {
        return Vec::new();
    };
    let mut budget = MAX_LINK_HEADER;
    let mut found: Vec<DuplicateLink> = Vec::new();
    let mut seen = 0;
    for value in values {
        if value.len() > budget || seen >= MAX_LINKS {
            break;
        }
        budget -= value.len();
        for link in parse_link_value(value) {
            seen += 1;
            if seen > MAX_LINKS {
                break;
            }
            let is_duplicate = link.param("rel").is_some_and(|rel| {
                rel.split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("duplicate"))
            });
            if !is_duplicate {
                continue;
            }
            let Ok(url) = base.join(&link.target) else {
                continue;
            };
            if !matches!(url.scheme(), "http" | "https") || !url.has_host() || url == base {
                continue;
            }
            let url = String::from(url);
            if found.iter().any(|known| known.url == url) {
                continue;
            }
            let priority = link
                .param("pri")
                .and_then(|p| p.trim().parse::<u32>().ok())
                .filter(|p| (1..=LOWEST_PRIORITY).contains(p))
                .unwrap_or(LOWEST_PRIORITY);
            let geo = link
                .param("geo")
                .map(|g| g.trim().to_ascii_lowercase())
                .filter(|g| g.len() == 2 && g.bytes().all(|b| b.is_ascii_alphabetic()));
            let pref = link.params.iter().any(|(name, _)| name == "pref");
            found.push(DuplicateLink {
                url,
                priority,
                geo,
                pref,
            });
        }
    }
    found.sort_by_key(|link| link.priority);
    found
}

/// One link of a `Link` header value: its target as written and its
/// parameters (names lowercase, values unquoted; a parameter without a
/// value has an empty one).
#[derive(Clone, Debug, PartialEq, Eq)]
struct LinkValue {
    target: String,
    params: Vec<(String, String)>,
}

impl LinkValue {
    /// The first value of parameter `name` (RFC 8288: later ones are
    /// ignored).
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The links of one `Link` header value (RFC 8288 §3): `<target>` then
/// `; name=value` parameters, values tokens or quoted strings, links
/// separated by commas. A malformed link is skipped up to the next comma
/// outside quotes and angle brackets.
fn parse_link_value(value: &str) -> Vec<LinkValue> {
    let chars: Vec<char> = value.chars().collect();
    let mut links = Vec::new();
    let mut at = 0;
    let skip_space = |at: &mut usize| {
        while *at < chars.len() && matches!(chars[*at], ' ' | '\t') {
            *at += 1;
        }
    };
    // Past the next top-level comma.
    let skip_link = |at: &mut usize| {
        let mut quoted = false;
        while *at < chars.len() {
            match chars[*at] {
                '\\' if quoted => *at += 1,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    *at += 1;
                    return;
                }
                _ => {}
            }
            *at += 1;
        }
    };
    while at < chars.len() && links.len() < MAX_LINKS {
        skip_space(&mut at);
        if at < chars.len() && chars[at] == ',' {
            at += 1;
            continue;
        }
        if at >= chars.len() {
            break;
        }
        if chars[at] != '<' {
            skip_link(&mut at);
            continue;
        }
        let Some(close) = chars[at..].iter().position(|c| *c == '>') else {
            break;
        };
        let target: String = chars[at + 1..at + close].iter().collect();
        at += close + 1;
        let mut params = Vec::new();
        let mut malformed = false;
        loop {
            skip_space(&mut at);
            match chars.get(at) {
                None => break,
                Some(',') => {
                    at += 1;
                    break;
                }
                Some(';') => at += 1,
                Some(_) => {
                    malformed = true;
                    skip_link(&mut at);
                    break;
                }
            }
            skip_space(&mut at);
            let name_start = at;
            while at < chars.len() && !matches!(chars[at], '=' | ';' | ',' | ' ' | '\t') {
                at += 1;
            }
            let name: String = chars[name_start..at]
                .iter()
                .map(char::to_ascii_lowercase)
                .collect();
            skip_space(&mut at);
            let mut param_value = String::new();
            if chars.get(at) == Some(&'=') {
                at += 1;
                skip_space(&mut at);
                if chars.get(at) == Some(&'"') {
                    at += 1;
                    while at < chars.len() && chars[at] != '"' {
                        if chars[at] == '\\' && at + 1 < chars.len() {
                            at += 1;
                        }
                        param_value.push(chars[at]);
                        at += 1;
                    }
                    at += 1; // the closing quote, if any
                } else {
                    while at < chars.len() && !matches!(chars[at], ';' | ',' | ' ' | '\t') {
                        param_value.push(chars[at]);
                        at += 1;
                    }
                }
            }
            if !name.is_empty() {
                params.push((name, param_value));
            }
        }
        if !malformed {
            links.push(LinkValue {
                target: target.trim().to_owned(),
                params,
            });
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(text: &str) -> Result<Metalink, MetalinkError> {
        parse_metalink(text.as_bytes(), None)
    }

    fn meta4(file_body: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <published>2009-05-15T12:23:23Z</published>
  <file name="example.iso">{file_body}</file>
</metalink>"#
        )
    }

    #[test]
    fn metalink4_document() {
        let sha1_piece = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let text = meta4(&format!(
            r#"
    <size>10</size>
    <identity>Example</identity>
    <hash type="md5">00112233445566778899aabbccddeeff</hash>
    <hash type="sha-256">{SHA}</hash>
    <pieces length="4" type="sha-1">
      <hash>{sha1_piece}</hash><hash>{sha1_piece}</hash><hash>{sha1_piece}</hash>
    </pieces>
    <url location="de" priority="2">http://mirror.de/example.iso</url>
    <url priority="1" location="US">https://mirror.us/example.iso?a=1&amp;b=2</url>
    <url>ftp://ftp.example.org/example.iso</url>
    <url priority="2">http://second.de/example.iso</url>
    <metaurl mediatype="torrent" priority="2">http://example.com/example.iso.torrent</metaurl>
    <x:extra xmlns:x="urn:example"><url>http://ignored.example/</url></x:extra>
  "#
        ));
        let parsed = parse(&text).expect("a valid metalink 4");
        assert_eq!(parsed.version, MetalinkVersion::V4);
        let [file] = &parsed.files[..] else {
            panic!("one file: {parsed:?}")
        };
        assert_eq!(file.name, "example.iso");
        assert_eq!(file.size, Some(10));
        assert_eq!(file.sha256, Some(Sha256Hex::parse(SHA).expect("hex")));
        assert_eq!(file.other_hashes, ["md5"]);
        let pieces = file.pieces.as_ref().expect("pieces");
        assert_eq!(
            (pieces.length(), pieces.algorithm(), pieces.count()),
            (4, PieceAlgorithm::Sha1, 3)
        );
        assert!(pieces.check(0, b"abc"));
        let urls: Vec<(&str, u32, Option<&str>)> = file
            .urls
            .iter()
            .map(|u| (u.url.as_str(), u.priority, u.location.as_deref()))
            .collect();
        assert_eq!(
            urls,
            [
                ("https://mirror.us/example.iso?a=1&b=2", 1, Some("us")),
                ("http://mirror.de/example.iso", 2, Some("de")),
                ("http://second.de/example.iso", 2, None),
            ]
        );
        assert!(
            file.notes.iter().any(|n| n.contains("ftp")),
            "{:?}",
            file.notes
        );
        assert!(
            file.notes.iter().any(|n| n.contains("metaurl")),
            "{:?}",
            file.notes
        );
    }

    #[test]
    fn metalink3_document() {
        let text = format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" type="static">
  <files>
    <file name="dir/image.img">
      <size>6</size>
      <verification>
        <hash type="sha1">a9993e364706816aba3e25717850c26c9cd0d89d</hash>
        <hash type="sha256">{SHA}</hash>
        <pieces length="4" type="sha256">
          <hash piece="0">{SHA}</hash>
          <hash piece="1">{SHA}</hash>
        </pieces>
      </verification>
      <resources>
        <url type="http" location="fr" preference="50">http://fifty.fr/image.img</url>
        <url type="bittorrent" preference="100">http://t.example/image.torrent</url>
        <url type="https" preference="100">https://best.example/image.img</url>
        <url type="http">http://unranked.example/image.img</url>
      </resources>
    </file>
  </files>
</metalink>"#
        );
        let parsed = parse(&text).expect("a valid metalink 3");
        assert_eq!(parsed.version, MetalinkVersion::V3);
        let file = &parsed.files[0];
        assert_eq!(file.name, "image.img", "directories are dropped");
        assert_eq!(file.raw_name, "dir/image.img");
        assert_eq!(file.other_hashes, ["sha1"]);
        assert_eq!(file.pieces.as_ref().map(PieceHashes::count), Some(2));
        let urls: Vec<(&str, u32)> = file
            .urls
            .iter()
            .map(|u| (u.url.as_str(), u.priority))
            .collect();
        assert_eq!(
            urls,
            [
                ("https://best.example/image.img", 1),
                ("http://fifty.fr/image.img", 51),
                ("http://unranked.example/image.img", LOWEST_PRIORITY),
            ]
        );
        assert!(file.notes.iter().any(|n| n.contains("bittorrent")));
    }

    #[test]
    fn relative_urls_need_a_base() {
        let text = meta4("<url>../mirror/example.iso</url>");
        let without = parse(&text).expect("valid");
        assert!(without.files[0].urls.is_empty());
        let base = "https://host.example/pub/x/example.iso.meta4";
        let with = parse_metalink(text.as_bytes(), Some(base)).expect("valid");
        assert_eq!(
            with.files[0].urls[0].url,
            "https://host.example/pub/mirror/example.iso"
        );
    }

    #[test]
    fn a_url_naming_the_metalink_itself_is_left_out() {
        let base = "https://host.example/x.meta4";
        let text =
            meta4("<url></url><url>#frag</url><url>x.meta4</url><url>https://host.example/x</url>");
        let file = &parse_metalink(text.as_bytes(), Some(base))
            .expect("valid")
            .files[0];
        let urls: Vec<&str> = file.urls.iter().map(|u| u.url.as_str()).collect();
        assert_eq!(urls, ["https://host.example/x"]);
        assert_eq!(
            file.notes.iter().filter(|n| n.contains("itself")).count(),
            3,
            "{:?}",
            file.notes
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            "../evil",
            "a/../../evil",
            "/etc/passwd",
            "\\\\server\\share",
            "C:evil",
            "..\\x",
        ] {
            let text = format!(
                r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="{name}"><url>http://h/x</url></file></metalink>"#
            );
            assert!(
                matches!(parse(&text), Err(MetalinkError::UnsafeName { .. })),
                "{name:?}: {:?}",
                parse(&text)
            );
        }
        let text =
            r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name=".."/></metalink>"#;
        assert!(matches!(parse(text), Err(MetalinkError::UnsafeName { .. })));
        let text =
            r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="..."/></metalink>"#;
        assert!(matches!(parse(text), Err(MetalinkError::BadName(_))));
        let text = r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name=".hidden&#10;x"/></metalink>"#;
        let name = &parse(text).expect("sanitised").files[0].name;
        assert!(
            name.starts_with("hidden") && !name.contains('\n'),
            "{name:?}"
        );
        let text = r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file/></metalink>"#;
        assert_eq!(parse(text), Err(MetalinkError::MissingName));
    }

    #[test]
    fn malformed_documents_are_typed_errors() {
        type Case = (&'static str, fn(&MetalinkError) -> bool);
        let cases: [Case; 12] = [
            ("", |e| matches!(e, MetalinkError::NotMetalink { .. })),
            ("<metalink>", |e| {
                matches!(e, MetalinkError::NotMetalink { .. })
            }),
            (r#"<metalink xmlns="urn:x"/>"#, |e| {
                matches!(e, MetalinkError::NotMetalink { .. })
            }),
            (
                r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"/>"#,
                |e| matches!(e, MetalinkError::NoFile),
            ),
            (
                r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a">"#,
                |e| matches!(e, MetalinkError::Xml { .. }),
            ),
            (
                r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a"></x></metalink>"#,
                |e| matches!(e, MetalinkError::Xml { .. }),
            ),
            (r#"<!DOCTYPE lol [<!ENTITY a "aaaa">]><metalink/>"#, |e| {
                matches!(e, MetalinkError::Doctype)
            }),
            (
                r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a"><size>&a;</size></file></metalink>"#,
                |e| matches!(e, MetalinkError::UnknownEntity { .. }),
            ),
            (
                r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a"><size>-1</size></file></metalink>"#,
                |e| matches!(e, MetalinkError::BadNumber { what: "size", .. }),
            ),
            (
                r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a"><hash type="sha-256">abc</hash></file></metalink>"#,
                |e| matches!(e, MetalinkError::BadHash { .. }),
            ),
            (
                r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a"><url priority="0">http://h/</url></file></metalink>"#,
                |e| {
                    matches!(
                        e,
                        MetalinkError::BadNumber {
                            what: "priority",
                            ..
                        }
                    )
                },
            ),
            (
                r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="a"><size>1</size><pieces length="1" type="sha-1"><hash>a9993e364706816aba3e25717850c26c9cd0d89d</hash><hash>a9993e364706816aba3e25717850c26c9cd0d89d</hash></pieces></file></metalink>"#,
                |e| matches!(e, MetalinkError::BadPieces { .. }),
            ),
        ];
        for (text, expected) in cases {
            match parse(text) {
                Err(error) if expected(&error) => {}
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_metalink(&[0xff, 0xfe], None),
            Err(MetalinkError::NotUtf8 { offset: 0 })
        ));
        let huge = vec![b' '; MAX_METALINK_BYTES + 1];
        assert!(matches!(
            parse_metalink(&huge, None),
            Err(MetalinkError::TooLarge { .. })
        ));
        let deep = format!(
            r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink">{}{}</metalink>"#,
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert_eq!(
            parse(&deep),
            Err(MetalinkError::TooDeep { limit: MAX_DEPTH })
        );
        let two_hashes = meta4(&format!(
            r#"<hash type="sha-256">{SHA}</hash><hash type="SHA-256">{}</hash>"#,
            "0".repeat(64)
        ));
        assert!(matches!(
            parse(&two_hashes),
            Err(MetalinkError::ConflictingHash { .. })
        ));
        let long_url = meta4(&format!("<url>http://h/{}</url>", "a".repeat(MAX_TEXT)));
        assert!(matches!(
            parse(&long_url),
            Err(MetalinkError::TextTooLong { .. })
        ));
        let out_of_order = r#"<metalink xmlns="http://www.metalinker.org/"><files><file name="a"><verification><pieces length="1" type="sha1"><hash piece="1">a9993e364706816aba3e25717850c26c9cd0d89d</hash></pieces></verification></file></files></metalink>"#.to_owned();
        assert!(matches!(
            parse(&out_of_order),
            Err(MetalinkError::BadPieces { .. })
        ));
    }

    #[test]
    fn too_many_files_or_urls() {
        let files = format!(
            r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink">{}</metalink>"#,
            r#"<file name="a"/>"#.repeat(MAX_FILES + 1)
        );
        assert!(matches!(
            parse(&files),
            Err(MetalinkError::TooMany { what: "files", .. })
        ));
        let urls = meta4(&"<url>http://h/a</url>".repeat(MAX_URLS + 1));
        assert!(matches!(parse(&urls), Err(MetalinkError::TooMany { .. })));
    }

    #[test]
    fn unknown_piece_types_and_unsized_pieces() {
        let text = meta4(&format!(
            r#"<pieces length="4" type="md5"><hash>00</hash></pieces>
               <pieces length="4" type="sha-256"><hash>{SHA}</hash></pieces>
               <pieces length="4" type="sha-1"><hash>a9993e364706816aba3e25717850c26c9cd0d89d</hash></pieces>"#
        ));
        let file = &parse(&text).expect("valid").files[0];
        let pieces = file.pieces.as_ref().expect("sha-256 pieces");
        assert_eq!(
            pieces.algorithm(),
            PieceAlgorithm::Sha256,
            "sha-256 is kept over sha-1"
        );
        assert!(file.notes.iter().any(|n| n.contains("md5")));
        assert!(file.notes.iter().any(|n| n.contains("states none")));
    }

    #[test]
    fn media_types_and_names() {
        assert_eq!(
            MetalinkVersion::from_media_type("application/metalink4+xml; charset=utf-8"),
            Some(MetalinkVersion::V4)
        );
        assert_eq!(
            MetalinkVersion::from_media_type("Application/Metalink+XML"),
            Some(MetalinkVersion::V3)
        );
        assert_eq!(MetalinkVersion::from_media_type("application/xml"), None);
        assert_eq!(
            MetalinkVersion::from_name("a/b.META4"),
            Some(MetalinkVersion::V4)
        );
        assert_eq!(
            MetalinkVersion::from_name("https://h/x.iso.metalink?x=1#y"),
            Some(MetalinkVersion::V3)
        );
        assert_eq!(MetalinkVersion::from_name("https://h/x.iso?f=.meta4"), None);
        assert_eq!(MetalinkVersion::from_name("x.iso"), None);
    }

    fn base() -> &'static str {
        "https://origin.example/pub/file.iso"
    }

    #[test]
    fn link_headers() {
        let links = duplicate_links(
            [
                r#"<http://m1.example/file.iso>; rel=duplicate; pri=2; geo=DE, <//m2.example/file.iso>; rel="duplicate"; pri=1; pref"#,
                r#"<mirror/file.iso>; rel="describedby duplicate"; geo=usa, <https://m1.example/x.meta4>; rel=describedby; type="application/metalink4+xml""#,
                r#"<ftp://ftp.example/file.iso>; rel=duplicate, <https://origin.example/pub/file.iso>; rel=duplicate, <http://m1.example/file.iso>; rel=duplicate; pri=1"#,
                r#"garbage, <http://m3.example/a,b>; rel=duplicate; title="a, \"quoted\"; b"; pri=3"#,
            ],
            base(),
        );
        let seen: Vec<(&str, u32, Option<&str>, bool)> = links
            .iter()
            .map(|l| (l.url.as_str(), l.priority, l.geo.as_deref(), l.pref))
            .collect();
        assert_eq!(
            seen,
            [
                ("https://m2.example/file.iso", 1, None, true),
                ("http://m1.example/file.iso", 2, Some("de"), false),
                ("http://m3.example/a,b", 3, None, false),
                (
                    "https://origin.example/pub/mirror/file.iso",
                    LOWEST_PRIORITY,
                    None,
                    false
                ),
            ]
        );
        assert!(duplicate_links([""], base()).is_empty());
        assert!(duplicate_links(["<unterminated; rel=duplicate"], base()).is_empty());
    }

    #[test]
    fn link_header_limits() {
        let many = "<http://m.example/a>; rel=duplicate, ".repeat(200);
        assert!(
            duplicate_links([many.as_str()], base()).len() <= 1,
            "deduplicated"
        );
        let distinct: Vec<String> = (0..200)
            .map(|i| format!("<http://m{i}.example/a>; rel=duplicate"))
            .collect();
        let links = duplicate_links(distinct.iter().map(String::as_str), base());
        assert_eq!(links.len(), MAX_LINKS);
        let huge = "x".repeat(MAX_LINK_HEADER + 1);
        assert!(duplicate_links([huge.as_str()], base()).is_empty());
    }

    /// What a generated document should parse to.
    #[derive(Clone, Debug)]
    struct Model {
        v4: bool,
        files: Vec<ModelFile>,
    }

    #[derive(Clone, Debug)]
    struct ModelFile {
        name: String,
        size: Option<u64>,
        sha256: Option<[u8; 32]>,
        md5: bool,
        /// Piece length, sha-256 or not, digests (one per piece of `size`).
        pieces: Option<(u64, bool)>,
        /// host, priority (1..=100), location.
        urls: Vec<(String, u32, Option<String>)>,
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A model's document, with comments, an extension element and
    /// escapes sprinkled in, as real generators emit them.
    fn render(model: &Model) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        if model.v4 {
            out.push_str(&format!(
                "<metalink xmlns=\"{METALINK4_NAMESPACE}\">\n<!-- generated -->\n"
            ));
        } else {
            out.push_str(&format!(
                "<metalink version=\"3.0\" xmlns=\"{METALINK3_NAMESPACE}\">\n<files>\n"
            ));
        }
        for file in &model.files {
            out.push_str(&format!(
                "<file name=\"{}\">\n",
                quick_xml::escape::escape(file.name.as_str())
            ));
            if let Some(size) = file.size {
                out.push_str(&format!("<size>{size}</size>\n"));
            }
            out.push_str("<e:x xmlns:e=\"urn:example\"><size>1</size></e:x>\n");
            let mut hashes = String::new();
            if file.md5 {
                hashes.push_str("<hash type=\"md5\">00112233445566778899aabbccddeeff</hash>\n");
            }
            if let Some(sha) = file.sha256 {
                let kind = if model.v4 { "sha-256" } else { "sha256" };
                hashes.push_str(&format!("<hash type=\"{kind}\">{}</hash>\n", hex(&sha)));
            }
            if let (Some((length, sha256)), Some(size)) = (file.pieces, file.size) {
                let (kind, len) = match (sha256, model.v4) {
                    (true, true) => ("sha-256", 32),
                    (true, false) => ("sha256", 32),
                    (false, true) => ("sha-1", 20),
                    (false, false) => ("sha1", 20),
                };
                hashes.push_str(&format!("<pieces length=\"{length}\" type=\"{kind}\">"));
                for index in 0..PieceHashes::pieces_for(size, length) {
                    let digest = vec![index as u8; len];
                    if model.v4 {
                        hashes.push_str(&format!("<hash>{}</hash>", hex(&digest)));
                    } else {
                        hashes
                            .push_str(&format!("<hash piece=\"{index}\">{}</hash>", hex(&digest)));
                    }
                }
                hashes.push_str("</pieces>\n");
            }
            let mut urls = String::new();
            for (host, priority, location) in &file.urls {
                let location = location
                    .as_ref()
                    .map(|l| format!(" location=\"{l}\""))
                    .unwrap_or_default();
                let url = format!("http://{host}/f?a=1&amp;b=2");
                if model.v4 {
                    urls.push_str(&format!(
                        "<url priority=\"{priority}\"{location}>{url}</url>\n"
                    ));
                } else {
                    urls.push_str(&format!(
                        "<url type=\"http\" preference=\"{}\"{location}>{url}</url>\n",
                        101 - priority
                    ));
                }
            }
            if model.v4 {
                out.push_str(&hashes);
                out.push_str(&urls);
            } else {
                out.push_str(&format!("<verification>{hashes}</verification>\n"));
                out.push_str(&format!("<resources>{urls}</resources>\n"));
            }
            out.push_str("</file>\n");
        }
        if !model.v4 {
            out.push_str("</files>\n");
        }
        out.push_str("</metalink>\n");
        out
    }

    fn model() -> impl Strategy<Value = Model> {
        let url = (
            "[a-z]{1,8}\\.example",
            1u32..=100,
            proptest::option::of("[a-z]{2}"),
        );
        let file = (
            "[A-Za-z0-9][A-Za-z0-9 ._&<>'\"-]{0,20}",
            proptest::option::of(0u64..5000),
            proptest::option::of(any::<[u8; 32]>()),
            any::<bool>(),
            proptest::option::of((1u64..700, any::<bool>())),
            proptest::collection::vec(url, 0..5),
        )
            .prop_map(|(name, size, sha256, md5, pieces, urls)| ModelFile {
                name,
                size,
                sha256,
                md5,
                pieces: pieces.filter(|_| size.is_some_and(|s| s > 0)),
                urls,
            });
        (any::<bool>(), proptest::collection::vec(file, 1..4))
            .prop_map(|(v4, files)| Model { v4, files })
    }

    proptest! {
        /// A generated document (either version) parses to what it was
        /// generated from.
        #[test]
        fn round_trip(model in model()) {
            let text = render(&model);
            let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(parsed.version, if model.v4 { MetalinkVersion::V4 } else { MetalinkVersion::V3 });
            prop_assert_eq!(parsed.files.len(), model.files.len());
            for (file, want) in parsed.files.iter().zip(&model.files) {
                prop_assert_eq!(&file.raw_name, &want.name);
                prop_assert_eq!(Ok(file.name.clone()), sanitize_file_name(&want.name));
                prop_assert_eq!(file.size, want.size);
                prop_assert_eq!(file.sha256, want.sha256.map(Sha256Hex::from_bytes));
                prop_assert_eq!(file.other_hashes.is_empty(), !want.md5);
                match (&file.pieces, want.pieces) {
                    (None, None) => {}
                    (Some(pieces), Some((length, sha256))) => {
                        prop_assert_eq!(pieces.length(), length);
                        prop_assert_eq!(pieces.algorithm() == PieceAlgorithm::Sha256, sha256);
                        for (index, digest) in pieces.digests().iter().enumerate() {
                            prop_assert!(digest.iter().all(|b| *b == index as u8));
                        }
                    }
                    (got, want) => prop_assert!(false, "pieces {:?} vs {:?}", got, want),
                }
                let mut want_urls: Vec<_> = want.urls.clone();
                want_urls.sort_by_key(|(_, priority, _)| *priority);
                let got: Vec<(String, u32, Option<String>)> = file.urls.iter()
                    .map(|u| (u.url.clone(), u.priority, u.location.clone()))
                    .collect();
                let want_urls: Vec<(String, u32, Option<String>)> = want_urls.into_iter()
                    .map(|(host, priority, location)| (format!("http://{host}/f?a=1&b=2"), priority, location))
                    .collect();
                prop_assert_eq!(got, want_urls);
            }
        }

        /// Any bytes: an error or a document that keeps every promise.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(parsed) = parse_metalink(&bytes, None) {
                prop_assert!(!parsed.files.is_empty());
            }
        }

        /// Mutated valid documents: cut, or with a byte changed.
        #[test]
        fn mutated_documents_never_panic(model in model(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let text = render(&model).into_bytes();
            let at = cut.index(text.len());
            let _ = parse_metalink(&text[..at], None);
            let mut changed = text.clone();
            changed[at] = byte;
            if let Ok(parsed) = parse_metalink(&changed, None) {
                for file in &parsed.files {
                    prop_assert_eq!(sanitize_file_name(&file.name), Ok(file.name.clone()));
                    prop_assert!(file.urls.windows(2).all(|w| w[0].priority <= w[1].priority));
                }
            }
        }

        /// Any header text: http(s) links only, best first, none repeated.
        #[test]
        fn link_headers_never_panic(value in "\\PC{0,200}", extra in "[<>;,=\" a-z:/.]{0,80}") {
            let links = duplicate_links([value.as_str(), extra.as_str()], base());
            prop_assert!(links.len() <= MAX_LINKS);
            prop_assert!(links.windows(2).all(|w| w[0].priority <= w[1].priority));
            for (i, link) in links.iter().enumerate() {
                prop_assert!(link.url.starts_with("http://") || link.url.starts_with("https://"));
                prop_assert!(links[..i].iter().all(|other| other.url != link.url));
            }
        }
    }
}
