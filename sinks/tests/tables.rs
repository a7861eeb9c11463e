//! The three tables written and read back with the parquet crate's Arrow reader: schemas (names,
//! types, nullability, field documentation), row counts and values; `--redact`; README sync.
mod common;

use std::net::SocketAddr;

use arrow::array::{
    Array, BinaryArray, BooleanArray, Int32Array, Int64Array, ListArray, MapArray, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};
use common::*;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use l7tap_aggregate::{
    Aggregator, AggregatorConfig, IntervalRow, HEATMAP_BUCKETS, HEATMAP_BUCKET_UPPER_BOUNDS_NS,
};
use l7tap_protocols::{Side, Status};
use l7tap_sinks::schema::DESCRIPTION_KEY;
use l7tap_sinks::{CaptureStatsRow, ParquetSink, SinkConfig, Table};

fn sink(out: &TempDir) -> ParquetSink {
    ParquetSink::new(SinkConfig::new(out.path(), "test-host", OFFSET_NS)).unwrap()
}

#[test]
fn requests_round_trip_with_schema_and_values() {
    let out = TempDir::new("requests");
    let mut sink = sink(&out);
    let client = conn(
        Side::Client,
        "10.0.0.1:50000",
        "10.0.0.2:9000",
        "clickhouse-clie",
    );
    let keeper = conn(
        Side::Server,
        "[::ffff:10.0.0.3]:41000",
        "10.0.0.4:2181",
        "java",
    );
    sink.push_batch(&clickhouse_request(
        &client,
        1_500,
        2_000_000,
        "SELECT 1",
        Status::Ok,
    ));
    sink.push_batch(&clickhouse_request(
        &client,
        3_000_000,
        5_000_000,
        "SELECT * FROM nope",
        Status::Error,
    ));
    sink.push_batch(&zookeeper_request(
        &keeper,
        4_000_000,
        300_000,
        "multi",
        "/a/b",
        Status::Ok,
    ));
    sink.finish().unwrap();
    assert_eq!(sink.buffered_rows(), 0);
    assert_eq!(sink.stats().requests.rows_committed, 3);

    let batch = read_table(out.path(), "requests");
    assert_eq!(batch.num_rows(), 3);

    // Schema: exactly the documented columns, in order, with their types and descriptions.
    let schema = batch.schema();
    let expected = Table::Requests.schema();
    assert_eq!(schema.fields().len(), expected.fields().len());
    for (field, spec) in schema.fields().iter().zip(Table::Requests.columns()) {
        assert_eq!(field.name(), spec.name);
        assert_eq!(
            field.data_type(),
            &spec.column_type.data_type(),
            "{}",
            spec.name
        );
        assert_eq!(field.is_nullable(), spec.nullable, "{}", spec.name);
        assert_eq!(
            field.metadata().get(DESCRIPTION_KEY).map(String::as_str),
            Some(spec.description)
        );
    }
    let first_names: Vec<&str> = schema
        .fields()
        .iter()
        .take(25)
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        first_names,
        [
            "ts",
            "duration_ns",
            "protocol",
            "side",
            "pid",
            "comm",
            "client_addr",
            "server_addr",
            "operation",
            "status",
            "error_code",
            "error_name",
            "query",
            "query_id",
            "query_kind",
            "initial_query_id",
            "user",
            "client_name",
            "rows_read",
            "bytes_read",
            "zk_xid",
            "zk_zxid",
            "zk_session_id",
            "bytes_sent",
            "bytes_received"
        ]
    );
    assert_eq!(
        schema.field_with_name("ts").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );

    // Values.
    let ts: &TimestampMicrosecondArray = column(&batch, "ts");
    assert_eq!(ts.value(0), BASE_UNIX_NS / 1000 + 1); // 1.5 µs after the base, rounded down
    assert_eq!(ts.value(1), BASE_UNIX_NS / 1000 + 3_000);
    assert_eq!(
        int64s(&batch, "duration_ns"),
        [Some(2_000_000), Some(5_000_000), Some(300_000)]
    );
    assert_eq!(
        strings(&batch, "protocol"),
        [
            Some("clickhouse".into()),
            Some("clickhouse".into()),
            Some("zookeeper".into())
        ]
    );
    assert_eq!(
        strings(&batch, "side"),
        [
            Some("client".into()),
            Some("client".into()),
            Some("server".into())
        ]
    );
    let pid: &Int32Array = column(&batch, "pid");
    assert_eq!(pid.value(2), 4242);
    assert_eq!(
        strings(&batch, "comm")[0].as_deref(),
        Some("clickhouse-clie")
    );
    assert_eq!(
        strings(&batch, "client_addr")[0].as_deref(),
        Some("10.0.0.1:50000")
    );
    // IPv4-mapped IPv6 is shown as IPv4.
    assert_eq!(
        strings(&batch, "client_addr")[2].as_deref(),
        Some("10.0.0.3:41000")
    );
    assert_eq!(
        strings(&batch, "server_addr")[2].as_deref(),
        Some("10.0.0.4:2181")
    );
    assert_eq!(
        strings(&batch, "status"),
        [Some("ok".into()), Some("error".into()), Some("ok".into())]
    );
    let error_code: &Int32Array = column(&batch, "error_code");
    assert!(error_code.is_null(0));
    assert_eq!(error_code.value(1), 60);
    assert_eq!(
        strings(&batch, "error_name")[1].as_deref(),
        Some("UNKNOWN_TABLE")
    );
    assert_eq!(
        strings(&batch, "query"),
        [
            Some("SELECT 1".into()),
            Some("SELECT * FROM nope".into()),
            Some("/a/b".into())
        ]
    );
    assert_eq!(strings(&batch, "query_kind")[0].as_deref(), Some("initial"));
    assert_eq!(strings(&batch, "user")[0].as_deref(), Some("default"));
    assert_eq!(
        strings(&batch, "client_name")[0].as_deref(),
        Some("ClickHouse client")
    );
    assert_eq!(int64s(&batch, "rows_read"), [Some(1000), Some(1000), None]);
    assert_eq!(int64s(&batch, "bytes_read"), [Some(8000), Some(8000), None]);
    // ClickHouse-only columns are null on ZooKeeper rows and vice versa.
    assert_eq!(strings(&batch, "query_id")[2], None);
    assert_eq!(strings(&batch, "user")[2], None);
    let zk_xid: &Int32Array = column(&batch, "zk_xid");
    assert!(zk_xid.is_null(0));
    assert_eq!(zk_xid.value(2), 17);
    assert_eq!(int64s(&batch, "zk_zxid"), [None, None, Some(0x1_0000_0042)]);
    assert_eq!(
        int64s(&batch, "zk_session_id"),
        [None, None, Some(0x0100_0000_0000_0001)]
    );
    assert_eq!(
        int64s(&batch, "bytes_sent"),
        [Some(120), Some(120), Some(40)]
    );
    assert_eq!(
        int64s(&batch, "bytes_received"),
        [Some(3400), Some(3400), Some(60)]
    );
    assert_eq!(
        strings(&batch, "error_message")[1].as_deref(),
        Some("Table default.nope does not exist")
    );
    let watch: &BooleanArray = column(&batch, "zk_watch");
    assert!(watch.is_null(0));
    assert!(watch.value(2));
    let multi: &ListArray = column(&batch, "zk_multi_ops");
    assert!(multi.is_null(0));
    let ops = multi.value(2);
    let ops = ops
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    assert_eq!((ops.value(0), ops.value(1)), ("create", "setData"));
    assert_eq!(int64s(&batch, "cgroup_id"), [Some(77), Some(77), Some(77)]);
    assert_eq!(
        strings(&batch, "client_version")[0].as_deref(),
        Some("24.3.1")
    );

    // File metadata.
    let files = parquet_files(&out.path().join("requests"));
    let metadata = file_metadata(&files[0]);
    assert!(metadata.contains(&("l7tap.table".into(), "requests".into())));
    assert!(metadata.contains(&("l7tap.schema_version".into(), "1".into())));
    assert!(metadata.contains(&("l7tap.host".into(), "test-host".into())));
    // The run id of the name is in the metadata too.
    let name = files[0].file_name().unwrap().to_str().unwrap();
    let run = l7tap_sinks::run_id_of_file_name(name).expect("a run id in the file name");
    assert!(metadata.contains(&("l7tap.run_id".into(), run.into())));
}

