//! The fault script: which requests get which faults. The types are public; the matching is a
//! pure state machine (`FaultState::evaluate`) that turns one request into its `Effects`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::content::splitmix64;

/// Rules applied to every request, plus the seed of the script's random draws
/// ([`When::Probability`], [`Fault::CutRandom`]).
///
/// The script's counters (request indices, rule hits, bytes served per path) start at zero when
/// it is installed, by [`crate::TestServer::start`] or [`crate::TestServer::set_faults`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultScript {
    /// Evaluated in order against every request; all rules that match apply (see [`Fault`] for
    /// how faults combine).
    pub rules: Vec<FaultRule>,
    /// Seed of the one random stream the script draws from, in request-arrival order.
    pub seed: u64,
}

impl FaultScript {
    /// A script with these rules and seed 0.
    pub fn new(rules: Vec<FaultRule>) -> Self {
        Self { rules, seed: 0 }
    }

    /// The same script with another seed for its random draws.
    pub fn with_seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }

    /// A flaky, slow link, the demo's script: every connection throttled to `bytes_per_sec`, and
    /// every response closed after a random count of body bytes in `cut` (half-open).
    pub fn flaky(bytes_per_sec: u64, cut: std::ops::Range<u64>, seed: u64) -> Self {
        Self {
            rules: vec![
                FaultRule::always(Fault::Throttle { bytes_per_sec }),
                FaultRule::always(Fault::CutRandom {
                    min: cut.start,
                    max: cut.end,
                }),
            ],
            seed,
        }
    }
}

/// One rule: when a request for `path` satisfies `when`, apply `fault`.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// The request path (without query) this rule is limited to; `None` for every path. It also
    /// scopes the counted conditions: with a path, [`When::Nth`] counts that path's GETs only.
    pub path: Option<String>,
    /// Which requests the rule applies to.
    pub when: When,
    /// What happens to them.
    pub fault: Fault,
}

impl FaultRule {
    /// A rule for every path.
    pub fn new(when: When, fault: Fault) -> Self {
        Self {
            path: None,
            when,
            fault,
        }
    }

    /// A rule applying `fault` to every request.
    pub fn always(fault: Fault) -> Self {
        Self::new(When::Always, fault)
    }

    /// The same rule limited to requests for `path` (e.g. `"/old.bin"`).
    pub fn on_path(self, path: &str) -> Self {
        Self {
            path: Some(path.to_owned()),
            ..self
        }
    }
}

/// Which requests a rule applies to.
///
/// The counted conditions (`Nth`, `FirstN`, `AfterN`, `EveryNth`) use the request's 0-based
/// index among the GET requests in the rule's scope (its path, or all paths), in arrival order.
/// HEAD requests have no index and no body: only `Always` and `ConnectionNth` (or `All`/`Times`
/// built from them) can match a HEAD, and only for the faults that change a HEAD's answer (it
/// has the head of the GET without `Range`): [`Fault::Redirect`], [`Fault::Status`],
/// [`Fault::ForbiddenAfter`], [`Fault::NotModified`], the header edits ([`Fault::SetHeader`],
/// [`Fault::RemoveHeader`], [`Fault::AppendHeader`], [`Fault::EtagByConnection`]),
/// [`Fault::DelayHeaders`], and the encodings ([`Fault::Gzip`], whose `Content-Length` is the
/// compressed length, and [`Fault::TransferGzip`]).
#[derive(Clone, Debug, PartialEq)]
pub enum When {
    /// Every request.
    Always,
    /// The GET with this index.
    Nth(usize),
    /// GETs with index `< n`.
    FirstN(usize),
    /// GETs with index `>= n`.
    AfterN(usize),
    /// Every n-th GET: indices `n - 1`, `2n - 1`, ...; `EveryNth(0)` matches nothing.
    EveryNth(usize),
    /// Each GET independently with this probability, drawn from the script's seeded stream.
    Probability(f64),
    /// GETs whose `Range` header starts at this byte offset (a suffix range is resolved against
    /// the file's size); requests without a `Range` header never match.
    RangeStartsAt(u64),
    /// Requests on the n-th connection accepted (0-based) since the script was installed.
    ConnectionNth(usize),
    /// Requests a cache in front of the origin may answer from what it holds: those without
    /// `Cache-Control: no-cache` (or `Pragma: no-cache`). With [`Fault::FlipByte`] it plays a
    /// cache holding a corrupted copy that a `no-cache` request goes around.
    CacheMayAnswer,
    /// Requests matching every condition listed (evaluated in order, stopping at the first
    /// miss, so a `Probability` after a miss draws nothing).
    All(Vec<When>),
    /// Requests matching the inner condition while this rule has fired fewer than `n` times:
    /// `When::RangeStartsAt(0).times(1)` breaks the first request for the first chunk only, so
    /// the client's retry succeeds.
    Times(usize, Box<When>),
}

impl When {
    /// This condition, limited to the rule's first `n` firings (see [`When::Times`]).
    pub fn times(self, n: usize) -> When {
        When::Times(n, Box::new(self))
    }

