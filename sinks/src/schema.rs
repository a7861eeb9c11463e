//! The three tables' schemas, column by column, with the documentation that goes into the Arrow
//! field metadata (key `description`) and, by hand, into `sinks/README.md` (a test checks that
//! every column is listed there).
//!
//! Type rules, chosen for Spark, DuckDB, pyarrow and ClickHouse alike: timestamps are
//! `TIMESTAMP(MICROS, isAdjustedToUTC=true)` (Spark refuses NANOS); integers are signed
//! (INT32/INT64, no unsigned types); strings are plain UTF-8 in Arrow, and the low-cardinality
//! ones are dictionary-encoded in Parquet (readers still see plain strings).
use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Version of the column layout, stored as `l7tap.schema_version` in every file. Adding a column
/// at the end keeps the version; renaming, removing or retyping one bumps it.
pub const SCHEMA_VERSION: &str = "1";

/// Arrow field metadata key holding a column's documentation.
pub const DESCRIPTION_KEY: &str = "description";

/// Logical column types used by the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `timestamp[us, tz=UTC]`.
    TimestampMicrosUtc,
    Int32,
    Int64,
    Boolean,
    Utf8,
    Binary,
    /// `list<utf8>`.
    ListOfUtf8,
    /// `list<list<int64>>`.
    ListOfListOfInt64,
    /// `map<utf8, int64>` (Parquet's MAP: repeated `key_value` groups of `key`, `value`).
    MapOfUtf8ToInt64,
}

/// Field names of a [`ColumnType::MapOfUtf8ToInt64`] column, as Parquet's MAP spells them.
pub const MAP_FIELD_NAMES: (&str, &str, &str) = ("key_value", "key", "value");

impl ColumnType {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::TimestampMicrosUtc => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Binary => DataType::Binary,
            ColumnType::ListOfUtf8 => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
            }
            ColumnType::ListOfListOfInt64 => DataType::List(Arc::new(Field::new_list_field(
                DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
                true,
            ))),
            ColumnType::MapOfUtf8ToInt64 => {
                let (entries, key, value) = MAP_FIELD_NAMES;
                let entry = DataType::Struct(
                    vec![
                        Field::new(key, DataType::Utf8, false),
                        Field::new(value, DataType::Int64, true),
                    ]
                    .into(),
                );
                DataType::Map(Arc::new(Field::new(entries, entry, false)), false)
            }
        }
    }

    /// The type as written in the README tables.
    pub fn readme_name(self) -> &'static str {
        match self {
            ColumnType::TimestampMicrosUtc => "timestamp(µs, UTC)",
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::Boolean => "bool",
            ColumnType::Utf8 => "string",
            ColumnType::Binary => "binary",
            ColumnType::ListOfUtf8 => "list<string>",
            ColumnType::ListOfListOfInt64 => "list<list<int64>>",
            ColumnType::MapOfUtf8ToInt64 => "map<string, int64>",
        }
    }
}

/// One column: name, type, nullability, Parquet dictionary encoding and documentation.
#[derive(Clone, Copy, Debug)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub column_type: ColumnType,
    pub nullable: bool,
    /// Dictionary-encode in Parquet (low-cardinality values).
    pub dictionary: bool,
    pub description: &'static str,
}

const fn column(
    name: &'static str,
    column_type: ColumnType,
    nullable: bool,
    dictionary: bool,
    description: &'static str,
) -> ColumnSpec {
    ColumnSpec {
        name,
        column_type,
        nullable,
        dictionary,
        description,
    }
}

use ColumnType::*;

const NULLABLE: bool = true;
const REQUIRED: bool = false;
const DICT: bool = true;
const PLAIN: bool = false;

