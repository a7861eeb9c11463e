//! The parser registry: which parser, settings and counters each [`Protocol`] has.
//!
//! [`Protocol`] is generated from the kernel ABI's protocol list, and every match here is
//! exhaustive, so a protocol added to that list is a compile error in this file until it is
//! registered: its parser factory in [`new_parser`], its extra counters in
//! [`ProtocolCounters`]. See ARCHITECTURE.md, "Adding a protocol".
use crate::clickhouse::{ClickHouseConfig, ClickHouseParser};
use crate::clickhouse_http::ClickHouseHttpParser;
use crate::debug::FrameCounter;
use crate::stream::StreamDriver;
use crate::zookeeper::{ZooKeeperParser, ZooKeeperSettings};
use crate::{Direction, Parser, Protocol, Records};

/// Limits every protocol's parser takes from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParserLimits {
    /// Bytes of query text (ClickHouse) or path (ZooKeeper) kept in a record.
    pub max_query_bytes: usize,
    /// Bytes buffered per direction of a connection before it is given up.
    pub max_buffered: usize,
}

/// Counters a protocol's parser keeps beyond [`crate::ParserCounters`]: each reaches the
/// summary and `capture_stats` as `parse.<protocol>.<name>`.
pub trait ProtocolCounters {
    fn for_each_counter(&self, add: &mut dyn FnMut(&'static str, u64));
}

/// A connection's parse trouble so far: what `capture_stats` reports window by window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseTrouble {
    pub parse_errors: u64,
    pub resyncs: u64,
    /// Of `resyncs`, those after bytes the capture cut or lost.
    pub gap_resyncs: u64,
}

impl ParseTrouble {
    pub fn add(&mut self, other: &ParseTrouble) {
        self.parse_errors += other.parse_errors;
        self.resyncs += other.resyncs;
        self.gap_resyncs += other.gap_resyncs;
    }

    /// What was added since `earlier`.
    pub fn since(&self, earlier: &ParseTrouble) -> ParseTrouble {
        ParseTrouble {
            parse_errors: self.parse_errors - earlier.parse_errors,
            resyncs: self.resyncs - earlier.resyncs,
            gap_resyncs: self.gap_resyncs - earlier.gap_resyncs,
        }
    }
}

/// A connection's reassembly and parser, whatever its protocol: what the actors drive.
pub trait ConnectionParser: Send {
    /// The bytes of one syscall (see [`StreamDriver::push`]).
    fn push(&mut self, dir: Direction, ts: u64, bytes: &[u8], cut: u64, out: &mut Records);
    /// The last bytes of a syscall whose middle was cut (see [`StreamDriver::push_tail`]).
    fn push_tail(&mut self, dir: Direction, ts: u64, bytes: &[u8], out: &mut Records);
    fn close(&mut self, ts: u64, out: &mut Records);
    /// Parse errors and resyncs so far.
    fn trouble(&self) -> ParseTrouble;
    /// Every counter of this connection as `add(stage, name, value)`, stage `parse` or
    /// `stream`: the summary names it `<stage>.<protocol>.<name>`.
    fn for_each_counter(&self, add: &mut dyn FnMut(&'static str, &'static str, u64));
}

impl<P: Parser + ProtocolCounters + Send> ConnectionParser for StreamDriver<P> {
    #[inline]
    fn push(&mut self, dir: Direction, ts: u64, bytes: &[u8], cut: u64, out: &mut Records) {
        StreamDriver::push(self, dir, ts, bytes, cut, out)
    }

    fn push_tail(&mut self, dir: Direction, ts: u64, bytes: &[u8], out: &mut Records) {
        StreamDriver::push_tail(self, dir, ts, bytes, out)
    }

    fn close(&mut self, ts: u64, out: &mut Records) {
        StreamDriver::close(self, ts, out)
    }

    fn trouble(&self) -> ParseTrouble {
        let parser = self.parser_counters();
        ParseTrouble {
            parse_errors: self.counters().n_parse_errors,
            resyncs: parser.n_resyncs,
            gap_resyncs: parser.n_gap_resyncs,
        }
    }

