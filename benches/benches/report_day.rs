//! `l7tap report` and `l7tap heatmap` over a day of data, next to the least any reader must do.
//!
//! ```sh
//! cargo build --release -p l7tap
//! cargo bench -p l7tap-benches --bench report_day
//! ```
//!
//! The first run writes a day of synthetic capture output with the sinks crate's own writers
//! (`ParquetSink` + `Aggregator`, as `l7tap capture` does): 600 requests/s for 24 h (51.84 M
//! `requests` rows in files rolled every 5 min of data time, 288 of them), the matching
//! `intervals` (10 s windows) and `capture_stats`. It goes to `L7TAP_REPORT_DAY_DIR` (default
//! `$TMPDIR/l7tap-report-day-v1`) and is reused while its `complete` marker is there; the
//! generation time is printed on its own. Then each command runs as a process (the binary of
//! `L7TAP_BIN`, default `target/release/l7tap` or `$CARGO_TARGET_DIR/release/l7tap`) a few
//! times, median wall time, printed next to the baseline measured in the same run: opening
//! every Parquet file of the day and reading its row count from the footer.
//!
//! Workload: 20 ClickHouse servers (3 sessions each) talking to one ZooKeeper (70 % of the
//! requests, 6 operations, 50 µs – 5 ms) and 40 application clients querying two ClickHouse
//! servers (SELECT and INSERT, 1 ms – 1 s, 2 % at 200 ms); 1 % errors.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use l7tap_aggregate::{merge_interval_rows, Aggregator, AggregatorConfig};
use l7tap_benches::rng::Rng;
use l7tap_protocols::{
    CapturedBatch, ClickHouseDetails, ConnectionInfo, Details, Protocol, QueryKind, RequestRecord,
    Side, Status, ZooKeeperDetails,
};
use l7tap_sinks::{CaptureStatsRow, ParquetSink, SinkConfig};
use parquet::file::reader::{FileReader, SerializedFileReader};

/// 2024-06-01T00:00:00Z in Unix ns, and the CLOCK_MONOTONIC value that stands for it.
const BASE_UNIX_NS: i64 = 1_717_200_000_000_000_000;
const BASE_MONOTONIC_NS: u64 = 5_000_000_000_000;
const OFFSET_NS: i64 = BASE_UNIX_NS - BASE_MONOTONIC_NS as i64;
const DAY_NS: u64 = 86_400_000_000_000;
const REQUESTS_PER_SECOND: u64 = 600;
const ROWS: u64 = REQUESTS_PER_SECOND * 86_400;
const WINDOW_NS: u64 = 10_000_000_000;
const RUNS: usize = 3;

fn connections() -> (Vec<Arc<ConnectionInfo>>, Vec<Arc<ConnectionInfo>>) {
    let conn = |i: u32, client: String, server: &str, comm: &str| {
        Arc::new(ConnectionInfo {
            pid: 1000 + i,
            comm: comm.to_string(),
            cgroup_id: 55,
            side: Side::Client,
            client_addr: client.parse().unwrap(),
            server_addr: server.parse().unwrap(),
            identity: Default::default(),
            tls: false,
        })
    };
    let zookeeper = (0..60)
        .map(|i| {
            conn(
                i,
                format!("10.0.0.{}:{}", i / 3 + 1, 40000 + i),
                "10.1.0.1:2181",
                "clickhouse-serv",
            )
        })
        .collect();
    let clickhouse = (0..40)
        .map(|i| {
            let server = if i % 2 == 0 {
                "10.1.0.2:9000"
            } else {
                "10.1.0.3:9000"
            };
            conn(
                100 + i,
                format!("10.0.1.{}:{}", i + 1, 50000 + i),
                server,
                "python3",
            )
        })
        .collect();
    (zookeeper, clickhouse)
}

