//! `l7tap replay FILE.pcap|FILE.pcapng`: a packet capture read (crate `pcap-file`), its TCP
//! connections reassembled and classified by the kernel's own rules, and turned into the
//! events the probes send, which go through the same [`Router`], actors, parsers and sinks
//! as a recording's. Timestamps are the packets'.
//!
//! Messy files: frames that are not TCP over IP (ARP, UDP, IP fragments...) are skipped and
//! counted; bytes the snaplen cut and segments the capture lost become counted gaps; a file
//! that ends inside a packet, or whose packet record is corrupt, is replayed up to there and
//! says so ([`PcapCounts::stopped`]). Memory is bounded by the data held for reassembly, not
//! by what the file claims: the file crate reads through a fixed buffer.
pub mod classify;
pub mod connections;
pub mod packet;
pub mod reassembly;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};

use crate::recording::RecordingError;
use crate::Router;
use classify::Classifier;
use connections::{ConnectionCounts, Connections};
use packet::{LinkType, Skipped};

/// How far watermarks trail the newest packet: a capture's packets are in time order but for
/// small inversions between the CPUs that captured them.
const WATERMARK_LAG_NS: u64 = 1_000_000_000;

/// Which packet capture format a file is, by its magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    /// pcap, either byte order, microsecond or nanosecond timestamps.
    Pcap,
    PcapNg,
}

impl CaptureFormat {
    /// The format whose magic number starts `head`; none if it is not a packet capture.
    pub fn from_magic(head: &[u8]) -> Option<CaptureFormat> {
        match head.get(..4)? {
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => Some(CaptureFormat::Pcap),
            [0x0a, 0x0d, 0x0d, 0x0a] => Some(CaptureFormat::PcapNg),
            _ => None,
        }
    }