    /// Both this condition and `other` (see [`When::All`]).
    pub fn and(self, other: When) -> When {
        match self {
            When::All(mut all) => {
                all.push(other);
                When::All(all)
            }
            first => When::All(vec![first, other]),
        }
    }
}

/// What happens to a matching request.
///
/// Faults that replace the response (`Redirect`, `Status`, `NotModified`, a triggered
/// `ForbiddenAfter`) win over everything else; among them the first matching rule wins.
/// Otherwise the faults combine: the earliest of the cuts (`ResetAfter`, `CloseAfter`,
/// `CutRandom`, `ShortBody`) ends the body, stalls happen on the way there, the slowest
/// `Throttle` sets the pace, and header faults and byte flips apply together. Cuts and stalls
/// count body bytes of this response as they go on the wire (after `Gzip` and `TransferGzip`,
/// `LongerBody`'s extra bytes included) and only trigger strictly inside it: a cut at or past the
/// body's length leaves a complete response.
///
/// A response is built in layers, each seeing the one before: the range decision (`IgnoreRange`,
/// `IgnoreIfRange`, `OkOnEtagIfRange`, `RangeToEnd`, with `If-Range` evaluated against the
/// validators the header edits leave), then the content (`FlipByte`, `LongerBody`), then the
/// encodings (`Gzip`, then `TransferGzip`), then the head (`Content-Range` faults,
/// `OkWithContentRange`, the `Connection` line), then the header edits (`SetHeader`,
/// `RemoveHeader`, `AppendHeader`, `EtagByConnection`) in script order, on every response the
/// rule matches, replacements included; `DelayHeaders` holds the finished head back.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Send this many body bytes, then reset the connection (`SO_LINGER` 0, then close). As with
    /// a real reset, bytes still in the kernel's send buffer may never reach the client.
    ResetAfter {
        /// Body bytes written before the reset.
        bytes: u64,
    },
    /// Send this many body bytes, then close the connection cleanly (FIN): a short body.
    CloseAfter {
        /// Body bytes written before the close.
        bytes: u64,
    },
    /// Close cleanly after a count of body bytes drawn per response, uniformly from
    /// `[min, max)` (`min` if the interval is empty).
    CutRandom {
        /// Smallest count drawn.
        min: u64,
        /// Largest count drawn, exclusive.
        max: u64,
    },
    /// After this many body bytes, stop sending but keep the socket open; `None` stalls until the
    /// server shuts down. After a bounded stall the body continues.
    Stall {
        /// Body bytes written before the stall.
        after_bytes: u64,
        /// How long the stall lasts; `None` is forever.
        duration: Option<Duration>,
    },
    /// Limit the connection's body rate (a token bucket with a 10 ms burst). It applies to the
    /// responses it matches and persists per connection; 0 is treated as 1 byte per second.
    Throttle {
        /// The rate of body bytes on the connection.
        bytes_per_sec: u64,
    },
    /// Answer this status with a short text body and optionally `Retry-After` (seconds or an
    /// HTTP-date, sent as given), keeping the connection open.
    Status {
        /// The status code, e.g. 503.
        code: u16,
        /// The `Retry-After` value, e.g. `"2"`.
        retry_after: Option<String>,
    },
    /// Ignore `Range`: answer 200 with the whole file and no `Content-Range`.
    IgnoreRange,
    /// Answer a range with 206 and the requested bytes, but a `Content-Range` whose first and
    /// last positions are moved by `shift`.
    WrongContentRange {
        /// Bytes added to both positions (negative moves them down).
        shift: i64,
    },
    /// Answer a range with 206 and the requested bytes, but this complete length in
    /// `Content-Range`.
    WrongTotal {
        /// The complete length announced.
        total: u64,
    },
    /// Announce the full `Content-Length` but leave out the last `missing` bytes, then close.
    ShortBody {
        /// Bytes of the body never sent.
        missing: u64,
    },
    /// Once the body bytes served for the request's path since the script was installed
    /// (counted as [`crate::RequestLog::body_bytes`] counts them) reach `after_bytes_served`, the file becomes new content (`new_seed`, same size) with a new ETag
    /// (and a `Last-Modified` one hour later). It fires once per rule, mid-stream if the count
    /// crosses the threshold during a response. Responses already streaming keep the version
    /// they started with, as S3 does; requests that arrive later get the new one.
    ChangeContent {
        /// Body bytes served for the path that trigger the change.
        after_bytes_served: u64,
        /// The seed of the new content.
        new_seed: u64,
        /// The new `ETag` header value, quotes included.
        new_etag: String,
    },
    /// A CDN bug: when `If-Range` carries an ETag (even a matching one) answer 200 with the full
    /// body; the date form of `If-Range` still works.
    OkOnEtagIfRange,
    /// Answer with this redirect status and `Location` (absolute or relative, sent as given).
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// The `Location` header value.
        location: String,
    },
    /// When this file offset is in the body, send that byte XORed with 0xFF.
    FlipByte {
        /// The file offset of the corrupted byte.
        offset: u64,
    },
    /// Answer 403 to every request for the path once this many requests (GET or HEAD) for it
    /// have arrived since the script was installed, like an expired presigned URL.
    ForbiddenAfter {
        /// Requests for the path allowed before the 403s begin.
        requests: usize,
    },
    /// Replace every `name` line of the response head (matched case-insensitively) by one
    /// `name: value` line where the first one was, or add it at the end if there is none. The
    /// body is sent as it would have been, so a changed `Content-Length` or `Content-Range` lies
    /// about it. An `ETag` or `Last-Modified` set this way is the validator of the backend
    /// answering: `If-Range` is evaluated against it (a date that does not parse never matches),
    /// so a mismatch gets 200 and the whole file, as from a real server.
    SetHeader {
        /// The header name, sent as written here.
        name: String,
        /// The header value, sent as given.
        value: String,
    },
    /// Drop every `name` line of the response head (matched case-insensitively). Without its
    /// `ETag` (or `Last-Modified`) the backend has no such validator, so an `If-Range` of that
    /// form never matches (200, whole file). Without `Content-Length`, and with no
    /// `Transfer-Encoding`, a GET's body is close-delimited: the response says `Connection:
    /// close` and the server closes the connection after the body.
    RemoveHeader {
        /// The header name.
        name: String,
    },
    /// Add one more `name: value` line at the end of the head, even when the response already
    /// has that header, such as a second, different `Content-Length` or `Content-Range`. Nothing
    /// else follows the appended line: the body, the framing and `If-Range` are those of the
    /// response's own (first) line, so a client that believes the last line misframes or
    /// misplaces the body.
    AppendHeader {
        /// The header name, sent as written here.
        name: String,
        /// The header value, sent as given.
        value: String,
    },
    /// Send `extra` bytes of 0xA5, never the file's bytes, after the content: `Content-Length`
    /// counts them, while a 206's `Content-Range` still names the range served, so a client
    /// that writes them corrupts its file. A 200 gets them too (a body longer than the file).
    /// Several add up; the extra bytes count as body bytes.
    LongerBody {
        /// Bytes sent after the content.
        extra: u64,
    },
    /// Serve a satisfiable range from its first byte to the end of the file, more than was
    /// asked: 206 with `Content-Range: bytes first-(size-1)/size` and all those bytes.
    RangeToEnd,
    /// Announce the complete length of a 206 as unknown: `Content-Range: bytes first-last/*`.
    /// It wins over `WrongTotal`.
    UnknownTotal,
    /// Write the unit of the response's `Content-Range` in upper case: `BYTES first-last/size`
    /// (and `BYTES */size` for a 416).
    UppercaseUnit,
    /// Answer `304 Not Modified` without a body or `Content-Length`, with the file's
    /// `Accept-Ranges`, `ETag` and `Last-Modified` (as the header edits leave them), keeping the
    /// connection open.
    NotModified,
    /// Read the request, then send nothing for `duration` before answering as otherwise
    /// decided: a server that accepts and never answers (`None`: the socket stays open until
    /// the server shuts down), or a cache whose first byte comes late. The answer is decided,
    /// and the request logged, when the request arrives. Several add up.
    DelayHeaders {
        /// How long the head is held back; `None` is forever.
        duration: Option<Duration>,
    },
    /// Compress the body for real with gzip and say `Content-Encoding: gzip`: the bytes the
    /// response would have carried (the whole file for a 200, the range for a 206, with
    /// `FlipByte` and `LongerBody` applied) are compressed in memory, at the fastest level with
    /// a fixed gzip header, so the same request gets the same bytes. `Content-Length` is the
    /// compressed length; the status and `Content-Range` stay those of the uncompressed body.
    /// With `IgnoreRange` it is Apache's `force-gzip`: 200 and the whole file gzipped. The body
    /// is held in memory, so it suits files of a few MiB.
    Gzip,
    /// Compress the body (after any `Gzip`) with gzip as a transfer coding and send it chunked,
    /// in chunks of 16 KiB and the last zero-size chunk, no trailers: `Transfer-Encoding: gzip,
    /// chunked` and no `Content-Length`. The chunk framing counts as body bytes.
    TransferGzip,
    /// A load-balanced farm whose backends give the file different ETags (Apache's inode
    /// ETags): the n-th connection accepted since the script was installed gets
    /// `etags[n % etags.len()]` (quotes included) as its `ETag`, and its `If-Range` is evaluated
    /// against it. A connection accepted before the install, or an empty list, keeps the
    /// file's own ETag. Content, size and `Last-Modified` stay the same.
    EtagByConnection {
        /// The ETag header values of the backends, in connection order.
        etags: Vec<String>,
    },
    /// A P2P proxy bug: answer a range that would get 206 with status 200, yet with the range's
    /// `Content-Range`, its bytes only, and its length as `Content-Length`.
    OkWithContentRange,
    /// A proxy that drops `If-Range`: a range is served as if none had been sent, even when it
    /// names another version. It wins over `OkOnEtagIfRange`.
    IgnoreIfRange,
}

