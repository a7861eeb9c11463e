//! Recordings of synthetic traffic: the same file `l7tap capture --record` writes (kernel
//! events as the probes send them, and watermarks), made without a kernel, so a replay takes
//! them through the real router, rings, actors, parsers, aggregation and Parquet sink.
//!
//! Connections are ZooKeeper clients (`getData` with a reply, `exists` answered `NoNode`) and
//! ClickHouse clients that repeat the recorded `SELECT 1` exchange of
//! `tests/fixtures/clickhouse/cli_select1.chunks` (Ping, Pong, Query, Data, Data,
//! EndOfStream). Every timestamp is a whole microsecond, so the µs `ts` column of `requests`
//! plus `duration_ns` is exactly the end time the aggregation used: a reader can recompute
//! the `intervals` windows from `requests`.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::path::Path;

use l7tap_abi::events::{build, ConnId, EventKind, Flow, Header, Role};
use l7tap_abi::Protocol;
use l7tap_ingest::recording::{RecordingError, RecordingHeader, RecordingWriter};
use l7tap_ingest::Tag;
use l7tap_protocols::fixture::parse_chunks;
use l7tap_protocols::Direction;

use crate::rng::Rng;
use crate::zookeeper_wire::{path_request, reply};

/// 2024-06-01T10:00:00Z: the Unix time of [`BASE_MONOTONIC_NS`].
pub const BASE_UNIX_NS: i64 = 1_717_236_000_000_000_000;
/// The kernel (CLOCK_MONOTONIC) time the traffic starts at.
pub const BASE_MONOTONIC_NS: u64 = 5_000_000_000_000;

const SELECT1: &str = include_str!("../../tests/fixtures/clickhouse/cli_select1.chunks");
const US: u64 = 1_000;

/// What to make.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// Connections, all opened at the start.
    pub connections: usize,
    /// Requests in all (round robin over the connections).
    pub requests: u64,
    /// Event time the requests are spread over.
    pub span_ns: u64,
    /// Share of the connections that are ClickHouse clients, in percent (the rest ZooKeeper).
    pub clickhouse_percent: u64,
    /// Close every connection after its last request (otherwise they stay open to the end).
    pub close_at_end: bool,
    /// Bytes of an unfinished request left on every ZooKeeper connection at the end (held in
    /// the connection's buffer until the replay ends).
    pub pending_bytes: usize,
    pub seed: u64,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            connections: 100,
            requests: 100_000,
            span_ns: 30_000_000_000,
            clickhouse_percent: 30,
            close_at_end: true,
            pending_bytes: 0,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Produced {
    /// Requests whose answer is in the recording: the rows `requests` must hold.
    pub requests: u64,
    pub clickhouse: u64,
    pub zookeeper: u64,
    pub events: u64,
    /// Size of the recording file.
    pub file_bytes: u64,
}

struct Conn {
    id: ConnId,
    protocol: Protocol,
    /// Earliest time (µs) its next exchange may start.
    free_at_us: u64,
    xid: i32,
}

/// Raw events waiting for their timestamp, oldest first; `seq` keeps one connection's
/// events of equal time in the order they were made.
#[derive(Default)]
struct Pending {
    heap: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    seq: u64,
}

impl Pending {
    fn push(&mut self, ts_ns: u64, raw: Vec<u8>) {
        self.seq += 1;
        self.heap.push(Reverse((ts_ns, self.seq, raw)));
    }

    /// Writes every event older than `before_ns`; returns how many.
    fn write_before(
        &mut self,
        before_ns: u64,
        out: &mut RecordingWriter,
    ) -> Result<u64, RecordingError> {
        let mut n = 0;
        while self
            .heap
            .peek()
            .is_some_and(|Reverse((ts, ..))| *ts < before_ns)
        {
            let Reverse((_, _, raw)) = self.heap.pop().expect("peeked");
            out.write(Tag::KernelEvent, &[&raw])?;
            n += 1;
        }
        Ok(n)
    }
}

