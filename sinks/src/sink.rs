//! [`ParquetSink`]: the three tables (`requests`, `intervals`, `capture_stats`) written as
//! rolling, Hive-partitioned Parquet files under one output directory.
//!
//! Use from one thread (the sink thread):
//!
//! ```no_run
//! # use l7tap_sinks::{ParquetSink, SinkConfig};
//! # fn batches() -> Vec<l7tap_protocols::CapturedBatch> { vec![] }
//! let mut sink = ParquetSink::new(SinkConfig::new("/var/lib/l7tap", "host1", 0)).unwrap();
//! for batch in batches() {
//!     sink.push_batch(&batch); // no I/O, never fails
//! }
//! if let Err(error) = sink.try_flush() {
//!     // Full disk, unwritable directory...: rows stay buffered; call try_flush again later.
//!     eprintln!("{error}");
//! }
//! sink.finish().unwrap(); // on shutdown: publish everything
//! ```
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use l7tap_aggregate::IntervalRow;
use l7tap_protocols::{CapturedBatch, CapturedRequest, Protocol};

use crate::capture_stats::{CaptureStatsColumns, CaptureStatsRow};
use crate::error::SinkError;
use crate::file::CommittedFile;
use crate::intervals::IntervalColumns;
use crate::requests::RequestColumns;
use crate::run_id::RunId;
use crate::schema::Table;
use crate::table::{TableSettings, TableStats, TableWriter};

/// Default file roll size: 128 MiB.
pub const DEFAULT_ROLL_BYTES: u64 = 128 << 20;
/// Default file roll age: 5 min.
pub const DEFAULT_ROLL_AGE: Duration = Duration::from_secs(300);
/// Default rows per row group.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per Arrow batch of the `intervals` table, at most: a row holds a dense heatmap (310
/// counts, 2.4 KiB), so a window of 10 000 keys is 24 MiB in column builders, and builders
/// grow by doubling. Smaller batches keep that to a few MiB at a time; row groups are as large
/// as for the other tables (they are ended by `row_group_rows`, not by batches).
const INTERVALS_BATCH_ROWS: usize = 1024;

/// Where and how the sink writes.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Output directory; tables go to `<out_dir>/<table>/date=YYYY-MM-DD/hour=HH/`.
    pub out_dir: PathBuf,
    /// Host name in file names (characters other than `[A-Za-z0-9._-]` become `_`).
    pub host: String,
    /// This run's id, in every file's name and `l7tap.run_id` metadata (default: a fresh one
    /// made by [`SinkConfig::new`]).
    pub run_id: RunId,
    /// Added to record timestamps (CLOCK_MONOTONIC ns) to get Unix ns.
    pub monotonic_to_unix_offset_ns: i64,
    /// Close a file once its encoded size reaches this (default 128 MiB).
    pub roll_bytes: u64,
    /// Close a file this long after it was opened (default 5 min), checked by `try_flush`.
    pub roll_age: Duration,
    /// Rows per Parquet row group (default 128 Ki).
    pub row_group_rows: usize,
    /// Also end a row group once its encoded size reaches this (default 64 MiB).
    pub row_group_bytes: usize,
    /// Rows per Arrow batch handed to the Parquet encoder (default 8192).
    pub batch_rows: usize,
    /// fsync the file in progress once this many bytes are unsynced (default 8 MiB); bytes stay
    /// in memory until synced, so this also bounds what a failed fsync can cost.
    pub sync_every_bytes: usize,
    /// When the rows held in memory (not yet in published files) exceed this, new rows are
    /// dropped and counted in [`SinkStats`] (default 512 MiB). Only reached while writes fail.
    pub max_buffered_bytes: usize,
    /// Replace literals in ClickHouse query text by `?` ([`crate::redact_query`]).
    pub redact_queries: bool,
    /// zstd level (default 1: fast; 3 compresses about 10 % better at half the speed).
    pub zstd_level: i32,
    /// Parquet 2 features (default true): data pages v2 and DELTA_BINARY_PACKED for integer
    /// columns that are not dictionary-encoded (text stays PLAIN): 14 % faster and 14 %
    /// smaller than format 1 (data pages v1, PLAIN). Every current reader handles them (Spark
    /// ≥ 3.3, DuckDB, pyarrow, ClickHouse, Trino); set false for older ones.
    pub parquet_2: bool,
    /// Add a `host=<host>` level below `hour=` (default false): for outputs many hosts share
    /// ([`crate::output::Output::host_partition`]).
    pub host_partition: bool,
}

