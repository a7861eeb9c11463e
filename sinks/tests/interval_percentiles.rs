//! Percentiles of the `intervals` table are within HDR precision of exact quantiles computed from
//! the `requests` table's rows, both written by the sink from one workload.
mod common;

use std::collections::BTreeMap;

use arrow::array::{BinaryArray, TimestampMicrosecondArray};
use common::*;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use l7tap_aggregate::{Aggregator, AggregatorConfig};
use l7tap_sinks::{ParquetSink, SinkConfig};

fn aggregator() -> Aggregator {
    Aggregator::new(AggregatorConfig {
        monotonic_to_unix_offset_ns: OFFSET_NS,
        ..AggregatorConfig::default()
    })
    .unwrap()
}

/// `sorted[ceil(q n) - 1]`: the quantile as HdrHistogram defines it.
fn exact_quantile(sorted: &[u64], quantile: f64) -> u64 {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

#[test]
fn interval_percentiles_are_within_hdr_precision_of_exact_quantiles_of_the_rows() {
    let out = TempDir::new("quantiles");
    let mut sink = ParquetSink::new(SinkConfig::new(out.path(), "h", OFFSET_NS)).unwrap();
    let mut aggregator = aggregator();
    for request in workload(60_000, 7).iter() {
        sink.push_request(&request);
        aggregator.record(&request);
    }
    for row in aggregator.flush_until(BASE_UNIX_NS + 60 * SECOND as i64) {
        sink.push_interval(&row);
    }
    sink.finish().unwrap();

    // Exact durations per (window, key) from the requests table.
    let requests = read_table(out.path(), "requests");
    let ts: &TimestampMicrosecondArray = column(&requests, "ts");
    let durations = int64s(&requests, "duration_ns");
    let client = strings(&requests, "client_addr");
    let server = strings(&requests, "server_addr");
    let operation = strings(&requests, "operation");
    let status = strings(&requests, "status");
    let mut exact: BTreeMap<(i64, String, String, String, String), Vec<u64>> = BTreeMap::new();
    for i in 0..requests.num_rows() {
        let duration = durations[i].unwrap();
        let end_ns = ts.value(i) * 1_000 + duration;
        let window = end_ns.div_euclid(WINDOW as i64) * WINDOW as i64;
        let client_ip = client[i]
            .as_ref()
            .unwrap()
            .rsplit_once(':')
            .unwrap()
            .0
            .to_string();
        let key = (
            window,
            client_ip,
            server[i].clone().unwrap(),
            operation[i].clone().unwrap(),
            status[i].clone().unwrap(),
        );
        exact.entry(key).or_default().push(duration as u64);
    }

    let intervals = read_table(out.path(), "intervals");
    assert_eq!(intervals.num_rows(), exact.len());
    let window_start: &TimestampMicrosecondArray = column(&intervals, "window_start");
    let hdr: &BinaryArray = column(&intervals, "hdr");
    let columns: Vec<Vec<Option<i64>>> = [
        "count", "min_ns", "max_ns", "sum_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns",
    ]
    .iter()
    .map(|name| int64s(&intervals, name))
    .collect();
    let (i_client, i_server, i_operation, i_status) = (
        strings(&intervals, "client_addr"),
        strings(&intervals, "server_addr"),
        strings(&intervals, "operation"),
        strings(&intervals, "status"),
    );
    let mut checked = 0;
    for row in 0..intervals.num_rows() {
        let key = (
            window_start.value(row) * 1_000,
            i_client[row].clone().unwrap(),
            i_server[row].clone().unwrap(),
            i_operation[row].clone().unwrap(),
            i_status[row].clone().unwrap(),
        );
        let mut values = exact
            .remove(&key)
            .unwrap_or_else(|| panic!("no rows for {key:?}"));
        values.sort_unstable();
        let get = |column: usize| columns[column][row].unwrap() as u64;
        assert_eq!(get(0), values.len() as u64);
        assert_eq!(get(1), values[0]);
        assert_eq!(get(2), *values.last().unwrap());
        assert_eq!(get(3), values.iter().sum::<u64>());
        for (column, quantile) in [(4, 0.5), (5, 0.9), (6, 0.99), (7, 0.999)] {
            let expected = exact_quantile(&values, quantile);
            let got = get(column);
            // 3 significant digits, lowest discernible 1 µs (HDR unit 512 ns): within 1/1024
            // of the value or 512 ns, whichever is larger.
            let tolerance = (expected / 1024).max(512) + 1;
            assert!(
                got.abs_diff(expected) <= tolerance,
                "{key:?} q{quantile}: intervals say {got}, rows say {expected} (n = {})",
                values.len()
            );
        }
        let histogram: Histogram<u64> = Deserializer::new()
            .deserialize(&mut std::io::Cursor::new(hdr.value(row)))
            .unwrap();
        assert_eq!(histogram.len(), values.len() as u64);
        checked += 1;
    }
    assert!(exact.is_empty());
    assert!(checked >= 3 * 4, "{checked} rows checked");
}