fn header(conn: &Conn, ts_ns: u64, kind: EventKind, flow: Flow) -> Header {
    Header {
        kind,
        ts_ns,
        conn: conn.id,
        tid: conn.id.tgid,
        protocol: Some(conn.protocol),
        role: Role::Client,
        flow,
    }
}

/// The `SELECT 1` fixture split into its handshake (Hello both ways) and one exchange.
struct ClickHouseScript {
    hello: Vec<(Direction, Vec<u8>)>,
    /// Ping, Pong, Query, Data, Data, EndOfStream.
    exchange: Vec<(Direction, Vec<u8>)>,
}

fn clickhouse_script() -> ClickHouseScript {
    let chunks: Vec<(Direction, Vec<u8>)> = parse_chunks(SELECT1)
        .expect("cli_select1.chunks parses")
        .into_iter()
        .map(|c| (c.dir, c.bytes))
        .collect();
    assert_eq!(
        chunks.len(),
        8,
        "cli_select1.chunks: hello, hello, then 6 chunks"
    );
    ClickHouseScript {
        hello: chunks[..2].to_vec(),
        exchange: chunks[2..].to_vec(),
    }
}

fn flow_of(dir: Direction) -> Flow {
    // The observed process is the client: it writes requests and reads answers.
    if dir == Direction::ClientToServer {
        Flow::Egress
    } else {
        Flow::Ingress
    }
}

