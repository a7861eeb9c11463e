//! Session state of one connection: the handshake's facts (negotiated revision, user, client),
//! the per-direction packet state machines, and the pairing of a Query with the end of its
//! response (EndOfStream or Exception) into one [`RequestRecord`].
//!
//! Direction states:
//!
//! ```text
//! client: Start ─Hello→ AwaitAddendum ─(server Hello seen)→ Ready ⇄ Block / QueryParameters
//! server: Start ─Hello→ Ready ⇄ Block
//! any:    malformed bytes, a gap, or a column that cannot be walked → Resync → Ready
//! ```
//!
//! Resynchronisation only tries positions where a syscall began: ClickHouse flushes its
//! buffer after every packet, so on the writing end packets start at syscall boundaries. The
//! client side looks for a Query packet whose layout it can infer; the server side for a
//! packet that parses strictly (a lone `EndOfStream`, an Exception, a Progress filling its
//! syscall, ...), or for whole packets that lead to one: the reading end of a connection
//! (a client, or a server's pool connection to another server) gathers several packets into
//! one read.
//!
//! The reading end's large reads are cut by the kernel's capture limit, and inside the cut
//! the chain of frame sizes is lost; the read's final packets then come only in the read's
//! tail ([`Parser::tail`]), at an unknown position. The query in flight ends there when,
//! from some offset of the tail, whole packets parse strictly and end exactly at the tail's
//! end, the last being an Exception or an EndOfStream. A bare EndOfStream byte proves
//! nothing (a read may end in data at a byte 5): the packets before it must include a block
//! walked whole (the empty Data block that closes a result, a ProfileEvents block), a
//! structure random or column bytes do not form by chance.
//!
//! Where the revision was inferred from a Query (a connection seen from its middle), a packet
//! whose layout changed inside the inferred range (Progress, ProfileInfo) is read with each
//! candidate layout; the one followed by the syscall's end or by another packet wins, and when
//! only one fits, the range shrinks to it for the rest of the connection.
use std::fmt::Write as _;

use super::block::{read_block_header, BlockWalker, TypeArena, WalkError, WalkStep};
use super::codes::{revision, ClientPacket, ServerPacket};
use super::compression::{FrameHeader, FrameStep, FrameWalk};
use super::error_codes::error_name;
use super::packets::{self, QueryHead};
use super::statement::statement_type;
use super::wire::{bounded_text, is_printable, Cursor, WireError, WireResult, MAX_NAME};
use crate::{
    ClickHouseDetails, Details, Direction, Input, ParseError, Parser, ParserCounters, Protocol,
    QueryKind, Records, RequestRecord, Status, Step, TextArena,
};

/// Limits of what a record keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClickHouseConfig {
    /// Query text kept per record, in bytes (cut at a UTF-8 boundary; `query_truncated`).
    pub max_query_bytes: usize,
    /// Error message kept per record (its first line), in bytes.
    pub max_error_message_bytes: usize,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            max_query_bytes: 4096,
            max_error_message_bytes: 512,
        }
    }
}

/// Operation of the record made for a handshake the server refused (no query was sent).
pub const OPERATION_LOGIN: &str = "LOGIN";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    /// Nothing parsed yet: a Hello, or a connection seen from its middle.
    Start,
    /// Hello seen; an Addendum follows the server Hello at revision >= 54458.
    AwaitAddendum,
    /// At a packet boundary.
    Ready,
    /// Inside a Data or Scalar block.
    Block,
    /// After a query text skipped beyond the buffer: the parameters list (>= 54459).
    QueryParameters,
    Resync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerState {
    Start,
    Ready,
    /// Inside a Data-family block (or a compressed TableColumns).
    Block,
    Resync,
}

/// How one direction's current block is walked.
#[derive(Debug, Default)]
struct BlockState {
    /// `None`: not known (no query in flight); decided from the block's first bytes.
    compressed: Option<bool>,
    frames: FrameWalk,
    walker: BlockWalker,
    /// Add the block's rows to the query's result rows (server Data) or sent rows (client).
    count_rows: bool,
}

impl BlockState {
    fn start(&mut self, compressed: Option<bool>, custom_serialization: bool, count_rows: bool) {
        self.compressed = compressed;
        self.frames = FrameWalk::default();
        self.walker.start(custom_serialization);
        self.count_rows = count_rows;
    }
}

/// A query waiting for the end of its response.
#[derive(Debug)]
struct InFlight {
    record: RequestRecord,
    cancelled: bool,
    /// Rows in the client's (uncompressed) Data blocks.
    client_rows: u64,
    /// ProfileInfo rows (result rows when the blocks are compressed).
    profile_rows: u64,
    /// Progress carried written rows/bytes.
    progress_written: bool,
}

impl InFlight {
    fn details(&mut self) -> &mut ClickHouseDetails {
        match &mut self.record.details {
            Details::ClickHouse(d) => d,
            Details::ZooKeeper(_) => unreachable!("a ClickHouse record has ClickHouse details"),
        }
    }
}

/// Which layout revision the parser uses: negotiated in the handshake (`lo == hi`), or a
/// range inferred from a Query packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    lo: u64,
    hi: u64,
}

impl Layout {
    fn exact(r: u64) -> Self {
        Layout { lo: r, hi: r }
    }

    /// Candidate revisions with distinct layouts for a packet whose layout changes at
    /// `thresholds`: `hi` first, then just below each threshold inside the range.
    fn candidates(&self, thresholds: &[u64]) -> ([u64; 4], usize) {
        let mut out = [self.hi; 4];
        let mut n = 1;
        let mut sorted = [0u64; 4];
        let k = thresholds.len().min(4);
        sorted[..k].copy_from_slice(&thresholds[..k]);
        sorted[..k].sort_unstable_by(|a, b| b.cmp(a));
        for &t in &sorted[..k] {
            if t > self.lo && t <= self.hi && n < 4 {
                out[n] = t - 1;
                n += 1;
            }
        }
        (out, n)
    }

    /// The part of this range with the same layout as candidate `r` (one of
    /// [`Layout::candidates`] for `thresholds`).
    fn narrowed_to(&self, r: u64, thresholds: &[u64]) -> Layout {
        let mut narrowed = *self;
        for &t in thresholds {
            if t > self.lo && t <= self.hi {
                if t <= r {
                    narrowed.lo = narrowed.lo.max(t);
                } else {
                    narrowed.hi = narrowed.hi.min(t - 1);
                }
            }
        }
        narrowed
    }
}

/// A packet body read by [`ClickHouseParser::pick_layout`]: its length, and the layout range
/// its bytes proved.
struct Picked<T> {
    value: T,
    len: usize,
    narrowed: Option<Layout>,
}

