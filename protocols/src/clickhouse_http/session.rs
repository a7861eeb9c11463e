//! Session state of one HTTP connection to ClickHouse: a framing state per direction, the
//! queue of exchanges in flight (pipelined requests pair with responses in order), and the
//! record of each exchange, emitted when its response ends.
//!
//! Direction states:
//!
//! ```text
//! Head ─head→ Body (Content-Length | chunk line ⇄ chunk data | trailers | until close) ─end→ Head
//! a gap inside chunk framing → ChunkedLost ─(a syscall or tail ending in `0\r\n\r\n`)→ Head
//! malformed bytes, a gap in a head → Resync ─(a head where a syscall begins)→ Head
//! ```
//!
//! Bodies are never buffered: a request body is read only as far as its query text goes
//! (`max_query_bytes`), an error body as far as its message goes; the rest is skipped by
//! length, which also carries the position across bytes the kernel did not capture. A
//! Content-Length body is skipped up to its last byte, so that the exchange ends with the
//! timestamp of the syscall that carried that byte. Chunk framing is lost when a cut goes past
//! the chunk being skipped; the response then ends where a syscall, or the tail of a cut one
//! ([`Parser::tail`]), ends with the last chunk.
//!
//! A 2xx response may still report an exception: ClickHouse appends `Code: ...` to the
//! result it has already begun to send. So the last bytes of every chunk of an uncompressed
//! result are looked at (`EXCEPTION_WINDOW`), and the chunk's last line is kept if it is one.
//! A result whose own last row is such a text (`SELECT exception FROM system.query_log` in
//! TSV) reads the same; ClickHouse's clients detect a late exception the same way.
use std::collections::VecDeque;

use super::http::{self, BodyFraming, FramingError};
use super::meaning::{self, Summary};
use crate::clickhouse::{bounded_text, error_name, statement_type, ClickHouseConfig};
use crate::{
    ClickHouseDetails, Details, Direction, Input, ParseError, Parser, ParserCounters, Protocol,
    QueryKind, Records, RequestRecord, Status, Step, TextArena,
};

/// Exchanges in flight at most; a client pipelining further makes the oldest incomplete.
const MAX_IN_FLIGHT: usize = 32;
/// Bytes of an id, user, database or format name kept.
const MAX_NAME: usize = 1024;
/// Bytes of an error body read for its message.
const ERROR_HEAD: usize = 2048;
/// Last bytes of each result chunk looked at for an appended exception.
const EXCEPTION_WINDOW: u64 = 1024;
/// Arena bytes past which the texts of the exchanges in flight are compacted.
const ARENA_COMPACT: usize = 256 * 1024;

/// How far a message body has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Length {
        remaining: u64,
    },
    ChunkLine,
    ChunkData {
        remaining: u64,
        from_start: bool,
    },
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Head,
    Body(Body),
    /// A gap inside chunk framing: the body ends where a syscall ends with the last chunk.
    ChunkedLost,
    /// Lost: a message starts again where a syscall begins with a head.
    Resync,
}

/// What the request body is to the query text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyUse {
    /// Query text (ClickHouse runs `query=` and the body as one text).
    Query,
    /// Data of the INSERT in `query=`, or a body read no further.
    Data,
    /// Compressed: its text cannot be read.
    Unreadable,
}

/// The request whose head and body are being read.
#[derive(Debug)]
struct RequestText {
    param: Vec<u8>,
    param_truncated: bool,
    body: Vec<u8>,
    /// Body bytes were not all read (beyond the limit, or lost).
    body_truncated: bool,
    body_use: BodyUse,
}

/// One step through a body.
struct BodyStep {
    consumed: u64,
    /// Body bytes at the front of the input seen in this step.
    data: usize,
    /// The data seen ends a chunk's data.
    chunk_end: bool,
    /// The data seen starts at its chunk's first byte.
    from_chunk_start: bool,
    end: bool,
}

/// The response being read.
#[derive(Debug, Default)]
struct ResponseFacts {
    /// The exchange it answers (none: a response to a request not seen).
    seq: Option<u64>,
    status: u16,
    compressed: bool,
    /// Reads the body's head for an error message (not 2xx, not compressed).
    collect_error: bool,
    /// Looks at the end of each chunk for an appended exception (2xx chunked, not
    /// compressed).
    watch_chunks: bool,
    error_text: Vec<u8>,
    /// `error_text` is an exception appended to a 2xx result.
    appended_exception: bool,
    header_code: Option<i32>,
}

#[derive(Debug)]
struct Exchange {
    seq: u64,
    record: RequestRecord,
    /// `HEAD`: the response has no body.
    head_method: bool,
    /// `compress=1`: ClickHouse compresses the response body.
    compressed_response: bool,
    text_done: bool,
}

