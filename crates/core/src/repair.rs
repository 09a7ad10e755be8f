//! Repair: a finished file whose SHA-256 is not the expected one is not
//! thrown away. Every stretch of the part file is known by where it came
//! from (source, connection, attempt — [`Served`]); repair fetches the
//! stretches again from another source (or, with one source, on fresh
//! connections asking caches not to answer, `Cache-Control: no-cache`),
//! compares, lets a third copy decide where two disagree, writes the
//! majority's bytes, and hashes the file again. It spends at most a budget
//! of bytes, and says which source, offsets and attempt delivered the bad
//! bytes — or, when every stretch matched its second copy, that the
//! server itself serves other bytes than the expected hash.
//!
//! The suspects go first: stretches from mirrors (the primary is the URL
//! the user named first), then those from an earlier run, then the
//! primary's; the repair stops as soon as the hash matches.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use reqwest::header;
use tracing::{debug, warn};

use crate::checksums::Sha256Hex;
use crate::error::{Error, ErrorKind, Result, redact_url};
use crate::fetch::{Fetcher, Served};
use crate::range::{ByteRange, RangeSet, format_range_header};
use crate::size::format_size;
use crate::transport::{Http, next_chunk, send_within};

/// Bytes asked for in one repair request: consecutive stretches of one
/// source, up to this much.
const REQUEST_BYTES: u64 = 4 << 20;

/// The largest stretch compared at once (a resumed range is cut to this).
const PIECE_BYTES: u64 = 1 << 20;

/// How a repair may fetch.
pub(crate) struct RepairPolicy<'a> {
    /// A client of its own: its connections are new ones.
    pub client: &'a Http,
    /// Most bytes the repair may fetch.
    pub budget: u64,
    /// A proxy is in the way: every repair request asks caches not to
    /// answer from what they hold.
    pub through_proxy: bool,
}

/// A stretch of the part file and where it came from (`None`: an earlier
/// run, whose journal recorded it).
#[derive(Clone, Debug)]
struct Piece {
    range: ByteRange,
    from: Option<Served>,
}

/// A stretch repair replaced: the bytes on disk disagreed with two other
/// copies that agreed with each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairedPiece {
    /// The stretch.
    pub range: ByteRange,
    /// The source that delivered the bad bytes, without credentials
    /// (`None`: a run before this one).
    pub source: Option<String>,
    /// The connection (numbered within the download) that carried them.
    pub connection: Option<u64>,
    /// The attempt of its range that delivered them (1 = the first).
    pub attempt: Option<u32>,
}

/// What a successful repair did.
#[derive(Clone, Debug)]
pub(crate) struct Repaired {
    pub pieces: Vec<RepairedPiece>,
    pub fetched: u64,
}

/// Repairs the finished part file of `fetcher` towards `expected`;
/// `resumed` are the ranges an earlier run wrote.
pub(crate) async fn repair(
    fetcher: &Arc<Fetcher>,
    expected: Sha256Hex,
    resumed: &RangeSet,
    policy: RepairPolicy<'_>,
) -> Result<Repaired> {
    let total = fetcher.total.unwrap_or(0);
    let groups = plan(pieces(fetcher, resumed, total));
    let mut fetched = 0u64;
    let mut repaired = Vec::new();
    let mut unresolved: Vec<Piece> = Vec::new();
    let mut over_budget = false;
    for group in groups {
        let span = ByteRange::new(group[0].range.start, group[group.len() - 1].range.end);
        if fetched + span.len() > policy.budget {
            over_budget = true;
            break;
        }
        let served_by = group[0].from.as_ref().map(|s| s.source);
        let checker = other_source(fetcher, &[served_by]);
        let second = fetch(fetcher, &policy, checker, span, checker == served_by).await?;
        fetched += span.len();
        let mut replaced = false;
        for piece in &group {
            let at = (piece.range.start - span.start) as usize;
            let theirs = &second[at..at + piece.range.len() as usize];
            let ours = read(fetcher, piece.range)?;
            if crc(&ours) == crc(theirs) {
                continue;
            }
            // Two copies disagree: a third, from yet another source if
            // there is one, else on a new request that no cache answers.
            if fetched + piece.range.len() > policy.budget {
                over_budget = true;
                unresolved.push(piece.clone());
                continue;
            }
            let third_source = other_source(fetcher, &[served_by, checker]);
            let third = fetch(fetcher, &policy, third_source, piece.range, true).await?;
            fetched += piece.range.len();
            if crc(&third) == crc(theirs) {
                fetcher
                    .part
                    .write_at(piece.range.start, theirs)
                    .map_err(|e| {
                        Error::io(format!("cannot write {}", fetcher.part.path().display()), e)
                    })?;
                replaced = true;
                repaired.push(named(fetcher, piece));
                debug!(range = %piece.range, "repaired a stretch two other copies agree on");
            } else if crc(&third) != crc(&ours) {
                unresolved.push(piece.clone());
            }
            // Else the checker's copy was the odd one out: ours stands.
        }
        if replaced && rehash(fetcher).await? == expected {
            return Ok(Repaired {
                pieces: repaired,
                fetched,
            });
        }
    }
    let digest = if repaired.is_empty() {
        None
    } else {
        Some(rehash(fetcher).await?)
    };
    if digest == Some(expected) {
        return Ok(Repaired {
            pieces: repaired,
            fetched,
        });
    }
    Err(failure(
        fetcher,
        expected,
        &repaired,
        &unresolved,
        fetched,
        over_budget,
        &policy,
    ))
}