/// Passive parser of one ClickHouse native-protocol connection.
#[derive(Debug)]
pub struct ClickHouseParser {
    config: ClickHouseConfig,
    client: ClientState,
    server: ServerState,
    client_block: BlockState,
    server_block: BlockState,
    /// Whether the next input of each direction starts where a syscall began.
    aligned: [bool; 2],
    client_revision: Option<u64>,
    layout: Option<Layout>,
    user: String,
    client_name: String,
    client_version: String,
    hello_ts: Option<u64>,
    handshake_failed: bool,
    query: Option<InFlight>,
    /// Text of the query in flight (its record's spans); reset when the next one starts.
    query_text: TextArena,
    /// The last client version a Query's ClientInfo carried, and its text.
    query_version: (Option<(u64, u64, Option<u64>)>, String),
    counters: ParserCounters,
    /// Scratch space for the type names seen while resynchronising.
    scratch_types: TypeArena,
    /// Walks blocks gathered in one syscall while resynchronising.
    scratch_walker: BlockWalker,
}

impl Default for ClickHouseParser {
    fn default() -> Self {
        Self::new(ClickHouseConfig::default())
    }
}

fn malformed(what: &'static str) -> ParseError {
    ParseError::Malformed {
        protocol: Protocol::ClickHouse,
        what,
    }
}

fn wire_error(e: WireError) -> Result<Step, ParseError> {
    match e {
        WireError::Short => Ok(Step::NeedMore),
        WireError::Bad(what) => Err(malformed(what)),
    }
}

/// Syscall boundaries of `input` after position 0 (and 0 itself when `aligned`).
fn boundaries<'a>(input: &'a Input<'_>, aligned: bool) -> impl Iterator<Item = usize> + 'a {
    let len = input.bytes.len();
    aligned.then_some(0).into_iter().chain(
        input
            .marks
            .iter()
            .map(|&(end, _)| end)
            .filter(move |&e| e < len),
    )
}

/// Whether `n` ends exactly where a syscall of `input` ended.
fn ends_syscall(input: &Input<'_>, n: usize) -> bool {
    input.marks.iter().any(|&(end, _)| end == n)
}

/// Where the syscall containing byte `pos` ends.
fn syscall_end(input: &Input<'_>, pos: usize) -> usize {
    input
        .marks
        .iter()
        .map(|&(end, _)| end)
        .find(|&end| end > pos)
        .unwrap_or(input.bytes.len())
}

fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

/// Outcome of looking for a Query packet at the start of a buffer.
struct QueryMatch<'a> {
    head: QueryHead<'a>,
    layout: Layout,
}

impl ClickHouseParser {
    pub fn new(config: ClickHouseConfig) -> Self {
        ClickHouseParser {
            config,
            client: ClientState::Start,
            server: ServerState::Start,
            client_block: BlockState::default(),
            server_block: BlockState::default(),
            aligned: [true, true],
            client_revision: None,
            layout: None,
            user: String::new(),
            client_name: String::new(),
            client_version: String::new(),
            hello_ts: None,
            handshake_failed: false,
            query: None,
            query_text: TextArena::default(),
            query_version: (None, String::new()),
            counters: ParserCounters::default(),
            scratch_types: TypeArena::default(),
            scratch_walker: BlockWalker::default(),
        }
    }

    /// The negotiated revision, when the handshake was seen.
    pub fn negotiated_revision(&self) -> Option<u64> {
        self.layout.filter(|l| l.lo == l.hi).map(|l| l.hi)
    }

    fn layout_hi(&self) -> u64 {
        self.layout.map_or(revision::NEWEST, |l| l.hi)
    }

    /// Keeps a layout range a packet proved (an exact, negotiated layout stays as it is).
    fn narrow_layout(&mut self, narrowed: Option<Layout>) {
        if let (Some(n), Some(l)) = (narrowed, self.layout) {
            if l.lo != l.hi {
                self.layout = Some(n);
            }
        }
    }

    fn custom_serialization(&self) -> bool {
        self.layout_hi() >= revision::CUSTOM_SERIALIZATION
    }

    /// The in-flight query's compression flag; `None` without a query.
    fn query_compressed(&self) -> Option<bool> {
        self.query
            .as_ref()
            .map(|q| matches!(&q.record.details, Details::ClickHouse(d) if d.compressed))
    }

    // ---------------------------------------------------------------- client direction

    fn parse_client(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let buf = input.bytes;
        loop {
            match self.client {
                ClientState::Start => {
                    if buf[0] != 0 {
                        self.client = ClientState::Resync;
                        self.counters.n_resyncs += 1;
                        continue;
                    }
                    let mut c = Cursor::new(&buf[1..]);
                    return match packets::client_hello(&mut c) {
                        // A Hello is alone in its syscall: the client then waits for the server.
                        Ok(_) if !ends_syscall(input, 1 + c.pos) => {
                            Err(malformed("Hello does not end its syscall"))
                        }
                        Ok(h) => {
                            self.client_revision = Some(h.revision);
                            self.user = text(h.user);
                            self.client_name = text(h.client_name);
                            self.client_version =
                                format!("{}.{}", h.version_major, h.version_minor);
                            self.hello_ts = Some(input.ts_at(0));
                            self.client = ClientState::AwaitAddendum;
                            self.counters.n_messages += 1;
                            Ok(Step::Consumed(1 + c.pos as u64))
                        }
                        Err(WireError::Short) => Ok(Step::NeedMore),
                        Err(WireError::Bad(what)) => Err(malformed(what)),
                    };
                }
                ClientState::AwaitAddendum => {
                    let Some(layout) = self.layout.filter(|l| l.lo == l.hi) else {
                        // The server Hello has not been seen yet.
                        return Ok(Step::NeedMore);
                    };
                    if layout.hi < revision::ADDENDUM {
                        self.client = ClientState::Ready;
                        continue;
                    }
                    let mut c = Cursor::new(buf);
                    return match packets::addendum(&mut c, layout.hi) {
                        Ok(a) if a.chunked_client_to_server || a.chunked_server_to_client => {
                            Err(ParseError::Unfollowable {
                                protocol: Protocol::ClickHouse,
                                what: "chunked packet framing",
                            })
                        }
                        Ok(_) => {
                            self.client = ClientState::Ready;
                            Ok(Step::Consumed(c.pos as u64))
                        }
                        Err(e) => wire_error(e),
                    };
                }
                ClientState::Ready => return self.client_packet(input, out),
                ClientState::Block => {
                    match self.step_block(Direction::ClientToServer, buf)? {
                        BlockProgress::Step(s) => return Ok(s),
                        BlockProgress::Ended(0) => {
                            // The block ended where this input starts: parse the next packet.
                            self.client = ClientState::Ready;
                            continue;
                        }
                        BlockProgress::Ended(n) => {
                            self.client = ClientState::Ready;
                            return Ok(Step::Consumed(n));
                        }
                    }
                }
                ClientState::QueryParameters => {
                    let mut c = Cursor::new(buf);
                    return match packets::query_parameters(&mut c) {
                        Ok(()) => {
                            self.client = ClientState::Ready;
                            Ok(Step::Consumed(c.pos as u64))
                        }
                        Err(e) => wire_error(e),
                    };
                }
                ClientState::Resync => return self.resync_client(input, out),
            }
        }
    }

