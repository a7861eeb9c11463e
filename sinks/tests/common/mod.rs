//! Helpers shared by the sink's integration tests: record factories, a temporary directory,
//! and reading Parquet files back with the parquet crate's Arrow reader.
#![allow(dead_code)]

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::compute::concat_batches;
use l7tap_protocols::{
    CapturedBatch, ClickHouseDetails, ConnectionInfo, Details, Protocol, QueryKind, RequestRecord,
    Side, Status, ZooKeeperDetails,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// 2024-06-01T10:00:00Z in Unix ns.
pub const BASE_UNIX_NS: i64 = 1_717_236_000_000_000_000;
/// CLOCK_MONOTONIC value that corresponds to `BASE_UNIX_NS`.
pub const BASE_MONOTONIC_NS: u64 = 5_000_000_000_000;
/// The offset the sink and aggregator are configured with.
pub const OFFSET_NS: i64 = BASE_UNIX_NS - BASE_MONOTONIC_NS as i64;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "l7tap-sinks-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn conn(side: Side, client: &str, server: &str, comm: &str) -> Arc<ConnectionInfo> {
    Arc::new(ConnectionInfo {
        pid: 4242,
        comm: comm.to_string(),
        cgroup_id: 77,
        side,
        client_addr: client.parse::<SocketAddr>().unwrap(),
        server_addr: server.parse::<SocketAddr>().unwrap(),
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

/// Every `.parquet` file under `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(dir, &mut |path| {
        if path.extension().is_some_and(|ext| ext == "parquet") {
            files.push(path.to_path_buf());
        }
    });
    files.sort();
    files
}

/// Every file under `dir`, sorted.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(dir, &mut |path| files.push(path.to_path_buf()));
    files.sort();
    files
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, visit);
        } else {
            visit(&path);
        }
    }
}

/// All rows of one file, as one batch.
pub fn read_file(path: &Path) -> RecordBatch {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    concat_batches(&schema, &batches).unwrap()
}

/// All rows of a table, as one batch (files in name order).
pub fn read_table(out: &Path, table: &str) -> RecordBatch {
    let files = parquet_files(&out.join(table));
    assert!(!files.is_empty(), "no files for {table}");
    let batches: Vec<RecordBatch> = files.iter().map(|path| read_file(path)).collect();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// The file's key-value metadata.
pub fn file_metadata(path: &Path) -> Vec<(String, String)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| {
            panic!(
                "column {name} has type {}",
                batch.column_by_name(name).unwrap().data_type()
            )
        })
}

pub fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let array: &arrow::array::StringArray = column(batch, name);
    (0..array.len())
        .map(|i| (!array.is_null(i)).then(|| array.value(i).to_string()))
        .collect()
}

pub fn int64s(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let array: &arrow::array::Int64Array = column(batch, name);
    (0..array.len())
        .map(|i| (!array.is_null(i)).then(|| array.value(i)))
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
