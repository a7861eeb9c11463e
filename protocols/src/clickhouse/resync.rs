//! Resynchronisation of a ClickHouse connection: finding packets again after garbage, a
//! gap, or a capture that started mid-stream, and finding a response's end in the tail of a
//! read whose middle the kernel cut.
//!
//! Resynchronisation only tries positions where a syscall began: ClickHouse flushes its
//! buffer after every packet, so on the writing end packets start at syscall boundaries. The
//! client side looks for a Query packet whose layout it can infer (`layout`), and ends the
//! query in flight, incomplete, at a syscall that may start a Query it cannot read (a client
//! sends its next Query only after the response's end, so that end was missed); the server
//! side for a packet that parses strictly (a lone `EndOfStream`, an Exception, a Progress filling
//! its syscall, ...), or for whole packets that lead to one: the reading end of a connection
//! (a client, or a server's pool connection to another server) gathers several packets into
//! one read.
//!
//! The reading end's large reads are cut by the kernel's capture limit, and inside the cut
//! the chain of frame sizes is lost; the read's final packets then come only in the read's
//! tail ([`crate::Parser::tail`]), at an unknown position. The query in flight ends there
//! when, from some offset of the tail, whole packets parse strictly and end exactly at the
//! tail's end, the last being an Exception or an EndOfStream. A bare EndOfStream byte proves
//! nothing (a read may end in data at a byte 5): the packets before it must include a block
//! walked whole (the empty Data block that closes a result, a ProfileEvents block), a
//! structure random or column bytes do not form by chance.
use super::block::{read_block_header, WalkStep};
use super::client::ClientState;
use super::codes::{revision, ServerPacket};
use super::compression::{FrameHeader, FrameStep, FrameWalk};
use super::packets;
use super::server::ServerState;
use super::session::{looks_uncompressed, ClickHouseParser};
use super::wire::{is_printable, Cursor, WireError, MAX_NAME};
use crate::{Direction, Input, ParseError, Parser, Records, Step};

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

/// Where the syscall containing byte `pos` ends.
fn syscall_end(input: &Input<'_>, pos: usize) -> usize {
    input
        .marks
        .iter()
        .map(|&(end, _)| end)
        .find(|&end| end > pos)
        .unwrap_or(input.bytes.len())
}

impl ClickHouseParser {
    pub(super) fn resync_client(
        &mut self,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
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
                Err(WireError::Bad(_)) => {
                    // Skipped bytes that may be the next Query: the query in flight can no
                    // longer be paired with the next response end seen.
                    self.end_unanswered(out);
                }
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
    pub(super) fn end_in_tail(&mut self, tail: &[u8], ts: u64, out: &mut Records) {
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

    pub(super) fn resync_server(
        &mut self,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError> {
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
                self.response_lost_bytes();
                return Ok(Step::Consumed(b as u64));
            }
        }
        self.counters.n_resync_bytes += buf.len() as u64;
        self.response_lost_bytes();
        Ok(Step::Consumed(buf.len() as u64))
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
