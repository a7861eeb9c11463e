//! Records to Arrow batches and rolling Parquet files.
//!
//! Three tables, written under one output directory as
//! `OUT/<table>/date=YYYY-MM-DD/hour=HH/<host>-<run>-<start>-<seq>.parquet` (see `sinks/README.md`
//! for every column):
//!
//! - `requests`: one row per ClickHouse query / ZooKeeper request ([`ParquetSink::push_request`]);
//! - `intervals`: per 10 s window and key, counts, percentiles, the HDR histogram and a per-second
//!   latency heatmap, computed by an [`l7tap_aggregate::Aggregator`]
//!   ([`ParquetSink::push_interval`]);
//! - `capture_stats`: capture counters ([`CaptureStatsRow`], [`ParquetSink::push_capture_stats`]).
//!
//! Modules: [`sink`] (the writer the capture path drives), [`schema`] (column definitions and
//! their documentation), and the internals: per-table builders, rolling
//! ([`table`]) and crash-safe files ([`mod@file`]). The aggregation itself is the
//! `l7tap-aggregate` crate.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod capture_stats;
pub mod error;
pub mod file;
pub mod intervals;
pub mod output;
pub mod requests;
pub mod run_id;
pub mod schema;
pub mod sink;
pub mod table;
pub mod time;

pub use capture_stats::CaptureStatsRow;
pub use error::SinkError;
pub use file::CommittedFile;
pub use l7tap_protocols::fingerprint::{redact_query, redact_query_into};
pub use output::Output;
pub use run_id::{run_id_of_file_name, RunId};
pub use schema::{Table, SCHEMA_VERSION};
pub use sink::{default_host_name, remove_stale_temp_files, ParquetSink, SinkConfig, SinkStats};
pub use table::TableStats;
pub use time::measure_monotonic_to_unix_offset_ns;