/// Writes the recording of `traffic` to `path`.
pub fn write_recording(path: &Path, traffic: &Traffic) -> Result<Produced, RecordingError> {
    let mut out = RecordingWriter::create(
        path,
        &RecordingHeader {
            monotonic_to_unix_ns: BASE_UNIX_NS - BASE_MONOTONIC_NS as i64,
            capture_bytes: 65536,
            n_cpus: 1,
        },
    )?;
    let script = clickhouse_script();
    let mut rng = Rng(traffic.seed | 1);
    let mut pending = Pending::default();
    let mut produced = Produced::default();
    let base_us = BASE_MONOTONIC_NS / US;
    let zk_server: SocketAddr = "10.1.0.1:2181".parse().expect("address");
    let ch_server: SocketAddr = "10.1.0.2:9000".parse().expect("address");

    let mut conns: Vec<Conn> = (0..traffic.connections)
        .map(|c| {
            let clickhouse =
                (c as u64 * 100 / traffic.connections.max(1) as u64) < traffic.clickhouse_percent;
            Conn {
                id: ConnId {
                    tgid: 1000 + (c / 100) as u32,
                    fd: 10 + c as i32,
                    start_ns: BASE_MONOTONIC_NS - 1_000 * US,
                },
                protocol: if clickhouse {
                    Protocol::ClickHouse
                } else {
                    Protocol::ZooKeeper
                },
                free_at_us: base_us,
                xid: 0,
            }
        })
        .collect();
    for (c, conn) in conns.iter_mut().enumerate() {
        let client: SocketAddr = format!(
            "10.0.{}.{}:{}",
            c / 250 % 256,
            c % 250 + 1,
            20000 + c % 40000
        )
        .parse()
        .expect("address");
        let (server, comm) = match conn.protocol {
            Protocol::ClickHouse => (ch_server, "python3"),
            _ => (zk_server, "clickhouse-serv"),
        };
        let open_ts = (base_us - 500) * US;
        let h = header(conn, open_ts, EventKind::Open, Flow::Egress);
        pending.push(open_ts, build::open(&h, client, server, comm));
        if conn.protocol == Protocol::ClickHouse {
            for (i, (dir, bytes)) in script.hello.iter().enumerate() {
                let ts = (base_us - 400 + 10 * i as u64) * US;
                let h = header(conn, ts, EventKind::Data, flow_of(*dir));
                pending.push(ts, build::data(&h, bytes.len() as u64, bytes));
            }
        }
    }

    let span_us = (traffic.span_ns / US).max(1);
    let mut last_watermark_us = 0u64;
    for i in 0..traffic.requests {
        let nominal_us = base_us + i * span_us / traffic.requests.max(1);
        // Every event made from here on is at or after `nominal_us`.
        if nominal_us >= last_watermark_us + 1_000 {
            produced.events += pending.write_before(nominal_us * US, &mut out)?;
            out.write(Tag::Watermark, &[&(nominal_us * US).to_le_bytes()])?;
            last_watermark_us = nominal_us;
        }
        let n_conns = conns.len() as u64;
        let conn = &mut conns[(i % n_conns) as usize];
        // Log-uniform durations between 20 µs and 20 ms.
        let duration_us = (20.0 * 1000f64.powf(rng.unit())) as u64;
        match conn.protocol {
            Protocol::ClickHouse => {
                // Ping 20 µs and Pong 10 µs before the query; the answer's two Data
                // packets halfway; EndOfStream at the end.
                let start = nominal_us.max(conn.free_at_us + 20);
                let times = [
                    start - 20,
                    start - 10,
                    start,
                    start + duration_us / 2,
                    start + duration_us / 2 + 1,
                    start + duration_us,
                ];
                for ((dir, bytes), ts_us) in script.exchange.iter().zip(times) {
                    let h = header(conn, ts_us * US, EventKind::Data, flow_of(*dir));
                    pending.push(ts_us * US, build::data(&h, bytes.len() as u64, bytes));
                }
                conn.free_at_us = start + duration_us + 1;
                produced.clickhouse += 1;
            }
            _ => {
                let start = nominal_us.max(conn.free_at_us);
                conn.xid += 1;
                let (request, reply) = if rng.next_u64().is_multiple_of(10) {
                    (
                        path_request(conn.xid, 3, "/clickhouse/task_queue/missing", true),
                        reply(conn.xid, 0x1_0000_0000 + i as i64, -101, &[]),
                    )
                } else {
                    let path = format!(
                        "/clickhouse/tables/{:02}/events/replicas/r{}/queue",
                        rng.next_u64() % 20,
                        rng.next_u64() % 3
                    );
                    let mut data = 5u32.to_be_bytes().to_vec();
                    data.extend_from_slice(b"hello");
                    data.extend_from_slice(&[0; 68]);
                    (
                        path_request(conn.xid, 4, &path, false),
                        reply(conn.xid, 0x1_0000_0000 + i as i64, 0, &data),
                    )
                };
                let h = header(conn, start * US, EventKind::Data, Flow::Egress);
                pending.push(start * US, build::data(&h, request.len() as u64, &request));
                let end = start + duration_us;
                let h = header(conn, end * US, EventKind::Data, Flow::Ingress);
                pending.push(end * US, build::data(&h, reply.len() as u64, &reply));
                conn.free_at_us = end + 1;
                produced.zookeeper += 1;
            }
        }
        produced.requests += 1;
    }

    let end_us = conns.iter().map(|c| c.free_at_us).max().unwrap_or(base_us) + 1;
    for conn in &mut conns {
        let ts = conn.free_at_us.max(end_us - 1) * US;
        if traffic.pending_bytes > 0 && conn.protocol == Protocol::ZooKeeper {
            // The first `pending_bytes` of a getData request whose frame is longer.
            conn.xid += 1;
            let path = "/p".repeat(traffic.pending_bytes / 2 + 32);
            let mut partial = path_request(conn.xid, 4, &path, false);
            partial.truncate(traffic.pending_bytes);
            let h = header(conn, ts, EventKind::Data, Flow::Egress);
            pending.push(ts, build::data(&h, partial.len() as u64, &partial));
        }
        if traffic.close_at_end {
            let h = header(conn, ts + US, EventKind::Close, Flow::Egress);
            pending.push(ts + US, build::close(&h));
        }
    }
    produced.events += pending.write_before(u64::MAX, &mut out)?;
    out.write(Tag::Watermark, &[&((end_us + 10) * US).to_le_bytes()])?;
    out.finish()?;
    produced.file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(produced)
}