impl SinkConfig {
    /// The defaults, for `out_dir`, `host` and the clock offset, with a fresh run id.
    pub fn new(
        out_dir: impl Into<PathBuf>,
        host: impl Into<String>,
        monotonic_to_unix_offset_ns: i64,
    ) -> Self {
        SinkConfig {
            out_dir: out_dir.into(),
            host: host.into(),
            run_id: RunId::generate(std::time::SystemTime::now()),
            monotonic_to_unix_offset_ns,
            roll_bytes: DEFAULT_ROLL_BYTES,
            roll_age: DEFAULT_ROLL_AGE,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            row_group_bytes: 64 << 20,
            batch_rows: 8192,
            sync_every_bytes: 8 << 20,
            max_buffered_bytes: 512 << 20,
            redact_queries: false,
            zstd_level: 1,
            parquet_2: true,
            host_partition: false,
        }
    }

    fn validate(&self) -> Result<(), SinkError> {
        let invalid = |message: &str| Err(SinkError::InvalidConfig(message.to_string()));
        if self.out_dir.as_os_str().is_empty() {
            return invalid("out_dir is empty");
        }
        if self.row_group_rows == 0 || self.batch_rows == 0 {
            return invalid("row_group_rows and batch_rows must be positive");
        }
        if self.roll_bytes == 0 {
            return invalid("roll_bytes must be positive");
        }
        Ok(())
    }
}

/// `text` with its characters outside `[A-Za-z0-9._-]` replaced by `_`: safe as a file name
/// (or one component of a path).
pub fn file_name_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `host` made safe for a file name.
pub fn sanitize_host(host: &str) -> String {
    let cleaned = file_name_safe(host);
    if cleaned.is_empty() {
        "localhost".to_string()
    } else {
        cleaned
    }
}

/// Removes the temporary files (`.<host>-….parquet.tmp`) that a killed sink of this host left
/// under `out_dir`; call it at startup, before creating the sink. Returns how many were removed.
/// Files of other hosts sharing the directory are left alone.
pub fn remove_stale_temp_files(out_dir: &Path, host: &str) -> std::io::Result<usize> {
    let prefix = format!(".{}-", sanitize_host(host));
    let mut removed = 0;
    for table in Table::ALL {
        let table_dir = out_dir.join(table.name());
        for date in read_dir_or_empty(&table_dir)? {
            for hour in read_dir_or_empty(&date)? {
                for file in read_dir_or_empty(&hour)? {
                    let name = file.file_name().unwrap_or_default().to_string_lossy();
                    if name.starts_with(&prefix) && name.ends_with(".parquet.tmp") {
                        std::fs::remove_file(&file)?;
                        removed += 1;
                    }
                }
            }
        }
    }
    Ok(removed)
}

