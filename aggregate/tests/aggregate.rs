//! The aggregator: window alignment and flushing, keys, late records, clamping, heatmap, and
//! merging per-thread state.
mod common;

use std::sync::Arc;

use common::*;
use l7tap_aggregate::{
    heatmap_bucket, merge_interval_rows, Aggregator, AggregatorConfig, AggregatorConfigError,
    IntervalRow, HEATMAP_BUCKETS, HEATMAP_BUCKET_UPPER_BOUNDS_NS,
};
use l7tap_protocols::{CapturedBatch, ConnectionInfo, Side, Status};

fn aggregator() -> Aggregator {
    Aggregator::new(AggregatorConfig {
        monotonic_to_unix_offset_ns: OFFSET_NS,
        ..AggregatorConfig::default()
    })
    .unwrap()
}

/// A ZooKeeper request that ends `end_offset_ns` after the base.
fn ending_at(
    conn: &Arc<ConnectionInfo>,
    end_offset_ns: u64,
    duration_ns: u64,
    status: Status,
) -> CapturedBatch {
    zookeeper_request(
        conn,
        end_offset_ns - duration_ns,
        duration_ns,
        "getData",
        "/p",
        status,
    )
}

#[test]
fn config_is_validated() {
    let config = |window_ns, heatmap_sub_window_ns| AggregatorConfig {
        window_ns,
        heatmap_sub_window_ns,
        monotonic_to_unix_offset_ns: 0,
    };
    assert!(matches!(
        Aggregator::new(config(10 * SECOND, 3 * SECOND)),
        Err(AggregatorConfigError::WindowNotMultipleOfSubWindow { .. })
    ));
    assert!(matches!(
        Aggregator::new(config(0, SECOND)),
        Err(AggregatorConfigError::ZeroDuration)
    ));
    let aggregator = Aggregator::new(config(60 * SECOND, 5 * SECOND)).unwrap();
    assert_eq!(aggregator.config().sub_windows(), 12);
}

#[test]
fn windows_are_aligned_to_the_wall_clock_and_flushed_when_closed() {
    let mut aggregator = aggregator();
    let c = conn(Side::Client, "10.0.0.1:1000", "10.0.0.2:2181", "zkcli");
    // Ends at base + 3 s, + 9.999 s (window 0), + 10 s and + 15 s (window 1).
    for end in [3 * SECOND, WINDOW - 1_000, WINDOW, 15 * SECOND] {
        aggregator.record_batch(&ending_at(&c, end, 2_000_000, Status::Ok));
    }
    assert_eq!(aggregator.open_windows(), 2);
    assert!(aggregator
        .flush_until(BASE_UNIX_NS + WINDOW as i64 - 1)
        .is_empty());
    let rows = aggregator.flush_until(BASE_UNIX_NS + WINDOW as i64);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].window_start_unix_ns, BASE_UNIX_NS);
    assert_eq!(rows[0].window_ns, WINDOW);
    assert_eq!(rows[0].count, 2);
    assert_eq!(rows[0].heatmap_sub_window(3).iter().sum::<u64>(), 1);
    assert_eq!(rows[0].heatmap_sub_window(9).iter().sum::<u64>(), 1);
    let rows = aggregator.flush_until(BASE_UNIX_NS + 25 * SECOND as i64);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].window_start_unix_ns, BASE_UNIX_NS + WINDOW as i64);
    assert_eq!(rows[0].heatmap_sub_window(0).iter().sum::<u64>(), 1);
    assert_eq!(rows[0].heatmap_sub_window(5).iter().sum::<u64>(), 1);
    assert_eq!(aggregator.open_windows(), 0);
    assert_eq!(aggregator.late_records(), 0);
}