/// Columns of the `requests` table: one row per ClickHouse query or ZooKeeper request.
pub const REQUESTS_COLUMNS: &[ColumnSpec] = &[
    column("ts", TimestampMicrosUtc, REQUIRED, PLAIN,
        "Request start: kernel time of the syscall that carried the request's first byte (UTC, µs)."),
    column("duration_ns", Int64, REQUIRED, PLAIN,
        "From the request's first byte to the answer's last byte (ClickHouse: EndOfStream or Exception), ns. 0 when no answer was seen."),
    column("protocol", Utf8, REQUIRED, DICT,
        "`clickhouse` or `zookeeper`: the server's protocol family, whatever the interface (see `interface`)."),
    column("side", Utf8, REQUIRED, DICT,
        "`client`: the observed process connected; `server`: it accepted the connection."),
    column("pid", Int32, REQUIRED, PLAIN, "Process id of the observed process."),
    column("comm", Utf8, REQUIRED, DICT, "Command name (kernel `comm`, at most 15 bytes) of the observed process."),
    column("client_addr", Utf8, REQUIRED, DICT,
        "Client end of the connection, `ip:port` (`[ip6]:port` for IPv6; IPv4-mapped IPv6 shown as IPv4)."),
    column("server_addr", Utf8, REQUIRED, DICT, "Server end of the connection, `ip:port`."),
    column("operation", Utf8, REQUIRED, DICT,
        "ClickHouse statement type (`SELECT`, `INSERT`, ...) or ZooKeeper operation (`getData`, `multi`, ...)."),
    column("status", Utf8, REQUIRED, DICT,
        "`ok`, `error` (server answered with an error), `cancelled` (client cancelled) or `incomplete` (no answer before the connection closed or the parser lost its position)."),
    column("error_code", Int32, NULLABLE, PLAIN,
        "ClickHouse exception code or ZooKeeper error code; null when none."),
    column("error_name", Utf8, NULLABLE, DICT, "Symbolic error name (`UNKNOWN_TABLE`, `NoNode`, ...); null for a code l7tap does not know (see `error_code`)."),
    column("query", Utf8, NULLABLE, PLAIN,
        "ClickHouse query text (literals replaced by `?` when the sink redacts) or ZooKeeper path; bounded by the parser's limit."),
    column("query_id", Utf8, NULLABLE, PLAIN, "ClickHouse query id; null for ZooKeeper or when empty."),
    column("query_kind", Utf8, NULLABLE, DICT,
        "ClickHouse `initial` or `secondary` (sent by a server on behalf of another query); null when unknown."),
    column("initial_query_id", Utf8, NULLABLE, PLAIN, "ClickHouse id of the initial query; null when empty."),
    column("user", Utf8, NULLABLE, DICT, "ClickHouse user; null for ZooKeeper or when empty."),
    column("client_name", Utf8, NULLABLE, DICT, "ClickHouse client name from Hello/ClientInfo; null when empty."),
    column("rows_read", Int64, NULLABLE, PLAIN, "ClickHouse rows read (Progress packets); null for ZooKeeper."),
    column("bytes_read", Int64, NULLABLE, PLAIN, "ClickHouse bytes read (Progress packets); null for ZooKeeper."),
    column("zk_xid", Int32, NULLABLE, PLAIN, "ZooKeeper request xid; null for ClickHouse."),
    column("zk_zxid", Int64, NULLABLE, PLAIN, "ZooKeeper zxid of the reply (-1 for notifications); null for ClickHouse."),
    column("zk_session_id", Int64, NULLABLE, PLAIN, "ZooKeeper session id, when seen on the connection."),
    column("bytes_sent", Int64, REQUIRED, PLAIN, "Bytes of this request's messages, client to server."),
    column("bytes_received", Int64, REQUIRED, PLAIN, "Bytes of this request's answer, server to client."),
    column("error_message", Utf8, NULLABLE, PLAIN, "First line of the error message, bounded (ClickHouse: literals replaced by `?` when the sink redacts)."),
    column("query_truncated", Boolean, REQUIRED, PLAIN, "`query` was cut at the parser's limit."),
    column("cgroup_id", Int64, REQUIRED, DICT, "cgroup v2 id of the observed process (bits reinterpreted as signed)."),
    column("client_version", Utf8, NULLABLE, DICT, "ClickHouse client version `major.minor.patch`; null when unknown."),
    column("rows_written", Int64, NULLABLE, PLAIN, "ClickHouse rows written (Progress packets); null for ZooKeeper."),
    column("bytes_written", Int64, NULLABLE, PLAIN, "ClickHouse bytes written (Progress packets); null for ZooKeeper."),
    column("result_rows", Int64, NULLABLE, PLAIN, "ClickHouse rows sent back in Data packets, where counted; null for ZooKeeper."),
    column("zk_watch", Boolean, NULLABLE, PLAIN, "ZooKeeper request set a watch; null for ClickHouse."),
    column("zk_multi_ops", ListOfUtf8, NULLABLE, PLAIN,
        "ZooKeeper `multi`: the sub-operations' names in order; null otherwise."),
    column("zk_event_type", Int32, NULLABLE, PLAIN, "ZooKeeper watch notification: event type; null otherwise."),
    column("zk_keeper_state", Int32, NULLABLE, PLAIN, "ZooKeeper watch notification: keeper state; null otherwise."),
    column("interface", Utf8, REQUIRED, DICT,
        "How the request reached the server: `native` (the protocol's own TCP framing) or `http` (ClickHouse's HTTP interface)."),
    column("database", Utf8, NULLABLE, DICT,
        "ClickHouse over HTTP: the database the request named (`database=` or `X-ClickHouse-Database`); null otherwise."),
    column("format", Utf8, NULLABLE, DICT,
        "ClickHouse over HTTP: the result format (`default_format=` or the response's `X-ClickHouse-Format`); null when not named."),
    column("http_status", Int32, NULLABLE, DICT,
        "ClickHouse over HTTP: the response's status code; null for the native interface and ZooKeeper."),
    column("client_app", Utf8, NULLABLE, DICT,
        "Application of the client end: its container (`docker:<id>`, `containerd:<id>`, `cri-o:<id>`, `k8s:<pod uid>/<container id>`), else its systemd unit, else its process name; ` :PORT` follows for a process that listens (a server acting as a client). On the server side, known when the client is a watched process of this host (joined by network namespace and addresses); null for a remote client."),
    column("client_pid", Int32, NULLABLE, PLAIN,
        "Process id of the client end; null when unknown (see `client_app`)."),
    column("client_process", Utf8, NULLABLE, DICT,
        "Process name of the client end (`comm`, completed from argv[0] when the kernel cut it at 15 bytes); null when unknown."),
    column("server_app", Utf8, NULLABLE, DICT,
        "Application of the server end, named as `client_app`; on the client side, known when the server is a watched process of this host."),
    column("server_pid", Int32, NULLABLE, PLAIN, "Process id of the server end; null when unknown."),
    column("server_process", Utf8, NULLABLE, DICT, "Process name of the server end; null when unknown."),
    column("exe", Utf8, NULLABLE, DICT,
        "Executable of the observed process (`/proc/PID/exe` at the connection's open); null when it had exited or was not read."),
    column("cgroup", Utf8, NULLABLE, DICT,
        "cgroup path of the observed process: its v2 path unless the root, else the first v1 path naming a container or unit (every hierarchy of `/proc/PID/cgroup` is read); null when unknown."),
    column("tls", Boolean, REQUIRED, PLAIN,
        "The connection is encrypted (TLS): the record was read from the TLS library's plaintext (uprobes), not from the socket."),
    column("fingerprint", Int64, REQUIRED, DICT,
        "Query fingerprint, computed at capture: a 64-bit FNV-1a hash (bits reinterpreted as signed; shown as 16 hex digits by `l7tap diff`) of the normalised text. ClickHouse: the query with literals replaced as `--redact` does, whitespace collapsed and lists of placeholders folded into one (`IN (1, 2, 3)` and `IN (7)` agree). ZooKeeper: the operation (and a multi's op names) with the path's pattern: a sequential node's 10-digit suffix `{seq}`, a generated id (hex digits and dashes, a UUID) `{id}`, a segment's trailing digits (or a number) `{n}`. 0 is `other`: past 1000 distinct fingerprints per actor, one not yet seen folds into it until a window without some earlier one frees room. Stable across runs, hosts and versions."),
];