    /// The format of the file at `path`; none if it is not a packet capture.
    pub fn of_file(path: &Path) -> Result<Option<CaptureFormat>, PcapError> {
        let mut head = [0u8; 4];
        let mut file = File::open(path).map_err(|source| PcapError::Io {
            path: path.to_owned(),
            source,
        })?;
        match file.read_exact(&mut head) {
            Ok(()) => Ok(CaptureFormat::from_magic(&head)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(source) => Err(PcapError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a readable packet capture: {what}")]
    Format { path: PathBuf, what: String },
    #[error("{path}: link type {linktype} is not supported (Ethernet, Linux cooked SLL and SLL2, raw IP and BSD loopback are)")]
    LinkType { path: PathBuf, linktype: u32 },
    #[error(transparent)]
    Route(#[from] RecordingError),
}

/// What `l7tap replay` is told about a capture (the probes' settings).
#[derive(Clone, Debug)]
pub struct PcapOptions {
    /// ClickHouse's HTTP server ports (`--clickhouse-http-ports`).
    pub clickhouse_http_ports: Vec<u16>,
}

/// What the reader counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcapCounts {
    pub packets: u64,
    pub tcp_segments: u64,
    pub not_ip: u64,
    pub not_tcp: u64,
    pub ip_fragments: u64,
    /// Frames cut inside their IP or TCP header.
    pub header_cut: u64,
    pub malformed: u64,
    /// pcapng packets of an interface whose link type is not decoded.
    pub unsupported_link: u64,
    pub connections: ConnectionCounts,
    /// Why the file was not read to its end (truncated, or a corrupt packet record).
    pub stopped: Option<String>,
}

impl PcapCounts {
    /// The counters under the names the summary shows.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let c = &self.connections;
        vec![
            ("pcap.packets", self.packets),
            ("pcap.tcp_segments", self.tcp_segments),
            ("pcap.skipped.not_ip", self.not_ip),
            ("pcap.skipped.not_tcp", self.not_tcp),
            ("pcap.skipped.ip_fragments", self.ip_fragments),
            ("pcap.skipped.header_cut", self.header_cut),
            ("pcap.skipped.malformed", self.malformed),
            ("pcap.skipped.unsupported_link", self.unsupported_link),
            ("pcap.connections", c.connections),
            ("pcap.connections.classified", c.classified),
            ("pcap.connections.unclassified", c.unclassified),
            ("pcap.bytes.duplicate", c.streams.duplicate_bytes),
            ("pcap.bytes.lost", c.streams.lost_bytes),
            ("pcap.bytes.cut", c.streams.cut_bytes),
            ("pcap.stray_segments", c.streams.stray_segments),
        ]
    }
}

/// Turns packets into events and watermarks.
pub struct PacketFeed {
    connections: Connections,
    pub counts: PcapCounts,
    newest_ns: u64,
    watermark_ns: u64,
    events: Vec<Vec<u8>>,
}

/// What a packet produced, in order.
pub enum Frame {
    Event(Vec<u8>),
    Watermark(u64),
}

impl PacketFeed {
    pub fn new(options: &PcapOptions) -> PacketFeed {
        PacketFeed {
            connections: Connections::new(Classifier::new(&options.clickhouse_http_ports)),
            counts: PcapCounts::default(),
            newest_ns: 0,
            watermark_ns: 0,
            events: Vec::new(),
        }
    }

    /// One frame captured at `ts_ns` (Unix time), `orig_len` bytes long on the wire.
    pub fn packet(
        &mut self,
        ts_ns: u64,
        link: LinkType,
        frame: &[u8],
        orig_len: u32,
        out: &mut impl FnMut(Frame) -> Result<(), RecordingError>,
    ) -> Result<(), RecordingError> {
        self.counts.packets += 1;
        match packet::decode(link, frame, orig_len) {
            Ok(seg) => {
                self.counts.tcp_segments += 1;
                let events = &mut self.events;
                self.connections
                    .segment(ts_ns, &seg, &mut |e| events.push(e));
            }
            Err(Skipped::NotIp) => self.counts.not_ip += 1,
            Err(Skipped::NotTcp) => self.counts.not_tcp += 1,
            Err(Skipped::Fragment) => self.counts.ip_fragments += 1,
            Err(Skipped::HeaderCut) => self.counts.header_cut += 1,
            Err(Skipped::Malformed) => self.counts.malformed += 1,
        }
        for e in self.events.drain(..) {
            out(Frame::Event(e))?;
        }
        self.newest_ns = self.newest_ns.max(ts_ns);
        let watermark = self.newest_ns.saturating_sub(WATERMARK_LAG_NS);
        if watermark > self.watermark_ns + 10_000_000 {
            self.watermark_ns = watermark;
            out(Frame::Watermark(watermark))?;
        }
        Ok(())
    }

    /// The capture ended: open connections end at its last packet's time.
    pub fn finish(
        &mut self,
        out: &mut impl FnMut(Frame) -> Result<(), RecordingError>,
    ) -> Result<(), RecordingError> {
        let events = &mut self.events;
        self.connections
            .finish(self.newest_ns, &mut |e| events.push(e));
        for e in self.events.drain(..) {
            out(Frame::Event(e))?;
        }
        self.counts.connections = self.connections.counts;
        out(Frame::Watermark(u64::MAX))
    }
}

/// Time units per second of a pcapng interface's `if_tsresol`.
fn units_per_second(tsresol: u8) -> u128 {
    let exponent = u32::from(tsresol & 0x7f).min(30);
    if tsresol & 0x80 == 0 {
        10u128.pow(exponent.min(19))
    } else {
        1u128 << exponent
    }
}

/// Reads the packet capture at `path` and feeds what it holds through `router`.
pub fn run_pcap_replay(
    path: &Path,
    options: &PcapOptions,
    router: &mut Router,
) -> Result<PcapCounts, PcapError> {
    read_packet_capture(path, options, |frame| match frame {
        Frame::Event(e) => router.event(&e),
        Frame::Watermark(ts) => router.watermark(ts),
    })
}

/// Reads the packet capture at `path`; its events and watermarks go to `out`, in order, the
/// last a watermark of `u64::MAX`.
pub fn read_packet_capture(
    path: &Path,
    options: &PcapOptions,
    mut out: impl FnMut(Frame) -> Result<(), RecordingError>,
) -> Result<PcapCounts, PcapError> {
    let format = CaptureFormat::of_file(path)?.ok_or_else(|| PcapError::Format {
        path: path.to_owned(),
        what: "no pcap or pcapng magic number".into(),
    })?;
    let file = File::open(path).map_err(|source| PcapError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut feed = PacketFeed::new(options);
    let format_error = |what: String| PcapError::Format {
        path: path.to_owned(),
        what,
    };
    match format {
        CaptureFormat::Pcap => {
            let mut reader = PcapReader::new(file).map_err(|e| format_error(e.to_string()))?;
            let linktype = u32::from(reader.header().datalink);
            let link = LinkType::from_linktype(linktype).ok_or(PcapError::LinkType {
                path: path.to_owned(),
                linktype,
            })?;
            while let Some(packet) = reader.next_packet() {
                match packet {
                    Ok(p) => {
                        let ts = p.timestamp.as_nanos().min(u128::from(u64::MAX)) as u64;
                        feed.packet(ts, link, &p.data, p.orig_len, &mut out)?;
                    }
                    Err(e) => {
                        feed.counts.stopped = Some(stop_reason(&e, feed.counts.packets));
                        break;
                    }
                }
            }
        }
        CaptureFormat::PcapNg => {
            let mut reader = PcapNgReader::new(file).map_err(|e| format_error(e.to_string()))?;
            // Per interface of the current section: link type and time units per second.
            let mut interfaces: Vec<(u32, u128)> = Vec::new();
            let mut last_ts = 0u64;
            while let Some(block) = reader.next_block() {
                let block = match block {
                    Ok(b) => b,
                    Err(e) => {
                        feed.counts.stopped = Some(stop_reason(&e, feed.counts.packets));
                        break;
                    }
                };
                let (interface, ts, data, orig_len) = match &block {
                    Block::SectionHeader(_) => {
                        interfaces.clear();
                        continue;
                    }
                    Block::InterfaceDescription(idb) => {
                        let resol = idb.options.iter().find_map(|o| match o {
                            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                            _ => None,
                        });
                        interfaces.push((
                            u32::from(idb.linktype),
                            units_per_second(resol.unwrap_or(6)),
                        ));
                        continue;
                    }
                    Block::EnhancedPacket(epb) => {
                        let units = interfaces
                            .get(epb.interface_id as usize)
                            .map_or(1_000_000, |i| i.1);
                        let raw = epb.timestamp.as_nanos();
                        let ts = (raw * 1_000_000_000 / units).min(u128::from(u64::MAX)) as u64;
                        (epb.interface_id as usize, ts, &epb.data, epb.original_len)
                    }
                    // No timestamp: the previous packet's.
                    Block::SimplePacket(spb) => (0, last_ts, &spb.data, spb.original_len),
                    _ => continue,
                };
                last_ts = ts;
                let Some(link) = interfaces
                    .get(interface)
                    .and_then(|i| LinkType::from_linktype(i.0))
                else {
                    feed.counts.packets += 1;
                    feed.counts.unsupported_link += 1;
                    continue;
                };
                feed.packet(ts, link, data, orig_len, &mut out)?;
            }
        }
    }
    feed.finish(&mut out)?;
    Ok(feed.counts)
}

/// What stopped the reading, for the one line the command prints.
fn stop_reason(e: &pcap_file::PcapError, packets: u64) -> String {
    match e {
        pcap_file::PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            format!("the file ends inside a packet (truncated?); replayed its first {packets} packets")
        }
        pcap_file::PcapError::IncompleteBuffer => {
            format!("the file ends inside a packet (truncated?); replayed its first {packets} packets")
        }
        other => format!("corrupt packet record after packet {packets} ({other}); replayed the packets before it"),
    }
}
