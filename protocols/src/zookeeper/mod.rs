//! ZooKeeper / ClickHouse Keeper client protocol (ports 2181, 9181): a passive parser that
//! produces one record per request, paired with its reply by xid, plus one record per watch
//! notification, per session handshake and per four-letter word.
//!
//! Layers, each testable on its own:
//! - [`framing`]: the 4-byte big-endian length envelope and a bounded jute reader;
//! - [`decoding`]: handshake frames, request/reply headers and the bodies' few fields a
//!   record keeps (path, watch flag, version, multi sub-operations, errors);
//! - [`fast`]: the common request frames of a confirmed session, decoded without the general
//!   walk (same fields, or none);
//! - [`session`]: requests in flight and their pairing with replies;
//! - this module: the per-direction state machine that ties them to the [`Parser`] trait:
//!   where each direction stands (at a frame, inside a skipped body, searching), the
//!   connection's opening (handshake or four-letter word), gaps and close.
//!
//! What it guarantees:
//! - Bounded memory: at most [`ZooKeeperSettings::max_decoded_frame_bytes`] of a frame are
//!   ever held (through the driver); larger bodies are skipped as they arrive, request
//!   bodies by the driver (`Step::Consumed` beyond the input) and reply bodies by the parser
//!   itself, so that a reply's last byte still times the request. In flight requests are
//!   capped ([`ZooKeeperSettings::max_in_flight`]).
//! - No record from misparsed bytes: where the parser does not know that a frame starts
//!   (capture started mid-connection, after a gap, after malformed bytes) it accepts a frame
//!   only if it passes strict checks, and searches byte by byte otherwise; replies that
//!   match no request in flight are counted and dropped.
//! - Secrets stay out: the session password, auth credentials and SASL tokens are skipped
//!   without being read; an auth record keeps only the scheme.
//!
//! Not followed: Keeper sessions with compression (protocol 10, or 11 with
//! `use_compression`) and protocol 12 end in [`ParseError::Unfollowable`] after their
//! handshake record. Keeper's 64-bit xids (protocol 11) are followed when the handshake is
//! seen; a capture that starts inside such a session finds no frames.
mod codes;
mod credentials;
mod decoding;
mod fast;
mod framing;
mod session;
#[cfg(test)]
mod tests;

pub use codes::{ErrorCode, OpCode};
pub use credentials::{credential_ranges, server_credential_ranges};

use crate::{
    Direction, Input, ParseError, Parser, ParserCounters, Protocol, Records, RequestRecord, Status,
    Step, Text, TextArena, ZooKeeperConnect, ZooKeeperDetails,
};
use codes::{four_letter_word, protocol_version, xid, SET_TRACE_MASK};
use decoding::{
    connect_request, connect_response, multi_reply, reply_header, request_fields, request_header,
    watcher_event, ConnectRequest, Detect, ReplyHeader, RequestFields, RequestHeader, XidWidth,
};
use framing::{declared_length, read_i32_at, JuteReader, Short, LENGTH_PREFIX};
use session::{
    clamp_xid, details_mut, request_record, set_outcome, Answer, InFlight, InFlightQueue,
};

/// Limits of one connection's parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZooKeeperSettings {
    /// Bytes of a path kept in a record (`query`); longer paths are cut and flagged.
    pub max_path_bytes: usize,
    /// Largest frame length accepted (the server's `jute.maxbuffer`, 1 MiB − 1 by default,
    /// plus slack). Raise it for servers configured with a larger `jute.maxbuffer`.
    pub max_frame_bytes: u32,
    /// Largest part of a frame decoded (and so held by the driver): whole frames up to this
    /// size, the first this many bytes of a larger multi. Keep it below the driver's
    /// per-direction buffer cap.
    pub max_decoded_frame_bytes: usize,
    /// Requests in flight per connection; beyond it the oldest ends `Incomplete`.
    pub max_in_flight: usize,
    /// Decode the common whole frames of a confirmed session with the [`fast`] decoder.
    /// Off, every frame goes through the general decoder; the records are the same either
    /// way (the tests and the fuzz target compare them).
    pub fast_path: bool,
}

impl Default for ZooKeeperSettings {
    fn default() -> Self {
        ZooKeeperSettings {
            max_path_bytes: 512,
            max_frame_bytes: 0xF_FFFF + 64 * 1024,
            max_decoded_frame_bytes: 64 * 1024,
            max_in_flight: 10_000,
            fast_path: true,
        }
    }
}

/// What this parser counts beyond [`ParserCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZooKeeperCounters {
    /// Replies whose xid matched no request in flight (capture started after the request,
    /// or the request was lost): dropped, not recorded.
    pub n_unmatched_replies: u64,
    /// Requests ended `Incomplete` because the in-flight queue was full.
    pub n_in_flight_overflows: u64,
    /// Requests ended `Incomplete` because a younger request was answered first (their own
    /// reply was lost).
    pub n_overtaken: u64,
    pub n_notifications: u64,
    pub n_four_letter_words: u64,
    /// Gaps reported by the driver, both directions.
    pub n_gaps: u64,
}