    fn client_packet(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let mut c = Cursor::new(buf);
        let code = match c.varuint() {
            Ok(v) => ClientPacket(v),
            Err(e) => return wire_error(e),
        };
        let consumed = |c: &Cursor<'_>| Ok(Step::Consumed(c.pos as u64));
        let result = match code {
            ClientPacket::QUERY => return self.query_packet(input, out),
            ClientPacket::DATA | ClientPacket::SCALAR => match c.string(MAX_NAME) {
                Ok(_) => {
                    let compressed = self.query_compressed();
                    let custom = self.custom_serialization();
                    self.client_block
                        .start(compressed, custom, code == ClientPacket::DATA);
                    self.client = ClientState::Block;
                    consumed(&c)
                }
                Err(e) => wire_error(e),
            },
            ClientPacket::CANCEL => {
                if let Some(q) = &mut self.query {
                    q.cancelled = true;
                }
                consumed(&c)
            }
            ClientPacket::PING | ClientPacket::KEEP_ALIVE | ClientPacket::SSH_CHALLENGE_REQUEST => {
                consumed(&c)
            }
            ClientPacket::TABLES_STATUS_REQUEST => match packets::tables_status_request(&mut c) {
                Ok(()) => consumed(&c),
                Err(e) => wire_error(e),
            },
            ClientPacket::IGNORED_PART_UUIDS => match packets::part_uuids(&mut c) {
                Ok(()) => consumed(&c),
                Err(e) => wire_error(e),
            },
            ClientPacket::READ_TASK_RESPONSE => match c.varuint().and_then(|_| c.string(1 << 30)) {
                Ok(_) => consumed(&c),
                Err(e) => wire_error(e),
            },
            ClientPacket::SSH_CHALLENGE_RESPONSE => match c.string(MAX_NAME) {
                Ok(_) => consumed(&c),
                Err(e) => wire_error(e),
            },
            _ => Err(malformed("client packet that cannot be followed")),
        };
        if matches!(result, Ok(Step::Consumed(_))) {
            self.counters.n_messages += 1;
        }
        result
    }