#[test]
fn parquet_1_files_hold_the_same_rows() {
    let mut values = Vec::new();
    for parquet_2 in [true, false] {
        let out = TempDir::new("format");
        let mut config = SinkConfig::new(out.path(), "h", OFFSET_NS);
        config.parquet_2 = parquet_2;
        let mut sink = ParquetSink::new(config).unwrap();
        let client = conn(Side::Client, "10.0.0.1:50000", "10.0.0.2:9000", "app");
        for i in 0..1000 {
            sink.push_batch(&clickhouse_request(
                &client,
                i * 1_000,
                5_000 + i,
                "SELECT 1",
                Status::Ok,
            ));
            sink.push_batch(&zookeeper_request(
                &client,
                i * 1_000 + 1,
                700,
                "exists",
                "/a",
                Status::Error,
            ));
        }
        sink.finish().unwrap();
        let batch = read_table(out.path(), "requests");
        values.push((
            int64s(&batch, "duration_ns"),
            strings(&batch, "query_id"),
            int64s(&batch, "zk_zxid"),
        ));
    }
    assert_eq!(values[0], values[1]);
}

#[test]
fn redaction_replaces_literals_in_clickhouse_queries_only() {
    let out = TempDir::new("redact");
    let mut config = SinkConfig::new(out.path(), "h", OFFSET_NS);
    config.redact_queries = true;
    let mut sink = ParquetSink::new(config).unwrap();
    let client = conn(Side::Client, "10.0.0.1:50000", "10.0.0.2:9000", "app");
    sink.push_batch(&clickhouse_request(
        &client,
        0,
        1_000,
        "SELECT * FROM users WHERE email = 'a@b.c' AND id = 42",
        Status::Ok,
    ));
    sink.push_batch(&zookeeper_request(
        &client,
        10,
        1_000,
        "getData",
        "/node-42",
        Status::Ok,
    ));
    sink.finish().unwrap();
    let batch = read_table(out.path(), "requests");
    assert_eq!(
        strings(&batch, "query"),
        [
            Some("SELECT * FROM users WHERE email = ? AND id = ?".into()),
            Some("/node-42".into())
        ]
    );
}