/// The passive ZooKeeper parser of one connection.
#[derive(Debug)]
pub struct ZooKeeperParser {
    settings: ZooKeeperSettings,
    conversation: Conversation,
    requests: DirectionState,
    replies: DirectionState,
    /// The first client bytes are a four-letter word with nothing after it yet: the
    /// server's first bytes decide (plain text: it was one).
    tentative_four_letter: Option<(&'static str, u64, usize)>,
    /// Handshake sent, answer not seen yet.
    pending_connect: Option<(ConnectRequest, RequestRecord)>,
    /// A reply whose body the parser is skipping: emitted at the body's last byte. Its text
    /// is in `pending_text`.
    pending_reply: Option<RequestRecord>,
    pending_text: TextArena,
    /// Replies whose last byte fell in a gap: emitted with the next call.
    finished_in_gap: Records,
    /// A multi's op names, gathered while its frame is examined.
    multi_ops: Vec<&'static str>,
    /// Also holds the session id, once a ConnectResponse was seen.
    in_flight: InFlightQueue,
    xid_width: XidWidth,
    counters: ParserCounters,
    zk_counters: ZooKeeperCounters,
}

#[derive(Debug)]
enum Conversation {
    /// Length-prefixed frames of a session.
    Frames,
    /// A four-letter word and its plain-text answer, until close.
    FourLetter(FourLetterExchange),
    /// The session cannot be followed (Keeper compression).
    Unfollowable(&'static str),
}

#[derive(Debug)]
struct FourLetterExchange {
    operation: &'static str,
    start_ns: u64,
    end_ns: u64,
    sent: u64,
    /// Client bytes already counted in `sent` while still unconsumed in the driver.
    sent_unconsumed: u64,
    received: u64,
    /// First bytes of the answer, to tell a refusal from an answer.
    answer_head: [u8; 64],
    answer_head_len: usize,
}

/// Where one direction's parsing stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// A frame should start at the next byte.
    AtFrame,
    /// Looking for the next plausible frame; `front_rejected`: a frame starting at the next
    /// byte was already rejected.
    Searching { front_rejected: bool },
    /// Inside a reply body the parser skips itself; the pending reply is emitted at its end.
    InReplyBody { remaining: u64 },
    /// The next 4 bytes are the expected version that ends a large request.
    VersionTail { xid: i64 },
}

#[derive(Debug)]
struct DirectionState {
    position: Position,
    /// Frames here are trusted by their length prefix (after a handshake, or after
    /// [`CONFIRMING_FRAMES`] strictly checked frames in a row). Otherwise every frame must
    /// pass the strict checks.
    confirmed: bool,
    strict_frames_in_a_row: u8,
    /// A resync episode is under way (counted once, however many candidates fail).
    resyncing: bool,
    /// Nothing of this direction was consumed or lost yet.
    at_start: bool,
    /// Bytes were lost since the last accepted frame: a resync now is the gap's doing.
    after_gap: bool,
}

/// Strictly checked frames in a row after which a position counts as confirmed.
const CONFIRMING_FRAMES: u8 = 2;

impl DirectionState {
    fn new() -> Self {
        DirectionState {
            position: Position::AtFrame,
            confirmed: false,
            strict_frames_in_a_row: 0,
            resyncing: false,
            at_start: true,
            after_gap: false,
        }
    }

    fn strict(&self) -> bool {
        !self.confirmed
    }

    /// A frame was accepted at the current position.
    fn frame_accepted(&mut self) {
        self.at_start = false;
        self.resyncing = false;
        self.after_gap = false;
        if !self.confirmed {
            self.strict_frames_in_a_row += 1;
            self.confirmed = self.strict_frames_in_a_row >= CONFIRMING_FRAMES;
        }
    }

    /// The position is no longer known (gap): the next frame must pass the strict checks.
    fn unsure(&mut self) {
        self.position = Position::AtFrame;
        self.confirmed = false;
        self.strict_frames_in_a_row = 0;
        self.resyncing = false;
        self.at_start = false;
        self.after_gap = true;
    }
}

/// A frame examined at the current position, before anything is recorded.
enum Examined<T> {
    Frame(T),
    NeedMore,
    Invalid(&'static str),
}

/// A request frame that passed the checks.
struct RequestFrame<'a> {
    header: RequestHeader,
    fields: RequestFields<'a>,
    frame_len: usize,
}

/// A reply frame that passed the checks.
struct ReplyFrame<'a> {
    header: ReplyHeader,
    body: ReplyBody<'a>,
    frame_len: usize,
}

enum ReplyBody<'a> {
    /// Not needed (or an error reply, which has none).
    Skipped,
    Multi(decoding::MultiOutcome),
    Notification(decoding::WatcherEvent<'a>),
}