/// Columns of the `intervals` table: one row per window and key.
pub const INTERVALS_COLUMNS: &[ColumnSpec] = &[
    column("window_start", TimestampMicrosUtc, REQUIRED, PLAIN,
        "Window start (UTC, µs), a multiple of `window_ns` since the Unix epoch. A request belongs to the window containing its end."),
    column("window_ns", Int64, REQUIRED, DICT, "Window length, ns (default 10 s)."),
    column("protocol", Utf8, REQUIRED, DICT, "`clickhouse` or `zookeeper`, as in `requests` (with `interface`, part of the key)."),
    column("side", Utf8, REQUIRED, DICT, "`client` or `server`, as in `requests`."),
    column("client_addr", Utf8, REQUIRED, DICT, "Client IP, without the port."),
    column("comm", Utf8, REQUIRED, DICT, "Command name of the observed process."),
    column("server_addr", Utf8, REQUIRED, DICT, "Server `ip:port`."),
    column("operation", Utf8, REQUIRED, DICT, "Statement type or ZooKeeper operation, as in `requests`."),
    column("status", Utf8, REQUIRED, DICT, "`ok`, `error`, `cancelled` or `incomplete`."),
    column("count", Int64, REQUIRED, PLAIN, "Requests in the window."),
    column("errors", Int64, REQUIRED, PLAIN, "Requests with status `error` (equals `count` in `error` rows, else 0)."),
    column("sum_ns", Int64, REQUIRED, PLAIN, "Sum of the exact durations, ns."),
    column("min_ns", Int64, REQUIRED, PLAIN, "Shortest exact duration, ns."),
    column("max_ns", Int64, REQUIRED, PLAIN, "Longest exact duration, ns."),
    column("p50_ns", Int64, REQUIRED, PLAIN, "Median from the histogram (3 significant digits), bounded by min/max."),
    column("p90_ns", Int64, REQUIRED, PLAIN, "90th percentile from the histogram."),
    column("p99_ns", Int64, REQUIRED, PLAIN, "99th percentile from the histogram."),
    column("p999_ns", Int64, REQUIRED, PLAIN, "99.9th percentile from the histogram."),
    column("hdr", Binary, REQUIRED, PLAIN,
        "The durations' HDR histogram, V2 serialization (uncompressed, cookie 0x1c849303), values in ns clamped to 1 µs..1 h, 3 significant digits, lowest discernible 1 µs: decode and add to merge windows or keys exactly."),
    column("heatmap_counts", ListOfListOfInt64, REQUIRED, PLAIN,
        "One list per heatmap sub-window (window_ns / heatmap_sub_window_ns of them, in time order), each holding one count per latency bucket (bounds in the file metadata `l7tap.heatmap.bucket_upper_bounds_ns`; the last bucket is above 1 h)."),
    column("heatmap_sub_window_ns", Int64, REQUIRED, DICT, "Length of one heatmap sub-window, ns (default 1 s)."),
    column("interface", Utf8, REQUIRED, DICT, "`native` or `http`, as in `requests`: part of the key."),
    column("client_app", Utf8, REQUIRED, DICT,
        "Application of the client, as `requests.client_app`; empty when unknown (a remote client: see `client_addr`). Part of the key."),
    column("client_process", Utf8, REQUIRED, DICT,
        "Process name of the client, as `requests.client_process`; empty when unknown. Part of the key."),
    column("fingerprint", Int64, REQUIRED, DICT,
        "Query fingerprint of the rows' requests, as `requests.fingerprint` (0: `other`). Part of the key."),
];