/// Counters beyond [`ParserCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClickHouseHttpCounters {
    /// Responses to no request seen (dropped).
    pub n_unmatched_responses: u64,
    /// Exchanges made incomplete because more were in flight than kept.
    pub n_in_flight_overflows: u64,
    /// Chunked bodies whose framing was lost in a gap.
    pub n_chunked_lost: u64,
    /// Of those, bodies whose end was found in a syscall's end or tail.
    pub n_chunked_found: u64,
}

/// Passive parser of ClickHouse's HTTP interface for one connection.
#[derive(Debug)]
pub struct ClickHouseHttpParser {
    config: ClickHouseConfig,
    phase: [Phase; 2],
    /// Whether the next input of each direction starts where a syscall began.
    aligned: [bool; 2],
    exchanges: VecDeque<Exchange>,
    next_seq: u64,
    /// The exchange whose request is being read.
    reading: Option<u64>,
    request: RequestText,
    response: ResponseFacts,
    /// Texts of the exchanges in flight; `spare` is the arena they are compacted into.
    text: TextArena,
    spare: TextArena,
    scratch: Vec<u8>,
    /// When server bytes were last lost while no response was being read.
    server_loss_at: Option<u64>,
    last_server_ts: u64,
    /// Bytes are being fed from a tail ([`Parser::tail`]): nothing may be skipped beyond
    /// them (the driver does not skip for a tail), the next syscall starts fresh.
    in_tail: bool,
    /// Records made by a gap (an exchange whose last bytes were cut), handed out by the next
    /// call that can.
    pending: Records,
    counters: ParserCounters,
    http_counters: ClickHouseHttpCounters,
}

impl Default for ClickHouseHttpParser {
    fn default() -> Self {
        Self::new(ClickHouseConfig::default())
    }
}

fn parse_error(e: FramingError) -> ParseError {
    match e {
        FramingError::Malformed(what) => ParseError::Malformed {
            protocol: Protocol::ClickHouseHttp,
            what,
        },
        FramingError::TooLarge { len, limit } => ParseError::LengthTooLarge {
            protocol: Protocol::ClickHouseHttp,
            len,
            limit,
        },
    }
}

fn framed<T>(r: Result<Option<T>, FramingError>) -> Result<Option<T>, ParseError> {
    r.map_err(parse_error)
}

fn ends_syscall(input: &Input<'_>, n: usize) -> bool {
    input.marks.iter().any(|&(end, _)| end == n)
}

fn may_start_head(dir: Direction, buf: &[u8]) -> bool {
    match dir {
        Direction::ClientToServer => http::may_start_request(buf),
        Direction::ServerToClient => http::may_start_response(buf),
    }
}

/// The last line of a chunk's data (without its line end), if it lies whole in `data`.
fn last_line(data: &[u8], from_chunk_start: bool) -> Option<&[u8]> {
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    match body.iter().rposition(|&b| b == b'\n') {
        Some(nl) => Some(&body[nl + 1..]),
        None => from_chunk_start.then_some(body),
    }
}

impl ClickHouseHttpParser {
    pub fn new(config: ClickHouseConfig) -> Self {
        ClickHouseHttpParser {
            config,
            phase: [Phase::Head; 2],
            aligned: [true; 2],
            exchanges: VecDeque::new(),
            next_seq: 0,
            reading: None,
            request: RequestText {
                param: Vec::new(),
                param_truncated: false,
                body: Vec::new(),
                body_truncated: false,
                body_use: BodyUse::Data,
            },
            response: ResponseFacts::default(),
            text: TextArena::default(),
            spare: TextArena::default(),
            scratch: Vec::new(),
            server_loss_at: None,
            last_server_ts: 0,
            in_tail: false,
            pending: Records::default(),
            counters: ParserCounters::default(),
            http_counters: ClickHouseHttpCounters::default(),
        }
    }

    pub fn http_counters(&self) -> ClickHouseHttpCounters {
        self.http_counters
    }

    fn exchange(&mut self, seq: Option<u64>) -> Option<&mut Exchange> {
        let seq = seq?;
        self.exchanges.iter_mut().rev().find(|e| e.seq == seq)
    }

    fn add_bytes(&mut self, dir: Direction, n: u64) {
        let seq = match dir {
            Direction::ClientToServer => self.reading,
            Direction::ServerToClient => self.response.seq,
        };
        if let Some(e) = self.exchange(seq) {
            match dir {
                Direction::ClientToServer => e.record.bytes_sent += n,
                Direction::ServerToClient => e.record.bytes_received += n,
            }
        }
    }

    // ------------------------------------------------------------------ requests

    fn request_head(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let Some(head) = framed(http::request_head(input.bytes))? else {
            return Ok(Step::NeedMore);
        };
        let framing = http::body_framing(head.fields, true).map_err(parse_error)?;
        self.start_exchange(&head, input.ts_at(0), out);
        self.counters.n_messages += 1;
        self.add_bytes(Direction::ClientToServer, head.len as u64);
        self.phase[0] = match framing {
            BodyFraming::None => {
                self.request_end();
                Phase::Head
            }
            BodyFraming::Length(n) => Phase::Body(Body::Length { remaining: n }),
            BodyFraming::Chunked => Phase::Body(Body::ChunkLine),
            BodyFraming::UntilClose => {
                return Err(ParseError::Unfollowable {
                    protocol: Protocol::ClickHouseHttp,
                    what: "request body delimited by the connection's end",
                })
            }
        };
        Ok(Step::Consumed(head.len as u64))
    }