    /// Finds the Query at the start of `input`: with the negotiated layout, or inferring it.
    fn match_query<'a>(&self, input: &Input<'a>) -> WireResult<QueryMatch<'a>> {
        let buf = input.bytes;
        if buf.first() != Some(&1) {
            return Err(WireError::Bad("not a Query packet"));
        }
        if let Some(layout) = self.layout.filter(|l| l.lo == l.hi) {
            let head = packets::query_head(&buf[1..], layout.hi)?;
            return Ok(QueryMatch { head, layout });
        }
        let mut short = false;
        for &epoch in packets::QUERY_LAYOUT_EPOCHS {
            let upper = packets::epoch_upper_bound(epoch);
            if let Some(known) = self.layout {
                if upper < known.lo || epoch > known.hi {
                    continue;
                }
            }
            let head = match packets::query_head(&buf[1..], epoch) {
                Ok(h) => h,
                Err(WireError::Short) => {
                    short = true;
                    continue;
                }
                Err(WireError::Bad(_)) => continue,
            };
            match self.plausible_inferred_query(input, &head, epoch) {
                Ok(()) => {}
                Err(WireError::Short) => {
                    short = true;
                    continue;
                }
                Err(WireError::Bad(_)) => continue,
            }
            let mut hi = upper;
            if head.kind == 1 && head.interface == 1 && head.client_revision >= epoch {
                hi = hi.min(head.client_revision);
            }
            return Ok(QueryMatch {
                head,
                layout: Layout { lo: epoch, hi },
            });
        }
        Err(if short {
            WireError::Short
        } else {
            WireError::Bad("no Query layout fits")
        })
    }

    /// Checks on a Query parsed with a guessed layout: the text must look like SQL, and the
    /// packet must end where a syscall ends or where the client's next packet (Data) begins.
    fn plausible_inferred_query(
        &self,
        input: &Input<'_>,
        head: &QueryHead<'_>,
        epoch: u64,
    ) -> WireResult<()> {
        let buf = input.bytes;
        // An empty ClientInfo (kind 0) is too little structure to trust without a handshake.
        if head.kind == 0 {
            return Err(WireError::Bad("no ClientInfo"));
        }
        if head.kind == 1 && head.interface == 1 && head.client_revision < epoch {
            return Err(WireError::Bad("layout newer than the client"));
        }
        if head.text_len == 0 {
            return Err(WireError::Bad("empty query text"));
        }
        let text_at = 1 + head.text_at;
        let checked = (head.text_len as usize).min(4096);
        let Some(sample) = buf.get(text_at..text_at + checked) else {
            return Err(WireError::Short);
        };
        let sample_ok = match std::str::from_utf8(sample) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none() && checked < head.text_len as usize,
        };
        if !sample_ok || statement_type(sample).is_empty() {
            return Err(WireError::Bad("query text is not SQL"));
        }
        let text_end = text_at + head.text_len as usize;
        if text_end > buf.len() {
            return if head.text_len > 64 * 1024 {
                Ok(())
            } else {
                Err(WireError::Short)
            };
        }
        let mut end = text_end;
        if epoch >= revision::PARAMETERS {
            let mut c = Cursor::new(&buf[text_end..]);
            packets::query_parameters(&mut c)?;
            end += c.pos;
        }
        if ends_syscall(input, end) || matches!(buf.get(end), Some(2) | Some(7)) {
            Ok(())
        } else {
            Err(WireError::Bad("query does not end at a packet boundary"))
        }
    }

    fn query_packet(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let QueryMatch { head, layout } = match self.match_query(input) {
            Ok(m) => m,
            Err(e) => return wire_error(e),
        };
        let text_at = 1 + head.text_at;
        let text_end = text_at as u64 + head.text_len;
        let max = self.config.max_query_bytes;
        let kept = (head.text_len as usize).min(max);
        let with_parameters = layout.hi >= revision::PARAMETERS;
        let (packet_len, next) = if text_end <= buf.len() as u64 {
            let mut len = text_end as usize;
            if with_parameters {
                let mut c = Cursor::new(&buf[len..]);
                if let Err(e) = packets::query_parameters(&mut c) {
                    return wire_error(e);
                }
                len += c.pos;
            }
            (len as u64, ClientState::Ready)
        } else if buf.len() >= text_at + kept && head.text_len as usize > kept {
            // A long text: keep its head, skip the rest unbuffered.
            let next = if with_parameters {
                ClientState::QueryParameters
            } else {
                ClientState::Ready
            };
            (text_end, next)
        } else {
            return Ok(Step::NeedMore);
        };
        let captured = &buf[text_at..(text_at + kept).min(buf.len())];
        let (query_bytes, cut) = bounded_text(captured, max);
        let truncated = cut || head.text_len as usize > max;
        match self.layout {
            None => self.layout = Some(layout),
            // Keep what earlier packets proved: the ranges overlap (see `match_query`).
            Some(l) if l.lo != l.hi => {
                let lo = l.lo.max(layout.lo);
                let hi = l.hi.min(layout.hi);
                self.layout = Some(if lo <= hi { Layout { lo, hi } } else { layout });
            }
            Some(_) => {}
        }
        // The record reports what the Query itself shows (the negotiated revision, or the
        // highest its layout allows), not what later packets proved on this side.
        self.start_query(
            &head,
            layout.hi,
            query_bytes,
            truncated,
            input.ts_at(0),
            out,
        );
        self.client = next;
        self.counters.n_messages += 1;
        Ok(Step::Consumed(packet_len))
    }

    fn start_query(
        &mut self,
        head: &QueryHead<'_>,
        revision: u64,
        query: &[u8],
        truncated: bool,
        ts: u64,
        out: &mut Records,
    ) {
        if let Some(previous) = self.query.take() {
            self.emit(previous, Status::Incomplete, None, out);
        }
        let operation = statement_type(query);
        let text = &mut self.query_text;
        text.clear();
        let query = text.push_lossy(query);
        let (client_name, client_version) = if head.client_name.is_empty() {
            (
                text.push(&self.client_name),
                text.push(&self.client_version),
            )
        } else {
            let name = text.push_lossy(head.client_name);
            let version = (head.version_major, head.version_minor, head.version_patch);
            if self.query_version.0 != Some(version) {
                // Formatted once per connection and version, not per query.
                let (major, minor, patch) = version;
                let formatted = &mut self.query_version.1;
                formatted.clear();
                let _ = match patch {
                    Some(p) => write!(formatted, "{major}.{minor}.{p}"),
                    None => write!(formatted, "{major}.{minor}"),
                };
                self.query_version.0 = Some(version);
            }
            (name, text.push(&self.query_version.1))
        };
        // An interserver connection authenticates each query for its initial user.
        let user =
            if self.user.is_empty() || self.user.as_bytes() == packets::INTERSERVER_SECRET_USER {
                text.push_lossy(head.initial_user)
            } else {
                text.push(&self.user)
            };
        let record = RequestRecord {
            protocol: Protocol::ClickHouse,
            start_ns: ts,
            end_ns: ts,
            operation,
            status: Status::Incomplete,
            error_code: None,
            error_name: None,
            error_message: None,
            query: Some(query),
            query_truncated: truncated,
            bytes_sent: 0,
            bytes_received: 0,
            details: Details::ClickHouse(ClickHouseDetails {
                query_id: text.push_lossy(head.query_id),
                query_kind: Some(match head.kind {
                    1 => QueryKind::Initial,
                    2 => QueryKind::Secondary,
                    _ => QueryKind::Unknown,
                }),
                initial_query_id: text.push_lossy(head.initial_query_id),
                user,
                client_name,
                client_version,
                revision,
                compressed: head.compression,
                ..Default::default()
            }),
        };
        self.query = Some(InFlight {
            record,
            cancelled: false,
            client_rows: 0,
            profile_rows: 0,
            progress_written: false,
        });
    }

    fn resync_client(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let aligned = self.aligned[Direction::ClientToServer.index()];
        let mut wait_at = None;
        for b in boundaries(input, aligned) {
            if buf[b] != 1 {
                continue;
            }
            let shifted = shift_marks(input, b);
            let view = Input {
                bytes: &buf[b..],
                marks: shifted.as_slice(),
            };
            match self.match_query(&view) {
                Ok(_) => {
                    self.client = ClientState::Ready;
                    if b == 0 {
                        return self.query_packet(input, out);
                    }
                    self.counters.n_resync_bytes += b as u64;
                    return Ok(Step::Consumed(b as u64));
                }
                Err(WireError::Short) => {
                    wait_at.get_or_insert(b);
                }
                Err(WireError::Bad(_)) => {}
            }
        }
        match wait_at {
            Some(0) => Ok(Step::NeedMore),
            Some(b) => {
                self.counters.n_resync_bytes += b as u64;
                Ok(Step::Consumed(b as u64))
            }
            None => {
                self.counters.n_resync_bytes += buf.len() as u64;
                Ok(Step::Consumed(buf.len() as u64))
            }
        }
    }

    // ---------------------------------------------------------------- server direction

    fn parse_server(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let buf = input.bytes;
        loop {
            match self.server {
                ServerState::Start => match buf[0] {
                    0 => {
                        let mut c = Cursor::new(&buf[1..]);
                        return match packets::server_hello(&mut c, self.client_revision) {
                            // The server then waits for the client: its Hello is alone in its
                            // syscall. Bytes from the middle of a packet can start with 0 too.
                            Ok(h)
                                if h.server_name.is_empty()
                                    || h.revision < revision::CLIENT_INFO
                                    || !ends_syscall(input, 1 + c.pos) =>
                            {
                                Err(malformed("not a server Hello"))
                            }
                            Ok(h) => {
                                // Without the client's Hello only an upper bound is known.
                                self.layout = Some(match self.client_revision {
                                    Some(cr) => Layout::exact(cr.min(h.revision)),
                                    None => Layout {
                                        lo: revision::CLIENT_INFO,
                                        hi: h.revision,
                                    },
                                });
                                self.server = ServerState::Ready;
                                self.counters.n_messages += 1;
                                Ok(Step::Consumed(1 + c.pos as u64))
                            }
                            Err(e) => wire_error(e),
                        };
                    }
                    2 if self.hello_ts.is_some() => {
                        // Authentication refused: an Exception instead of the Hello.
                        let mut c = Cursor::new(&buf[1..]);
                        return match packets::exception(&mut c) {
                            Ok(e) => {
                                let len = 1 + c.pos;
                                self.login_failed(&e, input.ts_end(len), len as u64, out);
                                self.server = ServerState::Ready;
                                self.counters.n_messages += 1;
                                Ok(Step::Consumed(len as u64))
                            }
                            Err(e) => wire_error(e),
                        };
                    }
                    _ => {
                        self.server = ServerState::Resync;
                        self.counters.n_resyncs += 1;
                    }
                },
                ServerState::Ready => return self.server_packet(input, out),
                ServerState::Block => match self.step_block(Direction::ServerToClient, buf)? {
                    BlockProgress::Step(s) => return Ok(s),
                    BlockProgress::Ended(n) => {
                        self.server = ServerState::Ready;
                        if n > 0 {
                            return Ok(Step::Consumed(n));
                        }
                    }
                },
                ServerState::Resync => return self.resync_server(input, out),
            }
        }
    }

    fn server_packet(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let mut c = Cursor::new(buf);
        let code = match c.varuint() {
            Ok(v) => ServerPacket(v),
            Err(e) => return wire_error(e),
        };
        let r = self.layout_hi();
        let result = match code {
            ServerPacket::DATA
            | ServerPacket::TOTALS
            | ServerPacket::EXTREMES
            | ServerPacket::LOG
            | ServerPacket::PROFILE_EVENTS
            | ServerPacket::PREVIEW_DATA => match c.string(MAX_NAME) {
                Ok(_) => {
                    let frames_for_logs = r >= revision::COMPRESSED_LOGS_PROFILE_EVENTS_COLUMNS;
                    let is_log = matches!(code, ServerPacket::LOG | ServerPacket::PROFILE_EVENTS);
                    let compressed = self
                        .query_compressed()
                        .map(|c| c && (!is_log || frames_for_logs));
                    let custom = self.custom_serialization();
                    let count = matches!(code, ServerPacket::DATA | ServerPacket::PREVIEW_DATA);
                    self.server_block.start(compressed, custom, count);
                    self.server = ServerState::Block;
                    Ok(Step::Consumed(c.pos as u64))
                }
                Err(e) => wire_error(e),
            },
            ServerPacket::EXCEPTION => match packets::exception(&mut c) {
                Ok(e) => {
                    let len = c.pos;
                    let ts = input.ts_end(len);
                    if let Some(q) = self.take_query_answered_at(input.ts_at(0)) {
                        self.finish_with_exception(q, &e, ts, len as u64, out);
                    }
                    Ok(Step::Consumed(len as u64))
                }
                Err(e) => wire_error(e),
            },
            ServerPacket::PROGRESS => {
                match self.pick_layout(input, c.pos, packets::PROGRESS_LAYOUT_THRESHOLDS, |c, r| {
                    packets::progress(c, r)
                }) {
                    Ok(Picked {
                        value: p,
                        len,
                        narrowed,
                    }) => {
                        self.narrow_layout(narrowed);
                        if let Some(q) = &mut self.query {
                            let written = p.written_rows > 0 || p.written_bytes > 0;
                            q.progress_written |= written;
                            let d = q.details();
                            d.rows_read += p.read_rows;
                            d.bytes_read += p.read_bytes;
                            d.rows_written += p.written_rows;
                            d.bytes_written += p.written_bytes;
                        }
                        Ok(Step::Consumed(len as u64))
                    }
                    Err(e) => wire_error(e),
                }
            }
            ServerPacket::PROFILE_INFO => {
                match self.pick_layout(
                    input,
                    c.pos,
                    packets::PROFILE_INFO_LAYOUT_THRESHOLDS,
                    packets::profile_info,
                ) {
                    Ok(Picked {
                        value: p,
                        len,
                        narrowed,
                    }) => {
                        self.narrow_layout(narrowed);
                        if let Some(q) = &mut self.query {
                            q.profile_rows += p.rows;
                        }
                        Ok(Step::Consumed(len as u64))
                    }
                    Err(e) => wire_error(e),
                }
            }
            ServerPacket::END_OF_STREAM => {
                let len = c.pos;
                if let Some(q) = self.take_query_answered_at(input.ts_at(0)) {
                    let status = if q.cancelled {
                        Status::Cancelled
                    } else {
                        Status::Ok
                    };
                    self.finish(q, status, input.ts_end(len), len as u64, out);
                }
                Ok(Step::Consumed(len as u64))
            }
            ServerPacket::PONG | ServerPacket::READ_TASK_REQUEST => {
                Ok(Step::Consumed(c.pos as u64))
            }
            ServerPacket::TABLES_STATUS_RESPONSE => {
                match packets::tables_status_response(&mut c, r) {
                    Ok(()) => Ok(Step::Consumed(c.pos as u64)),
                    Err(e) => wire_error(e),
                }
            }
            ServerPacket::TABLE_COLUMNS => {
                if self.query_compressed() == Some(true)
                    && r >= revision::COMPRESSED_LOGS_PROFILE_EVENTS_COLUMNS
                {
                    // Both strings inside one compression frame.
                    self.server_block.start(Some(true), false, false);
                    self.server = ServerState::Block;
                    Ok(Step::Consumed(c.pos as u64))
                } else {
                    match c.string(MAX_NAME).and_then(|_| c.string(1 << 30)) {
                        Ok(_) => Ok(Step::Consumed(c.pos as u64)),
                        Err(e) => wire_error(e),
                    }
                }
            }
            ServerPacket::PART_UUIDS => match packets::part_uuids(&mut c) {
                Ok(()) => Ok(Step::Consumed(c.pos as u64)),
                Err(e) => wire_error(e),
            },
            ServerPacket::TIMEZONE_UPDATE | ServerPacket::SSH_CHALLENGE => match c.string(MAX_NAME)
            {
                Ok(_) => Ok(Step::Consumed(c.pos as u64)),
                Err(e) => wire_error(e),
            },
            _ => Err(malformed("server packet that cannot be followed")),
        };
        if matches!(result, Ok(Step::Consumed(_))) {
            self.counters.n_messages += 1;
        }
        result
    }

    /// Parses a packet body whose layout depends on the revision. With an inferred revision
    /// range, each candidate layout is judged by what follows it: the end of a syscall (the
    /// writer's side flushes after every packet) or, when the reader's side gathered several
    /// packets into one syscall, the start of another server packet. A candidate followed by
    /// neither misreads bytes of the next packet. When exactly one candidate fits (none still
    /// waits for bytes), the layout range shrinks to it, so later packets are unambiguous.
    fn pick_layout<T: Copy>(
        &self,
        input: &Input<'_>,
        body_at: usize,
        thresholds: &[u64],
        parse: impl Fn(&mut Cursor<'_>, u64) -> WireResult<T>,
    ) -> WireResult<Picked<T>> {
        let layout = self.layout.unwrap_or(Layout {
            lo: revision::CLIENT_INFO,
            hi: revision::NEWEST,
        });
        let (candidates, n) = layout.candidates(thresholds);
        if n == 1 {
            let mut c = Cursor::new(input.bytes);
            c.pos = body_at;
            let value = parse(&mut c, candidates[0])?;
            return Ok(Picked {
                value,
                len: c.pos,
                narrowed: None,
            });
        }
        // First candidate ending its syscall, first followed by a packet, first parsed.
        let mut at_boundary = None;
        let mut followed = None;
        let mut fallback = None;
        let mut fitting = 0;
        let mut short = false;
        let mut err = WireError::Bad("no layout");
        for &r in &candidates[..n] {
            let mut c = Cursor::new(input.bytes);
            c.pos = body_at;
            match parse(&mut c, r) {
                Ok(v) => {
                    let found = (v, c.pos, r);
                    if ends_syscall(input, c.pos) {
                        fitting += 1;
                        at_boundary.get_or_insert(found);
                    } else if self.server_packet_may_start(&input.bytes[c.pos..]) {
                        fitting += 1;
                        followed.get_or_insert(found);
                    } else {
                        fallback.get_or_insert(found);
                    }
                }
                Err(WireError::Short) => short = true,
                Err(e) => err = e,
            }
        }
        let (value, len, r) = match at_boundary.or(followed) {
            Some(found) => found,
            // A longer layout may still fit once more bytes arrive.
            None if short => return Err(WireError::Short),
            None => fallback.ok_or(err)?,
        };
        let narrowed = (fitting == 1 && !short).then(|| layout.narrowed_to(r, thresholds));
        Ok(Picked {
            value,
            len,
            narrowed,
        })
    }

    /// Whether a server packet may start at `buf[0]` (bytes after a packet inside one
    /// syscall). Permissive: every real packet start passes, bytes still to come included;
    /// what fails is an unknown packet code or a body that cannot be that packet's.
    fn server_packet_may_start(&self, buf: &[u8]) -> bool {
        let mut c = Cursor::new(buf);
        let code = match c.varuint() {
            Ok(code) => ServerPacket(code),
            Err(e) => return e == WireError::Short,
        };
        let fits = |r: WireResult<()>| r.is_ok() || r == Err(WireError::Short);
        match code {
            ServerPacket::DATA
            | ServerPacket::TOTALS
            | ServerPacket::EXTREMES
            | ServerPacket::LOG
            | ServerPacket::PROFILE_EVENTS
            | ServerPacket::PREVIEW_DATA => match c.string(MAX_NAME) {
                Ok(_) => {
                    let rest = c.rest();
                    fits(FrameHeader::parse(rest).map(|_| ()))
                        || fits(read_block_header(&mut Cursor::new(rest)).map(|_| ()))
                }
                Err(e) => e == WireError::Short,
            },
            ServerPacket::EXCEPTION => fits(packets::exception(&mut c).map(|_| ())),
            ServerPacket::PROGRESS => {
                fits(packets::progress(&mut c, revision::CLIENT_INFO).map(|_| ()))
            }
            ServerPacket::PROFILE_INFO => {
                fits(packets::profile_info(&mut c, revision::CLIENT_INFO).map(|_| ()))
            }
            ServerPacket::HELLO => false,
            other => other.name().is_some(),
        }
    }

    /// Whether the bytes at a syscall boundary start a server packet, checked strictly.
    fn plausible_server_packet(&mut self, input: &Input<'_>, at: usize) -> bool {
        let end = syscall_end(input, at);
        let buf = &input.bytes[at..];
        let syscall_len = end - at;
        let mut c = Cursor::new(buf);
        let Ok(code) = c.varuint() else { return false };
        let r = self.layout_hi();
        match ServerPacket(code) {
            ServerPacket::END_OF_STREAM | ServerPacket::PONG => syscall_len == 1,
            ServerPacket::EXCEPTION => match packets::exception(&mut c) {
                Ok(e) => {
                    e.name.starts_with(b"DB::")
                        || e.name.starts_with(b"Poco::")
                        || e.name.starts_with(b"std::")
                }
                Err(_) => false,
            },
            ServerPacket::PROGRESS => {
                let marks = [(syscall_len, 0)];
                let sub = Input {
                    bytes: &input.bytes[at..end],
                    marks: &marks,
                };
                matches!(self.pick_layout(&sub, 1, packets::PROGRESS_LAYOUT_THRESHOLDS, packets::progress),
                    Ok(p) if p.len == syscall_len)
            }
            ServerPacket::PROFILE_INFO => {
                let marks = [(syscall_len, 0)];
                let sub = Input {
                    bytes: &input.bytes[at..end],
                    marks: &marks,
                };
                matches!(self.pick_layout(&sub, 1, packets::PROFILE_INFO_LAYOUT_THRESHOLDS, packets::profile_info),
                    Ok(p) if p.len == syscall_len)
            }
            ServerPacket::DATA
            | ServerPacket::TOTALS
            | ServerPacket::EXTREMES
            | ServerPacket::LOG
            | ServerPacket::PROFILE_EVENTS => {
                let Ok(name) = c.string(256) else {
                    return false;
                };
                if !is_printable(name) {
                    return false;
                }
                let is_log = matches!(
                    ServerPacket(code),
                    ServerPacket::LOG | ServerPacket::PROFILE_EVENTS
                );
                let compressed = match self.query_compressed() {
                    Some(q) => {
                        q && (!is_log || r >= revision::COMPRESSED_LOGS_PROFILE_EVENTS_COLUMNS)
                    }
                    None => !looks_uncompressed(c.rest()),
                };
                if compressed {
                    return FrameHeader::parse(c.rest()).is_ok();
                }
                // Every block starts with BlockInfo field 1 then field 2.
                if !looks_uncompressed(c.rest()) {
                    return false;
                }
                let Ok((cols, _rows)) = read_block_header(&mut c) else {
                    return false;
                };
                if cols == 0 {
                    return true;
                }
                let column = c.string(MAX_NAME).and_then(|_| c.string(MAX_NAME));
                match column {
                    Ok(type_name) => {
                        self.scratch_types.clear();
                        self.scratch_types.parse(type_name).is_ok()
                    }
                    Err(_) => false,
                }
            }
            ServerPacket::TABLE_COLUMNS => {
                c.string(MAX_NAME).is_ok()
                    && c.string(1 << 20)
                        .is_ok_and(|d| d.starts_with(b"columns format version"))
            }
            _ => false,
        }
    }

    /// Whether server packets start at a syscall boundary, checked strictly: one packet that
    /// [`Self::plausible_server_packet`] accepts, or, where the reading process gathered
    /// several packets into one syscall, whole packets one after another up to one it
    /// accepts (e.g. ProfileInfo, Progress, an empty Data block, then EndOfStream ending the
    /// syscall).
    fn plausible_server_packets(&mut self, input: &Input<'_>, at: usize) -> bool {
        if self.plausible_server_packet(input, at) {
            return true;
        }
        let end = syscall_end(input, at);
        let mut pos = at;
        for _ in 0..MAX_GATHERED_PACKETS {
            let Some(len) = self.whole_server_packet(&input.bytes[pos..end]) else {
                return false;
            };
            pos += len;
            if pos >= end {
                // A packet that goes on after the syscall's bytes proves nothing.
                return false;
            }
            if self.plausible_server_packet(input, pos) {
                return true;
            }
        }
        false
    }

    /// The length of the server packet at `buf[0]` when it lies whole inside `buf` and the
    /// response goes on after it: Progress, ProfileInfo, or a block (Data, Totals, Extremes,
    /// Log) walked to its end.
    fn whole_server_packet(&mut self, buf: &[u8]) -> Option<usize> {
        let mut c = Cursor::new(buf);
        let code = ServerPacket(c.varuint().ok()?);
        let marks = [(buf.len(), 0)];
        let sub = Input {
            bytes: buf,
            marks: &marks,
        };
        let r = self.layout_hi();
        match code {
            ServerPacket::PROGRESS => self
                .pick_layout(
                    &sub,
                    c.pos,
                    packets::PROGRESS_LAYOUT_THRESHOLDS,
                    packets::progress,
                )
                .ok()
                .map(|p| p.len),
            ServerPacket::PROFILE_INFO => self
                .pick_layout(
                    &sub,
                    c.pos,
                    packets::PROFILE_INFO_LAYOUT_THRESHOLDS,
                    packets::profile_info,
                )
                .ok()
                .map(|p| p.len),
            ServerPacket::DATA
            | ServerPacket::TOTALS
            | ServerPacket::EXTREMES
            | ServerPacket::LOG
            | ServerPacket::PROFILE_EVENTS => {
                let name = c.string(MAX_NAME).ok()?;
                if !is_printable(name) {
                    return None;
                }
                let is_log = matches!(code, ServerPacket::LOG | ServerPacket::PROFILE_EVENTS);
                let rest = c.rest();
                let compressed = match self.query_compressed() {
                    Some(q) => {
                        q && (!is_log || r >= revision::COMPRESSED_LOGS_PROFILE_EVENTS_COLUMNS)
                    }
                    None => !looks_uncompressed(rest),
                };
                let block_len = if compressed {
                    let mut frames = FrameWalk::default();
                    let mut at = 0usize;
                    loop {
                        match frames.step(&rest[at..]) {
                            Ok(FrameStep::Frame(n)) => {
                                at = at.checked_add(usize::try_from(n).ok()?)?;
                                if at > rest.len() {
                                    return None;
                                }
                            }
                            Ok(FrameStep::BlockEnd) => break at,
                            Ok(FrameStep::NeedMore) | Err(_) => return None,
                        }
                    }
                } else {
                    if !looks_uncompressed(rest) {
                        return None;
                    }
                    let custom = self.custom_serialization();
                    self.scratch_walker.start(custom);
                    match self.scratch_walker.step(rest) {
                        Ok(WalkStep::Done(n)) => usize::try_from(n).ok()?,
                        _ => return None,
                    }
                };
                Some(c.pos + block_len)
            }
            _ => None,
        }
    }

    /// Where, in the last bytes of a cut read (see [`Parser::tail`]), whole server packets
    /// start that end the response exactly at the read's end, if anywhere.
    fn response_end_in_tail(&mut self, tail: &[u8]) -> Option<usize> {
        (0..tail.len()).find(|&at| self.ends_response(tail, at))
    }

    /// Whether `tail[at..]` is whole server packets ending in an Exception, or ending in an
    /// EndOfStream after at least one block walked whole, with nothing after it.
    fn ends_response(&mut self, tail: &[u8], at: usize) -> bool {
        let end = tail.len();
        let mut pos = at;
        let mut block_seen = false;
        for _ in 0..MAX_GATHERED_PACKETS {
            let buf = &tail[pos..];
            match ServerPacket(u64::from(buf[0])) {
                ServerPacket::END_OF_STREAM if buf.len() == 1 => return block_seen,
                ServerPacket::EXCEPTION => {
                    let mut c = Cursor::new(&buf[1..]);
                    return matches!(packets::exception(&mut c),
                        Ok(e) if 1 + c.pos == buf.len() && plausible_exception(&e));
                }
                code => {
                    let Some(len) = self.whole_server_packet(buf) else {
                        return false;
                    };
                    block_seen |=
                        !matches!(code, ServerPacket::PROGRESS | ServerPacket::PROFILE_INFO);
                    pos += len;
                    if pos >= end {
                        return false;
                    }
                }
            }
        }
        false
    }

    /// Ends the query in flight with the response's last packets found in a read's tail,
    /// parsing them as if a syscall began there.
    fn end_in_tail(&mut self, tail: &[u8], ts: u64, out: &mut Records) {
        let Some(q) = &self.query else { return };
        if q.record.start_ns > ts || self.server != ServerState::Resync {
            return;
        }
        let Some(at) = self.response_end_in_tail(tail) else {
            return;
        };
        self.counters.n_resync_bytes += at as u64;
        self.server = ServerState::Ready;
        let mut pos = at;
        while pos < tail.len() {
            let marks = [(tail.len() - pos, ts)];
            let input = Input {
                bytes: &tail[pos..],
                marks: &marks,
            };
            match self.parse(Direction::ServerToClient, &input, out) {
                Ok(Step::Consumed(n)) if n > 0 => pos += n as usize,
                _ => break,
            }
        }
        if pos != tail.len() {
            // Not reached: the same packets parsed strictly above.
            self.server = ServerState::Resync;
        }
        // The next read starts where a syscall begins.
        self.aligned[Direction::ServerToClient.index()] = true;
    }

    fn resync_server(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let aligned = self.aligned[Direction::ServerToClient.index()];
        let candidates: smallvec_boundaries::Boundaries = boundaries(input, aligned).collect();
        for &b in candidates.as_slice() {
            if self.plausible_server_packets(input, b) {
                self.server = ServerState::Ready;
                if b == 0 {
                    return self.server_packet(input, out);
                }
                self.counters.n_resync_bytes += b as u64;
                return Ok(Step::Consumed(b as u64));
            }
        }
        self.counters.n_resync_bytes += buf.len() as u64;
        Ok(Step::Consumed(buf.len() as u64))
    }

    // ---------------------------------------------------------------- blocks

    fn step_block(&mut self, dir: Direction, buf: &[u8]) -> Result<BlockProgress, ParseError> {
        let state = match dir {
            Direction::ClientToServer => &mut self.client_block,
            Direction::ServerToClient => &mut self.server_block,
        };
        let compressed = match state.compressed {
            Some(c) => c,
            None if buf.len() < 3 => return Ok(BlockProgress::Step(Step::NeedMore)),
            None => {
                let c = !looks_uncompressed(buf);
                state.compressed = Some(c);
                c
            }
        };
        if compressed {
            return match state.frames.step(buf) {
                Ok(FrameStep::Frame(n)) => Ok(BlockProgress::Step(Step::Consumed(n))),
                Ok(FrameStep::BlockEnd) => {
                    self.counters.n_messages += 1;
                    Ok(BlockProgress::Ended(0))
                }
                Ok(FrameStep::NeedMore) => Ok(BlockProgress::Step(Step::NeedMore)),
                Err(what) => Err(malformed(what)),
            };
        }
        let step = state.walker.step(buf);
        if let Some(rows) = state.walker.take_new_rows() {
            if state.count_rows {
                self.count_block_rows(dir, rows);
            }
        }
        match step {
            Ok(WalkStep::Progress(n)) => Ok(BlockProgress::Step(Step::Consumed(n))),
            Ok(WalkStep::Done(n)) => {
                self.counters.n_messages += 1;
                Ok(BlockProgress::Ended(n))
            }
            Ok(WalkStep::NeedMore) => Ok(BlockProgress::Step(Step::NeedMore)),
            Err(WalkError::Malformed(what)) => Err(malformed(what)),
            Err(WalkError::Unwalkable(what)) => Err(malformed(what)),
        }
    }

    fn count_block_rows(&mut self, dir: Direction, rows: u64) {
        if let Some(q) = &mut self.query {
            match dir {
                Direction::ClientToServer => q.client_rows += rows,
                Direction::ServerToClient => q.details().result_rows += rows,
            }
        }
    }

    // ---------------------------------------------------------------- records

    fn finish_with_exception(
        &mut self,
        q: InFlight,
        e: &packets::ExceptionHead<'_>,
        ts: u64,
        len: u64,
        out: &mut Records,
    ) {
        let status = if q.cancelled {
            Status::Cancelled
        } else {
            Status::Error
        };
        let mut q = q;
        q.record.bytes_received += len;
        q.record.end_ns = ts;
        let (code, name, message) = self.error_fields(e);
        q.record.error_code = Some(code);
        q.record.error_name = name;
        q.record.error_message = Some(self.query_text.push_lossy(message));
        self.emit(q, status, Some(ts), out);
    }

    fn error_fields<'a>(
        &self,
        e: &packets::ExceptionHead<'a>,
    ) -> (i32, Option<&'static str>, &'a [u8]) {
        let first_line = e.message.split(|&b| b == b'\n').next().unwrap_or(b"");
        let (message, _) = bounded_text(first_line, self.config.max_error_message_bytes);
        (e.code, error_name(e.code), message)
    }

    fn finish(&mut self, mut q: InFlight, status: Status, ts: u64, len: u64, out: &mut Records) {
        q.record.bytes_received += len;
        self.emit(q, status, Some(ts), out);
    }

    fn emit(&mut self, mut q: InFlight, status: Status, end_ts: Option<u64>, out: &mut Records) {
        q.record.status = status;
        q.record.end_ns = end_ts.unwrap_or(q.record.start_ns);
        let (client_rows, profile_rows, progress_written) =
            (q.client_rows, q.profile_rows, q.progress_written);
        let is_insert = q.record.operation == "INSERT";
        let d = q.details();
        if d.compressed && d.result_rows == 0 {
            d.result_rows = profile_rows;
        }
        if is_insert && !progress_written && d.rows_written == 0 {
            d.rows_written = client_rows;
        }
        out.push_from(q.record, &self.query_text);
    }

    fn login_failed(
        &mut self,
        e: &packets::ExceptionHead<'_>,
        ts: u64,
        len: u64,
        out: &mut Records,
    ) {
        self.handshake_failed = true;
        let (code, name, message) = self.error_fields(e);
        let text = &mut out.text;
        let error_message = Some(text.push_lossy(message));
        let details = Details::ClickHouse(ClickHouseDetails {
            user: text.push(&self.user),
            client_name: text.push(&self.client_name),
            client_version: text.push(&self.client_version),
            revision: self.client_revision.unwrap_or(0),
            ..Default::default()
        });
        out.push(RequestRecord {
            protocol: Protocol::ClickHouse,
            start_ns: self.hello_ts.unwrap_or(ts),
            end_ns: ts,
            operation: OPERATION_LOGIN,
            status: Status::Error,
            error_code: Some(code),
            error_name: name,
            error_message,
            query: None,
            query_truncated: false,
            bytes_sent: 0,
            bytes_received: len,
            details,
        });
    }

    /// The in-flight query, if a response packet sent at `ts` can end it: a packet older than
    /// the query belongs to an earlier query whose start was not seen.
    fn take_query_answered_at(&mut self, ts: u64) -> Option<InFlight> {
        if self.query.as_ref()?.record.start_ns > ts {
            return None;
        }
        self.query.take()
    }

    fn count_bytes(&mut self, dir: Direction, n: u64) {
        if let Some(q) = &mut self.query {
            match dir {
                Direction::ClientToServer => q.record.bytes_sent += n,
                Direction::ServerToClient => q.record.bytes_received += n,
            }
        }
    }
}

