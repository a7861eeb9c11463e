//! Readers whose memory follows the data, not the time span it covers: two short captures a
//! month apart, and a year apart, in one output directory; `heatmap` (PNG and HTML) and
//! `report` must finish quickly and stay under 200 MiB + 2× the input's size of peak memory
//! (in a memory cgroup of their own: root).
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use l7tap_aggregate::{merge_interval_rows, Aggregator, AggregatorConfig};
use l7tap_benches::process::{run_measured, MemoryCgroup};
use l7tap_protocols::{
    CapturedBatch, ConnectionInfo, Details, Protocol, RequestRecord, Side, Status,
};
use l7tap_sinks::{CaptureStatsRow, ParquetSink, SinkConfig};
use serde_json::Value;

/// 2024-06-01T10:00:00Z in Unix ns, and the CLOCK_MONOTONIC value that stands for it.
const BASE_UNIX_NS: i64 = 1_717_236_000_000_000_000;
const BASE_MONOTONIC_NS: u64 = 5_000_000_000_000;
const OFFSET_NS: i64 = BASE_UNIX_NS - BASE_MONOTONIC_NS as i64;
const MS: u64 = 1_000_000;
const DAY_NS: u64 = 86_400_000_000_000;
const MIB: u64 = 1 << 20;

fn connection() -> Arc<ConnectionInfo> {
    Arc::new(ConnectionInfo {
        pid: 100,
        comm: "app".to_string(),
        cgroup_id: 1,
        side: Side::Client,
        client_addr: "10.0.0.2:40001".parse::<SocketAddr>().unwrap(),
        server_addr: "10.0.0.1:9000".parse::<SocketAddr>().unwrap(),
        identity: Default::default(),
        tls: false,
    })
}

/// One query starting `start_ns` after the base time.
fn query(
    conn: &Arc<ConnectionInfo>,
    start_ns: u64,
    duration_ns: u64,
    error: bool,
) -> CapturedBatch {
    let start_ns = BASE_MONOTONIC_NS + start_ns;
    let mut batch = CapturedBatch::default();
    let query = Some(batch.records.text.push("SELECT 1"));
    batch.push(
        conn.clone(),
        RequestRecord {
            protocol: Protocol::ClickHouse,
            start_ns,
            end_ns: start_ns + duration_ns,
            operation: "SELECT",
            status: if error { Status::Error } else { Status::Ok },
            error_code: error.then_some(60),
            error_name: error.then_some("UNKNOWN_TABLE"),
            error_message: None,
            query,
            query_truncated: false,
            bytes_sent: 100,
            bytes_received: 200,
            details: Details::ClickHouse(Default::default()),
        },
    );
    batch
}

/// Two captures of 30 s each (a query every 100 ms, every tenth slow, every 50th failing, and
/// capture_stats for three 10 s windows), the second `apart_days` after the first.
fn write_two_captures(dir: &Path, apart_days: u64) {
    let conn = connection();
    let mut aggregator = Aggregator::new(AggregatorConfig {
        monotonic_to_unix_offset_ns: OFFSET_NS,
        ..AggregatorConfig::default()
    })
    .unwrap();
    let mut sink = ParquetSink::new(SinkConfig::new(dir, "testhost", OFFSET_NS)).unwrap();
    for capture_start in [0, apart_days * DAY_NS] {
        for i in 0..300u64 {
            let duration = if i % 10 == 0 {
                210 * MS
            } else {
                MS + i * 1_000
            };
            let batch = query(&conn, capture_start + i * 100 * MS, duration, i % 50 == 0);
            for request in batch.iter() {
                aggregator.record(&request);
                sink.push_request(&request);
            }
        }
        for window in 0..3 {
            sink.push_capture_stats(&CaptureStatsRow {
                window_start_unix_ns: BASE_UNIX_NS + (capture_start + window * 10_000 * MS) as i64,
                window_ns: 10_000_000_000,
                cpu: None,
                events: 1000,
                ..CaptureStatsRow::default()
            });
        }
        let rows =
            aggregator.flush_until(BASE_UNIX_NS + (capture_start + 3_600 * 1_000 * MS) as i64);
        for row in merge_interval_rows(rows).unwrap() {
            sink.push_interval(&row);
        }
    }
    sink.finish().unwrap();
}