    fn start_exchange(&mut self, head: &http::RequestHead<'_>, ts: u64, out: &mut Records) {
        if self.exchanges.len() >= MAX_IN_FLIGHT {
            if let Some(oldest) = self.exchanges.pop_front() {
                self.http_counters.n_in_flight_overflows += 1;
                if self.response.seq == Some(oldest.seq) {
                    self.response.seq = None;
                }
                self.emit(oldest, Status::Incomplete, None, out);
            }
        }
        if self.exchanges.is_empty() {
            self.text.clear();
        } else if self.text.len() > ARENA_COMPACT {
            self.compact_text();
        }
        let max = self.config.max_query_bytes;
        let r = &mut self.request;
        r.param.clear();
        r.body.clear();
        r.param_truncated = false;
        r.body_truncated = false;
        let mut details = ClickHouseDetails::default();
        let mut compressed_body = false;
        let mut compressed_response = false;
        for (name, raw) in meaning::url_parameters(head.target) {
            let field = match name {
                // The first `query=` is the one ClickHouse runs.
                b"query" if r.param.is_empty() && !r.param_truncated => {
                    r.param_truncated = meaning::percent_decode_into(raw, &mut r.param, max);
                    continue;
                }
                b"decompress" => {
                    compressed_body |= raw == b"1";
                    continue;
                }
                b"compress" => {
                    compressed_response |= raw == b"1";
                    continue;
                }
                b"query_id" => &mut details.query_id,
                b"user" => &mut details.user,
                b"database" => &mut details.database,
                b"default_format" => &mut details.format,
                // `password` and settings are not kept.
                _ => continue,
            };
            if field.is_empty() {
                self.scratch.clear();
                meaning::percent_decode_into(raw, &mut self.scratch, MAX_NAME);
                *field = self.text.push_lossy(&self.scratch);
            }
        }
        let mut basic_auth = None;
        for (name, value) in http::fields(head.fields) {
            let field = if name.eq_ignore_ascii_case(b"x-clickhouse-user") {
                &mut details.user
            } else if name.eq_ignore_ascii_case(b"x-clickhouse-database") {
                &mut details.database
            } else if name.eq_ignore_ascii_case(b"x-clickhouse-format") {
                &mut details.format
            } else if name.eq_ignore_ascii_case(b"authorization") {
                basic_auth = Some(value);
                continue;
            } else if name.eq_ignore_ascii_case(b"content-encoding") {
                compressed_body |= !value.is_empty() && !value.eq_ignore_ascii_case(b"identity");
                continue;
            } else {
                // `X-ClickHouse-Key` (a password) and the rest are not kept.
                continue;
            };
            if field.is_empty() {
                *field = self.text.push_lossy(&value[..value.len().min(MAX_NAME)]);
            }
        }
        if let (true, Some(value)) = (details.user.is_empty(), basic_auth) {
            let mut scratch = [0u8; 256];
            if let Some(user) = meaning::basic_auth_user(value, &mut scratch) {
                details.user = self.text.push_lossy(user);
            }
        }
        let r = &mut self.request;
        r.body_use = if compressed_body {
            BodyUse::Unreadable
        } else if !r.param.is_empty() && statement_type(&r.param) == "INSERT" {
            BodyUse::Data
        } else {
            BodyUse::Query
        };
        let query_endpoint = meaning::target_path(head.target) == b"/";
        details.query_kind = query_endpoint.then_some(QueryKind::Initial);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.reading = Some(seq);
        self.exchanges.push_back(Exchange {
            seq,
            record: RequestRecord {
                protocol: Protocol::ClickHouseHttp,
                start_ns: ts,
                end_ns: ts,
                operation: "",
                status: Status::Incomplete,
                error_code: None,
                error_name: None,
                error_message: None,
                query: None,
                query_truncated: false,
                bytes_sent: 0,
                bytes_received: 0,
                details: Details::ClickHouse(details),
            },
            head_method: head.method == "HEAD",
            compressed_response,
            text_done: false,
        });
    }

    /// Moves the texts of the exchanges in flight to the spare arena (then swapped in), so
    /// that a client that always has requests in flight does not grow the arena forever.
    fn compact_text(&mut self) {
        self.spare.clear();
        for e in &mut self.exchanges {
            let (from, to) = (&self.text, &mut self.spare);
            e.record.for_each_text_mut(|t| *t = to.copy_from(from, *t));
        }
        std::mem::swap(&mut self.text, &mut self.spare);
    }

    /// The most a body step may consume: anything (the driver skips beyond the input), but
    /// only the input itself while a tail is fed.
    fn skip_limit(&self, input: &Input<'_>) -> u64 {
        if self.in_tail {
            input.bytes.len() as u64
        } else {
            u64::MAX
        }
    }

