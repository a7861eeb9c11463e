//! `l7tap report` and `l7tap heatmap` on a small dataset written with the sinks crate: a known
//! mix of fast ClickHouse queries, 210 ms ones and failing ones from two clients, plus a
//! ZooKeeper server seen from both sides (the report must prefer the server's view).
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use l7tap_aggregate::{merge_interval_rows, Aggregator, AggregatorConfig};
use l7tap_protocols::{
    CapturedBatch, ConnectionInfo, Details, Protocol, RequestRecord, Side, Status, ZooKeeperDetails,
};
use l7tap_sinks::{CaptureStatsRow, ParquetSink, SinkConfig};
use serde_json::Value;

/// 2024-06-01T10:00:00Z in Unix ns, and the CLOCK_MONOTONIC value that stands for it.
const BASE_UNIX_NS: i64 = 1_717_236_000_000_000_000;
const BASE_MONOTONIC_NS: u64 = 5_000_000_000_000;
const OFFSET_NS: i64 = BASE_UNIX_NS - BASE_MONOTONIC_NS as i64;
const MS: u64 = 1_000_000;
const CLICKHOUSE_SERVER: &str = "10.0.0.1:9000";
const SLOW_NS: u64 = 210 * MS;

/// A directory removed when the test ends.
fn temp_dir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("l7tap-report-{label}-"))
        .tempdir()
        .unwrap()
}

fn connection(side: Side, client: &str, server: &str, comm: &str) -> Arc<ConnectionInfo> {
    Arc::new(ConnectionInfo {
        pid: 100,
        comm: comm.to_string(),
        cgroup_id: 1,
        side,
        client_addr: client.parse::<SocketAddr>().unwrap(),
        server_addr: server.parse::<SocketAddr>().unwrap(),
        identity: Default::default(),
        tls: false,
    })
}

fn clickhouse_query(
    conn: &Arc<ConnectionInfo>,
    start_ms: u64,
    duration_ns: u64,
    query: &str,
    error: Option<&'static str>,
) -> CapturedBatch {
    let start_ns = BASE_MONOTONIC_NS + start_ms * MS;
    let mut batch = CapturedBatch::default();
    let text = &mut batch.records.text;
    let error_message = error.map(|e| text.push(&format!("{e} happened")));
    let query = Some(text.push(query));
    batch.push(
        conn.clone(),
        RequestRecord {
            protocol: Protocol::ClickHouse,
            start_ns,
            end_ns: start_ns + duration_ns,
            operation: "SELECT",
            status: if error.is_some() {
                Status::Error
            } else {
                Status::Ok
            },
            error_code: error.map(|_| 60),
            error_name: error,
            error_message,
            query,
            query_truncated: false,
            bytes_sent: 100,
            bytes_received: 200,
            details: Details::ClickHouse(Default::default()),
        },
    );
    batch
}

fn zookeeper_request(conn: &Arc<ConnectionInfo>, start_ms: u64, duration_ns: u64) -> CapturedBatch {
    let start_ns = BASE_MONOTONIC_NS + start_ms * MS;
    let mut batch = CapturedBatch::default();
    let query = Some(batch.records.text.push("/app/config"));
    batch.push(
        conn.clone(),
        RequestRecord {
            protocol: Protocol::ZooKeeper,
            start_ns,
            end_ns: start_ns + duration_ns,
            operation: "getData",
            status: Status::Ok,
            error_code: None,
            error_name: None,
            error_message: None,
            query,
            query_truncated: false,
            bytes_sent: 40,
            bytes_received: 60,
            details: Details::ZooKeeper(ZooKeeperDetails::default()),
        },
    );
    batch
}

