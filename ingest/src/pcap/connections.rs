//! The TCP connections of a packet capture turned into the events the kernel probes send:
//! each connection is reassembled in both directions, classified by the kernel's rules
//! ([`crate::pcap::classify`]) and, once classified, reported as an open event, data events
//! and a close event, as the server of the connection would have been seen (`side` =
//! server: a capture point on the wire sees each connection once).
//!
//! A connection has no process: its events carry tgid 0 and an empty comm; its fd is a
//! number the reader gives each connection.
use std::collections::HashMap;
use std::net::SocketAddr;

use l7tap_abi::events::layout::MAX_PAYLOAD;
use l7tap_abi::events::{build, ConnId, EventKind, Flow, Header, Role};
use l7tap_abi::Protocol;

use super::classify::{Classifier, DirectionState};
use super::packet::{Segment, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use super::reassembly::{Chunk, Reassembler, StreamCounts};

/// What the connection table counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub connections: u64,
    pub classified: u64,
    /// Connections whose classification budget ran out in both directions, or that ended
    /// unclassified.
    pub unclassified: u64,
    pub streams: StreamCounts,
}

struct Classified {
    protocol: Protocol,
    /// Which endpoint (0: `key.0`, 1: `key.1`) is the server.
    server: usize,
}

struct Connection {
    id: ConnId,
    /// The two endpoints, in the order of the table's key.
    ends: [SocketAddr; 2],
    /// Bytes sent by endpoint i.
    streams: [Reassembler; 2],
    classify: [DirectionState; 2],
    /// The 4 bytes a direction's last chunk held as a possible frame length.
    held_prefix: [Option<Vec<u8>>; 2],
    classified: Option<Classified>,
    fin: [bool; 2],
}

/// Every open connection of the capture, keyed by its two endpoints (lower first).
pub struct Connections {
    classifier: Classifier,
    table: HashMap<(SocketAddr, SocketAddr), Connection>,
    next_fd: i32,
    pub counts: ConnectionCounts,
    chunks: Vec<Chunk>,
}

impl Connections {
    pub fn new(classifier: Classifier) -> Connections {
        Connections {
            classifier,
            table: HashMap::new(),
            next_fd: 0,
            counts: ConnectionCounts::default(),
            chunks: Vec::new(),
        }
    }

    /// One TCP segment captured at `ts_ns` (Unix time); the events it completes go to `emit`.
    pub fn segment(&mut self, ts_ns: u64, seg: &Segment, emit: &mut impl FnMut(Vec<u8>)) {
        let key = if seg.src <= seg.dst {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        };
        let from = usize::from(seg.src != key.0);
        let syn_only = seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        if syn_only {
            // A new connection on the same ports ends the old one (a reused port).
            let reused = self.table.get(&key).is_some_and(|c| {
                c.fin.iter().any(|&f| f)
                    || c.streams[from]
                        .first_seq()
                        .is_some_and(|first| first != seg.seq.wrapping_add(1))
            });
            if reused {
                self.end(key, ts_ns, emit);
            }
        }
        let has_data = !seg.payload.is_empty() || seg.cut != 0;
        if !self.table.contains_key(&key) && !has_data && seg.flags & TCP_SYN == 0 {
            // The last ACK of a connection that ended, or a bare ACK: no connection to start.
            return;
        }
        let conn = self.table.entry(key).or_insert_with(|| {
            self.next_fd = self.next_fd.wrapping_add(1) & i32::MAX;
            self.counts.connections += 1;
            Connection {
                id: ConnId {
                    tgid: 0,
                    fd: self.next_fd,
                    start_ns: ts_ns,
                },
                ends: [key.0, key.1],
                streams: Default::default(),
                classify: Default::default(),
                held_prefix: [None, None],
                classified: None,
                fin: [false; 2],
            }
        });
        let chunks = &mut self.chunks;
        chunks.clear();
        if seg.flags & TCP_SYN != 0 {
            conn.streams[from].syn(seg.seq);
        }
        conn.streams[from].segment(seg.seq, seg.payload, seg.cut, chunks);
        for chunk in chunks.drain(..) {
            deliver(
                &self.classifier,
                &mut self.counts,
                conn,
                from,
                ts_ns,
                chunk,
                emit,
            );
        }
        if seg.flags & TCP_ACK != 0 {
            conn.streams[1 - from].acknowledged(seg.ack, chunks);
            for chunk in chunks.drain(..) {
                deliver(
                    &self.classifier,
                    &mut self.counts,
                    conn,
                    1 - from,
                    ts_ns,
                    chunk,
                    emit,
                );
            }
        }
        if seg.flags & TCP_FIN != 0 {
            conn.fin[from] = true;
            let data_len = seg.payload.len() as u64 + u64::from(seg.cut);
            conn.streams[from].fin(seg.seq, data_len);
        }
        if seg.flags & TCP_RST != 0 || conn.fin == [true, true] {
            self.end(key, ts_ns, emit);
        }
    }