impl Fault {
    /// Whether the fault can apply to a HEAD request, which has no body to damage.
    fn applies_to_head(&self) -> bool {
        matches!(
            self,
            Fault::Redirect { .. }
                | Fault::Status { .. }
                | Fault::ForbiddenAfter { .. }
                | Fault::NotModified
                | Fault::SetHeader { .. }
                | Fault::RemoveHeader { .. }
                | Fault::AppendHeader { .. }
                | Fault::EtagByConnection { .. }
                | Fault::DelayHeaders { .. }
                | Fault::Gzip
                | Fault::TransferGzip
        )
    }
}

/// The script's random stream: SplitMix64, reproducible from the seed.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.state);
        self.state = self.state.wrapping_add(1);
        out
    }

    /// A uniform draw in `[0, 1)` from the top 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A draw in `[0, bound)`, `bound > 0`; the modulo bias is below 2^-40 for the byte counts
    /// this is used with, far under anything a test could notice.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// How a response is cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CutKind {
    /// `SO_LINGER` 0 and close: the client sees a reset.
    Reset,
    /// A clean close: the client sees end of stream before `Content-Length` bytes.
    Close,
}

/// A cut after `at` body bytes of the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cut {
    pub at: u64,
    pub kind: CutKind,
}

/// A pause after `after_bytes` body bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StallPoint {
    pub after_bytes: u64,
    pub duration: Option<Duration>,
}