/// Bytes of the largest file under `dir`.
fn largest_file(dir: &Path) -> u64 {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        largest = largest.max(if meta.is_dir() {
            largest_file(&entry.path())
        } else {
            meta.len()
        });
    }
    largest
}

fn assert_bounded(apart_days: u64) {
    let dir = tempfile::Builder::new()
        .prefix("l7tap-span-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("out");
    write_two_captures(&data, apart_days);
    let limit = 200 * MIB + 2 * largest_file(&data);
    let png = dir.path().join("map.png");
    let html = dir.path().join("map.html");
    let data = data.to_str().unwrap();
    let commands: [&[&str]; 3] = [
        &["heatmap", data, "--out", png.to_str().unwrap()],
        &["heatmap", data, "--out", html.to_str().unwrap()],
        &["report", data, "--format", "json"],
    ];
    for args in commands {
        let stdout = dir.path().join("stdout");
        let mut command = Command::new(env!("CARGO_BIN_EXE_l7tap"));
        command
            .args(args)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::null());
        let cgroup = MemoryCgroup::create("time-span").expect("a memory cgroup (root)");
        cgroup.join_before_exec(&mut command);
        let usage = run_measured(&mut command, None).unwrap();
        let peak = cgroup.peak_bytes().unwrap();
        eprintln!(
            "{apart_days} days apart: l7tap {}: exit {}, {:.2} s, peak memory {} MiB (limit {} MiB; wait4's RSS, with the test's own pages, {} MiB)",
            args[0..1]
                .iter()
                .chain(&args[2..])
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
            usage.exit_code,
            usage.wall.as_secs_f64(),
            peak / MIB,
            limit / MIB,
            usage.max_rss_bytes / MIB
        );
        assert_eq!(usage.exit_code, 0, "{args:?} failed");
        if args[0] == "heatmap" {
            // The stretch between the captures is one gap, labelled with its length.
            let summary: Value =
                serde_json::from_str(&std::fs::read_to_string(&stdout).unwrap()).unwrap();
            let gaps = summary["gaps"].as_array().unwrap();
            assert_eq!(gaps.len(), 1, "{summary}");
            let seconds = gaps[0].get("seconds").unwrap_or(&gaps[0]).as_i64().unwrap();
            assert!(
                seconds > apart_days as i64 * 86_400 - 3_600
                    && seconds < apart_days as i64 * 86_400,
                "{summary}"
            );
            // Both captures keep one column per second: 30 s each and the gap.
            assert_eq!(summary["column_us"], 1_000_000, "{summary}");
            assert_eq!(summary["columns"], 61, "{summary}");
        }
        if args[0] == "report" {
            // Rates are per second of capture (2 × 30 s), not diluted by the time between.
            let report: Value =
                serde_json::from_str(&std::fs::read_to_string(&stdout).unwrap()).unwrap();
            assert_eq!(report["seconds"], 60.0, "{report}");
            assert!(
                report["span_seconds"].as_f64().unwrap() > apart_days as f64 * 86_400.0,
                "{report}"
            );
            let client = &report["servers"][0]["clients"][0];
            assert_eq!(client["requests"], 600, "{report}");
            assert_eq!(client["requests_per_second"], 10.0, "{report}");
        }
        assert!(usage.wall < Duration::from_secs(60), "{args:?}: {usage:?}");
        assert!(
            peak < limit,
            "{args:?}: peak memory {peak}, limit {limit} ({usage:?})"
        );
    }
}

#[test]
fn two_captures_a_month_apart_take_the_memory_of_their_data() {
    assert_bounded(30);
}

#[test]
fn two_captures_a_year_apart_take_the_memory_of_their_data() {
    assert_bounded(365);
}