/// An Exception a server sends: a C++ exception class name and a positive error code.
fn plausible_exception(e: &packets::ExceptionHead<'_>) -> bool {
    (e.name.starts_with(b"DB::") || e.name.starts_with(b"Poco::") || e.name.starts_with(b"std::"))
        && e.code > 0
        && e.code < 100_000
}

/// Packets a resynchronisation walks through inside one syscall before giving up.
const MAX_GATHERED_PACKETS: usize = 16;

/// An uncompressed block starts with BlockInfo field 1 (`is_overflows`) then field 2; a
/// compression frame starts with a checksum (random bytes).
fn looks_uncompressed(buf: &[u8]) -> bool {
    matches!(buf, [1, 0 | 1, 2, ..])
}

enum BlockProgress {
    Step(Step),
    /// The block ended after this many bytes of the buffer.
    Ended(u64),
}

/// Marks of `input` rebased to start at `pos` (few marks: a fixed array, no allocation).
fn shift_marks(input: &Input<'_>, pos: usize) -> smallvec_boundaries::Marks {
    let mut m = smallvec_boundaries::Marks::default();
    for &(end, ts) in input.marks {
        if end > pos {
            m.push((end - pos, ts));
        }
    }
    m
}

mod smallvec_boundaries {
    //! Small fixed-capacity lists for resynchronisation (falls back to the heap past 16).
    const INLINE: usize = 16;

