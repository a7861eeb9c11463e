//! Sink and aggregator throughput, single thread (the sink and each aggregator run on one core).
//!
//! `cargo bench -p l7tap-benches --bench sinks` (criterion; throughput in rows/s = elem/s).
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, user + system), not wall
//! time: the figures are per core and do not move when other processes share the machine. The
//! sink's wait for fsync is therefore not counted (it is I/O, not CPU); `parquet_sink_wall`
//! reports the same work in wall time.
//!
//! * `requests/parquet_sink`: push rows into a [`ParquetSink`] and `finish()` it: Arrow
//!   builders, Parquet encoding, zstd, write, fsync, rename. Goal: ≥ 1 M rows/s.
//! * Baselines measured in the same run: `requests/plain_vecs` builds the same columns into
//!   plain `Vec`s (the least any columnar sink must do), `requests/arrow_builders_only` stops
//!   after the Arrow arrays, `requests/fs_write_same_bytes` writes as many bytes as the sink's
//!   files hold with `std::fs::write` (+ fsync).
//! * `aggregator/record`: [`Aggregator::record`] per request; `aggregator/record_and_flush`
//!   includes closing the windows (histogram copies, row building).
use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use l7tap_aggregate::{Aggregator, AggregatorConfig};
use l7tap_benches::rng::Rng;
use l7tap_protocols::{
    CapturedBatch, CapturedRequest, ClickHouseDetails, ConnectionInfo, Details, Protocol,
    QueryKind, RequestRecord, Side, Status, ZooKeeperDetails,
};
use l7tap_sinks::requests::RequestColumns;
use l7tap_sinks::table::TableColumns;
use l7tap_sinks::{ParquetSink, SinkConfig};

const ROWS: usize = 200_000;
/// 2024-06-01T10:00:00Z.
const BASE_UNIX_NS: i64 = 1_717_236_000_000_000_000;
const BASE_MONOTONIC_NS: u64 = 5_000_000_000_000;
const OFFSET_NS: i64 = BASE_UNIX_NS - BASE_MONOTONIC_NS as i64;

/// A realistic mix: 70 % ZooKeeper requests from ClickHouse servers (short paths), 30 %
/// ClickHouse queries (~100-byte texts from 50 shapes with varying literals), 200 connections,
/// 50 µs .. 5 s durations, 1 % errors; 100 k requests per second of capture time.
fn workload(rows: usize) -> CapturedBatch {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let conns: Vec<Arc<ConnectionInfo>> = (0..200)
        .map(|i| {
            let zookeeper = i % 10 < 7;
            Arc::new(ConnectionInfo {
                pid: 1000 + i,
                comm: if zookeeper {
                    "clickhouse-serv"
                } else {
                    "python3"
                }
                .to_string(),
                cgroup_id: 55,
                side: Side::Client,
                client_addr: format!("10.0.{}.{}:{}", i / 50, i % 50 + 1, 40000 + i)
                    .parse()
                    .unwrap(),
                server_addr: if zookeeper {
                    "10.1.0.1:2181"
                } else {
                    "10.1.0.2:9000"
                }
                .parse()
                .unwrap(),
                identity: Default::default(),
                tls: false,
            })
        })
        .collect();
    let zk_ops = [
        "getData",
        "exists",
        "getChildren",
        "create",
        "setData",
        "multi",
    ];
    let mut batch = CapturedBatch::with_capacity(rows, rows * 64);
    for i in 0..rows {
        let text = &mut batch.records.text;
        let conn = conns[(rng.next_u64() % conns.len() as u64) as usize].clone();
        let start_ns = BASE_MONOTONIC_NS + i as u64 * 10_000;
        let duration_ns = 50_000 + (rng.next_u64() % 1_000) * (rng.next_u64() % 5_000);
        let status = if rng.next_u64().is_multiple_of(100) {
            Status::Error
        } else {
            Status::Ok
        };
        let (protocol, operation, query, details) = if conn.server_addr.port() == 2181 {
            let op = zk_ops[(rng.next_u64() % zk_ops.len() as u64) as usize];
            (
                Protocol::ZooKeeper,
                op,
                text.push(&format!(
                    "/clickhouse/tables/{}/events/replicas/r{}/queue",
                    rng.next_u64() % 20,
                    rng.next_u64() % 3
                )),
                Details::ZooKeeper(ZooKeeperDetails {
                    xid: i as i32,
                    zxid: 0x1_0000_0000 + i as i64,
                    session_id: Some(0x0100_0000_0000_0000 + conn.pid as i64),
                    watch: op == "exists",
                    multi_ops: if op == "multi" {
                        text.push("create,remove")
                    } else {
                        Default::default()
                    },
                    ..Default::default()
                }),
            )
        } else {
            let mut query = String::new();
            let _ = write!(
                    query,
                    "SELECT count(), avg(value) FROM db.table_{} WHERE user_id = {} AND date >= '2024-05-{:02}' GROUP BY key",
                    rng.next_u64() % 50,
                    rng.next_u64() % 1_000_000,
                    rng.next_u64() % 28 + 1
                );
            (
                Protocol::ClickHouse,
                "SELECT",
                text.push(&query),
                Details::ClickHouse(ClickHouseDetails {
                    query_id: text.push(&format!(
                        "{:016x}-{:016x}",
                        rng.next_u64(),
                        rng.next_u64()
                    )),
                    query_kind: Some(QueryKind::Initial),
                    initial_query_id: Default::default(),
                    user: text.push("default"),
                    client_name: text.push("python-driver"),
                    client_version: text.push("20.10.2"),
                    revision: 54441,
                    rows_read: rng.next_u64() % 1_000_000,
                    bytes_read: rng.next_u64() % 100_000_000,
                    result_rows: rng.next_u64() % 100,
                    ..Default::default()
                }),
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
                error_code: (status == Status::Error).then_some(60),
                error_name: (status == Status::Error).then_some("UNKNOWN_TABLE"),
                error_message: None,
                query: Some(query),
                query_truncated: false,
                bytes_sent: 100 + rng.next_u64() % 200,
                bytes_received: 50 + rng.next_u64() % 5_000,
                details,
            },
        );
    }
    batch
}