#[test]
fn key_ignores_the_client_port_and_separates_status_and_operation() {
    let mut aggregator = aggregator();
    let a = conn(Side::Server, "10.0.0.1:1000", "10.0.0.2:2181", "java");
    let b = conn(
        Side::Server,
        "[::ffff:10.0.0.1]:2000",
        "10.0.0.2:2181",
        "java",
    );
    let other_comm = conn(Side::Server, "10.0.0.1:3000", "10.0.0.2:2181", "zkServer");
    aggregator.record_batch(&ending_at(&a, SECOND, 1_000_000, Status::Ok));
    aggregator.record_batch(&ending_at(&b, SECOND, 3_000_000, Status::Ok));
    aggregator.record_batch(&ending_at(&a, SECOND, 5_000_000, Status::Error));
    aggregator.record_batch(&ending_at(&other_comm, SECOND, 5_000_000, Status::Ok));
    aggregator.record_batch(&zookeeper_request(&a, 0, 1_000, "exists", "/p", Status::Ok));
    let rows = aggregator.flush_until(BASE_UNIX_NS + WINDOW as i64);
    let summary: Vec<(String, &str, &str, u64, u64, u64, u64)> = rows
        .iter()
        .map(|row| {
            (
                row.key.client_ip.to_string(),
                &*row.key.comm,
                &*row.key.operation,
                row.count,
                row.errors,
                row.min_ns,
                row.max_ns,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("10.0.0.1".into(), "java", "exists", 1, 0, 1_000, 1_000),
            (
                "10.0.0.1".into(),
                "java",
                "getData",
                2,
                0,
                1_000_000,
                3_000_000
            ),
            (
                "10.0.0.1".into(),
                "java",
                "getData",
                1,
                1,
                5_000_000,
                5_000_000
            ),
            (
                "10.0.0.1".into(),
                "zkServer",
                "getData",
                1,
                0,
                5_000_000,
                5_000_000
            ),
        ]
    );
    assert_eq!(rows[1].key.status, Status::Ok);
    assert_eq!(rows[2].key.status, Status::Error);
    assert_eq!(rows[1].sum_ns, 4_000_000);
    assert_eq!(rows[1].key.server_addr.to_string(), "10.0.0.2:2181");
}

#[test]
fn local_clients_behind_one_address_are_kept_apart_by_application_and_merge_exactly() {
    use l7tap_protocols::PeerIdentity;
    let server_end = |pid: u32, process: &str, app: &str| {
        let mut info = (*conn(
            Side::Server,
            "127.0.0.1:4000",
            "127.0.0.1:9000",
            "clickhouse-serv",
        ))
        .clone();
        info.identity.app = "clickhouse-server :9000".into();
        info.identity.peer = Some(PeerIdentity {
            pid,
            process: process.into(),
            app: app.into(),
        });
        Arc::new(info)
    };
    let batch = server_end(10, "batch", "nightly.service");
    let dashboard = server_end(11, "dashboard", "dashboard");
    let remote = conn(
        Side::Server,
        "127.0.0.1:4001",
        "127.0.0.1:9000",
        "clickhouse-serv",
    );
    // Two aggregators (two actors), merged as the output thread merges them.
    let (mut one, mut two) = (aggregator(), aggregator());
    for (agg, duration) in [(&mut one, 1_000_000), (&mut two, 3_000_000)] {
        agg.record_batch(&ending_at(&batch, SECOND, duration, Status::Ok));
        agg.record_batch(&ending_at(&dashboard, SECOND, duration, Status::Error));
    }
    one.record_batch(&ending_at(&remote, SECOND, 2_000_000, Status::Ok));
    let mut rows = one.flush_until(BASE_UNIX_NS + WINDOW as i64);
    rows.extend(two.flush_until(BASE_UNIX_NS + WINDOW as i64));
    let merged = l7tap_aggregate::merge_interval_rows(rows).unwrap();
    let mut summary: Vec<(&str, &str, u64, u64, u64)> = merged
        .iter()
        .map(|row| {
            (
                &*row.key.client_app,
                &*row.key.client_process,
                row.count,
                row.errors,
                row.histogram().len(),
            )
        })
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        [
            ("", "", 1, 0, 1),
            ("dashboard", "dashboard", 2, 2, 2),
            ("nightly.service", "batch", 2, 0, 2),
        ]
    );
}

#[test]
fn late_records_go_to_the_oldest_open_window_and_are_counted() {
    let mut aggregator = aggregator();
    let c = conn(Side::Client, "10.0.0.1:1000", "10.0.0.2:2181", "zkcli");
    aggregator.record_batch(&ending_at(&c, SECOND, 1_000_000, Status::Ok));
    assert_eq!(
        aggregator.flush_until(BASE_UNIX_NS + WINDOW as i64).len(),
        1
    );
    // Ends in the closed window 0: counted in window 1, sub-window 0.
    aggregator.record_batch(&ending_at(&c, 5 * SECOND, 1_000_000, Status::Ok));
    assert_eq!(aggregator.late_records(), 1);
    let rows = aggregator.flush_until(BASE_UNIX_NS + 2 * WINDOW as i64);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].window_start_unix_ns, BASE_UNIX_NS + WINDOW as i64);
    assert_eq!(rows[0].heatmap_sub_window(0).iter().sum::<u64>(), 1);
}