#[test]
fn redaction_also_cleans_clickhouse_error_messages_which_quote_the_literals() {
    let out = TempDir::new("redact-errors");
    let mut config = SinkConfig::new(out.path(), "h", OFFSET_NS);
    config.redact_queries = true;
    let mut sink = ParquetSink::new(config).unwrap();
    let client = conn(Side::Client, "10.0.0.1:50000", "10.0.0.2:9000", "app");
    let mut batch = clickhouse_request(&client, 0, 1_000, "SELEC 'hunter2'", Status::Error);
    // ClickHouse repeats the query's text, literals included, in its syntax errors.
    let message = batch.records.text.push(
        "Code: 62. DB::Exception: Syntax error: failed at position 1 ('SELEC'): SELEC 'hunter2'. Expected one of: SELECT",
    );
    batch.records.records_mut()[0].error_message = Some(message);
    sink.push_batch(&batch);
    // A ZooKeeper error message is not SQL: kept as it is.
    sink.push_batch(&zookeeper_request(
        &client,
        10,
        1_000,
        "getData",
        "/node-42",
        Status::Error,
    ));
    sink.finish().unwrap();
    let batch = read_table(out.path(), "requests");
    let messages = strings(&batch, "error_message");
    let clickhouse = messages[0].as_deref().unwrap();
    assert!(!clickhouse.contains("hunter2"), "{clickhouse}");
    assert!(clickhouse.contains("Syntax error"), "{clickhouse}");
    assert_eq!(strings(&batch, "query")[0].as_deref(), Some("SELEC ?"));
    let zookeeper = strings(&batch, "error_message")[1].clone();
    let unredacted = {
        let out = TempDir::new("redact-errors-zk");
        let mut sink = ParquetSink::new(SinkConfig::new(out.path(), "h", OFFSET_NS)).unwrap();
        sink.push_batch(&zookeeper_request(
            &client,
            10,
            1_000,
            "getData",
            "/node-42",
            Status::Error,
        ));
        sink.finish().unwrap();
        strings(&read_table(out.path(), "requests"), "error_message")[0].clone()
    };
    assert_eq!(zookeeper, unredacted);
}