/// Client A (10.0.0.2, `app-a`): 100 fast queries (1.00..1.99 ms), 20 of 210 ms, 10 failing
/// (2.5 ms, UNKNOWN_TABLE ×7, SYNTAX_ERROR ×3). Client B (10.0.0.3, `app-b`): 40 queries of 3 ms.
/// ZooKeeper 10.0.0.1:2181: 30 requests seen by the client (`zkcli`) and by the server (`java`).
fn sample_requests() -> CapturedBatch {
    let a = connection(Side::Client, "10.0.0.2:40001", CLICKHOUSE_SERVER, "app-a");
    let b = connection(Side::Client, "10.0.0.3:40002", CLICKHOUSE_SERVER, "app-b");
    let mut requests = CapturedBatch::default();
    for i in 0..100u64 {
        requests.append(clickhouse_query(
            &a,
            i * 150,
            MS + i * 10_000,
            "SELECT 1",
            None,
        ));
    }
    for i in 0..20u64 {
        requests.append(clickhouse_query(
            &a,
            3_000 + i * 300,
            SLOW_NS,
            "SELECT sleep(0.2)",
            None,
        ));
    }
    for i in 0..10u64 {
        let name = if i < 7 {
            "UNKNOWN_TABLE"
        } else {
            "SYNTAX_ERROR"
        };
        requests.append(clickhouse_query(
            &a,
            5_000 + i * 500,
            2_500_000,
            "SELECT * FROM nope",
            Some(name),
        ));
    }
    for i in 0..40u64 {
        requests.append(clickhouse_query(&b, i * 400, 3 * MS, "SELECT 2", None));
    }
    let zk_client = connection(Side::Client, "10.0.0.4:50000", "10.0.0.1:2181", "zkcli");
    let zk_server = connection(Side::Server, "10.0.0.4:50000", "10.0.0.1:2181", "java");
    for i in 0..30u64 {
        requests.append(zookeeper_request(&zk_client, i * 500, 600_000));
        requests.append(zookeeper_request(&zk_server, i * 500, 400_000));
    }
    requests
}

fn write_dataset(dir: &Path) {
    write_dataset_with(dir, default_stats);
}

/// Three 10 s windows of capture_stats, the second with lost samples.
fn default_stats(window: i64) -> CaptureStatsRow {
    CaptureStatsRow {
        window_start_unix_ns: BASE_UNIX_NS + window * 10_000_000_000,
        window_ns: 10_000_000_000,
        cpu: None,
        events: 1000,
        bytes: 50_000,
        lost_samples: if window == 1 { 5 } else { 0 },
        ..CaptureStatsRow::default()
    }
}

/// The sample requests and three 10 s windows of capture_stats, window `w` made by `stats(w)`.
fn write_dataset_with(dir: &Path, stats: impl Fn(i64) -> CaptureStatsRow) {
    write_requests(dir, sample_requests(), stats);
}

/// `requests`, their `intervals` and three 10 s windows of capture_stats made by `stats`.
fn write_requests(dir: &Path, requests: CapturedBatch, stats: impl Fn(i64) -> CaptureStatsRow) {
    let mut aggregator = Aggregator::new(AggregatorConfig {
        monotonic_to_unix_offset_ns: OFFSET_NS,
        ..AggregatorConfig::default()
    })
    .unwrap();
    let mut sink = ParquetSink::new(SinkConfig::new(dir, "testhost", OFFSET_NS)).unwrap();
    for request in requests.iter() {
        aggregator.record(&request);
        sink.push_request(&request);
    }
    let rows = aggregator.flush_until(BASE_UNIX_NS + 3_600_000_000_000);
    for row in merge_interval_rows(rows).unwrap() {
        sink.push_interval(&row);
    }
    for window in 0..3 {
        sink.push_capture_stats(&stats(window));
    }
    sink.finish().unwrap();
}

/// Resyncs where the capture cut or lost bytes are told apart from parser trouble: the
/// capture's health says which it was (`parse.gap_resyncs` in capture_stats' counters).
#[test]
fn capture_health_tells_capture_cuts_from_parser_trouble() {
    for (gap_resyncs, says) in [
        (3, "3 resyncs, each where the capture cut a payload"),
        (
            1,
            "(0 parse errors; 2 of 3 resyncs on bytes that were all captured)",
        ),
    ] {
        let dir = temp_dir("health");
        write_dataset_with(dir.path(), |window| CaptureStatsRow {
            window_start_unix_ns: BASE_UNIX_NS + window * 10_000_000_000,
            window_ns: 10_000_000_000,
            cpu: None,
            events: 1000,
            resyncs: u64::from(window == 2) * 3,
            counters: if window == 2 {
                vec![("parse.gap_resyncs", gap_resyncs)]
            } else {
                vec![]
            },
            ..CaptureStatsRow::default()
        });
        let report: Value = serde_json::from_str(&l7tap(&[
            "report",
            dir.path().to_str().unwrap(),
            "--format",
            "json",
        ]))
        .unwrap();
        let health = &report["capture_health"];
        assert_eq!(health["resyncs"], 3, "{health}");
        assert_eq!(
            health["resyncs_after_capture_gaps"], gap_resyncs,
            "{health}"
        );
        assert!(
            health["verdict"].as_str().unwrap().contains(says),
            "{health}"
        );
        let text = l7tap(&["report", dir.path().to_str().unwrap()]);
        assert!(text.contains(says), "{text}");
    }
}

