#![allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85
//! Writes a small sample of the three tables into a directory, for `sinks/tests/read_back.py`
//! and for trying readers: `cargo run -p l7tap-sinks --example write_sample -- OUT_DIR`.
//!
//! Rows: ClickHouse queries (ok, error, cancelled) and ZooKeeper requests (incl. a multi and a
//! watch notification) around a UTC hour boundary, their intervals, and capture counters.
use std::sync::Arc;

use l7tap_aggregate::{merge_interval_rows, Aggregator, AggregatorConfig};
use l7tap_protocols::{
    CapturedBatch, ClickHouseDetails, ConnectionInfo, Details, Protocol, QueryKind, RequestRecord,
    Side, Status, ZooKeeperDetails,
};
use l7tap_sinks::{CaptureStatsRow, ParquetSink, SinkConfig};

/// 2024-06-01T10:59:30Z.
const BASE_UNIX_NS: i64 = 1_717_239_570_000_000_000;
const BASE_MONOTONIC_NS: u64 = 1_000_000_000_000;
const OFFSET_NS: i64 = BASE_UNIX_NS - BASE_MONOTONIC_NS as i64;

fn connection(side: Side, client: &str, server: &str, comm: &str) -> Arc<ConnectionInfo> {
    Arc::new(ConnectionInfo {
        pid: 1234,
        comm: comm.into(),
        cgroup_id: 4321,
        side,
        client_addr: client.parse().unwrap(),
        server_addr: server.parse().unwrap(),
        identity: Default::default(),
        tls: false,
    })
}

/// Appends request `i` of `conn` to `batch`.
fn request(batch: &mut CapturedBatch, conn: &Arc<ConnectionInfo>, i: u64) {
    let text = &mut batch.records.text;
    let start_ns = BASE_MONOTONIC_NS + i * 50_000_000;
    let duration_ns = 20_000 + (i * 7_919 % 200) * 10_000;
    let (protocol, operation, query, details, status) = if conn.server_addr.port() == 9000 {
        let status = match i % 20 {
            0 => Status::Error,
            7 => Status::Cancelled,
            _ => Status::Ok,
        };
        (
            Protocol::ClickHouse,
            "SELECT",
            text.push(&format!("SELECT count() FROM events WHERE id = {i}")),
            Details::ClickHouse(ClickHouseDetails {
                query_id: text.push(&format!("00000000-0000-4000-8000-{i:012}")),
                query_kind: Some(QueryKind::Initial),
                initial_query_id: text.push(&format!("00000000-0000-4000-8000-{i:012}")),
                user: text.push("default"),
                client_name: text.push("ClickHouse client"),
                client_version: text.push("24.3.1"),
                revision: 54467,
                rows_read: i * 10,
                bytes_read: i * 80,
                result_rows: 1,
                ..Default::default()
            }),
            status,
        )
    } else {
        let multi = i % 5 == 0;
        (
            Protocol::ZooKeeper,
            if multi { "multi" } else { "getData" },
            text.push(&format!("/clickhouse/tables/{}/replicas", i % 3)),
            Details::ZooKeeper(ZooKeeperDetails {
                xid: i as i32,
                zxid: 0x1_0000_0000 + i as i64,
                session_id: Some(0x0100_0000_0000_0042),
                watch: i % 2 == 0,
                multi_ops: if multi {
                    text.push("create,setData")
                } else {
                    Default::default()
                },
                notification: (i % 7 == 0).then_some((3, 3)),
                ..Default::default()
            }),
            if i % 11 == 0 {
                Status::Error
            } else {
                Status::Ok
            },
        )
    };
    let failed = status == Status::Error;
    let error_message = failed.then(|| text.push("no such thing"));
    batch.push(
        conn.clone(),
        RequestRecord {
            protocol,
            start_ns,
            end_ns: start_ns + duration_ns,
            operation,
            status,
            error_code: failed.then_some(if protocol == Protocol::ClickHouse {
                60
            } else {
                -101
            }),
            error_name: failed.then_some(if protocol == Protocol::ClickHouse {
                "UNKNOWN_TABLE"
            } else {
                "NoNode"
            }),
            error_message,
            query: Some(query),
            query_truncated: false,
            bytes_sent: 100 + i,
            bytes_received: 200 + i,
            details,
        },
    );
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: write_sample OUT_DIR");
    let mut sink = ParquetSink::new(SinkConfig::new(&out, "sample-host", OFFSET_NS)).unwrap();
    let aggregator_config = AggregatorConfig {
        monotonic_to_unix_offset_ns: OFFSET_NS,
        ..AggregatorConfig::default()
    };
    let mut actors = [
        Aggregator::new(aggregator_config).unwrap(),
        Aggregator::new(aggregator_config).unwrap(),
    ];
    let conns = [
        connection(
            Side::Client,
            "10.0.0.1:50000",
            "10.0.0.2:9000",
            "clickhouse-clie",
        ),
        connection(
            Side::Server,
            "10.0.0.3:41000",
            "10.0.0.2:9000",
            "clickhouse-serv",
        ),
        connection(
            Side::Client,
            "[2001:db8::5]:40000",
            "[2001:db8::9]:2181",
            "clickhouse-serv",
        ),
    ];
    // 60 s of traffic from 10:59:30 to 11:00:30, 20 requests per second.
    let mut batch = CapturedBatch::default();
    for i in 0..1200 {
        request(&mut batch, &conns[(i % 3) as usize], i);
        let captured = batch.get(batch.len() - 1).expect("just pushed");
        sink.push_request(&captured);
        actors[(i % 2) as usize].record(&captured);
    }
    let until = BASE_UNIX_NS + 120_000_000_000;
    let rows = actors
        .iter_mut()
        .flat_map(|a| a.flush_until(until))
        .collect();
    for row in merge_interval_rows(rows).unwrap() {
        sink.push_interval(&row);
    }
    for window in 0..6 {
        for cpu in [Some(0), Some(1), None] {
            sink.push_capture_stats(&CaptureStatsRow {
                window_start_unix_ns: BASE_UNIX_NS + window * 10_000_000_000,
                window_ns: 10_000_000_000,
                cpu,
                events: 400,
                bytes: 64_000,
                connections: 3,
                ..Default::default()
            });
        }
    }
    sink.finish().unwrap();
    for file in sink.take_committed_files() {
        println!(
            "{} {} rows {} bytes",
            file.path.display(),
            file.rows,
            file.bytes
        );
    }
}