#[test]
fn intervals_round_trip_with_histogram_heatmap_and_metadata() {
    let out = TempDir::new("intervals");
    let mut sink = sink(&out);
    let mut aggregator = Aggregator::new(AggregatorConfig {
        monotonic_to_unix_offset_ns: OFFSET_NS,
        ..AggregatorConfig::default()
    })
    .unwrap();
    let keeper = conn(
        Side::Client,
        "10.0.0.1:50000",
        "10.0.0.4:2181",
        "clickhouse-serv",
    );
    // 100 requests of 1.5 ms ending in second 2 of the window, one failed request of 30 µs.
    for i in 0..100 {
        let start = 2_000_000_000 + i * 1_000_000;
        aggregator.record_batch(&zookeeper_request(
            &keeper,
            start,
            1_500_000,
            "getData",
            "/x",
            Status::Ok,
        ));
    }
    aggregator.record_batch(&zookeeper_request(
        &keeper,
        5_000_000_000,
        30_000,
        "getData",
        "/y",
        Status::Error,
    ));
    let rows = aggregator.flush_until(BASE_UNIX_NS + 10_000_000_000);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        sink.push_interval(row);
    }
    sink.finish().unwrap();

    let batch = read_table(out.path(), "intervals");
    assert_eq!(batch.num_rows(), 2);
    for (field, spec) in batch
        .schema()
        .fields()
        .iter()
        .zip(Table::Intervals.columns())
    {
        assert_eq!(field.name(), spec.name);
        assert_eq!(
            field.data_type(),
            &spec.column_type.data_type(),
            "{}",
            spec.name
        );
    }
    let window_start: &TimestampMicrosecondArray = column(&batch, "window_start");
    assert_eq!(window_start.value(0), BASE_UNIX_NS / 1000);
    assert_eq!(int64s(&batch, "window_ns")[0], Some(10_000_000_000));
    assert_eq!(
        strings(&batch, "client_addr")[0].as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(
        strings(&batch, "server_addr")[0].as_deref(),
        Some("10.0.0.4:2181")
    );
    assert_eq!(
        strings(&batch, "comm")[0].as_deref(),
        Some("clickhouse-serv")
    );
    assert_eq!(strings(&batch, "operation")[0].as_deref(), Some("getData"));
    assert_eq!(
        strings(&batch, "status"),
        [Some("ok".into()), Some("error".into())]
    );
    assert_eq!(int64s(&batch, "count"), [Some(100), Some(1)]);
    assert_eq!(int64s(&batch, "errors"), [Some(0), Some(1)]);
    assert_eq!(int64s(&batch, "sum_ns"), [Some(150_000_000), Some(30_000)]);
    assert_eq!(int64s(&batch, "min_ns"), [Some(1_500_000), Some(30_000)]);
    assert_eq!(int64s(&batch, "max_ns"), [Some(1_500_000), Some(30_000)]);
    assert_eq!(int64s(&batch, "p50_ns"), [Some(1_500_000), Some(30_000)]);
    assert_eq!(int64s(&batch, "p999_ns"), [Some(1_500_000), Some(30_000)]);

    // hdr decodes to the histogram the aggregator built.
    let hdr: &BinaryArray = column(&batch, "hdr");
    let decoded: Histogram<u64> = Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(hdr.value(0)))
        .unwrap();
    assert_eq!(decoded.len(), 100);
    let median = decoded.value_at_quantile(0.5);
    assert!(decoded.equivalent(median, 1_500_000), "median {median}");
    assert_eq!(decoded, *rows[0].histogram());

    // Heatmap: 10 sub-windows × HEATMAP_BUCKETS; the ok requests end in second 2,
    // 1.5 ms falls in (1 ms, 2 ms]; the error row in second 5, 30 µs in (20 µs, 50 µs].
    let heatmap: &ListArray = column(&batch, "heatmap_counts");
    let sub_windows = heatmap.value(0);
    let sub_windows = sub_windows.as_any().downcast_ref::<ListArray>().unwrap();
    assert_eq!(sub_windows.len(), 10);
    let bucket_1_5ms = HEATMAP_BUCKET_UPPER_BOUNDS_NS
        .iter()
        .position(|&b| b == 2_000_000)
        .unwrap();
    for second in 0..10 {
        let counts = sub_windows.value(second);
        let counts = counts
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        assert_eq!(counts.len(), HEATMAP_BUCKETS);
        let total: i64 = counts.values().iter().sum();
        if second == 2 {
            assert_eq!(counts.value(bucket_1_5ms), 100);
            assert_eq!(total, 100);
        } else {
            assert_eq!(total, 0, "second {second}");
        }
    }
    let error_heatmap = heatmap.value(1);
    let error_heatmap = error_heatmap.as_any().downcast_ref::<ListArray>().unwrap();
    let second_5 = error_heatmap.value(5);
    let second_5 = second_5
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    assert_eq!(
        second_5.value(5),
        1,
        "30 µs is in the (20 µs, 50 µs] bucket"
    );
    assert_eq!(
        int64s(&batch, "heatmap_sub_window_ns")[0],
        Some(1_000_000_000)
    );

    // Bucket bounds are in the file metadata.
    let files = parquet_files(&out.path().join("intervals"));
    let metadata = file_metadata(&files[0]);
    let bounds = metadata
        .iter()
        .find(|(key, _)| key == "l7tap.heatmap.bucket_upper_bounds_ns")
        .map(|(_, value)| value.clone())
        .unwrap();
    let parsed: Vec<u64> = bounds
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(parsed, HEATMAP_BUCKET_UPPER_BOUNDS_NS);
}