/// Index ranges of `batch` in chunks of `size`.
fn chunks(batch: &CapturedBatch, size: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let len = batch.len();
    (0..len)
        .step_by(size)
        .map(move |start| start..(start + size).min(len))
}

/// CPU time this thread has used (user + system).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported by every
    // Linux kernel this runs on, and clock_gettime writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `routine` `iterations` times and returns the CPU time it took.
fn cpu_timed<T>(iterations: u64, mut routine: impl FnMut() -> T) -> Duration {
    let start = thread_cpu_time();
    for _ in 0..iterations {
        black_box(routine());
    }
    thread_cpu_time() - start
}

fn out_dir(label: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("l7tap-bench-sinks-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `rows` cut into batches of `size` requests, as actors send them.
fn as_actor_batches(rows: &CapturedBatch, size: usize) -> Vec<CapturedBatch> {
    chunks(rows, size)
        .map(|range| {
            let mut batch = CapturedBatch::with_capacity(size, size * 64);
            for i in range {
                let request = rows.get(i).expect("in range");
                batch
                    .records
                    .push_from(request.record.clone(), request.text);
                batch.assign_new(request.conn);
            }
            batch
        })
        .collect()
}

fn write_with_sink(batches: &[CapturedBatch], dir: &PathBuf) -> u64 {
    let mut sink = ParquetSink::new(SinkConfig::new(dir, "bench", OFFSET_NS)).unwrap();
    for batch in batches {
        sink.push_batch(batch);
    }
    sink.finish().unwrap();
    sink.take_committed_files().iter().map(|f| f.bytes).sum()
}

/// The same columns as the `requests` table, in plain vectors.
#[derive(Default)]
struct PlainColumns {
    ts: Vec<i64>,
    duration: Vec<i64>,
    pid: Vec<i32>,
    strings: [Vec<u8>; 12],
    offsets: [Vec<u32>; 12],
    numbers: [Vec<Option<i64>>; 10],
}

impl PlainColumns {
    fn push_str(&mut self, column: usize, value: &str) {
        self.strings[column].extend_from_slice(value.as_bytes());
        self.offsets[column].push(self.strings[column].len() as u32);
    }

    fn append(&mut self, request: &CapturedRequest<'_>, addresses: &mut (String, String)) {
        let r = request.record;
        let c = request.conn;
        self.ts.push((r.start_ns as i64 + OFFSET_NS) / 1_000);
        self.duration.push((r.end_ns - r.start_ns) as i64);
        self.pid.push(c.pid as i32);
        addresses.0.clear();
        addresses.1.clear();
        let _ = write!(addresses.0, "{}", c.client_addr);
        let _ = write!(addresses.1, "{}", c.server_addr);
        self.push_str(0, r.protocol.name());
        self.push_str(1, c.side.name());
        self.push_str(2, &c.comm);
        self.push_str(3, &addresses.0);
        self.push_str(4, &addresses.1);
        self.push_str(5, r.operation);
        self.push_str(6, r.status.name());
        self.push_str(7, r.error_name.unwrap_or(""));
        self.push_str(8, request.query().unwrap_or(""));
        let (query_id, user) = match &r.details {
            Details::ClickHouse(ch) => (request.str(ch.query_id), request.str(ch.user)),
            Details::ZooKeeper(_) => ("", ""),
        };
        self.push_str(9, query_id);
        self.push_str(10, user);
        self.push_str(11, request.opt_str(r.error_message).unwrap_or(""));
        let numbers = match &r.details {
            Details::ClickHouse(ch) => [
                Some(ch.rows_read as i64),
                Some(ch.bytes_read as i64),
                None,
                None,
                None,
                Some(ch.result_rows as i64),
                None,
                None,
                Some(r.bytes_sent as i64),
                Some(r.bytes_received as i64),
            ],
            Details::ZooKeeper(zk) => [
                None,
                None,
                Some(zk.xid as i64),
                Some(zk.zxid),
                zk.session_id,
                None,
                r.error_code.map(i64::from),
                Some(zk.watch as i64),
                Some(r.bytes_sent as i64),
                Some(r.bytes_received as i64),
            ],
        };
        for (column, value) in numbers.into_iter().enumerate() {
            self.numbers[column].push(value);
        }
    }
}

fn requests(c: &mut Criterion) {
    let rows = workload(ROWS);
    // The sink gets batches of 1024 requests, as from the actors.
    let batches = as_actor_batches(&rows, 1024);
    let dir = out_dir("requests");
    let parquet_bytes = write_with_sink(&batches, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "requests: {ROWS} rows -> {parquet_bytes} bytes of Parquet ({:.1} bytes/row)",
        parquet_bytes as f64 / ROWS as f64
    );

    let mut group = c.benchmark_group("requests");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("parquet_sink", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                timed += cpu_timed(1, || write_with_sink(&batches, &dir));
                let _ = std::fs::remove_dir_all(&dir);
            }
            timed
        })
    });
    group.bench_function("parquet_sink_wall", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                black_box(write_with_sink(&batches, &dir));
                timed += started.elapsed();
                let _ = std::fs::remove_dir_all(&dir);
            }
            timed
        })
    });
    group.bench_function("arrow_builders_only", |b| {
        b.iter_custom(|iterations| {
            cpu_timed(iterations, || {
                let mut columns = RequestColumns::new(8192, OFFSET_NS, false);
                let mut arrays = 0;
                for chunk in chunks(&rows, 8192) {
                    for i in chunk {
                        columns.append(&rows.get(i).expect("in range"));
                    }
                    arrays += black_box(columns.finish()).len();
                }
                arrays
            })
        })
    });
    group.bench_function("plain_vecs", |b| {
        b.iter_custom(|iterations| {
            cpu_timed(iterations, || {
                let mut addresses = (String::new(), String::new());
                let mut total = 0;
                for chunk in chunks(&rows, 8192) {
                    let mut columns = PlainColumns::default();
                    for i in chunk {
                        columns.append(&rows.get(i).expect("in range"), &mut addresses);
                    }
                    total += black_box(columns).ts.len();
                }
                total
            })
        })
    });
    let payload = vec![0x5au8; parquet_bytes as usize];
    let file = std::env::temp_dir().join(format!("l7tap-bench-sinks-raw-{}", std::process::id()));
    group.bench_function("fs_write_same_bytes", |b| {
        b.iter_custom(|iterations| {
            cpu_timed(iterations, || {
                let mut out = std::fs::File::create(&file).unwrap();
                out.write_all(&payload).unwrap();
                out.sync_all().unwrap();
            })
        })
    });
    let _ = std::fs::remove_file(&file);
    group.finish();
}