    #[derive(Default)]
    pub(super) struct Boundaries {
        inline: [usize; INLINE],
        n: usize,
        heap: Vec<usize>,
    }

    impl FromIterator<usize> for Boundaries {
        fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
            let mut b = Boundaries::default();
            for x in iter {
                if b.n < INLINE && b.heap.is_empty() {
                    b.inline[b.n] = x;
                    b.n += 1;
                } else {
                    if b.heap.is_empty() {
                        b.heap.extend_from_slice(&b.inline[..b.n]);
                    }
                    b.heap.push(x);
                }
            }
            b
        }
    }

    impl Boundaries {
        pub fn as_slice(&self) -> &[usize] {
            if self.heap.is_empty() {
                &self.inline[..self.n]
            } else {
                &self.heap
            }
        }
    }

    #[derive(Default)]
    pub(super) struct Marks {
        inline: [(usize, u64); INLINE],
        n: usize,
        heap: Vec<(usize, u64)>,
    }

    impl Marks {
        pub fn push(&mut self, m: (usize, u64)) {
            if self.n < INLINE && self.heap.is_empty() {
                self.inline[self.n] = m;
                self.n += 1;
            } else {
                if self.heap.is_empty() {
                    self.heap.extend_from_slice(&self.inline[..self.n]);
                }
                self.heap.push(m);
            }
        }

        pub fn as_slice(&self) -> &[(usize, u64)] {
            if self.heap.is_empty() {
                &self.inline[..self.n]
            } else {
                &self.heap
            }
        }
    }
}