fn request(
    rng: &mut Rng,
    i: u64,
    zookeeper: &[Arc<ConnectionInfo>],
    clickhouse: &[Arc<ConnectionInfo>],
    batch: &mut CapturedBatch,
) {
    let text = &mut batch.records.text;
    const ZK_OPS: [&str; 6] = [
        "getData",
        "exists",
        "getChildren",
        "create",
        "setData",
        "multi",
    ];
    let start_ns = BASE_MONOTONIC_NS + i * (DAY_NS / ROWS);
    let error = rng.next_u64().is_multiple_of(100);
    let status = if error { Status::Error } else { Status::Ok };
    let zookeeper_request = rng.next_u64() % 10 < 7;
    let (conn, protocol, operation, duration_ns, query, details, error_code, error_name) =
        if zookeeper_request {
            let conn = zookeeper[(rng.next_u64() % zookeeper.len() as u64) as usize].clone();
            let op = ZK_OPS[(rng.next_u64() % ZK_OPS.len() as u64) as usize];
            let path = text.push(&format!(
                "/clickhouse/tables/{}/events/replicas/r{}/queue",
                rng.next_u64() % 20,
                rng.next_u64() % 3
            ));
            (
                conn,
                Protocol::ZooKeeper,
                op,
                rng.log_uniform(50_000, 5_000_000),
                path,
                Details::ZooKeeper(ZooKeeperDetails {
                    xid: i as i32,
                    zxid: 0x1_0000_0000 + i as i64,
                    ..Default::default()
                }),
                -101,
                "NoNode",
            )
        } else {
            let conn = clickhouse[(rng.next_u64() % clickhouse.len() as u64) as usize].clone();
            let insert = rng.next_u64().is_multiple_of(5);
            let (operation, query) = if insert {
                (
                    "INSERT",
                    format!(
                        "INSERT INTO db.events_{} (ts, id, value) VALUES",
                        rng.next_u64() % 20
                    ),
                )
            } else {
                (
                    "SELECT",
                    format!(
                    "SELECT count(), avg(value) FROM db.table_{} WHERE user_id = {} GROUP BY key",
                    rng.next_u64() % 50,
                    rng.next_u64() % 1_000_000
                ),
                )
            };
            let duration_ns = if rng.next_u64().is_multiple_of(50) {
                200_000_000 + rng.next_u64() % 5_000_000
            } else {
                rng.log_uniform(1_000_000, 1_000_000_000)
            };
            (
                conn,
                Protocol::ClickHouse,
                operation,
                duration_ns,
                text.push(&query),
                Details::ClickHouse(ClickHouseDetails {
                    query_id: text.push(&format!("{:016x}", rng.next_u64())),
                    query_kind: Some(QueryKind::Initial),
                    user: text.push("default"),
                    client_name: text.push("python-driver"),
                    rows_read: rng.next_u64() % 1_000_000,
                    ..Default::default()
                }),
                60,
                "UNKNOWN_TABLE",
            )
        };
    batch.push(
        conn,
        RequestRecord {
            protocol,
            start_ns,
            end_ns: start_ns + duration_ns,
            operation,
            status,
            error_code: error.then_some(error_code),
            error_name: error.then_some(error_name),
            error_message: None,
            query: Some(query),
            query_truncated: false,
            bytes_sent: 100 + rng.next_u64() % 200,
            bytes_received: 50 + rng.next_u64() % 5_000,
            details,
        },
    );
}