/// The server side of local connections to 127.0.0.1:9000 from three applications behind one
/// address (`nightly.service` running `batch`: 10 queries, 2 failing; `dashboard`: 5; the
/// other server, `clickhouse-server :9001`: 3), and a remote client 10.0.0.9 (4 queries).
fn local_clients() -> CapturedBatch {
    let server = "127.0.0.1:9000";
    let local = |port: u16, pid: u32, process: &str, app: &str| {
        let mut info = (*connection(
            Side::Server,
            &format!("127.0.0.1:{port}"),
            server,
            "clickhouse-serv",
        ))
        .clone();
        info.identity.app = "clickhouse-server :9000".into();
        info.identity.peer = Some(l7tap_protocols::PeerIdentity {
            pid,
            process: process.into(),
            app: app.into(),
        });
        Arc::new(info)
    };
    let batch = local(40001, 11, "batch", "nightly.service");
    let dashboard = local(40002, 12, "dashboard", "dashboard");
    let other_server = local(40003, 13, "clickhouse-server", "clickhouse-server :9001");
    let remote = connection(Side::Server, "10.0.0.9:50000", server, "clickhouse-serv");
    let mut requests = CapturedBatch::default();
    for (conn, n, failing) in [
        (&batch, 10, 2),
        (&dashboard, 5, 0),
        (&other_server, 3, 0),
        (&remote, 4, 0),
    ] {
        for i in 0..n {
            let error = (i < failing).then_some("UNKNOWN_TABLE");
            requests.append(clickhouse_query(conn, i * 100, MS, "SELECT 1", error));
        }
    }
    requests
}