    /// The capture ended at `ts_ns`: every connection still open ends.
    pub fn finish(&mut self, ts_ns: u64, emit: &mut impl FnMut(Vec<u8>)) {
        let mut keys: Vec<_> = self.table.keys().copied().collect();
        // In the order the connections started: the output does not depend on hashing.
        keys.sort_by_key(|k| self.table[k].id.fd);
        for key in keys {
            self.end(key, ts_ns, emit);
        }
    }

    fn end(&mut self, key: (SocketAddr, SocketAddr), ts_ns: u64, emit: &mut impl FnMut(Vec<u8>)) {
        let Some(mut conn) = self.table.remove(&key) else {
            return;
        };
        let mut chunks = Vec::new();
        for from in 0..2 {
            conn.streams[from].finish(&mut chunks);
            for chunk in chunks.drain(..) {
                deliver(
                    &self.classifier,
                    &mut self.counts,
                    &mut conn,
                    from,
                    ts_ns,
                    chunk,
                    emit,
                );
            }
            add_counts(&mut self.counts.streams, &conn.streams[from].counts);
        }
        match &conn.classified {
            Some(c) => emit(build::close(&header(&conn, c, EventKind::Close, 0, ts_ns))),
            None => self.counts.unclassified += 1,
        }
    }
}

fn add_counts(total: &mut StreamCounts, one: &StreamCounts) {
    total.duplicate_bytes += one.duplicate_bytes;
    total.lost_bytes += one.lost_bytes;
    total.cut_bytes += one.cut_bytes;
    total.stray_segments += one.stray_segments;
}

/// The header of an event of `conn`, about bytes sent by endpoint `from`.
fn header(conn: &Connection, c: &Classified, kind: EventKind, from: usize, ts_ns: u64) -> Header {
    Header {
        kind,
        ts_ns,
        conn: conn.id,
        tid: 0,
        protocol: Some(c.protocol),
        role: Role::Server,
        flow: if from == c.server {
            Flow::Egress
        } else {
            Flow::Ingress
        },
    }
}

/// A chunk of endpoint `from`'s stream: classifies the connection if it is not yet, and sends
/// the chunk on once it is.
fn deliver(
    classifier: &Classifier,
    counts: &mut ConnectionCounts,
    conn: &mut Connection,
    from: usize,
    ts_ns: u64,
    chunk: Chunk,
    emit: &mut impl FnMut(Vec<u8>),
) {
    if conn.classified.is_none() {
        let Chunk::Data { bytes, cut } = &chunk else {
            // A gap before the connection is known: nothing to classify, nothing to send.
            conn.held_prefix[from] = None;
            return;
        };
        let len = bytes.len() as u64 + cut;
        let (src, dst) = (conn.ends[from], conn.ends[1 - from]);
        let held = conn.held_prefix[from].take();
        let detected =
            classifier.classify(&mut conn.classify[from], bytes, len, src.port(), dst.port());
        let Some(d) = detected else {
            if *cut == 0 && bytes.len() == 4 {
                conn.held_prefix[from] = Some(bytes.clone());
            }
            return;
        };
        counts.classified += 1;
        let c = Classified {
            protocol: d.protocol,
            server: if d.receiver_is_server { 1 - from } else { from },
        };
        let server = conn.ends[c.server];
        let client = conn.ends[1 - c.server];
        let open = header(conn, &c, EventKind::Open, from, ts_ns);
        let mut event = build::open(&open, server, client, "");
        event[l7tap_abi::events::layout::OPEN_DETECT] = d.detect;
        emit(event);
        conn.classified = Some(c);
        if d.with_held_prefix {
            if let Some(prefix) = held {
                send(
                    conn,
                    from,
                    ts_ns,
                    Chunk::Data {
                        bytes: prefix,
                        cut: 0,
                    },
                    emit,
                );
            }
        }
    }
    send(conn, from, ts_ns, chunk, emit);
}

/// Data events for a chunk of a classified connection: at most MAX_PAYLOAD bytes each, the
/// chunk's cut bytes on the last, a gap as an event of no bytes and all cut.
fn send(conn: &Connection, from: usize, ts_ns: u64, chunk: Chunk, emit: &mut impl FnMut(Vec<u8>)) {
    let Some(c) = &conn.classified else { return };
    let h = header(conn, c, EventKind::Data, from, ts_ns);
    let (bytes, cut) = match chunk {
        Chunk::Data { bytes, cut } => (bytes, cut),
        Chunk::Gap { len } => (Vec::new(), len),
    };
    let mut pieces = bytes.chunks(MAX_PAYLOAD as usize).peekable();
    if pieces.peek().is_none() {
        emit(build::data(&h, cut, &[]));
    }
    while let Some(piece) = pieces.next() {
        let total = piece.len() as u64 + if pieces.peek().is_none() { cut } else { 0 };
        emit(build::data(&h, total, piece));
    }
}
