//! Record factories shared by the aggregator's integration tests and the sink's (which include
//! this file): connections, ClickHouse and ZooKeeper requests at chosen times, a seeded
//! workload, and a deterministic random number generator.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use l7tap_protocols::{
    CapturedBatch, ClickHouseDetails, ConnectionInfo, Details, Protocol, QueryKind, RequestRecord,
    Side, Status, ZooKeeperDetails,
};

/// 2024-06-01T10:00:00Z in Unix ns.
pub const BASE_UNIX_NS: i64 = 1_717_236_000_000_000_000;
/// CLOCK_MONOTONIC value that corresponds to `BASE_UNIX_NS`.
pub const BASE_MONOTONIC_NS: u64 = 5_000_000_000_000;
/// The offset the sink and aggregator are configured with.
pub const OFFSET_NS: i64 = BASE_UNIX_NS - BASE_MONOTONIC_NS as i64;

pub const SECOND: u64 = 1_000_000_000;
/// The aggregator's default window.
pub const WINDOW: u64 = 10 * SECOND;

pub fn conn(side: Side, client: &str, server: &str, comm: &str) -> Arc<ConnectionInfo> {
    Arc::new(ConnectionInfo {
        pid: 4242,
        comm: comm.to_string(),
        cgroup_id: 77,
        side,
        client_addr: client.parse::<SocketAddr>().unwrap(),
        server_addr: server.parse::<SocketAddr>().unwrap(),
        identity: Default::default(),
        tls: false,
    })
}

/// A ClickHouse query starting `start_offset_ns` after `BASE_UNIX_NS`.
pub fn clickhouse_request(
    conn: &Arc<ConnectionInfo>,
    start_offset_ns: u64,
    duration_ns: u64,
    query: &str,
    status: Status,
) -> CapturedBatch {
    let start_ns = BASE_MONOTONIC_NS + start_offset_ns;
    let mut batch = CapturedBatch::default();
    let text = &mut batch.records.text;
    let error_message =
        (status == Status::Error).then(|| text.push("Table default.nope does not exist"));
    let query = Some(text.push(query));
    let query_id = text.push("9f1c2d4e-0000-4000-8000-000000000001");
    let details = ClickHouseDetails {
        query_id,
        query_kind: Some(QueryKind::Initial),
        initial_query_id: query_id,
        user: text.push("default"),
        client_name: text.push("ClickHouse client"),
        client_version: text.push("24.3.1"),
        revision: 54467,
        rows_read: 1000,
        bytes_read: 8000,
        rows_written: 0,
        bytes_written: 0,
        result_rows: 10,
        compressed: false,
        ..Default::default()
    };
    batch.push(
        conn.clone(),
        RequestRecord {
            protocol: Protocol::ClickHouse,
            start_ns,
            end_ns: start_ns + duration_ns,
            operation: "SELECT",
            status,
            error_code: (status == Status::Error).then_some(60),
            error_name: (status == Status::Error).then_some("UNKNOWN_TABLE"),
            error_message,
            query,
            query_truncated: false,
            bytes_sent: 120,
            bytes_received: 3400,
            details: Details::ClickHouse(details),
        },
    );
    batch
}

/// A ZooKeeper request starting `start_offset_ns` after `BASE_UNIX_NS`.
pub fn zookeeper_request(
    conn: &Arc<ConnectionInfo>,
    start_offset_ns: u64,
    duration_ns: u64,
    operation: &'static str,
    path: &str,
    status: Status,
) -> CapturedBatch {
    let start_ns = BASE_MONOTONIC_NS + start_offset_ns;
    let mut batch = CapturedBatch::default();
    let text = &mut batch.records.text;
    let query = Some(text.push(path));
    let multi_ops = if operation == "multi" {
        text.push("create,setData")
    } else {
        Default::default()
    };
    batch.push(
        conn.clone(),
        RequestRecord {
            protocol: Protocol::ZooKeeper,
            start_ns,
            end_ns: start_ns + duration_ns,
            operation,
            status,
            error_code: (status == Status::Error).then_some(-101),
            error_name: (status == Status::Error).then_some("NoNode"),
            error_message: None,
            query,
            query_truncated: false,
            bytes_sent: 40,
            bytes_received: 60,
            details: Details::ZooKeeper(ZooKeeperDetails {
                xid: 17,
                zxid: 0x1_0000_0042,
                session_id: Some(0x0100_0000_0000_0001),
                watch: true,
                multi_ops,
                notification: None,
                ..Default::default()
            }),
        },
    );
    batch
}

/// Requests over three windows, several keys, log-uniform durations from 2 µs to 20 s.
pub fn workload(count: usize, seed: u64) -> CapturedBatch {
    let conns = [
        conn(
            Side::Client,
            "10.0.0.1:1000",
            "10.0.0.9:2181",
            "clickhouse-serv",
        ),
        conn(
            Side::Client,
            "10.0.0.1:1001",
            "10.0.0.9:2181",
            "clickhouse-serv",
        ),
        conn(
            Side::Client,
            "10.0.0.2:1000",
            "10.0.0.9:2181",
            "clickhouse-serv",
        ),
        conn(
            Side::Server,
            "10.0.0.3:5000",
            "10.0.0.9:9000",
            "clickhouse-serv",
        ),
    ];
    let operations = ["getData", "exists", "create", "multi"];
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let c = &conns[(rng.next_u64() % conns.len() as u64) as usize];
            let duration = (2_000.0 * 10f64.powf(rng.next_f64() * 7.0)) as u64;
            // Whole microseconds, so `ts` (µs) + duration gives the end time exactly.
            let end = 1_000 * (rng.next_u64() % (3 * WINDOW / 1_000)) + 25 * SECOND;
            let start = (end - duration) / 1_000 * 1_000;
            let status = if rng.next_u64() % 10 < 1 {
                Status::Error
            } else {
                Status::Ok
            };
            if c.side == Side::Server {
                clickhouse_request(c, start, end - start, "SELECT 1", status)
            } else {
                let op = operations[(rng.next_u64() % operations.len() as u64) as usize];
                zookeeper_request(c, start, end - start, op, "/q", status)
            }
        })
        .collect()
}

/// Deterministic pseudo-random numbers (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