fn aggregator(c: &mut Criterion) {
    let rows = workload(ROWS);
    let config = AggregatorConfig {
        monotonic_to_unix_offset_ns: OFFSET_NS,
        ..AggregatorConfig::default()
    };
    let mut group = c.benchmark_group("aggregator");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    // Steady state: one long-lived aggregator (pools warm); each iteration replays the
    // workload 3 s later than the previous one and closed windows are flushed (not timed).
    let mut warm = Aggregator::new(config).unwrap();
    let mut shift_ns = 0u64;
    group.bench_function("record", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                shift_ns += 3_000_000_000;
                let mut shifted = rows.clone();
                for r in shifted.records.records_mut() {
                    r.start_ns += shift_ns;
                    r.end_ns += shift_ns;
                }
                timed += cpu_timed(1, || {
                    for row in shifted.iter() {
                        warm.record(&row);
                    }
                });
                let now_unix_ns = BASE_UNIX_NS + shift_ns as i64;
                black_box(warm.flush_until(now_unix_ns - 10_000_000_000));
            }
            timed
        })
    });
    group.bench_function("record_and_flush", |b| {
        b.iter_custom(|iterations| {
            cpu_timed(iterations, || {
                let mut aggregator = Aggregator::new(config).unwrap();
                aggregator.record_batch(&rows);
                aggregator.flush_until(i64::MAX / 2).len()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, requests, aggregator);
criterion_main!(benches);