/// A response that replaces the normal one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Replacement {
    Redirect {
        status: u16,
        location: String,
    },
    Status {
        code: u16,
        retry_after: Option<String>,
    },
    Forbidden,
    NotModified,
}

/// One change to the response head, in script order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum HeaderEdit {
    Set { name: String, value: String },
    Remove { name: String },
    Append { name: String, value: String },
}

/// How long the head is held back ([`Fault::DelayHeaders`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadDelay {
    For(Duration),
    Forever,
}

impl HeadDelay {
    /// Two delays one after the other.
    fn then(self, other: HeadDelay) -> HeadDelay {
        match (self, other) {
            (HeadDelay::For(first), HeadDelay::For(second)) => {
                HeadDelay::For(first.saturating_add(second))
            }
            _ => HeadDelay::Forever,
        }
    }
}

/// A `ChangeContent` rule armed by a request; `rule` and `generation` identify it so that it
/// fires once, and never after its script has been replaced.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChangeTrigger {
    pub generation: u64,
    pub rule: usize,
    pub after_bytes_served: u64,
    pub new_seed: u64,
    pub new_etag: String,
}

/// Everything the matching rules do to one request, combined.
#[derive(Clone, Debug, Default)]
pub(crate) struct Effects {
    /// The faults of the matching rules, in script order, for the request log.
    pub matched: Vec<Fault>,
    pub replacement: Option<Replacement>,
    pub ignore_range: bool,
    pub ok_on_etag_if_range: bool,
    pub content_range_shift: i64,
    pub wrong_total: Option<u64>,
    pub flips: Vec<u64>,
    /// The earliest of the reset and close cuts (not `ShortBody`, which needs the body length).
    pub cut: Option<Cut>,
    pub short_by: Option<u64>,
    pub stalls: Vec<StallPoint>,
    pub throttle: Option<u64>,
    pub changes: Vec<ChangeTrigger>,
    /// `SetHeader`, `RemoveHeader`, `AppendHeader` and `EtagByConnection` (resolved to the
    /// connection's ETag), in script order.
    pub header_edits: Vec<HeaderEdit>,
    /// `LongerBody`'s extra bytes, summed.
    pub longer_by: u64,
    pub range_to_end: bool,
    pub unknown_total: bool,
    pub uppercase_unit: bool,
    pub head_delay: Option<HeadDelay>,
    pub gzip: bool,
    pub transfer_gzip: bool,
    pub ok_with_content_range: bool,
    pub ignore_if_range: bool,
    /// Body bytes served for the request's path since the script was installed; shared by all
    /// responses for the path, so `ChangeContent` sees the total.
    pub served: Arc<AtomicU64>,
}