    /// Bytes of the request body wanted for the query text.
    fn request_body_want(&self) -> usize {
        match self.request.body_use {
            BodyUse::Query if !self.request.body_truncated => {
                (self.config.max_query_bytes + 1).saturating_sub(self.request.body.len())
            }
            _ => 0,
        }
    }

    fn request_body(&mut self, input: &Input<'_>, body: Body) -> Result<Step, ParseError> {
        let want = self.request_body_want();
        let mut body = body;
        let limit = self.skip_limit(input);
        let Some(step) = framed(step_body(&mut body, input.bytes, want, 0, limit))? else {
            return Ok(Step::NeedMore);
        };
        let r = &mut self.request;
        r.body.extend_from_slice(&input.bytes[..step.data]);
        if want > 0 && step.data == want {
            r.body_truncated = true;
        }
        if want == 0 && step.consumed > 0 && r.body_use == BodyUse::Query {
            r.body_truncated = true;
        }
        self.add_bytes(Direction::ClientToServer, step.consumed);
        self.phase[0] = if step.end {
            self.request_end();
            Phase::Head
        } else {
            Phase::Body(body)
        };
        Ok(Step::Consumed(step.consumed))
    }

    /// The request being read is whole (or will not be read further).
    fn request_end(&mut self) {
        if let Some(seq) = self.reading.take() {
            self.finish_request_text(seq);
        }
    }

    /// Sets the query text and operation of exchange `seq` from the request read so far.
    fn finish_request_text(&mut self, seq: u64) {
        let max = self.config.max_query_bytes;
        let Some(i) = self.exchanges.iter().rposition(|e| e.seq == seq) else {
            return;
        };
        if self.exchanges[i].text_done {
            return;
        }
        let r = &self.request;
        let joined = &mut self.scratch;
        joined.clear();
        joined.extend_from_slice(&r.param);
        let mut truncated = r.param_truncated;
        if r.body_use == BodyUse::Query && !r.body.is_empty() {
            if !joined.is_empty() {
                joined.push(b'\n');
            }
            joined.extend_from_slice(&r.body);
            truncated |= r.body_truncated;
        }
        let operation = statement_type(joined);
        let mut end = joined.len();
        if operation == "INSERT" {
            if let Some(data_at) = meaning::insert_data_start(joined) {
                // What follows is data, not query text: the text was cut only if the bytes
                // read stopped right after the format's name (which may go on).
                truncated &= data_at == joined.len();
                end = data_at;
            }
        }
        let (kept, cut) = bounded_text(&joined[..end], max);
        let query = (!kept.is_empty()).then(|| self.text.push_lossy(kept));
        let e = &mut self.exchanges[i];
        e.text_done = true;
        e.record.operation = operation;
        e.record.query = query;
        e.record.query_truncated = query.is_some() && (cut || truncated);
        // The rest of this request's body (if any) is read no further.
        self.request.body_use = BodyUse::Data;
    }

    // ----------------------------------------------------------------- responses

    fn response_head(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let Some(head) = framed(http::response_head(input.bytes))? else {
            return Ok(Step::NeedMore);
        };
        let ts = input.ts_at(0);
        let len = head.len as u64;
        if (100..200).contains(&head.status) {
            if head.status == 101 {
                return Err(ParseError::Unfollowable {
                    protocol: Protocol::ClickHouseHttp,
                    what: "switching protocols",
                });
            }
            // An interim response (`100 Continue`): the final one follows.
            self.counters.n_messages += 1;
            if let Some(e) = self.exchanges.front_mut() {
                e.record.bytes_received += len;
            }
            return Ok(Step::Consumed(len));
        }
        let framing = http::body_framing(head.fields, false).map_err(parse_error)?;
        self.counters.n_messages += 1;
        let seq = self.pair_response(ts, out);
        let (head_method, compressed_param) = self
            .exchange(seq)
            .map_or((false, false), |e| (e.head_method, e.compressed_response));
        let f = &mut self.response;
        f.seq = seq;
        f.status = head.status;
        f.header_code = None;
        f.error_text.clear();
        f.appended_exception = false;
        f.compressed = compressed_param;
        let mut summary = None;
        let mut query_id: &[u8] = b"";
        let mut format: &[u8] = b"";
        for (name, value) in http::fields(head.fields) {
            if name.eq_ignore_ascii_case(b"content-encoding") {
                f.compressed |= !value.is_empty() && !value.eq_ignore_ascii_case(b"identity");
            } else if name.eq_ignore_ascii_case(b"x-clickhouse-exception-code") {
                f.header_code = http::parse_decimal(value).and_then(|c| i32::try_from(c).ok());
            } else if name.eq_ignore_ascii_case(b"x-clickhouse-summary") {
                summary = Some(meaning::summary(value));
            } else if name.eq_ignore_ascii_case(b"x-clickhouse-query-id") {
                query_id = value;
            } else if name.eq_ignore_ascii_case(b"x-clickhouse-format") {
                format = value;
            }
        }
        let success = (200..300).contains(&head.status);
        f.collect_error = !success && !f.compressed;
        let body = if head_method || head.status == 204 || head.status == 304 {
            BodyFraming::None
        } else {
            framing
        };
        f.watch_chunks = success && !f.compressed && body == BodyFraming::Chunked;
        let exchange = seq.and_then(|s| self.exchanges.iter_mut().rev().find(|e| e.seq == s));
        let Some(e) = exchange else {
            self.http_counters.n_unmatched_responses += 1;
            self.phase[1] = response_phase(body);
            return Ok(Step::Consumed(len));
        };
        e.record.bytes_received += len;
        if let Details::ClickHouse(d) = &mut e.record.details {
            d.http_status = head.status;
            if d.query_id.is_empty() && !query_id.is_empty() {
                d.query_id = self
                    .text
                    .push_lossy(&query_id[..query_id.len().min(MAX_NAME)]);
            }
            if d.format.is_empty() && !format.is_empty() {
                d.format = self.text.push_lossy(&format[..format.len().min(MAX_NAME)]);
            }
            if let Some(s) = summary {
                let Summary {
                    read_rows,
                    read_bytes,
                    written_rows,
                    written_bytes,
                } = s;
                (d.rows_read, d.bytes_read) = (read_rows, read_bytes);
                (d.rows_written, d.bytes_written) = (written_rows, written_bytes);
            }
        }
        self.phase[1] = response_phase(body);
        if body == BodyFraming::None {
            self.response_end(input.ts_end(head.len), out);
        }
        Ok(Step::Consumed(len))
    }

