//! The parser a connection runs, chosen by the protocol the kernel detected: one enum, one
//! line per protocol.
use l7tap_probes::events::WireProtocol;
use l7tap_protocols::clickhouse::{ClickHouseConfig, ClickHouseParser};
use l7tap_protocols::debug::FrameCounter;
use l7tap_protocols::stream::StreamDriver;
use l7tap_protocols::zookeeper::{ZooKeeperParser, ZooKeeperSettings};
use l7tap_protocols::{Direction, Parser, Records};

use crate::actor::ActorConfig;
use crate::summary::Summary;

/// Boxed: the connection map holds one entry per connection and allocates slots for up to
/// twice as many, each the size of the largest variant (over 1 KiB of parser state); boxed,
/// a slot is a pointer and each connection pays only for its own parser.
pub enum ConnParser {
    ClickHouse(Box<StreamDriver<ClickHouseParser>>),
    ZooKeeper(Box<StreamDriver<ZooKeeperParser>>),
    /// Counts frames (direction turns); used for every protocol with `frames_only`.
    Frames(Box<StreamDriver<FrameCounter>>),
}

macro_rules! each {
    ($self:expr, $d:ident => $body:expr) => {
        match $self {
            ConnParser::ClickHouse($d) => $body,
            ConnParser::ZooKeeper($d) => $body,
            ConnParser::Frames($d) => $body,
        }
    };
}

impl ConnParser {
    pub fn new(protocol: WireProtocol, config: &ActorConfig) -> Self {
        let cap = config.max_buffered;
        match protocol {
            _ if config.frames_only => ConnParser::Frames(Box::new(
                StreamDriver::with_max_buffered(FrameCounter::default(), cap),
            )),
            WireProtocol::ZooKeeper => {
                let settings = ZooKeeperSettings {
                    max_path_bytes: config.max_query_bytes,
                    ..ZooKeeperSettings::default()
                };
                ConnParser::ZooKeeper(Box::new(StreamDriver::with_max_buffered(
                    ZooKeeperParser::new(settings),
                    cap,
                )))
            }
            WireProtocol::ClickHouse => {
                let settings = ClickHouseConfig {
                    max_query_bytes: config.max_query_bytes,
                    ..ClickHouseConfig::default()
                };
                ConnParser::ClickHouse(Box::new(StreamDriver::with_max_buffered(
                    ClickHouseParser::new(settings),
                    cap,
                )))
            }
            WireProtocol::Unknown => ConnParser::Frames(Box::new(StreamDriver::with_max_buffered(
                FrameCounter::default(),
                cap,
            ))),
        }
    }

    pub fn push(&mut self, dir: Direction, ts: u64, bytes: &[u8], cut: u64, out: &mut Records) {
        each!(self, d => d.push(dir, ts, bytes, cut, out))
    }

    /// The last bytes of a syscall whose middle was cut (see [`StreamDriver::push_tail`]).
    pub fn push_tail(&mut self, dir: Direction, ts: u64, bytes: &[u8], out: &mut Records) {
        each!(self, d => d.push_tail(dir, ts, bytes, out))
    }

    pub fn close(&mut self, ts: u64, out: &mut Records) {
        each!(self, d => d.close(ts, out))
    }

    /// Parse errors and resyncs so far.
    pub fn error_counts(&self) -> (u64, u64) {
        each!(self, d => (d.counters().n_parse_errors, d.parser_counters().n_resyncs))
    }

    /// Adds this connection's parser and reassembly counters to `summary`.
    pub fn count_into(&self, protocol: WireProtocol, summary: &mut Summary) {
        let p = match protocol {
            WireProtocol::ClickHouse => "clickhouse",
            WireProtocol::ZooKeeper => "zookeeper",
            WireProtocol::Unknown => "unknown",
        };
        each!(self, d => count_driver(d, p, summary));
        if let ConnParser::ZooKeeper(d) = self {
            // Pairing outcomes: a reply that matched nothing is dropped, so it must at
            // least be counted.
            let zk = d.parser().zk_counters();
            summary.add("parse.zookeeper.unmatched_replies", zk.n_unmatched_replies);
            summary.add("parse.zookeeper.overtaken", zk.n_overtaken);
            summary.add(
                "parse.zookeeper.in_flight_overflows",
                zk.n_in_flight_overflows,
            );
        }
    }
}

fn count_driver<P: Parser>(d: &StreamDriver<P>, p: &str, summary: &mut Summary) {
    let pc = d.parser_counters();
    let sc = d.counters();
    summary.add(&format!("parse.{p}.messages"), pc.n_messages);
    summary.add(&format!("parse.{p}.resyncs"), pc.n_resyncs);
    summary.add(&format!("parse.{p}.resync_bytes"), pc.n_resync_bytes);
    summary.add(&format!("parse.{p}.errors"), sc.n_parse_errors);
    summary.add(&format!("stream.{p}.bytes"), sc.n_bytes);
    summary.add(&format!("stream.{p}.skipped_bytes"), sc.n_skipped_bytes);
    summary.add(&format!("stream.{p}.gaps"), sc.n_gaps);
    summary.add(&format!("stream.{p}.gap_bytes"), sc.n_gap_bytes);
    summary.add(&format!("stream.{p}.overflows"), sc.n_overflows);
    summary.add(&format!("stream.{p}.dropped_connections"), sc.n_dropped);
}