impl Effects {
    /// Adds one matching rule's fault; `connection_index` is the request's connection counted
    /// from the script's install (`None` for a connection accepted before it).
    fn add(
        &mut self,
        rule: usize,
        generation: u64,
        fault: &Fault,
        connection_index: Option<u64>,
        rng: &mut Rng,
    ) {
        self.matched.push(fault.clone());
        match fault {
            Fault::ResetAfter { bytes } => self.offer_cut(*bytes, CutKind::Reset),
            Fault::CloseAfter { bytes } => self.offer_cut(*bytes, CutKind::Close),
            Fault::CutRandom { min, max } => {
                let at = if max > min {
                    min + rng.below(max - min)
                } else {
                    *min
                };
                self.offer_cut(at, CutKind::Close);
            }
            Fault::Stall {
                after_bytes,
                duration,
            } => self.stalls.push(StallPoint {
                after_bytes: *after_bytes,
                duration: *duration,
            }),
            Fault::Throttle { bytes_per_sec } => {
                let rate = (*bytes_per_sec).max(1);
                self.throttle = Some(self.throttle.map_or(rate, |slowest| slowest.min(rate)));
            }
            Fault::Status { code, retry_after } => self.offer_replacement(Replacement::Status {
                code: *code,
                retry_after: retry_after.clone(),
            }),
            Fault::IgnoreRange => self.ignore_range = true,
            Fault::WrongContentRange { shift } => {
                self.content_range_shift = self.content_range_shift.saturating_add(*shift);
            }
            Fault::WrongTotal { total } => self.wrong_total = Some(*total),
            Fault::ShortBody { missing } => {
                self.short_by = Some(self.short_by.map_or(*missing, |most| most.max(*missing)));
            }
            Fault::ChangeContent {
                after_bytes_served,
                new_seed,
                new_etag,
            } => self.changes.push(ChangeTrigger {
                generation,
                rule,
                after_bytes_served: *after_bytes_served,
                new_seed: *new_seed,
                new_etag: new_etag.clone(),
            }),
            Fault::OkOnEtagIfRange => self.ok_on_etag_if_range = true,
            Fault::Redirect { status, location } => {
                self.offer_replacement(Replacement::Redirect {
                    status: *status,
                    location: location.clone(),
                });
            }
            Fault::FlipByte { offset } => self.flips.push(*offset),
            Fault::ForbiddenAfter { .. } => self.offer_replacement(Replacement::Forbidden),
            Fault::SetHeader { name, value } => self.header_edits.push(HeaderEdit::Set {
                name: name.clone(),
                value: value.clone(),
            }),
            Fault::RemoveHeader { name } => {
                self.header_edits
                    .push(HeaderEdit::Remove { name: name.clone() });
            }
            Fault::AppendHeader { name, value } => self.header_edits.push(HeaderEdit::Append {
                name: name.clone(),
                value: value.clone(),
            }),
            Fault::LongerBody { extra } => self.longer_by = self.longer_by.saturating_add(*extra),
            Fault::RangeToEnd => self.range_to_end = true,
            Fault::UnknownTotal => self.unknown_total = true,
            Fault::UppercaseUnit => self.uppercase_unit = true,
            Fault::NotModified => self.offer_replacement(Replacement::NotModified),
            Fault::DelayHeaders { duration } => {
                let delay = duration.map_or(HeadDelay::Forever, HeadDelay::For);
                self.head_delay = Some(self.head_delay.map_or(delay, |before| before.then(delay)));
            }
            Fault::Gzip => self.gzip = true,
            Fault::TransferGzip => self.transfer_gzip = true,
            Fault::EtagByConnection { etags } => {
                let backend = connection_index
                    .filter(|_| !etags.is_empty())
                    .map(|index| &etags[(index % etags.len() as u64) as usize]);
                if let Some(etag) = backend {
                    self.header_edits.push(HeaderEdit::Set {
                        name: "ETag".to_owned(),
                        value: etag.clone(),
                    });
                }
            }
            Fault::OkWithContentRange => self.ok_with_content_range = true,
            Fault::IgnoreIfRange => self.ignore_if_range = true,
        }
    }

    fn offer_cut(&mut self, at: u64, kind: CutKind) {
        if self.cut.is_none_or(|earliest| at < earliest.at) {
            self.cut = Some(Cut { at, kind });
        }
    }

    fn offer_replacement(&mut self, replacement: Replacement) {
        if self.replacement.is_none() {
            self.replacement = Some(replacement);
        }
    }
}

/// The facts about a request that rules look at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Where the `Range` header starts, if there is one (see [`When::RangeStartsAt`]).
    pub range_start: Option<u64>,
    pub connection_id: u64,
    /// The request carries `Cache-Control: no-cache` or `Pragma: no-cache`.
    pub no_cache: bool,
}

/// What a condition sees of one request under one rule.
struct MatchContext {
    /// The GET index in the rule's scope; `None` for other methods.
    get_index: Option<usize>,
    is_get: bool,
    range_start: Option<u64>,
    connection_index: Option<u64>,
    rule_hits: usize,
    no_cache: bool,
}

fn when_matches(when: &When, cx: &MatchContext, rng: &mut Rng) -> bool {
    let index = cx.get_index;
    match when {
        When::Always => true,
        When::Nth(n) => index == Some(*n),
        When::FirstN(n) => index.is_some_and(|idx| idx < *n),
        When::AfterN(n) => index.is_some_and(|idx| idx >= *n),
        When::EveryNth(n) => *n > 0 && index.is_some_and(|idx| (idx + 1) % n == 0),
        When::Probability(p) => cx.is_get && rng.next_f64() < *p,
        When::RangeStartsAt(offset) => cx.is_get && cx.range_start == Some(*offset),
        When::ConnectionNth(n) => cx.connection_index == Some(*n as u64),
        When::CacheMayAnswer => !cx.no_cache,
        When::All(conditions) => conditions.iter().all(|c| when_matches(c, cx, rng)),
        When::Times(n, inner) => cx.rule_hits < *n && when_matches(inner, cx, rng),
    }
}