    /// The exchange a response head at `ts` answers: the oldest in flight, unless it began
    /// after `ts` (a response to a request not seen). After server bytes were lost, an
    /// exchange followed by a later one the server had already been sent lost its response.
    fn pair_response(&mut self, ts: u64, out: &mut Records) -> Option<u64> {
        if let Some(loss) = self.server_loss_at.take() {
            while self.exchanges.len() > 1
                && self.exchanges[0].record.start_ns <= loss
                && self.exchanges[1].record.start_ns <= ts
            {
                let lost = self.exchanges.pop_front()?;
                self.finish_request_if_reading(lost.seq);
                self.emit(lost, Status::Incomplete, None, out);
            }
        }
        let front = self.exchanges.front()?;
        (front.record.start_ns <= ts).then_some(front.seq)
    }

    fn finish_request_if_reading(&mut self, seq: u64) {
        if self.reading == Some(seq) {
            self.request.body_truncated = true;
            self.finish_request_text(seq);
            self.reading = None;
        }
    }

    fn response_body(
        &mut self,
        input: &Input<'_>,
        body: Body,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        let f = &self.response;
        let want = if f.collect_error {
            ERROR_HEAD.saturating_sub(f.error_text.len())
        } else {
            0
        };
        let window = if f.watch_chunks { EXCEPTION_WINDOW } else { 0 };
        let mut body = body;
        let limit = self.skip_limit(input);
        let Some(step) = framed(step_body(&mut body, input.bytes, want, window, limit))? else {
            return Ok(Step::NeedMore);
        };
        let data = &input.bytes[..step.data];
        let f = &mut self.response;
        if f.collect_error {
            f.error_text.extend_from_slice(data);
        } else if f.watch_chunks && step.chunk_end {
            match last_line(data, step.from_chunk_start) {
                Some(line) if meaning::is_appended_exception(line) => {
                    f.error_text.clear();
                    f.error_text.extend_from_slice(line);
                    f.appended_exception = true;
                }
                _ => {
                    f.appended_exception = false;
                    f.error_text.clear();
                }
            }
        }
        self.add_bytes(Direction::ServerToClient, step.consumed);
        if step.consumed <= input.bytes.len() as u64 && step.consumed > 0 {
            self.last_server_ts = input.ts_end(step.consumed as usize);
        }
        if step.end {
            self.phase[1] = Phase::Head;
            self.response_end(input.ts_end(step.consumed as usize), out);
        } else {
            self.phase[1] = Phase::Body(body);
        }
        Ok(Step::Consumed(step.consumed))
    }

    /// The response being read ended at `ts`: its exchange's record goes out.
    fn response_end(&mut self, ts: u64, out: &mut Records) {
        self.phase[1] = Phase::Head;
        let Some(seq) = self.response.seq.take() else {
            return;
        };
        let Some(i) = self.exchanges.iter().position(|e| e.seq == seq) else {
            return;
        };
        self.finish_request_if_reading(seq);
        let Some(mut e) = self.exchanges.remove(i) else {
            return;
        };
        let f = &self.response;
        let success = (200..300).contains(&f.status);
        let parsed = meaning::exception(&f.error_text);
        let code = f.header_code.or(parsed.map(|(c, _)| c));
        let message: &[u8] = match parsed {
            Some((_, m)) => m,
            None if !success => {
                let t = &f.error_text;
                &t[..t.iter().position(|&b| b == b'\n').unwrap_or(t.len())]
            }
            None => b"",
        };
        let failed = !success || f.appended_exception;
        if failed {
            let (message, _) = bounded_text(message, self.config.max_error_message_bytes);
            e.record.error_code = code;
            e.record.error_name = code.and_then(error_name);
            e.record.error_message = (!message.is_empty()).then(|| self.text.push_lossy(message));
        }
        let status = if failed { Status::Error } else { Status::Ok };
        self.emit(e, status, Some(ts), out);
    }

