//! Session state of one ClickHouse connection: the handshake's facts (negotiated revision,
//! user, client), the query in flight and the pairing of a Query with the end of its
//! response (EndOfStream or Exception) into one [`RequestRecord`], the walk of each
//! direction's blocks, and the [`Parser`] entry points, which hand each direction's bytes to
//! its state machine.
//!
//! Direction states:
//!
//! ```text
//! client: Start ─Hello→ AwaitAddendum ─(server Hello seen)→ Ready ⇄ Block / QueryParameters
//! server: Start ─Hello→ Ready ⇄ Block
//! any:    malformed bytes, a gap, or a column that cannot be walked → Resync → Ready
//! ```
//!
//! The rest of [`ClickHouseParser`] lives in the files next to this one, each an
//! `impl ClickHouseParser` block over the state declared here:
//! - `client`: the client → server state machine (Hello, Addendum, Query, Data, ...);
//! - `server`: the server → client state machine (Hello, Data, Progress, Exception, ...);
//! - `resync`: finding packets again after garbage, a gap or a start mid-stream, and the
//!   end of a response in the tail of a cut read;
//! - `layout`: which revision's packet layout applies when the handshake was not seen.
use std::fmt::Write as _;

use super::block::{BlockWalker, TypeArena, WalkError, WalkStep};
use super::client::ClientState;
use super::compression::{FrameStep, FrameWalk};
use super::error_codes::error_name;
use super::layout::Layout;
use super::packets::{self, QueryHead};
use super::server::ServerState;
use super::statement::statement_type;
use super::wire::{bounded_text, WireError};
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

/// How one direction's current block is walked.
#[derive(Debug, Default)]
pub(super) struct BlockState {
    /// `None`: not known (no query in flight); decided from the block's first bytes.
    pub(super) compressed: Option<bool>,
    pub(super) frames: FrameWalk,
    pub(super) walker: BlockWalker,
    /// Add the block's rows to the query's result rows (server Data) or sent rows (client).
    pub(super) count_rows: bool,
}

impl BlockState {
    pub(super) fn start(
        &mut self,
        compressed: Option<bool>,
        custom_serialization: bool,
        count_rows: bool,
    ) {
        self.compressed = compressed;
        self.frames = FrameWalk::default();
        self.walker.start(custom_serialization);
        self.count_rows = count_rows;
    }
}

/// A query waiting for the end of its response.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) record: RequestRecord,
    pub(super) cancelled: bool,
    /// Rows in the client's (uncompressed) Data blocks.
    pub(super) client_rows: u64,
    /// ProfileInfo rows (result rows when the blocks are compressed).
    pub(super) profile_rows: u64,
    /// Progress carried written rows/bytes.
    pub(super) progress_written: bool,
    /// Bytes of the response were lost (a gap) or skipped (a resync): the rows of its blocks
    /// walked are only part of the result.
    pub(super) response_lost_bytes: bool,
}

impl InFlight {
    pub(super) fn details(&mut self) -> &mut ClickHouseDetails {
        match &mut self.record.details {
            Details::ClickHouse(d) => d,
            Details::ZooKeeper(_) => unreachable!("a ClickHouse record has ClickHouse details"),
        }
    }
}

/// Passive parser of one ClickHouse native-protocol connection.
#[derive(Debug)]
pub struct ClickHouseParser {
    pub(super) config: ClickHouseConfig,
    pub(super) client: ClientState,
    pub(super) server: ServerState,
    pub(super) client_block: BlockState,
    pub(super) server_block: BlockState,
    /// Whether the next input of each direction starts where a syscall began.
    pub(super) aligned: [bool; 2],
    pub(super) client_revision: Option<u64>,
    pub(super) layout: Option<Layout>,
    pub(super) user: String,
    pub(super) client_name: String,
    pub(super) client_version: String,
    pub(super) hello_ts: Option<u64>,
    pub(super) handshake_failed: bool,
    pub(super) query: Option<InFlight>,
    /// Text of the query in flight (its record's spans); reset when the next one starts.
    pub(super) query_text: TextArena,
    /// The last client version a Query's ClientInfo carried, and its text.
    pub(super) query_version: (Option<(u64, u64, Option<u64>)>, String),
    pub(super) counters: ParserCounters,
    /// Queries ended incomplete because a later Query may have started before their end was
    /// seen (see [`ClickHouseParser::end_unanswered`]).
    pub(super) n_unanswered: u64,
    /// Scratch space for the type names seen while resynchronising.
    pub(super) scratch_types: TypeArena,
    /// Walks blocks gathered in one syscall while resynchronising.
    pub(super) scratch_walker: BlockWalker,
}