/// The live state of an installed script: counters, rule hits and the random stream. Every
/// request is evaluated under one lock, in arrival order, so a script is reproducible for a
/// given request order.
#[derive(Debug)]
pub(crate) struct FaultState {
    script: FaultScript,
    /// Bumped at every install so that triggers armed by an older script are ignored.
    generation: u64,
    rng: Rng,
    rule_hits: Vec<usize>,
    changes_fired: Vec<bool>,
    gets: usize,
    gets_by_path: HashMap<String, usize>,
    requests_by_path: HashMap<String, usize>,
    served_by_path: HashMap<String, Arc<AtomicU64>>,
    /// The id of the first connection accepted after the install (`When::ConnectionNth` 0).
    connection_base: u64,
}

impl FaultState {
    /// The state of `script` installed when `connection_base` is the next connection id.
    pub(crate) fn new(script: FaultScript, connection_base: u64) -> Self {
        Self::install(script, connection_base, 0)
    }

    fn install(script: FaultScript, connection_base: u64, generation: u64) -> Self {
        let n_rules = script.rules.len();
        Self {
            rng: Rng::new(script.seed),
            script,
            generation,
            rule_hits: vec![0; n_rules],
            changes_fired: vec![false; n_rules],
            gets: 0,
            gets_by_path: HashMap::new(),
            requests_by_path: HashMap::new(),
            served_by_path: HashMap::new(),
            connection_base,
        }
    }

    /// Replaces the script, restarting every counter.
    pub(crate) fn replace(&mut self, script: FaultScript, connection_base: u64) {
        *self = Self::install(script, connection_base, self.generation + 1);
    }

    /// Matches one request against the script and advances the counters.
    pub(crate) fn evaluate(&mut self, facts: &RequestFacts<'_>) -> Effects {
        let is_get = facts.method == "GET";
        let is_head = facts.method == "HEAD";
        let mut effects = Effects {
            served: Arc::clone(
                self.served_by_path
                    .entry(facts.path.to_owned())
                    .or_default(),
            ),
            ..Effects::default()
        };
        if !is_get && !is_head {
            // Other methods get 405 whatever the script says.
            return effects;
        }
        let global_index = is_get.then_some(self.gets);
        let path_index = is_get.then(|| self.gets_by_path.get(facts.path).copied().unwrap_or(0));
        let requests_before = self.requests_by_path.get(facts.path).copied().unwrap_or(0);
        let connection_index = facts.connection_id.checked_sub(self.connection_base);
        for (rule_idx, rule) in self.script.rules.iter().enumerate() {
            if rule.path.as_deref().is_some_and(|path| path != facts.path) {
                continue;
            }
            if is_head && !rule.fault.applies_to_head() {
                continue;
            }
            if let Fault::ForbiddenAfter { requests } = rule.fault
                && requests_before < requests
            {
                continue;
            }
            let cx = MatchContext {
                get_index: if rule.path.is_some() {
                    path_index
                } else {
                    global_index
                },
                is_get,
                range_start: facts.range_start,
                connection_index,
                rule_hits: self.rule_hits[rule_idx],
                no_cache: facts.no_cache,
            };
            if !when_matches(&rule.when, &cx, &mut self.rng) {
                continue;
            }
            self.rule_hits[rule_idx] += 1;
            effects.add(
                rule_idx,
                self.generation,
                &rule.fault,
                connection_index,
                &mut self.rng,
            );
        }
        *self
            .requests_by_path
            .entry(facts.path.to_owned())
            .or_default() += 1;
        if is_get {
            self.gets += 1;
            *self.gets_by_path.entry(facts.path.to_owned()).or_default() += 1;
        }
        effects
    }

    /// Marks a `ChangeContent` trigger as fired; true only the first time, and only while its
    /// script is still installed.
    pub(crate) fn claim_change(&mut self, trigger: &ChangeTrigger) -> bool {
        if trigger.generation != self.generation {
            return false;
        }
        match self.changes_fired.get_mut(trigger.rule) {
            Some(fired) if !*fired => {
                *fired = true;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rules: Vec<FaultRule>) -> FaultState {
        FaultState::new(FaultScript::new(rules), 0)
    }

    fn get<'a>(path: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            method: "GET",
            path,
            range_start: None,
            connection_id: 0,
            no_cache: false,
        }
    }

    /// Which of `n` GETs for "/a" the script's single rule matched.
    fn matching_indices(when: When, n: usize) -> Vec<usize> {
        let mut faults = state(vec![FaultRule::new(when, Fault::IgnoreRange)]);
        (0..n)
            .filter(|_| faults.evaluate(&get("/a")).ignore_range)
            .collect()
    }

    #[test]
    fn counted_conditions_use_the_get_index() {
        assert_eq!(matching_indices(When::Always, 3), [0, 1, 2]);
        assert_eq!(matching_indices(When::Nth(2), 5), [2]);
        assert_eq!(matching_indices(When::FirstN(2), 5), [0, 1]);
        assert_eq!(matching_indices(When::AfterN(3), 5), [3, 4]);
        assert_eq!(matching_indices(When::EveryNth(2), 6), [1, 3, 5]);
        assert_eq!(matching_indices(When::EveryNth(1), 3), [0, 1, 2]);
        assert_eq!(matching_indices(When::EveryNth(0), 3), [] as [usize; 0]);
        assert_eq!(matching_indices(When::AfterN(1).times(2), 6), [1, 2]);
        assert_eq!(
            matching_indices(When::AfterN(1).and(When::FirstN(3)), 6),
            [1, 2]
        );
    }