    fn emit(&mut self, mut e: Exchange, status: Status, end_ts: Option<u64>, out: &mut Records) {
        e.record.status = status;
        e.record.end_ns = end_ts.map_or(e.record.start_ns, |t| t.max(e.record.start_ns));
        out.push_from(e.record, &self.text);
    }

    // ------------------------------------------------------------ lost positions

    /// Looks for the end of a chunked body whose framing was lost: a syscall that ends with
    /// the last chunk ends it; a syscall that begins with a head means it ended unseen.
    fn chunked_lost(
        &mut self,
        dir: Direction,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let mut start = 0;
        let mut start_aligned = self.aligned[dir.index()];
        for &(end, ts) in input.marks {
            let end = end.min(buf.len());
            if start_aligned && may_start_head(dir, &buf[start..]) {
                self.lost_body_ended(dir, out);
                self.add_bytes(dir, start as u64);
                if start == 0 {
                    return self.parse_dir(dir, input, out);
                }
                return Ok(Step::Consumed(start as u64));
            }
            if http::ends_chunked_body(&buf[..end]) {
                self.add_bytes(dir, end as u64);
                self.chunked_found(dir, &buf[..end], ts, out);
                return Ok(Step::Consumed(end as u64));
            }
            start = end;
            start_aligned = true;
        }
        self.add_bytes(dir, buf.len() as u64);
        if dir == Direction::ServerToClient {
            self.last_server_ts = input.ts_end(buf.len());
        }
        Ok(Step::Consumed(buf.len() as u64))
    }

    /// A chunked body whose framing was lost ended with `bytes` (a syscall's end) at `ts`.
    fn chunked_found(&mut self, dir: Direction, bytes: &[u8], ts: u64, out: &mut Records) {
        self.http_counters.n_chunked_found += 1;
        self.phase[dir.index()] = Phase::Head;
        match dir {
            Direction::ClientToServer => self.request_end(),
            Direction::ServerToClient => {
                let f = &mut self.response;
                let data = &bytes[..bytes.len().saturating_sub(http::CHUNKED_END.len())];
                if f.watch_chunks {
                    if let Some(line) = last_line(data, false) {
                        f.appended_exception = meaning::is_appended_exception(line);
                        f.error_text.clear();
                        if f.appended_exception {
                            f.error_text.extend_from_slice(line);
                        }
                    }
                }
                self.response_end(ts, out);
            }
        }
    }

    /// A body whose framing was lost ended where it was not seen.
    fn lost_body_ended(&mut self, dir: Direction, out: &mut Records) {
        self.phase[dir.index()] = Phase::Head;
        match dir {
            Direction::ClientToServer => {
                self.request.body_truncated = true;
                self.request_end();
            }
            Direction::ServerToClient => self.abandon_response(out),
        }
    }

    /// The response being read will not be seen to its end: its exchange is incomplete.
    fn abandon_response(&mut self, out: &mut Records) {
        let Some(seq) = self.response.seq.take() else {
            return;
        };
        if let Some(i) = self.exchanges.iter().position(|e| e.seq == seq) {
            self.finish_request_if_reading(seq);
            if let Some(e) = self.exchanges.remove(i) {
                self.emit(e, Status::Incomplete, None, out);
            }
        }
    }

    /// Skips to the next head that begins a syscall.
    fn resync(
        &mut self,
        dir: Direction,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        let buf = input.bytes;
        let aligned = self.aligned[dir.index()];
        let candidates = aligned.then_some(0).into_iter().chain(
            input
                .marks
                .iter()
                .map(|&(end, _)| end)
                .filter(|&end| end < buf.len()),
        );
        for at in candidates {
            if !may_start_head(dir, &buf[at..]) {
                continue;
            }
            self.phase[dir.index()] = Phase::Head;
            self.counters.n_resync_bytes += at as u64;
            if at == 0 {
                return self.parse_dir(dir, input, out);
            }
            return Ok(Step::Consumed(at as u64));
        }
        self.counters.n_resync_bytes += buf.len() as u64;
        Ok(Step::Consumed(buf.len() as u64))
    }

    fn parse_dir(
        &mut self,
        dir: Direction,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        match (dir, self.phase[dir.index()]) {
            (Direction::ClientToServer, Phase::Head) => self.request_head(input, out),
            (Direction::ClientToServer, Phase::Body(body)) => self.request_body(input, body),
            (Direction::ServerToClient, Phase::Head) => self.response_head(input, out),
            (Direction::ServerToClient, Phase::Body(body)) => self.response_body(input, body, out),
            (_, Phase::ChunkedLost) => self.chunked_lost(dir, input, out),
            (_, Phase::Resync) => self.resync(dir, input, out),
        }
    }