/// Columns of the `capture_stats` table: capture counters per window (and CPU).
pub const CAPTURE_STATS_COLUMNS: &[ColumnSpec] = &[
    column(
        "window_start",
        TimestampMicrosUtc,
        REQUIRED,
        PLAIN,
        "Window start (UTC, µs).",
    ),
    column(
        "cpu",
        Int32,
        NULLABLE,
        DICT,
        "CPU the counters are for; null for counters of the whole machine.",
    ),
    column(
        "events",
        Int64,
        REQUIRED,
        PLAIN,
        "Kernel events read in the window.",
    ),
    column(
        "bytes",
        Int64,
        REQUIRED,
        PLAIN,
        "Payload bytes captured in the window.",
    ),
    column(
        "lost_samples",
        Int64,
        REQUIRED,
        PLAIN,
        "Samples the perf/ring buffer reported lost.",
    ),
    column(
        "ring_drops",
        Int64,
        REQUIRED,
        PLAIN,
        "Events the probes dropped because the ring was full (in-kernel counter).",
    ),
    column(
        "parse_errors",
        Int64,
        REQUIRED,
        PLAIN,
        "Parser errors (a stream the parser could not follow).",
    ),
    column(
        "resyncs",
        Int64,
        REQUIRED,
        PLAIN,
        "Times a parser lost its position and resynchronised (a connection joined mid-stream is not one).",
    ),
    column(
        "connections",
        Int64,
        REQUIRED,
        PLAIN,
        "Connections tracked (as reported by the capture path).",
    ),
    column("window_ns", Int64, REQUIRED, DICT, "Window length, ns."),
    column(
        "counters",
        MapOfUtf8ToInt64,
        REQUIRED,
        PLAIN,
        "Named counters of the window beyond the columns above (e.g. `kernel.classify_checks`, `kernel.classified`, `kernel.ignored`, `kernel.bytes_failed`, `kernel.tls_payloads`, `kernel.tls_lost` per CPU; `parse.gap_resyncs`, the part of `resyncs` that came after bytes the capture cut or lost, machine-wide; `identity.resolved` and `identity.unresolved`: connections whose process was read from `/proc` at their open, or had already exited; `tls.attached` and `tls.attach_failed`, TLS library functions attached, for the machine): new counters are new keys, not new columns. A counter absent from a row was 0 or not measured.",
    ),
];