    #[test]
    fn probability_is_reproducible_and_roughly_right() {
        let run = || matching_indices(When::Probability(0.25), 4000);
        let first = run();
        assert_eq!(first, run());
        assert!((800..1200).contains(&first.len()), "{}", first.len());
        assert_eq!(matching_indices(When::Probability(0.0), 100).len(), 0);
        assert_eq!(matching_indices(When::Probability(1.0), 100).len(), 100);
    }

    #[test]
    fn heads_are_not_counted_and_only_see_header_faults() {
        let mut faults = state(vec![
            FaultRule::new(When::Nth(0), Fault::IgnoreRange),
            FaultRule::always(Fault::Stall {
                after_bytes: 0,
                duration: None,
            }),
            FaultRule::new(
                When::FirstN(1),
                Fault::Status {
                    code: 503,
                    retry_after: None,
                },
            ),
        ]);
        let head = RequestFacts {
            method: "HEAD",
            ..get("/a")
        };
        let effects = faults.evaluate(&head);
        assert!(effects.matched.is_empty(), "{:?}", effects.matched);
        let effects = faults.evaluate(&get("/a"));
        assert!(effects.ignore_range);
        assert_eq!(effects.stalls.len(), 1);
        assert!(effects.replacement.is_some());
    }

    #[test]
    fn path_rules_count_their_own_path() {
        let mut faults = state(vec![
            FaultRule::new(When::Nth(1), Fault::IgnoreRange).on_path("/b"),
        ]);
        let seen: Vec<bool> = ["/a", "/b", "/a", "/b", "/b"]
            .iter()
            .map(|path| faults.evaluate(&get(path)).ignore_range)
            .collect();
        assert_eq!(seen, [false, false, false, true, false]);
    }

    #[test]
    fn redirects_can_target_one_path() {
        let mut faults = state(vec![
            FaultRule::always(Fault::Redirect {
                status: 301,
                location: "/img.bin".to_owned(),
            })
            .on_path("/old.bin"),
        ]);
        assert!(faults.evaluate(&get("/img.bin")).replacement.is_none());
        let head = RequestFacts {
            method: "HEAD",
            ..get("/old.bin")
        };
        assert_eq!(
            faults.evaluate(&head).replacement,
            Some(Replacement::Redirect {
                status: 301,
                location: "/img.bin".to_owned()
            })
        );
    }

    #[test]
    fn range_start_and_connection_conditions() {
        let mut faults = state(vec![
            FaultRule::new(When::RangeStartsAt(100), Fault::IgnoreRange),
            FaultRule::new(When::ConnectionNth(1), Fault::OkOnEtagIfRange),
        ]);
        let at = |start, connection_id| RequestFacts {
            range_start: start,
            connection_id,
            ..get("/a")
        };
        assert!(faults.evaluate(&at(Some(100), 0)).ignore_range);
        assert!(!faults.evaluate(&at(Some(0), 0)).ignore_range);
        assert!(!faults.evaluate(&at(None, 0)).ignore_range);
        assert!(faults.evaluate(&at(None, 1)).ok_on_etag_if_range);
        // Connection indices count from the install.
        faults.replace(
            FaultScript::new(vec![FaultRule::new(
                When::ConnectionNth(0),
                Fault::IgnoreRange,
            )]),
            5,
        );
        assert!(!faults.evaluate(&at(None, 1)).ignore_range);
        assert!(faults.evaluate(&at(None, 5)).ignore_range);
    }

    #[test]
    fn forbidden_after_counts_every_request_for_the_path() {
        let mut faults = state(vec![FaultRule::always(Fault::ForbiddenAfter {
            requests: 2,
        })]);
        let head = RequestFacts {
            method: "HEAD",
            ..get("/a")
        };
        assert!(faults.evaluate(&head).replacement.is_none());
        assert!(faults.evaluate(&get("/b")).replacement.is_none());
        assert!(faults.evaluate(&get("/a")).replacement.is_none());
        assert_eq!(
            faults.evaluate(&get("/a")).replacement,
            Some(Replacement::Forbidden)
        );
        assert_eq!(
            faults.evaluate(&head).replacement,
            Some(Replacement::Forbidden)
        );
    }

    #[test]
    fn first_replacement_wins_and_cuts_take_the_earliest() {
        let mut faults = state(vec![
            FaultRule::always(Fault::CloseAfter { bytes: 500 }),
            FaultRule::always(Fault::ResetAfter { bytes: 100 }),
            FaultRule::always(Fault::CutRandom { min: 300, max: 400 }),
            FaultRule::always(Fault::Throttle {
                bytes_per_sec: 1000,
            }),
            FaultRule::always(Fault::Throttle { bytes_per_sec: 10 }),
            FaultRule::always(Fault::Status {
                code: 503,
                retry_after: Some("2".to_owned()),
            }),
            FaultRule::always(Fault::Status {
                code: 500,
                retry_after: None,
            }),
        ]);
        let effects = faults.evaluate(&get("/a"));
        assert_eq!(
            effects.cut,
            Some(Cut {
                at: 100,
                kind: CutKind::Reset
            })
        );
        assert_eq!(effects.throttle, Some(10));
        assert_eq!(
            effects.replacement,
            Some(Replacement::Status {
                code: 503,
                retry_after: Some("2".to_owned())
            })
        );
        assert_eq!(effects.matched.len(), 7);
    }