    /// Parses a tail as stream bytes, skipping nothing beyond it.
    fn feed_tail(&mut self, dir: Direction, bytes: &[u8], ts: u64, out: &mut Records) {
        self.in_tail = true;
        let mut pos = 0;
        while pos < bytes.len() {
            let marks = [(bytes.len() - pos, ts)];
            let input = Input {
                bytes: &bytes[pos..],
                marks: &marks,
            };
            match self.parse(dir, &input, out) {
                Ok(Step::Consumed(n)) if n > 0 => pos += n as usize,
                Ok(_) => {
                    // A message goes on past the tail, into bytes not seen: the bytes
                    // left here are as good as lost.
                    self.gap(dir, (bytes.len() - pos) as u64, ts);
                    break;
                }
                Err(e) if e.can_continue() => {}
                Err(_) => break,
            }
            if matches!(self.phase[dir.index()], Phase::Resync | Phase::ChunkedLost) {
                break;
            }
        }
        self.in_tail = false;
    }

    /// Bytes of the body being read in `dir` were lost.
    fn note_body_gap(&mut self, dir: Direction) {
        if dir == Direction::ClientToServer {
            self.request.body_truncated = true;
        }
    }

    /// The message being read in `dir` lost its position: what it was part of ends
    /// incomplete (a response) or with the text read so far (a request).
    fn lose_position(&mut self, dir: Direction, ts: u64, out: &mut Records) {
        self.counters.n_resyncs += 1;
        self.phase[dir.index()] = Phase::Resync;
        match dir {
            Direction::ClientToServer => {
                self.request.body_truncated = true;
                self.request_end();
            }
            Direction::ServerToClient => {
                self.abandon_response(out);
                self.server_loss_at = Some(ts);
            }
        }
    }
}

fn response_phase(body: BodyFraming) -> Phase {
    match body {
        BodyFraming::None => Phase::Head,
        BodyFraming::Length(n) => Phase::Body(Body::Length { remaining: n }),
        BodyFraming::Chunked => Phase::Body(Body::ChunkLine),
        BodyFraming::UntilClose => Phase::Body(Body::UntilClose),
    }
}

/// One step through a body at the front of `buf`: up to `want` data bytes are shown to the
/// caller, the rest skipped by length (beyond `buf` if need be, up to `limit` bytes consumed);
/// with a `window`, the last `window` bytes of each chunk are shown whole. `None`: more bytes
/// are needed.
fn step_body(
    body: &mut Body,
    buf: &[u8],
    want: usize,
    window: u64,
    limit: u64,
) -> Result<Option<BodyStep>, FramingError> {
    let avail = buf.len() as u64;
    let mut step = BodyStep {
        consumed: 0,
        data: 0,
        chunk_end: false,
        from_chunk_start: false,
        end: false,
    };
    match *body {
        Body::Length { remaining } => {
            let n = if want > 0 {
                remaining.min(avail).min(want as u64)
            } else if remaining > 1 {
                // Up to the last byte, which ends the message when it is seen.
                (remaining - 1).min(limit)
            } else {
                remaining.min(avail)
            };
            step.consumed = n;
            step.data = if want > 0 { n as usize } else { 0 };
            let left = remaining - n;
            step.end = left == 0;
            *body = Body::Length { remaining: left };
        }
        Body::ChunkLine => {
            let Some((size, len)) = http::chunk_line(buf)? else {
                return Ok(None);
            };
            step.consumed = len as u64;
            *body = if size == 0 {
                Body::Trailers
            } else {
                Body::ChunkData {
                    remaining: size,
                    from_start: true,
                }
            };
        }
        Body::ChunkData {
            remaining,
            from_start,
        } => {
            if want == 0 && window > 0 && remaining > window {
                step.consumed = (remaining - window).min(limit);
                *body = Body::ChunkData {
                    remaining: remaining - step.consumed,
                    from_start: false,
                };
                return Ok(Some(step));
            }
            let n = if want > 0 {
                remaining.min(avail).min(want as u64)
            } else if window > 0 {
                if avail < remaining {
                    return Ok(None);
                }
                remaining
            } else {
                remaining.min(limit)
            };
            step.consumed = n;
            step.data = if want > 0 || window > 0 {
                n as usize
            } else {
                0
            };
            step.from_chunk_start = from_start;
            step.chunk_end = n == remaining;
            *body = if n == remaining {
                Body::ChunkEnd
            } else {
                Body::ChunkData {
                    remaining: remaining - n,
                    from_start: false,
                }
            };
        }
        Body::ChunkEnd => match buf {
            [b'\r', b'\n', ..] => {
                step.consumed = 2;
                *body = Body::ChunkLine;
            }
            [b'\r'] => return Ok(None),
            _ => return Err(FramingError::Malformed("chunk data not followed by CRLF")),
        },
        Body::Trailers => {
            let Some((len, last)) = http::trailer_line(buf)? else {
                return Ok(None);
            };
            step.consumed = len as u64;
            step.end = last;
        }
        Body::UntilClose => {
            step.consumed = avail;
            step.data = buf.len().min(want);
        }
    }
    Ok(Some(step))
}