/// Writes the day under `dir` as `l7tap capture` would: requests as they end, the aggregator's
/// windows once closed, one machine-wide `capture_stats` row per window, and the sink flushed
/// every 10 s of data time with a clock that follows the data (files roll at 5 min).
fn generate(dir: &Path) {
    let (zookeeper, clickhouse) = connections();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut aggregator = Aggregator::new(AggregatorConfig {
        monotonic_to_unix_offset_ns: OFFSET_NS,
        ..AggregatorConfig::default()
    })
    .unwrap();
    let mut sink = ParquetSink::new(SinkConfig::new(dir, "bench", OFFSET_NS)).unwrap();
    let clock = Instant::now();
    let mut next_flush_ns = BASE_MONOTONIC_NS + WINDOW_NS;
    let mut one = CapturedBatch::default();
    for i in 0..ROWS {
        one.clear();
        request(&mut rng, i, &zookeeper, &clickhouse, &mut one);
        let request = one.get(0).expect("one request");
        if request.record.start_ns >= next_flush_ns {
            // Windows ending 10 s ago are closed (the longest request is 1 s).
            let until_unix_ns = next_flush_ns as i64 + OFFSET_NS - WINDOW_NS as i64;
            for row in merge_interval_rows(aggregator.flush_until(until_unix_ns)).unwrap() {
                sink.push_interval(&row);
            }
            sink.push_capture_stats(&CaptureStatsRow {
                window_start_unix_ns: until_unix_ns - WINDOW_NS as i64,
                window_ns: WINDOW_NS,
                cpu: None,
                events: 4 * REQUESTS_PER_SECOND * 10,
                bytes: 1_000_000,
                ..CaptureStatsRow::default()
            });
            let data_time = Duration::from_nanos(next_flush_ns - BASE_MONOTONIC_NS);
            sink.try_flush_at(clock + data_time).unwrap();
            next_flush_ns += WINDOW_NS;
        }
        aggregator.record(&request);
        sink.push_request(&request);
    }
    for row in merge_interval_rows(aggregator.flush_until(i64::MAX)).unwrap() {
        sink.push_interval(&row);
    }
    sink.finish().unwrap();
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The baseline: every file opened and its row count read from the footer.
fn footer_row_counts(dir: &Path) -> (usize, i64, i64) {
    let (mut requests, mut intervals) = (0, 0);
    let files = parquet_files(dir);
    for path in &files {
        let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let rows = reader.metadata().file_metadata().num_rows();
        if path.starts_with(dir.join("requests")) {
            requests += rows;
        } else if path.starts_with(dir.join("intervals")) {
            intervals += rows;
        }
    }
    (files.len(), requests, intervals)
}

fn l7tap_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("L7TAP_BIN") {
        return bin.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("release/l7tap")
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn timed(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn run_l7tap(bin: &Path, args: &[&str]) {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "l7tap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported (one scenario).
    let dir = std::env::var_os("L7TAP_REPORT_DAY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("l7tap-report-day-v1"));
    let marker = dir.join("complete");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "report_day: writing {ROWS} requests rows (a day at {REQUESTS_PER_SECOND}/s) to {}",
            dir.display()
        );
        let start = Instant::now();
        generate(&dir);
        std::fs::write(&marker, format!("{ROWS}\n")).unwrap();
        println!(
            "report_day: generation took {:.1} s (not part of the figures below)",
            start.elapsed().as_secs_f64()
        );
    }
    let bin = l7tap_binary();
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --release -p l7tap` first, or set L7TAP_BIN",
        bin.display()
    );
    let (files, requests, intervals) = footer_row_counts(&dir);
    let bytes: u64 = parquet_files(&dir)
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    println!(
        "report_day: {files} files, {:.0} MiB: {requests} requests rows, {intervals} intervals rows",
        bytes as f64 / (1 << 20) as f64
    );
    assert!(requests >= 50_000_000, "only {requests} requests rows");

    let d = dir.to_str().unwrap();
    let scratch = std::env::temp_dir().join(format!("l7tap-report-day-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let png = scratch.join("day.png");
    let html = scratch.join("day.html");
    let (png, html) = (png.to_str().unwrap(), html.to_str().unwrap());
    let baseline = timed(RUNS, || {
        std::hint::black_box(footer_row_counts(&dir));
    });
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("report (whole day)", vec!["report", d]),
        (
            "report --format json (whole day)",
            vec!["report", d, "--format", "json"],
        ),
        (
            "report, one hour (--since/--until)",
            vec![
                "report",
                d,
                "--since",
                "2024-06-01T12:00:00Z",
                "--until",
                "2024-06-01T13:00:00Z",
            ],
        ),
        ("heatmap --out day.png", vec!["heatmap", d, "--out", png]),
        (
            "heatmap --out day.png, one hour",
            vec![
                "heatmap",
                d,
                "--out",
                png,
                "--since",
                "2024-06-01T12:00:00Z",
                "--until",
                "2024-06-01T13:00:00Z",
            ],
        ),
        ("heatmap --out day.html", vec!["heatmap", d, "--out", html]),
        (
            "heatmap --out html, 10 min (embeds rows)",
            vec![
                "heatmap",
                d,
                "--out",
                html,
                "--since",
                "2024-06-01T12:00:00Z",
                "--until",
                "2024-06-01T12:10:00Z",
            ],
        ),
    ];
    println!(
        "{:<40} {:>10} {:>12}",
        "median of 3 runs (wall)", "seconds", "× baseline"
    );
    println!(
        "{:<40} {:>10.3} {:>12}",
        "baseline: footer row counts, all files",
        baseline.as_secs_f64(),
        "1.0"
    );
    for (name, args) in cases {
        let t = timed(RUNS, || run_l7tap(&bin, &args));
        println!(
            "{:<40} {:>10.3} {:>12.1}",
            name,
            t.as_secs_f64(),
            t.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