impl Default for ClickHouseParser {
    fn default() -> Self {
        Self::new(ClickHouseConfig::default())
    }
}

pub(super) fn malformed(what: &'static str) -> ParseError {
    ParseError::Malformed {
        protocol: Protocol::ClickHouse,
        what,
    }
}

pub(super) fn wire_error(e: WireError) -> Result<Step, ParseError> {
    match e {
        WireError::Short => Ok(Step::NeedMore),
        WireError::Bad(what) => Err(malformed(what)),
    }
}

/// Whether `n` ends exactly where a syscall of `input` ended.
pub(super) fn ends_syscall(input: &Input<'_>, n: usize) -> bool {
    input.marks.iter().any(|&(end, _)| end == n)
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
            n_unanswered: 0,
            scratch_types: TypeArena::default(),
            scratch_walker: BlockWalker::default(),
        }
    }

    /// Queries ended incomplete because a Query may have followed them before their response
    /// was seen to end: such a response end can no longer be paired with its query.
    pub fn unanswered_queries(&self) -> u64 {
        self.n_unanswered
    }

    /// The in-flight query's compression flag; `None` without a query.
    pub(super) fn query_compressed(&self) -> Option<bool> {
        self.query
            .as_ref()
            .map(|q| matches!(&q.record.details, Details::ClickHouse(d) if d.compressed))
    }

    pub(super) fn start_query(
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
            response_lost_bytes: false,
        });
    }

    // ---------------------------------------------------------------- blocks

    pub(super) fn step_block(
        &mut self,
        dir: Direction,
        buf: &[u8],
    ) -> Result<BlockProgress, ParseError> {
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

    pub(super) fn finish_with_exception(
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

    pub(super) fn finish(
        &mut self,
        mut q: InFlight,
        status: Status,
        ts: u64,
        len: u64,
        out: &mut Records,
    ) {
        q.record.bytes_received += len;
        self.emit(q, status, Some(ts), out);
    }

    fn emit(&mut self, mut q: InFlight, status: Status, end_ts: Option<u64>, out: &mut Records) {
        q.record.status = status;
        q.record.end_ns = end_ts.unwrap_or(q.record.start_ns);
        let (client_rows, profile_rows, progress_written, response_lost_bytes) = (
            q.client_rows,
            q.profile_rows,
            q.progress_written,
            q.response_lost_bytes,
        );
        let is_insert = q.record.operation == "INSERT";
        let d = q.details();
        if d.compressed && d.result_rows == 0 {
            d.result_rows = profile_rows;
        } else if response_lost_bytes && profile_rows > d.result_rows {
            // The blocks inside the lost bytes were not counted; ProfileInfo counts them all.
            d.result_rows = profile_rows;
        }
        if is_insert && !progress_written && d.rows_written == 0 {
            d.rows_written = client_rows;
        }
        out.push_from(q.record, &self.query_text);
    }

    pub(super) fn login_failed(
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

    /// Ends the query in flight as incomplete because a Query may have started after it: a
    /// client sends its next Query only once the response ended, so that end went unseen,
    /// and an end seen later could belong to the next query.
    pub(super) fn end_unanswered(&mut self, out: &mut Records) {
        if let Some(q) = self.query.take() {
            self.n_unanswered += 1;
            self.emit(q, Status::Incomplete, None, out);
        }
    }

    /// The in-flight query, if a response packet sent at `ts` can end it: a packet older than
    /// the query belongs to an earlier query whose start was not seen.
    pub(super) fn take_query_answered_at(&mut self, ts: u64) -> Option<InFlight> {
        if self.query.as_ref()?.record.start_ns > ts {
            return None;
        }
        self.query.take()
    }

    /// The query in flight's response lost bytes (see [`InFlight::response_lost_bytes`]).
    pub(super) fn response_lost_bytes(&mut self) {
        if let Some(q) = &mut self.query {
            q.response_lost_bytes = true;
        }
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

/// An uncompressed block starts with BlockInfo field 1 (`is_overflows`) then field 2; a
/// compression frame starts with a checksum (random bytes).
pub(super) fn looks_uncompressed(buf: &[u8]) -> bool {
    matches!(buf, [1, 0 | 1, 2, ..])
}

pub(super) enum BlockProgress {
    Step(Step),
    /// The block ended after this many bytes of the buffer.
    Ended(u64),
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
        self.counters.n_gap_resyncs += 1;
        match dir {
            Direction::ClientToServer => self.client = ClientState::Resync,
            Direction::ServerToClient => {
                self.server = ServerState::Resync;
                self.response_lost_bytes();
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