/// The three tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    Requests,
    Intervals,
    CaptureStats,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Requests, Table::Intervals, Table::CaptureStats];

    /// Directory name under the output directory.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Requests => "requests",
            Table::Intervals => "intervals",
            Table::CaptureStats => "capture_stats",
        }
    }

    pub const fn columns(self) -> &'static [ColumnSpec] {
        match self {
            Table::Requests => REQUESTS_COLUMNS,
            Table::Intervals => INTERVALS_COLUMNS,
            Table::CaptureStats => CAPTURE_STATS_COLUMNS,
        }
    }

    /// The Arrow schema, with each field's description in its metadata and the table-wide
    /// key-value metadata ([`Table::file_metadata`]) in the schema metadata.
    pub fn schema(self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns()
            .iter()
            .map(|spec| {
                Field::new(spec.name, spec.column_type.data_type(), spec.nullable).with_metadata(
                    HashMap::from([(DESCRIPTION_KEY.to_string(), spec.description.to_string())]),
                )
            })
            .collect();
        Arc::new(Schema::new_with_metadata(
            fields,
            self.file_metadata().into_iter().collect(),
        ))
    }

    /// Key-value metadata written into every file of this table.
    pub fn file_metadata(self) -> Vec<(String, String)> {
        let mut metadata = vec![
            ("l7tap.table".to_string(), self.name().to_string()),
            (
                "l7tap.schema_version".to_string(),
                SCHEMA_VERSION.to_string(),
            ),
        ];
        if self == Table::Intervals {
            metadata.extend(crate::intervals::heatmap_metadata());
        }
        metadata
    }

    /// Index of a column by name (panics on a name not in the table: a programming error).
    pub fn column_index(self, name: &str) -> usize {
        self.columns()
            .iter()
            .position(|spec| spec.name == name)
            .unwrap_or_else(|| panic!("no column {name} in {}", self.name()))
    }
}