    fn for_each_counter(&self, add: &mut dyn FnMut(&'static str, &'static str, u64)) {
        let pc = self.parser_counters();
        let sc = self.counters();
        add("parse", "messages", pc.n_messages);
        add("parse", "resyncs", pc.n_resyncs);
        add("parse", "gap_resyncs", pc.n_gap_resyncs);
        add("parse", "resync_bytes", pc.n_resync_bytes);
        add("parse", "midstream_starts", pc.n_midstream_starts);
        add("parse", "errors", sc.n_parse_errors);
        add("stream", "bytes", sc.n_bytes);
        add("stream", "skipped_bytes", sc.n_skipped_bytes);
        add("stream", "gaps", sc.n_gaps);
        add("stream", "gap_bytes", sc.n_gap_bytes);
        add("stream", "overflows", sc.n_overflows);
        add("stream", "dropped_connections", sc.n_dropped);
        self.parser()
            .for_each_counter(&mut |name, value| add("parse", name, value));
    }
}

/// The parser of a new connection of `protocol`. Boxed: the actors' connection map holds
/// one entry per connection, and parsers differ in size (over 1 KiB for some); boxed, each
/// connection pays only for its own.
pub fn new_parser(protocol: Protocol, limits: &ParserLimits) -> Box<dyn ConnectionParser> {
    let cap = limits.max_buffered;
    match protocol {
        Protocol::ClickHouse => Box::new(StreamDriver::with_max_buffered(
            ClickHouseParser::new(ClickHouseConfig {
                max_query_bytes: limits.max_query_bytes,
                ..ClickHouseConfig::default()
            }),
            cap,
        )),
        Protocol::ClickHouseHttp => Box::new(StreamDriver::with_max_buffered(
            ClickHouseHttpParser::new(ClickHouseConfig {
                max_query_bytes: limits.max_query_bytes,
                ..ClickHouseConfig::default()
            }),
            cap,
        )),
        Protocol::ZooKeeper => Box::new(StreamDriver::with_max_buffered(
            ZooKeeperParser::new(ZooKeeperSettings {
                max_path_bytes: limits.max_query_bytes,
                ..ZooKeeperSettings::default()
            }),
            cap,
        )),
    }
}

/// A frame counter instead of the protocol's parser (`--frames-only`): what reassembly
/// alone costs.
pub fn new_frame_counter(limits: &ParserLimits) -> Box<dyn ConnectionParser> {
    Box::new(StreamDriver::with_max_buffered(
        FrameCounter::default(),
        limits.max_buffered,
    ))
}

impl ProtocolCounters for ClickHouseParser {
    fn for_each_counter(&self, add: &mut dyn FnMut(&'static str, u64)) {
        // A query ended incomplete because the next Query may have come before its end.
        add("unanswered_queries", self.unanswered_queries());
    }
}

impl ProtocolCounters for ClickHouseHttpParser {
    fn for_each_counter(&self, add: &mut dyn FnMut(&'static str, u64)) {
        // A response that matched no request is dropped; a lost chunked body may still be
        // ended by a later syscall or tail: both must at least be counted.
        let http = self.http_counters();
        add("unmatched_responses", http.n_unmatched_responses);
        add("in_flight_overflows", http.n_in_flight_overflows);
        add("chunked_lost", http.n_chunked_lost);
        add("chunked_found", http.n_chunked_found);
    }
}

impl ProtocolCounters for ZooKeeperParser {
    fn for_each_counter(&self, add: &mut dyn FnMut(&'static str, u64)) {
        // Pairing outcomes: a reply that matched nothing is dropped, so it must at least be
        // counted.
        let zk = self.zk_counters();
        add("unmatched_replies", zk.n_unmatched_replies);
        add("overtaken", zk.n_overtaken);
        add("in_flight_overflows", zk.n_in_flight_overflows);
    }
}

impl ProtocolCounters for FrameCounter {
    fn for_each_counter(&self, _add: &mut dyn FnMut(&'static str, u64)) {}
}