#[test]
fn capture_stats_round_trip() {
    let out = TempDir::new("capture-stats");
    let mut sink = sink(&out);
    for cpu in [Some(0), Some(1), None] {
        sink.push_capture_stats(&CaptureStatsRow {
            window_start_unix_ns: BASE_UNIX_NS,
            window_ns: 10_000_000_000,
            cpu,
            events: 1000,
            bytes: 65536,
            lost_samples: 1,
            ring_drops: 2,
            parse_errors: 3,
            resyncs: 4,
            connections: 5,
            counters: vec![("kernel.classified", 6), ("kernel.ignored", 7)],
        });
    }
    sink.finish().unwrap();
    let batch = read_table(out.path(), "capture_stats");
    assert_eq!(batch.num_rows(), 3);
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>();
    assert_eq!(
        &names[..9],
        [
            "window_start",
            "cpu",
            "events",
            "bytes",
            "lost_samples",
            "ring_drops",
            "parse_errors",
            "resyncs",
            "connections"
        ]
    );
    let cpu: &Int32Array = column(&batch, "cpu");
    assert_eq!((cpu.value(0), cpu.value(1), cpu.is_null(2)), (0, 1, true));
    assert_eq!(int64s(&batch, "events")[0], Some(1000));
    assert_eq!(int64s(&batch, "bytes")[0], Some(65536));
    assert_eq!(int64s(&batch, "lost_samples")[0], Some(1));
    assert_eq!(int64s(&batch, "ring_drops")[0], Some(2));
    assert_eq!(int64s(&batch, "parse_errors")[0], Some(3));
    assert_eq!(int64s(&batch, "resyncs")[0], Some(4));
    assert_eq!(int64s(&batch, "connections")[0], Some(5));
    let window_start: &TimestampMicrosecondArray = column(&batch, "window_start");
    assert_eq!(window_start.value(0), BASE_UNIX_NS / 1000);
    let counters: &MapArray = column(&batch, "counters");
    for row in 0..3 {
        let entries = counters.value(row);
        let keys: &StringArray = entries.column(0).as_any().downcast_ref().unwrap();
        let values: &Int64Array = entries.column(1).as_any().downcast_ref().unwrap();
        let pairs: Vec<(&str, i64)> = keys.iter().flatten().zip(values.iter().flatten()).collect();
        assert_eq!(pairs, [("kernel.classified", 6), ("kernel.ignored", 7)]);
    }
}

