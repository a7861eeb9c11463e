//! Pure, incremental parsers for the protocols l7tap watches: bytes of one connection in,
//! request records out.
//!
//! Architecture invariant: nothing in this crate does I/O, spawns a thread or reads a clock.
//! Timestamps come in with the bytes ([`Input::ts_at`]); records go out through a `Vec`.
//!
//! - [`Parser`] is the one trait every protocol implements.
//! - [`stream::StreamDriver`] owns a parser and the two direction buffers of one connection:
//!   it reassembles, skips what the parser does not need, reports gaps, and bounds memory.
//! - [`clickhouse`] (native), [`clickhouse_http`], [`zookeeper`] and [`debug`] are the
//!   protocols; [`registry`] says which parser each protocol gets.
//! - [`fixture`] reads and writes the `.chunks` fixture format; `testkit` (this crate's
//!   tests, or the cargo feature `testkit`) holds the properties every parser's tests check.
// One audited exception: `record::ascii_str`.
#![deny(unsafe_code)]

pub mod clickhouse;
pub mod clickhouse_http;
pub mod credentials;
pub mod debug;
pub mod fingerprint;
pub mod fixture;
mod record;
pub mod registry;
pub mod stream;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod zookeeper;

pub use record::*;

/// Which way bytes travel on a connection, independent of which process was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes the client sent: requests.
    ClientToServer,
    /// Bytes the server sent: responses and notifications.
    ServerToClient,
}

impl Direction {
    pub const fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// Contiguous bytes of one direction, starting where the previous `parse` call stopped,
/// with the kernel timestamp (ns, monotonic) of the syscall that carried each byte.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub bytes: &'a [u8],
    /// `(end, ts_ns)`: bytes `[previous end, end)` were carried by a syscall at `ts_ns`.
    /// Sorted by `end`; the last `end` is `bytes.len()`.
    pub marks: &'a [(usize, u64)],
}

impl<'a> Input<'a> {
    /// Input made of one syscall's bytes.
    pub fn single(bytes: &'a [u8], marks: &'a [(usize, u64); 1]) -> Self {
        Input { bytes, marks }
    }

    /// Timestamp of the syscall that carried byte `offset` (clamped to the last byte).
    #[inline]
    pub fn ts_at(&self, offset: usize) -> u64 {
        // Most inputs are one syscall's bytes.
        if let [(_, ts)] = self.marks {
            return *ts;
        }
        let i = self.marks.partition_point(|&(end, _)| end <= offset);
        self.marks
            .get(i)
            .or(self.marks.last())
            .map(|&(_, ts)| ts)
            .unwrap_or(0)
    }

    /// Timestamp of the syscall that carried the last byte of the first `len` bytes.
    #[inline]
    pub fn ts_end(&self, len: usize) -> u64 {
        self.ts_at(len.saturating_sub(1))
    }
}

/// What a parser did with the front of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The first `n` bytes are done with. `n` may exceed the input's length: the driver then
    /// discards that many more bytes of this direction as they arrive, without buffering them
    /// (how a parser skips a body it does not need, such as a 10^6-row result block).
    Consumed(u64),
    /// A message has started but is not complete: call again with more bytes. Nothing was
    /// consumed.
    NeedMore,
}

/// Why a parser could not go on at its current position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes do not form a message of the protocol where one must start. The parser has
    /// switched itself to resynchronisation: call again and it skips to the next message it
    /// can recognise.
    #[error("malformed {protocol} message: {what}")]
    Malformed {
        protocol: Protocol,
        what: &'static str,
    },
    /// A length field is larger than the protocol allows; treated like `Malformed`.
    #[error("{protocol} length {len} exceeds the limit {limit}")]
    LengthTooLarge {
        protocol: Protocol,
        len: u64,
        limit: u64,
    },
    /// The connection cannot be followed any further (e.g. a protocol feature the parser
    /// cannot walk, such as encrypted or unknown framing). The driver drops the connection.
    #[error("{protocol} stream cannot be followed: {what}")]
    Unfollowable {
        protocol: Protocol,
        what: &'static str,
    },
}

impl ParseError {
    /// Whether parsing may continue (after the parser's own resync).
    pub fn can_continue(&self) -> bool {
        !matches!(self, ParseError::Unfollowable { .. })
    }
}

/// Counters every parser keeps; they reach the output (`capture_stats`), not only logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParserCounters {
    /// Messages parsed, both directions.
    pub n_messages: u64,
    /// Times the parser lost its position and searched for the next message.
    pub n_resyncs: u64,
    /// Of `n_resyncs`, those after bytes the capture cut or lost, which the parser could not
    /// step over (a cut whose length it could not know where the message ended): a capture
    /// limit, not a parser fault.
    pub n_gap_resyncs: u64,
    /// Bytes skipped while resynchronising.
    pub n_resync_bytes: u64,
    /// Directions whose first bytes were not the start of a conversation (a connection open
    /// before the capture): the parser searched for its first message without having lost
    /// a position. Not counted in `n_resyncs`.
    pub n_midstream_starts: u64,
}

impl ParserCounters {
    /// Times the parser searched for a message: resyncs and mid-stream starts.
    pub fn searches(&self) -> u64 {
        self.n_resyncs + self.n_midstream_starts
    }

    pub fn add(&mut self, other: &ParserCounters) {
        self.n_messages += other.n_messages;
        self.n_resyncs += other.n_resyncs;
        self.n_gap_resyncs += other.n_gap_resyncs;
        self.n_resync_bytes += other.n_resync_bytes;
        self.n_midstream_starts += other.n_midstream_starts;
    }
}

/// One protocol's passive parser for one connection.
///
/// The driver calls `parse` with the unconsumed bytes of one direction whenever new bytes
/// arrive, and again after every `Consumed` as long as bytes remain. A parser keeps only
/// bounded state (in-flight requests, position) and never buffers bytes itself.
pub trait Parser {
    /// Parses messages from the front of `input`, pushing finished records to `out`.
    fn parse(
        &mut self,
        dir: Direction,
        input: &Input<'_>,
        out: &mut Records,
    ) -> Result<Step, ParseError>;

    /// `len` bytes of `dir` were never seen: cut by the kernel's payload limit, lost, or
    /// dropped by the driver (buffer cap). Any partially buffered message was discarded.
    /// The bytes that follow a gap start a new syscall.
    fn gap(&mut self, dir: Direction, len: u64, ts_ns: u64);

    /// The last bytes of a syscall of `dir` at `ts_ns` whose middle was cut: they come
    /// right after the [`Parser::gap`] for that middle and end the syscall, but where they
    /// start in the stream is unknown. A parser may look in them for the end of what is in
    /// flight (a response's last packets) and must not take anything else from them; the
    /// bytes after them start a new syscall. By default they are ignored, like the cut.
    fn tail(&mut self, dir: Direction, bytes: &[u8], ts_ns: u64, out: &mut Records) {
        let _ = (dir, bytes, ts_ns, out);
    }

    /// The connection ended (closed, or expired while idle) at `ts_ns`: finish what is in
    /// flight with a distinct status.
    fn close(&mut self, ts_ns: u64, out: &mut Records);

    fn counters(&self) -> ParserCounters;
}