impl Parser for ClickHouseParser {
    fn parse(
        &mut self,
        dir: Direction,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        if input.bytes.is_empty() {
            return Ok(Step::NeedMore);
        }
        let result = match dir {
            Direction::ClientToServer => self.parse_client(input, out),
            Direction::ServerToClient => self.parse_server(input, out),
        };
        match result {
            Ok(Step::Consumed(n)) => {
                self.count_bytes(dir, n);
                self.aligned[dir.index()] =
                    n <= input.bytes.len() as u64 && ends_syscall(input, n as usize);
            }
            Ok(Step::NeedMore) => {}
            Err(e) => {
                if e.can_continue() {
                    self.counters.n_resyncs += 1;
                    match dir {
                        Direction::ClientToServer => self.client = ClientState::Resync,
                        Direction::ServerToClient => self.server = ServerState::Resync,
                    }
                }
            }
        }
        result
    }

    fn gap(&mut self, dir: Direction, len: u64, _ts_ns: u64) {
        self.count_bytes(dir, len);
        self.aligned[dir.index()] = true;
        self.counters.n_resyncs += 1;
        match dir {
            Direction::ClientToServer => self.client = ClientState::Resync,
            Direction::ServerToClient => {
                self.server = ServerState::Resync;
                if self.client == ClientState::AwaitAddendum && self.layout.is_none() {
                    self.client = ClientState::Resync;
                }
            }
        }
    }

    fn tail(&mut self, dir: Direction, bytes: &[u8], ts_ns: u64, out: &mut Records) {
        // Only a response's end is taken from a tail: a request (Query) starts a syscall.
        if dir == Direction::ServerToClient && !bytes.is_empty() {
            self.end_in_tail(bytes, ts_ns, out);
        }
    }

    fn close(&mut self, _ts_ns: u64, out: &mut Records) {
        if let Some(q) = self.query.take() {
            self.emit(q, Status::Incomplete, None, out);
        }
    }

    fn counters(&self) -> ParserCounters {
        self.counters
    }
}