impl Default for ZooKeeperParser {
    fn default() -> Self {
        Self::new(ZooKeeperSettings::default())
    }
}

impl ZooKeeperParser {
    pub fn new(settings: ZooKeeperSettings) -> Self {
        ZooKeeperParser {
            settings,
            conversation: Conversation::Frames,
            requests: DirectionState::new(),
            replies: DirectionState::new(),
            tentative_four_letter: None,
            pending_connect: None,
            pending_reply: None,
            pending_text: TextArena::default(),
            finished_in_gap: Records::default(),
            multi_ops: Vec::new(),
            in_flight: InFlightQueue::new(settings.max_in_flight),
            xid_width: XidWidth::Bits32,
            counters: ParserCounters::default(),
            zk_counters: ZooKeeperCounters::default(),
        }
    }

    pub fn settings(&self) -> &ZooKeeperSettings {
        &self.settings
    }

    /// The session id, once a ConnectResponse was seen.
    pub fn session_id(&self) -> Option<i64> {
        self.in_flight.session_id
    }

    pub fn zk_counters(&self) -> ZooKeeperCounters {
        ZooKeeperCounters {
            n_in_flight_overflows: self.in_flight.n_overflows,
            n_overtaken: self.in_flight.n_overtaken,
            ..self.zk_counters
        }
    }