    #[test]
    fn cut_random_draws_within_bounds_and_reproducibly() {
        let draws = |seed| {
            let mut faults = FaultState::new(FaultScript::flaky(1, 10..20, seed), 0);
            (0..200)
                .map(|_| faults.evaluate(&get("/a")).cut.expect("always cut").at)
                .collect::<Vec<_>>()
        };
        let first = draws(3);
        assert_eq!(first, draws(3));
        assert_ne!(first, draws(4));
        assert!(first.iter().all(|at| (10..20).contains(at)));
        assert!(first.contains(&10) && first.contains(&19));
    }

    #[test]
    fn change_triggers_fire_once_and_not_after_replacement() {
        let change = Fault::ChangeContent {
            after_bytes_served: 10,
            new_seed: 2,
            new_etag: "\"v2\"".to_owned(),
        };
        let mut faults = state(vec![FaultRule::always(change.clone())]);
        let trigger = faults.evaluate(&get("/a")).changes.remove(0);
        let again = faults.evaluate(&get("/a")).changes.remove(0);
        assert!(faults.claim_change(&trigger));
        assert!(!faults.claim_change(&again));
        faults.replace(FaultScript::new(vec![FaultRule::always(change)]), 0);
        assert!(!faults.claim_change(&trigger));
    }

    #[test]
    fn served_counters_are_shared_per_path() {
        let mut faults = state(vec![]);
        let a = faults.evaluate(&get("/a")).served;
        let a_again = faults.evaluate(&get("/a")).served;
        let b = faults.evaluate(&get("/b")).served;
        assert!(Arc::ptr_eq(&a, &a_again));
        assert!(!Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn etag_by_connection_counts_connections_from_the_install() {
        let farm = Fault::EtagByConnection {
            etags: vec!["\"a\"".to_owned(), "\"b\"".to_owned()],
        };
        let mut faults = FaultState::new(FaultScript::new(vec![FaultRule::always(farm)]), 3);
        let etag_on = |faults: &mut FaultState, connection_id| {
            let facts = RequestFacts {
                connection_id,
                ..get("/a")
            };
            match faults.evaluate(&facts).header_edits.as_slice() {
                [HeaderEdit::Set { name, value }] if name == "ETag" => Some(value.clone()),
                [] => None,
                other => panic!("unexpected edits {other:?}"),
            }
        };
        let seen: Vec<Option<String>> = [3, 4, 5, 4, 2]
            .iter()
            .map(|id| etag_on(&mut faults, *id))
            .collect();
        let etag = |value: &str| Some(value.to_owned());
        assert_eq!(
            seen,
            [
                etag("\"a\""),
                etag("\"b\""),
                etag("\"a\""),
                etag("\"b\""),
                None
            ]
        );
        let mut empty = state(vec![FaultRule::always(Fault::EtagByConnection {
            etags: Vec::new(),
        })]);
        assert_eq!(etag_on(&mut empty, 0), None);
    }

    #[test]
    fn head_delays_add_up_and_forever_wins() {
        let delay = |duration| {
            FaultRule::always(Fault::DelayHeaders {
                duration: Some(Duration::from_millis(duration)),
            })
        };
        let mut faults = state(vec![delay(100), delay(50)]);
        assert_eq!(
            faults.evaluate(&get("/a")).head_delay,
            Some(HeadDelay::For(Duration::from_millis(150)))
        );
        let mut faults = state(vec![
            delay(100),
            FaultRule::always(Fault::DelayHeaders { duration: None }),
            delay(50),
        ]);
        assert_eq!(
            faults.evaluate(&get("/a")).head_delay,
            Some(HeadDelay::Forever)
        );
    }

    #[test]
    fn heads_see_header_edits_and_encodings_but_not_range_faults() {
        let mut faults = state(vec![
            FaultRule::always(Fault::RemoveHeader {
                name: "ETag".to_owned(),
            }),
            FaultRule::always(Fault::Gzip),
            FaultRule::always(Fault::RangeToEnd),
            FaultRule::always(Fault::LongerBody { extra: 5 }),
            FaultRule::always(Fault::NotModified),
        ]);
        let head = RequestFacts {
            method: "HEAD",
            ..get("/a")
        };
        let effects = faults.evaluate(&head);
        assert_eq!(
            effects.matched,
            [
                Fault::RemoveHeader {
                    name: "ETag".to_owned()
                },
                Fault::Gzip,
                Fault::NotModified
            ]
        );
        assert!(effects.gzip && !effects.range_to_end && effects.longer_by == 0);
        assert_eq!(effects.replacement, Some(Replacement::NotModified));
        let effects = faults.evaluate(&get("/a"));
        assert!(effects.range_to_end && effects.longer_by == 5);
    }
}