fn read_dir_or_empty(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|entry| entry.map(|e| e.path())).collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) if error.raw_os_error() == Some(libc::ENOTDIR) => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`), or `localhost`.
pub fn default_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Counters of the three tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub requests: TableStats,
    pub intervals: TableStats,
    pub capture_stats: TableStats,
}

/// Writes the three tables; see the module documentation.
pub struct ParquetSink {
    max_buffered_bytes: usize,
    over_budget: bool,
    requests: TableWriter<RequestColumns>,
    /// An error of encoding `requests` batches as they were sealed, returned by the next
    /// flush.
    deferred_error: Option<SinkError>,
    intervals: TableWriter<IntervalColumns>,
    capture_stats: TableWriter<CaptureStatsColumns>,
}

impl ParquetSink {
    /// Checks the configuration; touches no file (directories are created on first write).
    pub fn new(config: SinkConfig) -> Result<Self, SinkError> {
        config.validate()?;
        let settings = TableSettings {
            out_dir: config.out_dir.clone(),
            host: sanitize_host(&config.host),
            run_id: config.run_id.to_string(),
            roll_bytes: config.roll_bytes,
            roll_age: config.roll_age,
            row_group_rows: config.row_group_rows,
            row_group_bytes: config.row_group_bytes,
            batch_rows: config.batch_rows,
            sync_every_bytes: config.sync_every_bytes,
            zstd_level: config.zstd_level,
            parquet_2: config.parquet_2,
            host_partition: config.host_partition,
        };
        Ok(ParquetSink {
            max_buffered_bytes: config.max_buffered_bytes,
            over_budget: false,
            deferred_error: None,
            requests: TableWriter::new(
                settings.clone(),
                RequestColumns::new(
                    config.batch_rows,
                    config.monotonic_to_unix_offset_ns,
                    config.redact_queries,
                ),
            ),
            intervals: TableWriter::new(
                TableSettings {
                    batch_rows: settings.batch_rows.min(INTERVALS_BATCH_ROWS),
                    ..settings.clone()
                },
                IntervalColumns::new(),
            ),
            capture_stats: TableWriter::new(settings, CaptureStatsColumns::default()),
        })
    }

    /// Buffers one `requests` row. No I/O; never fails (a row is dropped and counted only when
    /// the sink is over `max_buffered_bytes` because writes have been failing).
    #[inline]
    pub fn push_request(&mut self, request: &CapturedRequest<'_>) {
        if self.over_budget {
            self.requests.drop_row();
            return;
        }
        let ts_us = self.requests.columns.ts_micros(request);
        self.requests.before_row(ts_us);
        self.requests.columns.append(request);
        self.requests.after_row();
        // After an error, encoding waits for the next flush (which reports it).
        if self.requests.has_sealed_batches() && self.deferred_error.is_none() {
            self.encode_sealed_requests();
        }
    }

    /// Encodes a batch of `requests` rows (in memory, no I/O) as soon as it is sealed, not at
    /// the next flush: its Arrow buffers, still in cache, are freed at once and reused by the
    /// next batch, instead of a second's worth of batches waiting in fresh memory (page
    /// faults on every batch, and that much more memory held).
    #[cold]
    fn encode_sealed_requests(&mut self) {
        if let Err(error) = self.requests.encode_pending(Instant::now()) {
            self.deferred_error.get_or_insert(error);
        }
    }

    /// Buffers every row of `batch`, protocol by protocol ([`Protocol::ALL`]), each in
    /// order. Grouping by protocol gives each protocol's columns (null for the other one)
    /// long runs, which the Parquet level, dictionary and zstd encoders handle in bulk.
    pub fn push_batch(&mut self, batch: &CapturedBatch) {
        for protocol in Protocol::ALL {
            for request in batch.iter() {
                if request.record.protocol == protocol {
                    self.push_request(&request);
                }
            }
        }
    }

    /// Buffers one `intervals` row (see [`l7tap_aggregate::Aggregator::flush_until`]).
    pub fn push_interval(&mut self, row: &IntervalRow) {
        if self.over_budget {
            self.intervals.drop_row();
            return;
        }
        self.intervals.before_row(IntervalColumns::ts_micros(row));
        self.intervals.columns.append(row);
        self.intervals.after_row();
    }

    /// Encodes the `intervals` rows pushed so far (in memory, no I/O), so that the dense
    /// heatmaps of a window with many keys are not held in column builders until the next
    /// [`ParquetSink::try_flush`]. On error the rows stay pending (or, for rows the encoder
    /// refuses, are counted as dropped), as with `try_flush`.
    pub fn encode_intervals(&mut self) -> Result<(), SinkError> {
        self.intervals.encode(Instant::now())
    }

    /// Buffers `intervals` rows, e.g. the result of [`crate::merge_interval_rows`].
    pub fn push_intervals<'a>(&mut self, rows: impl IntoIterator<Item = &'a IntervalRow>) {
        for row in rows {
            self.push_interval(row);
        }
    }

    /// Buffers one `capture_stats` row.
    pub fn push_capture_stats(&mut self, row: &CaptureStatsRow) {
        if self.over_budget {
            self.capture_stats.drop_row();
            return;
        }
        self.capture_stats
            .before_row(CaptureStatsColumns::ts_micros(row));
        self.capture_stats.columns.append(row);
        self.capture_stats.after_row();
    }

    /// [`ParquetSink::try_flush_at`] now.
    pub fn try_flush(&mut self) -> Result<(), SinkError> {
        self.try_flush_at(Instant::now())
    }

    /// Encodes what was pushed, closes files that are due (size, age, hour), writes and
    /// publishes what it can. Call it regularly (e.g. every second). On error, every table is
    /// still attempted, the first error is returned, and nothing is lost: the next call resumes
    /// where this one stopped.
    pub fn try_flush_at(&mut self, now: Instant) -> Result<(), SinkError> {
        self.flush_all(now, false)
    }

    /// Closes and publishes every file (shutdown). Can be retried after an error; the sink
    /// stays usable.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        self.flush_all(Instant::now(), true)
    }

    fn flush_all(&mut self, now: Instant, close_all: bool) -> Result<(), SinkError> {
        let results = [
            self.deferred_error.take().map_or(Ok(()), Err),
            self.requests.try_flush(now, close_all),
            self.intervals.try_flush(now, close_all),
            self.capture_stats.try_flush(now, close_all),
        ];
        self.over_budget = self.buffered_bytes() > self.max_buffered_bytes;
        results
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(drop)
    }

    /// Rows pushed and not yet in a published file (all tables).
    pub fn buffered_rows(&self) -> u64 {
        self.requests.buffered_rows()
            + self.intervals.buffered_rows()
            + self.capture_stats.buffered_rows()
    }

    /// Memory held for those rows, roughly.
    pub fn buffered_bytes(&self) -> usize {
        self.requests.buffered_bytes()
            + self.intervals.buffered_bytes()
            + self.capture_stats.buffered_bytes()
    }

    pub fn stats(&self) -> SinkStats {
        SinkStats {
            requests: self.requests.stats(),
            intervals: self.intervals.stats(),
            capture_stats: self.capture_stats.stats(),
        }
    }

    /// Files published since the last call, oldest first per table.
    pub fn take_committed_files(&mut self) -> Vec<CommittedFile> {
        let mut files = self.requests.take_committed();
        files.extend(self.intervals.take_committed());
        files.extend(self.capture_stats.take_committed());
        files
    }
}