    /// Requests waiting for their reply.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn malformed(what: &'static str) -> ParseError {
        ParseError::Malformed {
            protocol: Protocol::ZooKeeper,
            what,
        }
    }

    fn details(&self, xid: i64) -> ZooKeeperDetails {
        ZooKeeperDetails {
            xid: clamp_xid(xid),
            session_id: self.in_flight.session_id,
            ..Default::default()
        }
    }

    // ---- client → server -------------------------------------------------------------

    fn parse_requests(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let bytes = input.bytes;
        if let Conversation::FourLetter(exchange) = &mut self.conversation {
            let counted = exchange.sent_unconsumed.min(bytes.len() as u64);
            exchange.sent += bytes.len() as u64 - counted;
            exchange.sent_unconsumed = 0;
            return Ok(Step::Consumed(bytes.len() as u64));
        }
        if self.requests.at_start {
            if let Some(step) = self.client_opening(input) {
                return Ok(step);
            }
        }
        if self.on_fast_path(Direction::ClientToServer) {
            // Every whole common frame at hand, in one call.
            let (max_path, max_frame) = (
                self.settings.max_path_bytes,
                self.settings.max_decoded_frame_bytes,
            );
            let mut at = 0;
            while let Some(frame) = fast::request(&bytes[at..], max_path, max_frame) {
                at += frame.frame_len;
                self.queue_request(input.ts_at(at - frame.frame_len), frame, false, out);
            }
            if at > 0 {
                return Ok(Step::Consumed(at as u64));
            }
        }
        loop {
            match self.requests.position {
                Position::VersionTail { xid } => {
                    let Some(version) = read_i32_at(bytes, 0) else {
                        return Ok(Step::NeedMore);
                    };
                    if let Some(request) = self.in_flight.newest_mut(xid) {
                        request.version = Some(version);
                    }
                    self.requests.position = Position::AtFrame;
                    return Ok(Step::Consumed(4));
                }
                Position::Searching { front_rejected } => {
                    match self.search(Direction::ClientToServer, bytes, front_rejected) {
                        Some(step) => return Ok(step),
                        None => self.requests.position = Position::AtFrame,
                    }
                }
                Position::AtFrame | Position::InReplyBody { .. } => {
                    match self.examine_request(bytes, self.requests.strict()) {
                        Examined::NeedMore => return Ok(Step::NeedMore),
                        Examined::Frame(frame) => {
                            return Ok(self.accept_request(bytes, input.ts_at(0), frame, out))
                        }
                        Examined::Invalid(what) => {
                            self.reject_front(Direction::ClientToServer, what)?;
                        }
                    }
                }
            }
        }
    }

    /// The client's first bytes: a four-letter word, a ConnectRequest, or (returns `None`)
    /// frames of a session that started before the capture.
    fn client_opening(&mut self, input: &Input<'_>) -> Option<Step> {
        let bytes = input.bytes;
        if self.replies.at_start {
            let first: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            if let Some(operation) = four_letter_word(first) {
                let word_len = if first == SET_TRACE_MASK { 12 } else { 4 };
                match bytes.get(word_len) {
                    _ if bytes.len() < word_len => return Some(Step::NeedMore),
                    None => {
                        self.tentative_four_letter = Some((operation, input.ts_at(0), word_len));
                        return Some(Step::NeedMore);
                    }
                    Some(b'\n' | b'\r') => {
                        self.start_four_letter(operation, input.ts_at(0), 0);
                        return Some(self.parse_requests_four_letter(bytes.len()));
                    }
                    Some(_) => self.tentative_four_letter = None,
                }
            }
        }
        match connect_request(bytes) {
            Detect::NeedMore => Some(Step::NeedMore),
            Detect::No => {
                self.requests.at_start = false;
                None
            }
            Detect::Yes(connect) => {
                let mut details = self.details(0);
                details.connect = Some(ZooKeeperConnect {
                    protocol_version: connect.protocol_version,
                    requested_timeout_ms: connect.timeout_ms,
                    negotiated_timeout_ms: 0,
                    resumed_session_id: connect.session_id,
                    last_zxid_seen: connect.last_zxid_seen,
                    read_only: connect.read_only,
                });
                let record =
                    request_record("connect", input.ts_at(0), connect.frame_len as u64, details);
                if connect.protocol_version == protocol_version::KEEPER_XID_64 {
                    self.xid_width = XidWidth::Bits64;
                }
                self.pending_connect = Some((connect, record));
                self.counters.n_messages += 1;
                self.requests.frame_accepted();
                self.requests.confirmed = true;
                Some(Step::Consumed(connect.frame_len as u64))
            }
        }
    }

    fn start_four_letter(&mut self, operation: &'static str, start_ns: u64, sent: u64) {
        self.tentative_four_letter = None;
        self.zk_counters.n_four_letter_words += 1;
        self.counters.n_messages += 1;
        self.conversation = Conversation::FourLetter(FourLetterExchange {
            operation,
            start_ns,
            end_ns: start_ns,
            sent,
            sent_unconsumed: sent,
            received: 0,
            answer_head: [0; 64],
            answer_head_len: 0,
        });
    }

    fn parse_requests_four_letter(&mut self, len: usize) -> Step {
        if let Conversation::FourLetter(exchange) = &mut self.conversation {
            exchange.sent += len as u64;
        }
        Step::Consumed(len as u64)
    }

    /// Checks the request frame at the front of `bytes` without recording anything (a
    /// multi's op names go to `self.multi_ops`).
    fn examine_request<'a>(&mut self, bytes: &'a [u8], strict: bool) -> Examined<RequestFrame<'a>> {
        let Some(len) = declared_length(bytes) else {
            return Examined::NeedMore;
        };
        let header_len = self.xid_width.request_header_len();
        if len < header_len as i32 || len as u32 > self.settings.max_frame_bytes {
            return Examined::Invalid("request length out of range");
        }
        let len = len as usize;
        let Some(header_bytes) = bytes.get(LENGTH_PREFIX..LENGTH_PREFIX + header_len) else {
            return Examined::NeedMore;
        };
        let mut reader = JuteReader::new(header_bytes, header_len);
        let Ok(header) = request_header(&mut reader, self.xid_width) else {
            return Examined::NeedMore;
        };
        if strict && !header.is_plausible() {
            return Examined::Invalid("implausible request header");
        }
        // The part of the body decoded: all of it if small, else a bounded prefix.
        let body_len = len - header_len;
        let cap = self.settings.max_decoded_frame_bytes;
        let needed = if body_len <= cap {
            body_len
        } else if header.op.is_multi() {
            cap
        } else {
            body_len.min(4 + self.settings.max_path_bytes + 16)
        };
        let body_start = LENGTH_PREFIX + header_len;
        let mut at_hand = bytes.len().saturating_sub(body_start).min(needed);
        if at_hand < needed {
            // Decode once, when complete. But while searching, reject a bad start early
            // from a bounded look at the path (so that each call costs O(path), not
            // O(frame)).
            if !strict {
                return Examined::NeedMore;
            }
            at_hand = at_hand.min(4 + self.settings.max_path_bytes + 64);
        }
        let mut reader = JuteReader::new(&bytes[body_start..body_start + at_hand], body_len);
        self.multi_ops.clear();
        match request_fields(
            header.op,
            &mut reader,
            self.settings.max_path_bytes,
            strict,
            &mut self.multi_ops,
        ) {
            Err(what) => Examined::Invalid(what),
            Ok(_) if at_hand < needed => Examined::NeedMore,
            Ok(fields) => Examined::Frame(RequestFrame {
                header,
                fields,
                frame_len: LENGTH_PREFIX + len,
            }),
        }
    }

    /// Queues the request `frame` found at the front of `bytes`, whose first byte came at
    /// `start_ns`.
    fn accept_request(
        &mut self,
        bytes: &[u8],
        start_ns: u64,
        frame: RequestFrame<'_>,
        out: &mut Records,
    ) -> Step {
        let RequestFrame {
            header,
            mut fields,
            frame_len,
        } = frame;
        // A large request's version is its last field, after the bytes not decoded: read
        // it from the frame's end, now if at hand, else when it arrives.
        let version_at_end = header.op.ends_with_version() && fields.version.is_none();
        if version_at_end {
            fields.version = read_i32_at(bytes, frame_len - 4);
        }
        // The path, or for an auth request its scheme (never the credentials).
        fields.path = fields
            .path
            .or(fields.auth_scheme.map(|scheme| (scheme, false)));
        let version = fields.version;
        let frame = RequestFrame {
            header,
            fields,
            frame_len,
        };
        self.queue_request(start_ns, frame, true, out);
        if version_at_end && version.is_none() {
            self.requests.position = Position::VersionTail { xid: header.xid };
            return Step::Consumed((frame_len - 4) as u64);
        }
        Step::Consumed(frame_len as u64)
    }

    /// Queues the request of `frame` (its path field already what the record shows), with
    /// the multi op names in `self.multi_ops` if `with_multi_ops` (the fast path has none).
    #[inline(always)]
    fn queue_request(
        &mut self,
        start_ns: u64,
        frame: RequestFrame<'_>,
        with_multi_ops: bool,
        out: &mut Records,
    ) {
        let RequestFrame {
            header,
            fields,
            frame_len,
        } = frame;
        self.counters.n_messages += 1;
        self.requests.frame_accepted();
        let text = self.in_flight.text_mut();
        let (path, path_truncated) = match fields.path {
            Some((path, truncated)) => (text.push_lossy(path), truncated),
            None => (Text::EMPTY, false),
        };
        let multi_ops = match with_multi_ops && !self.multi_ops.is_empty() {
            true => text.push_joined(self.multi_ops.iter().copied(), ','),
            false => Text::EMPTY,
        };
        self.in_flight.push(
            InFlight {
                xid: header.xid,
                op: header.op,
                start_ns,
                bytes_sent: u32::try_from(frame_len).unwrap_or(u32::MAX),
                path,
                has_path: fields.path.is_some(),
                path_truncated,
                watch: fields.watch,
                version: fields.version,
                multi_ops,
            },
            out,
        );
    }

    // ---- server → client -------------------------------------------------------------

    fn parse_replies(&mut self, input: &Input<'_>, out: &mut Records) -> Result<Step, ParseError> {
        let bytes = input.bytes;
        if self.replies.at_start {
            if let Some(step) = self.server_opening(input, out) {
                return Ok(step);
            }
        }
        if let Conversation::FourLetter(exchange) = &mut self.conversation {
            let n = bytes.len();
            if exchange.received == 0 {
                self.counters.n_messages += 1;
            }
            let head = exchange.answer_head_len;
            let copy = (exchange.answer_head.len() - head).min(n);
            exchange.answer_head[head..head + copy].copy_from_slice(&bytes[..copy]);
            exchange.answer_head_len += copy;
            exchange.received += n as u64;
            exchange.end_ns = input.ts_end(n);
            self.replies.at_start = false;
            return Ok(Step::Consumed(n as u64));
        }
        if self.on_fast_path(Direction::ServerToClient) {
            // Every whole common frame at hand, in one call.
            let mut at = 0;
            while let Some(frame_len) = self.answer_oldest(input, at, out) {
                at += frame_len;
            }
            if at > 0 {
                return Ok(Step::Consumed(at as u64));
            }
        }
        loop {
            match self.replies.position {
                Position::InReplyBody { remaining } => {
                    let n = remaining.min(bytes.len() as u64);
                    let left = remaining - n;
                    if let Some(record) = &mut self.pending_reply {
                        record.end_ns = input.ts_end(n as usize);
                    }
                    if left == 0 {
                        self.replies.position = Position::AtFrame;
                        if let Some(record) = self.pending_reply.take() {
                            out.push_from(record, &self.pending_text);
                            self.pending_text.clear();
                        }
                    } else {
                        self.replies.position = Position::InReplyBody { remaining: left };
                    }
                    return Ok(Step::Consumed(n));
                }
                Position::Searching { front_rejected } => {
                    match self.search(Direction::ServerToClient, bytes, front_rejected) {
                        Some(step) => return Ok(step),
                        None => self.replies.position = Position::AtFrame,
                    }
                }
                Position::AtFrame | Position::VersionTail { .. } => {
                    match self.examine_reply(bytes, self.replies.strict()) {
                        Examined::NeedMore => return Ok(Step::NeedMore),
                        Examined::Frame(frame) => return Ok(self.accept_reply(input, frame, out)),
                        Examined::Invalid(what) => {
                            self.reject_front(Direction::ServerToClient, what)?;
                        }
                    }
                }
            }
        }
    }

    /// The fast path for the common reply: a whole frame at offset `at` that answers the
    /// oldest request in flight, which is not a multi. It does what [`Self::examine_reply`]
    /// and [`Self::accept_reply`] would do with that frame, and returns its length; `None`:
    /// they decide.
    #[inline]
    fn answer_oldest(&mut self, input: &Input<'_>, at: usize, out: &mut Records) -> Option<usize> {
        let bytes = &input.bytes[at..];
        let (header, frame_len) = fast::reply_header(bytes, self.settings.max_frame_bytes)?;
        let oldest = self.in_flight.oldest()?;
        let header_len = XidWidth::Bits32.reply_header_len();
        let end_ns = input.ts_end(at + frame_len);
        if oldest.xid != header.xid
            || oldest.start_ns > end_ns
            || header.xid == xid::NOTIFICATION
            || (header.err.is_ok() && oldest.op.is_multi())
            || !header.follows_error_rules(frame_len - LENGTH_PREFIX, header_len)
        {
            return None;
        }
        self.counters.n_messages += 1;
        self.replies.frame_accepted();
        self.requests.at_start = false;
        let answer = Answer {
            end_ns,
            bytes_received: frame_len as u64,
            zxid: header.zxid,
            err: header.err,
        };
        self.in_flight.answer_oldest(answer, out);
        Some(frame_len)
    }

    /// A direction whose frames are trusted, at a frame boundary, with 32-bit xids: where
    /// [`fast`] applies.
    #[inline]
    fn on_fast_path(&self, dir: Direction) -> bool {
        let state = match dir {
            Direction::ClientToServer => &self.requests,
            Direction::ServerToClient => &self.replies,
        };
        self.settings.fast_path
            && state.confirmed
            && state.position == Position::AtFrame
            && self.xid_width == XidWidth::Bits32
    }

    /// The server's first bytes: the answer to a four-letter word, a ConnectResponse, or
    /// (returns `None`) frames of a session that started before the capture.
    fn server_opening(&mut self, input: &Input<'_>, out: &mut Records) -> Option<Step> {
        let bytes = input.bytes;
        let first = *bytes.first()?;
        if let Some((operation, start_ns, word_len)) = self.tentative_four_letter.take() {
            if first.is_ascii_graphic() || first.is_ascii_whitespace() {
                self.start_four_letter(operation, start_ns, word_len as u64);
            }
        }
        if matches!(self.conversation, Conversation::FourLetter(_)) {
            return None; // the answer is handled as four-letter text
        }
        let versions: &[i32] = match &self.pending_connect {
            // The server may decline an extension and answer plain ZooKeeper.
            Some((request, _)) => &[
                request.protocol_version,
                protocol_version::ZOOKEEPER,
                protocol_version::KEEPER_CONNECTION_REJECT,
            ],
            None => &[protocol_version::ZOOKEEPER],
        };
        match connect_response(bytes, versions) {
            Detect::NeedMore => Some(Step::NeedMore),
            Detect::No => {
                self.replies.at_start = false;
                None
            }
            Detect::Yes(response) => {
                self.counters.n_messages += 1;
                self.replies.frame_accepted();
                self.replies.confirmed = true;
                self.in_flight.session_id =
                    (response.session_id != 0).then_some(response.session_id);
                // 64-bit xids only if the server agreed to protocol 11.
                if response.protocol_version != protocol_version::KEEPER_XID_64 {
                    self.xid_width = XidWidth::Bits32;
                }
                let Some((request, mut record)) = self.pending_connect.take() else {
                    self.zk_counters.n_unmatched_replies += 1;
                    return Some(Step::Consumed(response.frame_len as u64));
                };
                record.end_ns = input.ts_end(response.frame_len);
                record.bytes_received = response.frame_len as u64;
                let details = details_mut(&mut record);
                details.session_id = self.in_flight.session_id;
                if let Some(connect) = &mut details.connect {
                    connect.negotiated_timeout_ms = response.timeout_ms;
                }
                if response.protocol_version == protocol_version::KEEPER_CONNECTION_REJECT {
                    record.status = Status::Error;
                    record.error_name = Some("ConnectionRejected");
                } else if response.session_id == 0 {
                    set_outcome(&mut record, ErrorCode(-112)); // SessionExpired
                } else {
                    record.status = Status::Ok;
                }
                out.push(record);
                let compressed = request.use_compression
                    || request.protocol_version == protocol_version::KEEPER_TRACING;
                if compressed && response.protocol_version == request.protocol_version {
                    self.conversation =
                        Conversation::Unfollowable("Keeper session with compression or tracing");
                }
                Some(Step::Consumed(response.frame_len as u64))
            }
        }
    }

    /// Checks the reply frame at the front of `bytes` without recording anything.
    fn examine_reply<'a>(&self, bytes: &'a [u8], strict: bool) -> Examined<ReplyFrame<'a>> {
        let Some(len) = declared_length(bytes) else {
            return Examined::NeedMore;
        };
        let header_len = self.xid_width.reply_header_len();
        if len < header_len as i32 || len as u32 > self.settings.max_frame_bytes {
            return Examined::Invalid("reply length out of range");
        }
        let len = len as usize;
        let Some(header_bytes) = bytes.get(LENGTH_PREFIX..LENGTH_PREFIX + header_len) else {
            return Examined::NeedMore;
        };
        let mut reader = JuteReader::new(header_bytes, header_len);
        let Ok(header) = reply_header(&mut reader, self.xid_width) else {
            return Examined::NeedMore;
        };
        let plausible = if strict {
            header.is_plausible(len, header_len)
        } else {
            header.follows_error_rules(len, header_len)
        };
        if !plausible {
            return Examined::Invalid("implausible reply header");
        }
        let body_len = len - header_len;
        let is_notification = header.xid == xid::NOTIFICATION;
        let is_multi = header.err.is_ok()
            && !is_notification
            && self
                .in_flight
                .op_of(header.xid)
                .is_some_and(|op| op.is_multi());
        let frame_len = LENGTH_PREFIX + len;
        if !is_notification && !is_multi {
            return Examined::Frame(ReplyFrame {
                header,
                body: ReplyBody::Skipped,
                frame_len,
            });
        }
        let needed = body_len.min(self.settings.max_decoded_frame_bytes);
        let body_start = LENGTH_PREFIX + header_len;
        let Some(body) = bytes.get(body_start..body_start + needed) else {
            return Examined::NeedMore;
        };
        let mut reader = JuteReader::new(body, body_len);
        let body = if is_multi {
            match multi_reply(&mut reader, strict) {
                Ok(outcome) => ReplyBody::Multi(outcome),
                Err(what) => return Examined::Invalid(what),
            }
        } else {
            match watcher_event(&mut reader, self.settings.max_path_bytes, strict) {
                Ok(event) => ReplyBody::Notification(event),
                Err(Short::Invalid(what)) => return Examined::Invalid(what),
                Err(Short::Truncated) => return Examined::Invalid("notification too large"),
            }
        };
        Examined::Frame(ReplyFrame {
            header,
            body,
            frame_len,
        })
    }

    fn accept_reply(
        &mut self,
        input: &Input<'_>,
        frame: ReplyFrame<'_>,
        out: &mut Records,
    ) -> Step {
        let ReplyFrame {
            header,
            body,
            frame_len,
        } = frame;
        self.counters.n_messages += 1;
        self.replies.frame_accepted();
        self.requests.at_start = false;

        let at_hand = input.bytes.len().min(frame_len);
        let end_ns = input.ts_end(at_hand);
        let record = if let ReplyBody::Notification(event) = body {
            self.zk_counters.n_notifications += 1;
            let mut details = self.details(header.xid);
            details.zxid = header.zxid;
            details.notification = Some((event.event_type, event.state));
            let mut record = request_record("notification", input.ts_at(0), 0, details);
            record.status = Status::Ok;
            record.end_ns = end_ns;
            record.bytes_received = frame_len as u64;
            self.pending_text.clear();
            record.query = Some(self.pending_text.push_lossy(event.path.0));
            record.query_truncated = event.path.1;
            record
        } else {
            let Some(request) = self.in_flight.take(header.xid, end_ns, out) else {
                self.zk_counters.n_unmatched_replies += 1;
                return Step::Consumed(frame_len as u64);
            };
            let err = match body {
                ReplyBody::Multi(outcome) => outcome.first_error.unwrap_or(header.err),
                _ => header.err,
            };
            let answer = Answer {
                end_ns,
                bytes_received: frame_len as u64,
                zxid: header.zxid,
                err,
            };
            if at_hand == frame_len {
                // The common case, kept free of record moves.
                self.in_flight.emit(&request, answer, out);
                return Step::Consumed(frame_len as u64);
            }
            // The record waits for the reply's last byte: its text moves out of the queue.
            self.pending_text.clear();
            self.pending_text.adopt(
                request.answered(answer, self.in_flight.session_id),
                self.in_flight.text(),
            )
        };
        if at_hand == frame_len {
            out.push_from(record, &self.pending_text);
            self.pending_text.clear();
            return Step::Consumed(frame_len as u64);
        }
        // Emit at the reply's last byte, once the parser has skipped the rest of the body.
        self.pending_reply = Some(record);
        self.replies.position = Position::InReplyBody {
            remaining: (frame_len - at_hand) as u64,
        };
        Step::Consumed(at_hand as u64)
    }

    // ---- resynchronisation -----------------------------------------------------------

    fn direction(&mut self, dir: Direction) -> &mut DirectionState {
        match dir {
            Direction::ClientToServer => &mut self.requests,
            Direction::ServerToClient => &mut self.replies,
        }
    }

    /// The frame at the front of the input was rejected: search from the next byte. The
    /// first rejection of an episode is reported (and counted as one resync); within an
    /// episode the search goes on at once.
    fn reject_front(&mut self, dir: Direction, what: &'static str) -> Result<(), ParseError> {
        let state = self.direction(dir);
        state.position = Position::Searching {
            front_rejected: true,
        };
        state.confirmed = false;
        state.strict_frames_in_a_row = 0;
        state.at_start = false;
        if state.resyncing {
            return Ok(());
        }
        state.resyncing = true;
        let after_gap = state.after_gap;
        self.counters.n_resyncs += 1;
        self.counters.n_gap_resyncs += u64::from(after_gap);
        Err(Self::malformed(what))
    }

    /// Skips to the first offset where a frame could start (it passes the strict checks,
    /// or needs more bytes to tell). `None`: one could start at the front.
    fn search(&mut self, dir: Direction, bytes: &[u8], front_rejected: bool) -> Option<Step> {
        let mut skip = usize::from(front_rejected);
        while skip < bytes.len() {
            let rest = &bytes[skip..];
            let candidate = match dir {
                Direction::ClientToServer => {
                    !matches!(self.examine_request(rest, true), Examined::Invalid(_))
                }
                Direction::ServerToClient => {
                    !matches!(self.examine_reply(rest, true), Examined::Invalid(_))
                }
            };
            if candidate {
                break;
            }
            skip += 1;
        }
        if skip == 0 {
            return None;
        }
        self.counters.n_resync_bytes += skip as u64;
        // Everything at hand rejected: the next byte is yet to be examined.
        self.direction(dir).position = if skip < bytes.len() {
            Position::AtFrame
        } else {
            Position::Searching {
                front_rejected: false,
            }
        };
        Some(Step::Consumed(skip as u64))
    }
}

