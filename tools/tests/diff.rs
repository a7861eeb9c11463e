//! `l7tap diff` on two outputs written with the sinks crate: in the candidate one
//! fingerprint's latency doubles and another's error rate rises from 1 % to 10 %; a third,
//! resampled from the same distribution, must not be flagged. Also `--fail-on`, its
//! validation before any work, and the HTML page.
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
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
const REQUESTS: u64 = 3_000;

fn temp_dir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("l7tap-diff-{label}-"))
        .tempdir()
        .unwrap()
}

fn connection(server: &str) -> Arc<ConnectionInfo> {
    Arc::new(ConnectionInfo {
        pid: 0,
        comm: String::new(),
        cgroup_id: 0,
        side: Side::Server,
        client_addr: "10.0.0.2:40001".parse::<SocketAddr>().unwrap(),
        server_addr: server.parse::<SocketAddr>().unwrap(),
        identity: Default::default(),
        tls: false,
    })
}

/// A deterministic spread in [0, 1): request `i` of stream `seed`.
fn spread(i: u64, seed: u64) -> f64 {
    let mut x = i
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(seed.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

struct Request<'a> {
    protocol: Protocol,
    at_ms: u64,
    duration_ns: u64,
    operation: &'static str,
    text: &'a str,
    error: bool,
}

fn push(batch: &mut CapturedBatch, conn: &Arc<ConnectionInfo>, r: Request<'_>) {
    let start_ns = BASE_MONOTONIC_NS + r.at_ms * 1_000_000;
    let query = Some(batch.records.text.push(r.text));
    let details = match r.protocol {
        Protocol::ZooKeeper => Details::ZooKeeper(ZooKeeperDetails::default()),
        Protocol::ClickHouse | Protocol::ClickHouseHttp => Details::ClickHouse(Default::default()),
    };
    batch.push(
        conn.clone(),
        RequestRecord {
            protocol: r.protocol,
            start_ns,
            end_ns: start_ns + r.duration_ns,
            operation: r.operation,
            status: if r.error { Status::Error } else { Status::Ok },
            error_code: r.error.then_some(60),
            error_name: r.error.then_some("UNKNOWN_TABLE"),
            error_message: None,
            query,
            query_truncated: false,
            bytes_sent: 100,
            bytes_received: 200,
            details,
        },
    );
}

/// Three shapes over 30 s: `orders` point queries (1-3 ms, ×`orders_scale`), `events`
/// counts with an IN-list (2-4 ms, one in `error_every` failing) and ZooKeeper `getData` of
/// numbered nodes (0.3-0.6 ms). `seed` resamples the spreads.
fn workload(seed: u64, orders_scale: f64, error_every: u64) -> CapturedBatch {
    let clickhouse = connection("10.0.0.1:9000");
    let zookeeper = connection("10.0.0.1:2181");
    let mut batch = CapturedBatch::default();
    for i in 0..REQUESTS {
        let at_ms = i * 10;
        let orders = format!("SELECT * FROM orders WHERE id = {}", i * 7 + seed);
        let duration = (1_000_000.0 + 2_000_000.0 * spread(i, seed)) * orders_scale;
        push(
            &mut batch,
            &clickhouse,
            Request {
                protocol: Protocol::ClickHouse,
                at_ms,
                duration_ns: duration as u64,
                operation: "SELECT",
                text: &orders,
                error: false,
            },
        );
        let days: Vec<String> = (0..(1 + i % 5))
            .map(|d| format!("'2024-06-0{}'", d + 1))
            .collect();
        let events = format!(
            "SELECT count() FROM events WHERE day IN ({})",
            days.join(", ")
        );
        push(
            &mut batch,
            &clickhouse,
            Request {
                protocol: Protocol::ClickHouse,
                at_ms: at_ms + 3,
                duration_ns: (2_000_000.0 + 2_000_000.0 * spread(i, seed + 100)) as u64,
                operation: "SELECT",
                text: &events,
                error: i % error_every == 0,
            },
        );
        let node = format!("/app/nodes/{}", i % 50);
        push(
            &mut batch,
            &zookeeper,
            Request {
                protocol: Protocol::ZooKeeper,
                at_ms: at_ms + 6,
                duration_ns: (300_000.0 + 300_000.0 * spread(i, seed + 200)) as u64,
                operation: "getData",
                text: &node,
                error: false,
            },
        );
    }
    batch
}

fn write_output(dir: &Path, requests: CapturedBatch) {
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
    for row in
        merge_interval_rows(aggregator.flush_until(BASE_UNIX_NS + 3_600_000_000_000)).unwrap()
    {
        sink.push_interval(&row);
    }
    for window in 0..3 {
        sink.push_capture_stats(&CaptureStatsRow {
            window_start_unix_ns: BASE_UNIX_NS + window * 10_000_000_000,
            window_ns: 10_000_000_000,
            ..CaptureStatsRow::default()
        });
    }
    sink.finish().unwrap();
}

fn l7tap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_l7tap"))
        .args(args)
        .output()
        .expect("run l7tap")
}

/// The group whose query text starts with `prefix`.
fn group<'a>(diff: &'a Value, prefix: &str) -> &'a Value {
    diff["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["query"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no group {prefix:?} in {diff:#}"))
}

fn quantile<'a>(group: &'a Value, name: &str) -> &'a Value {
    group["quantiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["quantile"] == name)
        .unwrap()
}