impl Parser for ClickHouseHttpParser {
    fn parse(
        &mut self,
        dir: Direction,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        if !self.pending.is_empty() {
            out.append(&mut self.pending);
        }
        if input.bytes.is_empty() {
            return Ok(Step::NeedMore);
        }
        let result = self.parse_dir(dir, input, out);
        match result {
            Ok(Step::Consumed(n)) => {
                self.aligned[dir.index()] =
                    n <= input.bytes.len() as u64 && ends_syscall(input, n as usize);
            }
            Ok(Step::NeedMore) => {}
            Err(e) => {
                if e.can_continue() {
                    self.lose_position(dir, input.ts_at(0), out);
                    // The bytes here were not a message: look for one after them.
                    self.aligned[dir.index()] = false;
                }
            }
        }
        result
    }

    fn gap(&mut self, dir: Direction, len: u64, ts_ns: u64) {
        self.aligned[dir.index()] = true;
        let mut pending = std::mem::take(&mut self.pending);
        let out = &mut pending;
        let phase = self.phase[dir.index()];
        let within = |remaining: u64| len < remaining;
        match phase {
            Phase::Body(Body::Length { remaining }) if within(remaining) => {
                self.add_bytes(dir, len);
                self.phase[dir.index()] = Phase::Body(Body::Length {
                    remaining: remaining - len,
                });
                self.note_body_gap(dir);
            }
            Phase::Body(Body::ChunkData {
                remaining,
                from_start: _,
            }) if within(remaining) => {
                self.add_bytes(dir, len);
                self.phase[dir.index()] = Phase::Body(Body::ChunkData {
                    remaining: remaining - len,
                    from_start: false,
                });
                self.note_body_gap(dir);
            }
            Phase::Body(Body::Length { remaining }) => {
                // The body ended inside the gap, at this syscall.
                self.add_bytes(dir, remaining);
                self.note_body_gap(dir);
                self.phase[dir.index()] = Phase::Head;
                match dir {
                    Direction::ClientToServer => self.request_end(),
                    Direction::ServerToClient => self.response_end(ts_ns, out),
                }
                if len > remaining {
                    self.counters.n_gap_resyncs += 1;
                    self.lose_position(dir, ts_ns, out);
                }
            }
            Phase::Body(Body::UntilClose) => self.add_bytes(dir, len),
            Phase::Body(
                Body::ChunkLine | Body::ChunkData { .. } | Body::ChunkEnd | Body::Trailers,
            ) => {
                self.add_bytes(dir, len);
                self.note_body_gap(dir);
                self.counters.n_resyncs += 1;
                self.counters.n_gap_resyncs += 1;
                self.http_counters.n_chunked_lost += 1;
                self.phase[dir.index()] = Phase::ChunkedLost;
            }
            Phase::ChunkedLost => self.add_bytes(dir, len),
            Phase::Head | Phase::Resync => {
                if phase == Phase::Head {
                    self.counters.n_gap_resyncs += 1;
                    self.lose_position(dir, ts_ns, out);
                } else if dir == Direction::ServerToClient {
                    self.server_loss_at = Some(ts_ns);
                }
            }
        }
        self.pending = pending;
    }

    fn tail(&mut self, dir: Direction, bytes: &[u8], ts_ns: u64, out: &mut Records) {
        if !self.pending.is_empty() {
            out.append(&mut self.pending);
        }
        match self.phase[dir.index()] {
            Phase::ChunkedLost => {
                self.add_bytes(dir, bytes.len() as u64);
                if http::ends_chunked_body(bytes) {
                    self.chunked_found(dir, bytes, ts_ns, out);
                }
            }
            // The gap kept the body's position (it was skipped by length): the tail follows
            // the gap's bytes.
            Phase::Body(_) => self.feed_tail(dir, bytes, ts_ns, out),
            // A head was lost: a tail does not begin one.
            Phase::Head | Phase::Resync => {}
        }
        self.aligned[dir.index()] = true;
    }

    fn close(&mut self, _ts_ns: u64, out: &mut Records) {
        out.append(&mut self.pending);
        if self.phase[1] == Phase::Body(Body::UntilClose) && self.response.seq.is_some() {
            self.response_end(self.last_server_ts, out);
        }
        if let Some(seq) = self.reading {
            self.finish_request_if_reading(seq);
        }
        while let Some(e) = self.exchanges.pop_front() {
            self.emit(e, Status::Incomplete, None, out);
        }
        self.response.seq = None;
    }

    fn counters(&self) -> ParserCounters {
        self.counters
    }
}