impl Parser for ZooKeeperParser {
    fn parse(
        &mut self,
        dir: Direction,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
        if let Conversation::Unfollowable(what) = self.conversation {
            return Err(ParseError::Unfollowable {
                protocol: Protocol::ZooKeeper,
                what,
            });
        }
        if !self.finished_in_gap.is_empty() {
            out.append(&mut self.finished_in_gap);
        }
        if input.bytes.is_empty() {
            return Ok(Step::NeedMore);
        }
        match dir {
            Direction::ClientToServer => self.parse_requests(input, out),
            Direction::ServerToClient => self.parse_replies(input, out),
        }
    }

    fn gap(&mut self, dir: Direction, len: u64, ts_ns: u64) {
        self.zk_counters.n_gaps += 1;
        if let Conversation::FourLetter(exchange) = &mut self.conversation {
            match dir {
                Direction::ClientToServer => exchange.sent += len,
                Direction::ServerToClient => {
                    exchange.received += len;
                    exchange.end_ns = ts_ns;
                }
            }
            return;
        }
        if dir == Direction::ClientToServer {
            self.tentative_four_letter = None;
        }
        if let Position::InReplyBody { remaining } = self.direction(dir).position {
            // Bytes of a body skipped anyway: nothing of interest was lost, unless the gap
            // runs past the frame's end (then the reply ended somewhere inside it).
            if let Some(record) = &mut self.pending_reply {
                record.end_ns = ts_ns;
            }
            if len < remaining {
                self.replies.position = Position::InReplyBody {
                    remaining: remaining - len,
                };
                return;
            }
            self.replies.position = Position::AtFrame;
            if let Some(record) = self.pending_reply.take() {
                self.finished_in_gap.push_from(record, &self.pending_text);
                self.pending_text.clear();
            }
            if len == remaining {
                return;
            }
        }
        self.direction(dir).unsure();
    }