/// The error of a repair that did not reach the expected hash.
fn failure(
    fetcher: &Fetcher,
    expected: Sha256Hex,
    repaired: &[RepairedPiece],
    unresolved: &[Piece],
    fetched: u64,
    over_budget: bool,
    policy: &RepairPolicy<'_>,
) -> Error {
    let mut message = format!("checksum mismatch: expected sha256 {expected}; ");
    if !unresolved.is_empty() {
        let shown: Vec<String> = unresolved
            .iter()
            .take(8)
            .map(|piece| describe(&named(fetcher, piece)))
            .collect();
        message.push_str(&format!(
            "{} stretch(es) never matched across three copies: {}",
            unresolved.len(),
            shown.join("; ")
        ));
        if unresolved.len() > shown.len() {
            message.push_str(" …");
        }
        message.push_str("; ");
    } else if !repaired.is_empty() {
        message.push_str(&format!(
            "{} stretch(es) were repaired, yet the hash still differs; ",
            repaired.len()
        ));
    }
    if over_budget {
        message.push_str(&format!(
            "the repair budget ({}) ran out after {} fetched again; a larger --repair-budget, another mirror, or going around the proxy may fix it",
            format_size(policy.budget),
            format_size(fetched)
        ));
    } else if unresolved.is_empty() && repaired.is_empty() {
        message.push_str(&format!(
            "every stretch was fetched again ({}) and matched: the server serves these bytes, so the expected hash is for another file (or another version of it)",
            format_size(fetched)
        ));
    } else {
        message.push_str("the sources disagree; try another mirror or go around the proxy");
    }
    warn!("{message}");
    Error::new(ErrorKind::ChecksumMismatch, message)
}

/// `[a, b) from URL (connection c, attempt n)`.
pub(crate) fn describe(piece: &RepairedPiece) -> String {
    let mut text = format!("bytes {} from ", piece.range);
    match &piece.source {
        Some(source) => text.push_str(source),
        None => text.push_str("an earlier run"),
    }
    if let (Some(connection), Some(attempt)) = (piece.connection, piece.attempt) {
        text.push_str(&format!(" (connection {connection}, attempt {attempt})"));
    }
    text
}

fn named(fetcher: &Fetcher, piece: &Piece) -> RepairedPiece {
    RepairedPiece {
        range: piece.range,
        source: piece
            .from
            .as_ref()
            .map(|served| redact_url(&fetcher.sources[served.source].original)),
        connection: piece.from.as_ref().map(|served| served.connection),
        attempt: piece.from.as_ref().map(|served| served.attempt),
    }
}

/// Every stretch of the file with where it came from, in file order: this
/// run's writes, then what an earlier run wrote (cut to [`PIECE_BYTES`]).
/// Where a stretch was written twice (a steal overlapping a retry), the
/// later write is what is on disk.
fn pieces(fetcher: &Fetcher, resumed: &RangeSet, total: u64) -> Vec<Piece> {
    let served = fetcher
        .served
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut covered = RangeSet::new();
    let mut pieces = Vec::new();
    for record in served.into_iter().rev() {
        if !covered.overlaps(record.range) {
            covered.insert(record.range);
            pieces.push(Piece {
                range: record.range,
                from: Some(record),
            });
        }
    }
    for range in resumed.ranges() {
        let mut start = range.start;
        while start < range.end.min(total) {
            let end = (start + PIECE_BYTES).min(range.end);
            let piece = ByteRange::new(start, end);
            if !covered.overlaps(piece) {
                pieces.push(Piece {
                    range: piece,
                    from: None,
                });
            }
            start = end;
        }
    }
    pieces.sort_by_key(|piece| piece.range.start);
    pieces
}

/// Suspects first — mirrors' stretches, then an earlier run's, then the
/// primary's — each in file order, cut into requests of consecutive
/// stretches of one source.
fn plan(pieces: Vec<Piece>) -> Vec<Vec<Piece>> {
    let rank = |piece: &Piece| match &piece.from {
        Some(served) if served.source > 0 => 0,
        None => 1,
        Some(_) => 2,
    };
    let mut ordered = pieces;
    ordered.sort_by_key(|piece| (rank(piece), piece.range.start));
    let mut groups: Vec<Vec<Piece>> = Vec::new();
    for piece in ordered {
        let source = piece.from.as_ref().map(|s| s.source);
        if let Some(group) = groups.last_mut() {
            let last = &group[group.len() - 1];
            let same_source = last.from.as_ref().map(|s| s.source) == source;
            let adjacent = last.range.end == piece.range.start;
            if same_source && adjacent && piece.range.end - group[0].range.start <= REQUEST_BYTES {
                group.push(piece);
                continue;
            }
        }
        groups.push(vec![piece]);
    }
    groups
}