#[test]
fn durations_are_clamped_in_the_histogram_and_bucketed_in_the_heatmap() {
    assert_eq!(heatmap_bucket(0), 0);
    assert_eq!(heatmap_bucket(1_000), 0);
    assert_eq!(heatmap_bucket(1_001), 1);
    assert_eq!(heatmap_bucket(2_000), 1);
    assert_eq!(heatmap_bucket(3_000), 2);
    assert_eq!(heatmap_bucket(3_600_000_000_000), HEATMAP_BUCKETS - 2);
    assert_eq!(heatmap_bucket(3_600_000_000_001), HEATMAP_BUCKETS - 1);
    assert_eq!(HEATMAP_BUCKETS, HEATMAP_BUCKET_UPPER_BOUNDS_NS.len() + 1);

    let mut aggregator = aggregator();
    let c = conn(Side::Client, "10.0.0.1:1000", "10.0.0.2:2181", "zkcli");
    let two_hours = 7_200 * SECOND;
    aggregator.record_batch(&ending_at(&c, two_hours + SECOND, 300, Status::Ok));
    aggregator.record_batch(&ending_at(&c, two_hours + SECOND, two_hours, Status::Ok));
    let rows = aggregator.flush_until(BASE_UNIX_NS + (two_hours + WINDOW) as i64);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!((row.min_ns, row.max_ns), (300, two_hours), "exact");
    assert_eq!(row.sum_ns, 300 + two_hours);
    let histogram = row.histogram();
    assert!(
        histogram.equivalent(histogram.min(), 1_000),
        "clamped to 1 µs"
    );
    assert!(
        histogram.equivalent(histogram.max(), 3_600_000_000_000),
        "clamped to 1 h"
    );
    assert_eq!(row.heatmap_sub_window(1)[0], 1);
    assert_eq!(row.heatmap_sub_window(1)[HEATMAP_BUCKETS - 1], 1);
    // Percentiles come from the clamped histogram.
    assert!(histogram.equivalent(row.quantile_ns(0.0), 1_000));
    assert!(histogram.equivalent(row.quantile_ns(1.0), 3_600_000_000_000));
}

fn assert_same_rows(left: &[IntervalRow], right: &[IntervalRow]) {
    assert_eq!(left.len(), right.len());
    for (l, r) in left.iter().zip(right) {
        assert_eq!(l.window_start_unix_ns, r.window_start_unix_ns);
        assert_eq!(l.key, r.key);
        assert_eq!(
            (l.count, l.errors, l.sum_ns, l.min_ns, l.max_ns),
            (r.count, r.errors, r.sum_ns, r.min_ns, r.max_ns),
            "{:?}",
            l.key
        );
        assert_eq!(*l.histogram(), *r.histogram(), "{:?}", l.key);
        assert_eq!(l.heatmap, r.heatmap, "{:?}", l.key);
    }
}

#[test]
fn merging_per_thread_aggregators_equals_one_aggregator() {
    let requests = workload(20_000, 99);
    let mut single = aggregator();
    let mut threads = [aggregator(), aggregator(), aggregator()];
    for (i, request) in requests.iter().enumerate() {
        single.record(&request);
        // Uneven split so that some keys stay under the inline-sample threshold on a thread.
        threads[if i % 50 == 0 { 2 } else { i % 2 }].record(&request);
    }
    let until = BASE_UNIX_NS + 60 * SECOND as i64;
    let expected = single.flush_until(until);

    // Whole aggregators merged.
    let mut merged = aggregator();
    for thread in &threads {
        merged.merge(thread).unwrap();
    }
    assert_eq!(merged.records(), requests.len() as u64);
    assert_same_rows(&merged.flush_until(until), &expected);

    // Rows of each aggregator merged.
    let rows: Vec<IntervalRow> = threads
        .iter_mut()
        .flat_map(|thread| thread.flush_until(until))
        .collect();
    assert_same_rows(&merge_interval_rows(rows).unwrap(), &expected);
}

#[test]
fn state_is_recycled_across_windows() {
    let mut aggregator = aggregator();
    let c = conn(Side::Client, "10.0.0.1:1000", "10.0.0.2:2181", "zkcli");
    for window in 0..5u64 {
        for i in 0..1_000 {
            let end = window * WINDOW + 1 + i * 1_000_000;
            aggregator.record_batch(&ending_at(&c, end + SECOND, 10_000 + i, Status::Ok));
        }
        let rows = aggregator.flush_until(BASE_UNIX_NS + ((window + 1) * WINDOW) as i64);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 1_000);
        assert_eq!(
            rows[0].durations.len(),
            1_000,
            "histogram reset between windows"
        );
        assert_eq!(rows[0].heatmap.iter().sum::<u64>(), 1_000, "heatmap reset");
    }
}