#[test]
fn sink_and_aggregator_can_move_to_their_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<ParquetSink>();
    assert_send::<Aggregator>();
    assert_send::<IntervalRow>();
}

#[test]
fn readme_documents_every_column() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for table in Table::ALL {
        let heading = format!("### `{}`", table.name());
        let start = readme
            .find(&heading)
            .unwrap_or_else(|| panic!("README has no section {heading}"));
        let section = &readme[start..];
        let section = &section[..section[heading.len()..]
            .find("\n### ")
            .map_or(section.len(), |end| end + heading.len())];
        for spec in table.columns() {
            let row_start = format!("| `{}` | {} |", spec.name, spec.column_type.readme_name());
            assert!(
                section.contains(&row_start),
                "README section {heading} lacks the row for {} (expected a line starting with {row_start})",
                spec.name
            );
        }
    }
}

#[test]
fn addresses_are_formatted_per_connection() {
    // Two connections alternating: the address cache must follow the connection.
    let out = TempDir::new("addr-cache");
    let mut sink = sink(&out);
    let a = conn(Side::Client, "10.0.0.1:1", "10.0.0.9:9000", "a");
    let b = conn(Side::Client, "[2001:db8::1]:2", "[2001:db8::9]:9000", "b");
    for i in 0..4 {
        let c = if i % 2 == 0 { &a } else { &b };
        sink.push_batch(&clickhouse_request(
            c,
            i * 10,
            1_000,
            "SELECT 1",
            Status::Ok,
        ));
    }
    sink.finish().unwrap();
    let batch = read_table(out.path(), "requests");
    let client: Vec<_> = strings(&batch, "client_addr")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        client,
        [
            "10.0.0.1:1",
            "[2001:db8::1]:2",
            "10.0.0.1:1",
            "[2001:db8::1]:2"
        ]
    );
    let server: Vec<_> = strings(&batch, "server_addr")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(server[1], "[2001:db8::9]:9000");
    let _: SocketAddr = server[0].parse().unwrap();
}