/// A live source not in `not`, lowest index first; else the first live
/// one (which then has to be asked again, past any cache).
fn other_source(fetcher: &Fetcher, not: &[Option<usize>]) -> Option<usize> {
    let live = |idx: &usize| fetcher.sources[*idx].alive.load(Ordering::Relaxed);
    let all = 0..fetcher.sources.len();
    all.clone()
        .filter(live)
        .find(|idx| !not.contains(&Some(*idx)))
        .or_else(|| all.clone().find(live))
        .or(Some(0))
}

/// Fetches `range` from source `idx` (the primary if `None`), checked like
/// any range, into memory. `bypass` asks caches on the way to answer from
/// the origin.
async fn fetch(
    fetcher: &Fetcher,
    policy: &RepairPolicy<'_>,
    idx: Option<usize>,
    range: ByteRange,
    bypass: bool,
) -> Result<Vec<u8>> {
    let idx = idx.unwrap_or(0);
    let source = &fetcher.sources[idx];
    let url = source.url();
    let Some(range_value) = format_range_header(range) else {
        return Ok(Vec::new());
    };
    let mut request = policy
        .client
        .get(&url)
        .header(header::RANGE, range_value)
        .header(header::ACCEPT_ENCODING, "identity");
    if bypass || policy.through_proxy {
        request = request
            .header(header::CACHE_CONTROL, "no-cache")
            .header(header::PRAGMA, "no-cache");
    }
    let mode = source.if_range_mode.load(Ordering::Relaxed);
    if let Some(validator) = source.if_range(mode) {
        request = request.header(header::IF_RANGE, validator);
    }
    let mut response = send_within(request, fetcher.policy.first_byte_timeout, &url).await?;
    let got = fetcher.check_response(idx, &url, &response, range, mode)?;
    if got != range {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!("asked for {range} to repair, got {got}"),
        )
        .with_url(&url));
    }
    let mut body = Vec::with_capacity(range.len() as usize);
    while (body.len() as u64) < range.len() {
        let Some(chunk) = next_chunk(&mut response, fetcher.policy.stall_timeout, &url).await?
        else {
            break;
        };
        if let Some(limit) = &fetcher.rate {
            limit.take(chunk.len() as u64).await;
        }
        let room = (range.len() - body.len() as u64) as usize;
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    if (body.len() as u64) != range.len() {
        return Err(Error::new(
            ErrorKind::Network,
            format!(
                "connection closed after {} of {} bytes while repairing",
                body.len(),
                range.len()
            ),
        )
        .with_url(&url));
    }
    Ok(body)
}

/// The bytes of `range` as the part file holds them now.
fn read(fetcher: &Fetcher, range: ByteRange) -> Result<Vec<u8>> {
    let map = fetcher
        .part
        .map_read(range.start, range.len() as usize)
        .map_err(|e| Error::io(format!("cannot read {}", fetcher.part.path().display()), e))?;
    Ok(map.to_vec())
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The SHA-256 of the whole part file, read back.
async fn rehash(fetcher: &Arc<Fetcher>) -> Result<Sha256Hex> {
    let path = fetcher.part.path().to_owned();
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || crate::verify::hash_file(&path))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, "hashing task failed").with_source(e))?
        .map_err(|e| Error::io(format!("cannot hash {shown}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(start: u64, end: u64, source: Option<usize>) -> Piece {
        Piece {
            range: ByteRange::new(start, end),
            from: source.map(|source| Served {
                range: ByteRange::new(start, end),
                source,
                connection: 0,
                attempt: 1,
                crc: 0,
            }),
        }
    }

    #[test]
    fn mirrors_are_checked_first_then_an_earlier_run_then_the_primary() {
        let mib = 1 << 20;
        let groups = plan(vec![
            piece(0, mib, Some(0)),
            piece(mib, 2 * mib, Some(1)),
            piece(2 * mib, 3 * mib, None),
            piece(3 * mib, 4 * mib, Some(1)),
            piece(4 * mib, 5 * mib, Some(1)),
        ]);
        let starts: Vec<Vec<u64>> = groups
            .iter()
            .map(|g| g.iter().map(|p| p.range.start / mib).collect())
            .collect();
        // The mirror's: [1] alone (2 is not its), then 3 and 4 in one request.
        assert_eq!(starts, vec![vec![1], vec![3, 4], vec![2], vec![0]]);
    }

    #[test]
    fn requests_stop_at_four_mib() {
        let mib = 1 << 20;
        let pieces: Vec<Piece> = (0..10)
            .map(|i| piece(i * mib, (i + 1) * mib, Some(0)))
            .collect();
        let sizes: Vec<usize> = plan(pieces).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
    }
}