    fn close(&mut self, ts_ns: u64, out: &mut Records) {
        out.append(&mut self.finished_in_gap);
        if let Some((operation, start_ns, word_len)) = self.tentative_four_letter.take() {
            // A four-letter word nobody answered.
            self.start_four_letter(operation, start_ns, word_len as u64);
        }
        if let Conversation::FourLetter(exchange) = &self.conversation {
            let record = exchange.record(&mut out.text);
            out.push(record);
            self.conversation = Conversation::Frames;
        }
        if let Some((_, record)) = self.pending_connect.take() {
            out.push(record);
        }
        if let Some(record) = self.pending_reply.take() {
            out.push_from(record, &self.pending_text);
            self.pending_text.clear();
        }
        self.in_flight.close(ts_ns, out);
    }

    fn counters(&self) -> ParserCounters {
        self.counters
    }
}

impl FourLetterExchange {
    /// The exchange's record; its text goes to `text`.
    fn record(&self, text: &mut TextArena) -> RequestRecord {
        let mut record = request_record(
            self.operation,
            self.start_ns,
            self.sent,
            ZooKeeperDetails::default(),
        );
        record.end_ns = self.end_ns;
        record.bytes_received = self.received;
        let head = &self.answer_head[..self.answer_head_len];
        let word = &self.operation.as_bytes()["4lw:".len()..];
        if self.received == 0 {
            record.status = Status::Incomplete;
        } else if head.starts_with(word) && contains(head, b" is not executed") {
            // ZooKeeper's answer to a word outside `4lw.commands.whitelist`.
            record.status = Status::Error;
            record.error_name = Some("NotInWhitelist");
            let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
            record.error_message = Some(text.push_lossy(line));
        } else {
            record.status = Status::Ok;
        }
        record
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