#[test]
fn report_rows_are_client_applications_and_regroup_by_process_or_address() {
    let dir = temp_dir("apps");
    write_requests(dir.path(), local_clients(), default_stats);
    let dir_arg = dir.path().to_str().unwrap();
    let rows = |extra: &[&str]| -> Vec<(String, i64, i64, Value)> {
        let report: Value = serde_json::from_str(&l7tap(
            &[&["report", dir_arg, "--format", "json"], extra].concat(),
        ))
        .unwrap();
        let mut rows: Vec<_> = server(&report, "127.0.0.1:9000")["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["client"].as_str().unwrap().to_string(),
                    c["requests"].as_i64().unwrap(),
                    c["errors"].as_i64().unwrap(),
                    c["process"].clone(),
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    let process = |p: &str| Value::from(p);
    assert_eq!(
        rows(&[]),
        [
            ("10.0.0.9".to_string(), 4, 0, Value::Null),
            (
                "clickhouse-server :9001".to_string(),
                3,
                0,
                process("clickhouse-server")
            ),
            ("dashboard".to_string(), 5, 0, process("dashboard")),
            ("nightly.service".to_string(), 10, 2, process("batch")),
        ]
    );
    let by_process: Vec<(String, i64)> = rows(&["--group-by", "process"])
        .into_iter()
        .map(|r| (r.0, r.1))
        .collect();
    assert_eq!(
        by_process,
        [
            ("10.0.0.9".to_string(), 4),
            ("batch".to_string(), 10),
            ("clickhouse-server".to_string(), 3),
            ("dashboard".to_string(), 5),
        ]
    );
    let by_address: Vec<(String, i64, i64)> = rows(&["--group-by", "address"])
        .into_iter()
        .map(|r| (r.0, r.1, r.2))
        .collect();
    assert_eq!(
        by_address,
        [
            ("10.0.0.9".to_string(), 4, 0),
            ("127.0.0.1".to_string(), 18, 2)
        ]
    );
    let only = rows(&["--app", "nightly.service"]);
    assert_eq!(only.len(), 1);
    assert_eq!((only[0].1, only[0].2), (10, 2));
    // Error names reach the application's row.
    let report: Value =
        serde_json::from_str(&l7tap(&["report", dir_arg, "--format", "json"])).unwrap();
    let batch = server(&report, "127.0.0.1:9000")["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == "nightly.service")
        .unwrap()
        .clone();
    assert_eq!(batch["top_errors"][0]["name"], "UNKNOWN_TABLE");
    assert_eq!(batch["top_errors"][0]["count"], 2);
    assert_eq!(batch["address"], "127.0.0.1");
}

fn l7tap(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_l7tap"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "l7tap {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn server<'a>(report: &'a Value, address: &str) -> &'a Value {
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server"] == address)
        .unwrap_or_else(|| panic!("no server {address} in {report:#}"))
}

fn assert_near(actual: f64, expected: f64, relative: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= expected * relative,
        "{what}: {actual} is not within {relative} of {expected}"
    );
}

#[test]
fn report_counts_errors_and_quantiles_per_client() {
    let dir = temp_dir("json");
    write_dataset(dir.path());
    let text = l7tap(&["report", dir.path().to_str().unwrap(), "--format", "json"]);
    let report: Value = serde_json::from_str(&text).unwrap();

    let clickhouse = server(&report, CLICKHOUSE_SERVER);
    assert_eq!(clickhouse["side"], "client");
    let clients = clickhouse["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2);
    // Sorted by requests: A (130) before B (40).
    let a = &clients[0];
    assert_eq!(a["client"], "10.0.0.2");
    assert_eq!(a["comm"], "app-a");
    assert_eq!(a["requests"], 130);
    assert_eq!(a["errors"], 10);
    assert_near(
        a["error_percent"].as_f64().unwrap(),
        1000.0 / 130.0,
        1e-9,
        "error %",
    );
    // Nearest rank over 130 sorted durations: the 65th is the fast query 64 (1.64 ms), the
    // 124th and 129th are 210 ms queries. The histogram keeps 3 significant digits.
    assert_near(a["p50_ns"].as_f64().unwrap(), 1_640_000.0, 0.01, "A p50");
    assert_near(
        a["p95_ns"].as_f64().unwrap(),
        SLOW_NS as f64,
        0.002,
        "A p95",
    );
    assert_near(
        a["p99_ns"].as_f64().unwrap(),
        SLOW_NS as f64,
        0.002,
        "A p99",
    );
    let top = a["top_errors"].as_array().unwrap();
    assert_eq!(top[0]["name"], "UNKNOWN_TABLE");
    assert_eq!(top[0]["count"], 7);
    assert_eq!(top[1]["name"], "SYNTAX_ERROR");
    assert_eq!(top[1]["count"], 3);

    let b = &clients[1];
    assert_eq!(b["client"], "10.0.0.3");
    assert_eq!(b["requests"], 40);
    assert_eq!(b["errors"], 0);
    assert_near(b["p50_ns"].as_f64().unwrap(), 3_000_000.0, 0.002, "B p50");
    assert_near(b["p99_ns"].as_f64().unwrap(), 3_000_000.0, 0.002, "B p99");

    let sli = &clickhouse["sli"];
    assert_eq!(sli["requests"], 170);
    assert_eq!(sli["errors"], 10);
    assert_near(
        sli["availability"].as_f64().unwrap(),
        160.0 / 170.0,
        1e-9,
        "availability",
    );
    // 150 of 170 are under 100 ms (the 20 slow ones are not).
    assert_eq!(sli["within_objective"], 150);
    assert_near(
        sli["latency_sli"].as_f64().unwrap(),
        150.0 / 170.0,
        1e-9,
        "latency SLI",
    );

    // ZooKeeper: seen from both sides, so only the server's rows (comm `java`) count.
    let zookeeper = server(&report, "10.0.0.1:2181");
    assert_eq!(zookeeper["side"], "server");
    let zk_clients = zookeeper["clients"].as_array().unwrap();
    assert_eq!(zk_clients.len(), 1);
    assert_eq!(zk_clients[0]["comm"], "java");
    assert_eq!(zk_clients[0]["requests"], 30);
    assert_near(
        zk_clients[0]["p99_ns"].as_f64().unwrap(),
        400_000.0,
        0.002,
        "ZK p99",
    );

    let health = &report["capture_health"];
    assert_eq!(health["events"], 3000);
    assert_eq!(health["lost_samples"], 5);
    assert_eq!(health["complete"], false);

    // Filters: protocol, and a time range that keeps only the first 10 s window.
    let only_zk: Value = serde_json::from_str(&l7tap(&[
        "report",
        dir.path().to_str().unwrap(),
        "--format",
        "json",
        "--protocol",
        "zookeeper",
    ]))
    .unwrap();
    assert_eq!(only_zk["servers"].as_array().unwrap().len(), 1);
    let first_window: Value = serde_json::from_str(&l7tap(&[
        "report",
        dir.path().to_str().unwrap(),
        "--format",
        "json",
        "--server",
        CLICKHOUSE_SERVER,
        "--since",
        "2024-06-01T10:00:00Z",
        "--until",
        "2024-06-01T10:00:10Z",
    ]))
    .unwrap();
    let a_first = &server(&first_window, CLICKHOUSE_SERVER)["clients"][0];
    // Requests belong to the window of their end: count those ending before 10:00:10.
    let fast = (0..100u64)
        .filter(|i| i * 150 * MS + MS + i * 10_000 < 10_000 * MS)
        .count();
    let slow = (0..20u64)
        .filter(|i| (3_000 + i * 300) * MS + SLOW_NS < 10_000 * MS)
        .count();
    let failing = (0..10u64)
        .filter(|i| (5_000 + i * 500) * MS + 2_500_000 < 10_000 * MS)
        .count();
    assert_eq!(a_first["requests"], (fast + slow + failing) as u64);
    assert_eq!(a_first["errors"], failing as u64);

    // The text report names the view and the health.
    let text = l7tap(&["report", dir.path().to_str().unwrap()]);
    assert!(text.contains("server's own view"), "{text}");
    assert!(text.contains("lost samples 5"), "{text}");
}

#[test]
fn heatmap_png_has_the_slow_band_and_the_errors_row() {
    let dir = temp_dir("png");
    write_dataset(dir.path());
    let png = dir.path().join("heatmap.png");
    let layout: Value = serde_json::from_str(&l7tap(&[
        "heatmap",
        dir.path().to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--server",
        CLICKHOUSE_SERVER,
    ]))
    .unwrap();
    let image = image::open(&png).unwrap().to_rgb8();
    assert_eq!(image.width() as u64, layout["width"].as_u64().unwrap());
    assert_eq!(image.height() as u64, layout["height"].as_u64().unwrap());
    assert_eq!((image.width(), image.height()), (1280, 720));
    let left = layout["plot_left"].as_i64().unwrap() as u32;
    let right = layout["plot_right"].as_i64().unwrap() as u32;
    let coloured_pixels = |top: i64, bottom: i64| {
        let (top, bottom) = (top.min(bottom) as u32 + 2, top.max(bottom) as u32 - 2);
        (left + 2..right - 2)
            .flat_map(|x| (top..bottom).map(move |y| (x, y)))
            .filter(|&(x, y)| image.get_pixel(x, y).0 != [255, 255, 255])
            .count()
    };
    let row = |bound: i64| {
        layout["latency_rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["upper_bound_ns"] == bound)
            .unwrap_or_else(|| panic!("no row for bound {bound} in {layout}"))
            .clone()
    };
    // 210 ms falls in the (200 ms, 500 ms] bucket.
    let slow = row(500_000_000);
    assert!(
        coloured_pixels(
            slow["top"].as_i64().unwrap(),
            slow["bottom"].as_i64().unwrap()
        ) > 0
    );
    // Nothing took 50..100 ms.
    let empty = row(100_000_000);
    assert_eq!(
        coloured_pixels(
            empty["top"].as_i64().unwrap(),
            empty["bottom"].as_i64().unwrap()
        ),
        0
    );
    let errors = &layout["errors_row"];
    assert!(
        coloured_pixels(
            errors["top"].as_i64().unwrap(),
            errors["bottom"].as_i64().unwrap()
        ) > 0
    );
}

#[test]
fn heatmap_html_is_self_contained_and_embeds_the_slow_requests() {
    let dir = temp_dir("html");
    write_dataset(dir.path());
    let html_path = dir.path().join("heatmap.html");
    let summary: Value = serde_json::from_str(&l7tap(&[
        "heatmap",
        dir.path().to_str().unwrap(),
        "--out",
        html_path.to_str().unwrap(),
        "--protocol",
        "clickhouse",
    ]))
    .unwrap();
    assert_eq!(summary["requests_embedded"], 170);
    assert_eq!(summary["requests_matched"], 170);
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script src") && !html.contains("<link"));
    assert_eq!(html.matches("SELECT sleep(0.2)").count(), 20);
    assert_eq!(html.matches(&format!(",{SLOW_NS},")).count(), 20);
    assert!(html.contains("<canvas"));
}