#[test]
fn doubled_latency_and_risen_error_rate_are_flagged_and_a_resample_is_not() {
    let baseline = temp_dir("baseline");
    let candidate = temp_dir("candidate");
    write_output(baseline.path(), workload(1, 1.0, 100));
    write_output(candidate.path(), workload(2, 2.0, 10));
    let (b, c) = (
        baseline.path().to_str().unwrap(),
        candidate.path().to_str().unwrap(),
    );

    let run = l7tap(&["diff", b, c, "--format", "json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let diff: Value = serde_json::from_slice(&run.stdout).unwrap();
    // Literals and IN-list lengths vary by request: still one group per shape.
    assert_eq!(diff["groups"].as_array().unwrap().len(), 3, "{diff:#}");

    let orders = group(&diff, "SELECT * FROM orders WHERE id = ?");
    assert_eq!(orders["baseline"]["requests"], REQUESTS);
    assert_eq!(orders["candidate"]["requests"], REQUESTS);
    assert_eq!(orders["flagged"], true, "{orders:#}");
    for name in ["p50", "p90", "p99"] {
        let q = quantile(orders, name);
        assert_eq!(q["flagged"], true, "{name}: {q:#}");
        assert_eq!(q["significant"], "up", "{name}: {q:#}");
        // Both tests were run: the batch means from the `requests` table too.
        assert_eq!(q["batch_tested"], true, "{name}: {q:#}");
        let change = q["relative_change"].as_f64().unwrap();
        assert!((0.85..1.15).contains(&change), "{name}: {change}");
    }
    assert_eq!(orders["error_rate_flagged"], false);

    let events = group(&diff, "SELECT count() FROM events WHERE day IN (?");
    assert_eq!(events["error_rate_flagged"], true, "{events:#}");
    assert_eq!(events["baseline"]["errors"], REQUESTS / 100);
    assert_eq!(events["candidate"]["errors"], REQUESTS / 10);
    assert!(
        events["quantiles"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["flagged"] == false),
        "{events:#}"
    );

    let nodes = group(&diff, "getData /app/nodes/{n}");
    assert_eq!(nodes["flagged"], false, "{nodes:#}");
    assert_eq!(nodes["error_rate_flagged"], false);

    // Sorted by impact: the doubled orders (≈ 3000 × 4 ms) first.
    assert_eq!(diff["groups"][0]["query"], orders["query"]);

    let text = String::from_utf8(l7tap(&["diff", b, c]).stdout).unwrap();
    assert!(text.contains("2 changed beyond noise"), "{text}");
    assert!(text.contains("SELECT * FROM orders WHERE id = ?"), "{text}");
}

#[test]
fn fail_on_exits_3_only_on_a_significant_regression_beyond_its_threshold() {
    let baseline = temp_dir("baseline");
    let candidate = temp_dir("candidate");
    write_output(baseline.path(), workload(1, 1.0, 100));
    write_output(candidate.path(), workload(2, 2.0, 10));
    let (b, c) = (
        baseline.path().to_str().unwrap(),
        candidate.path().to_str().unwrap(),
    );

    let latency = l7tap(&["diff", b, c, "--fail-on", "p99>+10%"]);
    assert_eq!(latency.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&latency.stderr);
    assert!(
        stderr.contains("regression (p99>+10%): clickhouse 10.0.0.1:9000 SELECT"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let errors = l7tap(&["diff", b, c, "--fail-on", "errors>+5pp"]);
    assert_eq!(errors.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&errors.stderr).contains("regression (errors>+5pp)"));

    // A doubling is not +150 %, an error rate 1 % → 10 % is not +20 pp, and the reverse
    // direction (candidate as baseline) is an improvement.
    for (first, second, rule) in [
        (b, c, "p99>+150%"),
        (b, c, "errors>+20pp"),
        (c, b, "p50>+1%,errors>+1pp"),
    ] {
        let run = l7tap(&["diff", first, second, "--fail-on", rule]);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{rule}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

#[test]
fn a_bad_rule_is_refused_before_anything_is_read() {
    let run = l7tap(&[
        "diff",
        "/nonexistent/a",
        "/nonexistent/b",
        "--fail-on",
        "p95>+10%",
    ]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("unknown metric \"p95\""), "{stderr}");
    assert!(!stderr.contains("nonexistent"), "{stderr}");
    let run = l7tap(&[
        "diff",
        "/nonexistent/a",
        "/nonexistent/b",
        "--html",
        "page.png",
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--html must end in .html"));
}

#[test]
fn the_html_page_holds_both_distributions_per_group() {
    let baseline = temp_dir("baseline");
    let candidate = temp_dir("candidate");
    write_output(baseline.path(), workload(1, 1.0, 100));
    write_output(candidate.path(), workload(2, 2.0, 10));
    let page = candidate.path().join("diff.html");
    let run = l7tap(&[
        "diff",
        baseline.path().to_str().unwrap(),
        candidate.path().to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    let data = html
        .split("const D = ")
        .nth(1)
        .and_then(|rest| rest.split(";\nconst root").next())
        .expect("the page's data");
    assert!(!data.contains("</"), "data must not close the script early");
    let data: Value = serde_json::from_str(data).unwrap();
    let groups = data["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    for group in groups {
        for side in ["baseline", "candidate"] {
            let cdf = group[side]["cdf"].as_array().unwrap();
            assert!(cdf.len() > 10, "{side}: {group:#}");
            assert_eq!(cdf.last().unwrap()[1], 1.0);
        }
    }
}