#[test]
fn both_ends_identities_are_written_by_side_and_unknown_ends_are_null() {
    use l7tap_protocols::PeerIdentity;
    let out = TempDir::new("identity");
    let mut sink = sink(&out);
    // The server's end of a local connection, joined with its client; then a client whose
    // server is remote.
    let mut server = (*conn(
        Side::Server,
        "127.0.0.1:40000",
        "127.0.0.1:9000",
        "clickhouse-serv",
    ))
    .clone();
    server.identity.app = "clickhouse-server :9000".into();
    server.identity.process = "clickhouse-server".into();
    server.identity.exe = "/usr/bin/clickhouse".into();
    server.identity.cgroup = "/".into();
    server.identity.peer = Some(PeerIdentity {
        pid: 77,
        process: "batch".into(),
        app: "nightly.service".into(),
    });
    let mut client = (*conn(Side::Client, "127.0.0.1:40001", "10.0.0.9:9000", "python3")).clone();
    client.identity.app = "python3".into();
    client.identity.process = "python3".into();
    for (i, info) in [server, client].into_iter().enumerate() {
        sink.push_batch(&clickhouse_request(
            &std::sync::Arc::new(info),
            i as u64 * 10,
            1_000,
            "SELECT 1",
            Status::Ok,
        ));
    }
    sink.finish().unwrap();
    let batch = read_table(out.path(), "requests");
    let s = |name| strings(&batch, name);
    let some = |v: &str| Some(v.to_string());
    assert_eq!(s("client_app"), [some("nightly.service"), some("python3")]);
    assert_eq!(s("client_process"), [some("batch"), some("python3")]);
    assert_eq!(s("server_app"), [some("clickhouse-server :9000"), None]);
    assert_eq!(s("server_process"), [some("clickhouse-server"), None]);
    assert_eq!(s("exe"), [some("/usr/bin/clickhouse"), None]);
    let pids: &Int32Array = column(&batch, "client_pid");
    assert_eq!((pids.value(0), pids.value(1)), (77, 4242));
    let pids: &Int32Array = column(&batch, "server_pid");
    assert_eq!((pids.value(0), pids.is_null(1)), (4242, true));
}

#[test]
fn a_mixed_batch_is_written_protocol_by_protocol_with_each_protocols_nulls_in_place() {
    let out = TempDir::new("mixed");
    let mut sink = ParquetSink::new(SinkConfig::new(out.path(), "h", OFFSET_NS)).unwrap();
    let client = conn(Side::Client, "10.0.0.1:50000", "10.0.0.2:9000", "app");
    let keeper = conn(Side::Client, "10.0.0.1:50001", "10.0.0.4:2181", "app");
    // One batch alternating protocols: ZK 0, CH 1, ZK 2, CH 3, ZK 4, then a ZK-only batch
    // and a CH-only one.
    let mut mixed = l7tap_protocols::CapturedBatch::default();
    for i in 0..5u64 {
        mixed.append(if i % 2 == 0 {
            zookeeper_request(&keeper, i * 1_000, 100 + i, "exists", "/a", Status::Ok)
        } else {
            clickhouse_request(&client, i * 1_000, 100 + i, "SELECT 1", Status::Ok)
        });
    }
    sink.push_batch(&mixed);
    sink.push_batch(&zookeeper_request(
        &keeper,
        9_000,
        109,
        "exists",
        "/b",
        Status::Ok,
    ));
    sink.push_batch(&clickhouse_request(
        &client,
        10_000,
        110,
        "SELECT 2",
        Status::Ok,
    ));
    sink.finish().unwrap();

    let batch = read_table(out.path(), "requests");
    let protocol = strings(&batch, "protocol");
    let durations = int64s(&batch, "duration_ns");
    let query_id = strings(&batch, "query_id");
    let zk_xid: &Int32Array = column(&batch, "zk_xid");
    let rows: Vec<(String, i64, bool, bool)> = (0..batch.num_rows())
        .map(|i| {
            (
                protocol[i].clone().unwrap(),
                durations[i].unwrap(),
                query_id[i].is_some(),
                zk_xid.is_valid(i),
            )
        })
        .collect();
    let zk = |d: i64| ("zookeeper".to_string(), d, false, true);
    let ch = |d: i64| ("clickhouse".to_string(), d, true, false);
    // Protocol by protocol in the registry's order (ClickHouse, then ZooKeeper), each in order.
    assert_eq!(
        rows,
        vec![
            ch(101),
            ch(103),
            zk(100),
            zk(102),
            zk(104),
            zk(109),
            ch(110)
        ]
    );
}
