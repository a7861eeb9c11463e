//! `l7tap report`: per-server client tables, SLIs and capture health from an output directory.
//!
//! Counts and latency quantiles come from the `intervals` table: the HDR histograms of every
//! matching window are decoded and added, so quantiles are those of all requests (within the
//! histogram's 3 significant digits), not averages of per-window percentiles. The `requests`
//! table is read only for what `intervals` lacks: the names of the errors (error rows only, a few
//! projected columns). Requests whose answer was never seen (`incomplete`, duration 0) count as
//! requests but not in latencies. Per server, the server's own view (`side = 'server'`) is used
//! when the capture has it, else the clients' view.
//!
//! Time filters: `--since`/`--until` select windows (`intervals`, `capture_stats`) by their start
//! and requests by `ts`; files are skipped by their `date=`/`hour=` partition and row groups by
//! their min/max statistics before any row is decoded.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

use crate::hdr_sum::HdrSum;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowFilter, RowSelection,
};
use parquet::arrow::ProjectionMask;
use parquet::file::statistics::Statistics;

const NANOS_PER_MICRO: i64 = 1_000;
const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Errors of the report and heatmap readers (the binary turns them into messages).
#[derive(Debug)]
pub enum ReadError {
    Io(PathBuf, std::io::Error),
    Parquet(PathBuf, parquet::errors::ParquetError),
    Arrow(PathBuf, arrow::error::ArrowError),
    Histogram(String),
    Format(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Parquet(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Arrow(p, e) => write!(f, "{}: {e}", p.display()),
            ReadError::Histogram(m) | ReadError::Format(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReadError {}

/// Which rows to read: protocol, server, client and a time range (Unix µs, half-open).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub protocol: Option<String>,
    pub server: Option<String>,
    /// Client IP (a port, if given, is ignored).
    pub client: Option<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
}

impl Selection {
    fn time_matches(&self, t_us: i64) -> bool {
        self.since_us.is_none_or(|s| t_us >= s) && self.until_us.is_none_or(|u| t_us < u)
    }

    fn key_matches(&self, protocol: &str, server: &str, client_ip: &str) -> bool {
        self.protocol.as_deref().is_none_or(|p| p == protocol)
            && self.server.as_deref().is_none_or(|s| s == server)
            && self.client.as_deref().is_none_or(|c| ip_of(c) == client_ip)
    }
}

/// The IP part of `ip:port` / `[ip6]:port` (a bare IP is returned as is).
pub fn ip_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rfind(':') {
        Some(i) if addr[..i].parse::<std::net::Ipv4Addr>().is_ok() => &addr[..i],
        _ => addr,
    }
}

/// Parses `--since`/`--until`: RFC 3339-like UTC (`2026-11-25T11:30:00Z`, `2026-11-25 11:30:00`,
/// `2026-11-25`) or Unix seconds; returns Unix µs.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Ok((secs * 1e6) as i64);
    }
    let t = text.trim_end_matches('Z').replace(' ', "T");
    let (date, time) = t.split_once('T').unwrap_or((&t, "00:00:00"));
    let bad = || format!("bad time {text:?} (use 2026-11-25T11:30:00Z or Unix seconds)");
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let hms: Vec<f64> = time
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || hms.is_empty() || hms.len() > 3 {
        return Err(bad());
    }
    let days = days_from_civil(d[0], d[1], d[2]);
    let secs = hms[0] * 3600.0 + hms.get(1).unwrap_or(&0.0) * 60.0 + hms.get(2).unwrap_or(&0.0);
    Ok(days * 86_400_000_000 + (secs * 1e6) as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix µs.
pub fn format_time_us(t_us: i64) -> String {
    let secs = t_us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// The Parquet files of `table` under `dir` whose `date=`/`hour=` partition can hold rows of
/// the selected time range. A file's partition is the hour of its first row, and a file can
/// hold a few rows of the previous hour, so partition H is read when the selection overlaps
/// [H − 1 h, H + 1 h).
pub fn table_files(dir: &Path, table: &str, selection: &Selection) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let root = dir.join(table);
    let Ok(dates) = std::fs::read_dir(&root) else {
        return files;
    };
    for date in dates.flatten() {
        let date_name = date.file_name().to_string_lossy().into_owned();
        let Ok(hours) = std::fs::read_dir(date.path()) else {
            continue;
        };
        for hour in hours.flatten() {
            let hour_name = hour.file_name().to_string_lossy().into_owned();
            let partition = partition_start_us(&date_name, &hour_name);
            if partition.is_some_and(|start| !partition_may_hold(selection, start)) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(hour.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".parquet") && !name.starts_with('.') {
                    files.push(entry.path());
                }
            }
        }
    }
    files.sort();
    files
}

/// Whether the partition of the hour starting at `hour_start_us` can hold rows of the selection:
/// rows of hour H are in partition H, or H + 1 when they arrived after a row of H + 1.
fn partition_may_hold(selection: &Selection, hour_start_us: i64) -> bool {
    let too_late = selection
        .until_us
        .is_some_and(|u| hour_start_us - MICROS_PER_HOUR >= u);
    let too_early = selection
        .since_us
        .is_some_and(|s| hour_start_us + MICROS_PER_HOUR <= s);
    !too_late && !too_early
}

fn partition_start_us(date_dir: &str, hour_dir: &str) -> Option<i64> {
    let date = date_dir.strip_prefix("date=")?;
    let hour: i64 = hour_dir.strip_prefix("hour=")?.parse().ok()?;
    let day_start = parse_time(date).ok()?;
    Some(day_start + hour * MICROS_PER_HOUR)
}

/// Reads `columns` of one file, keeping only row groups whose `time_column` statistics overlap
/// the selection (`slack_us` widens the range, e.g. by a window length).
pub fn read_projected(
    path: &Path,
    columns: &[&str],
    time_column: &str,
    selection: &Selection,
    slack_us: i64,
) -> Result<(Vec<RecordBatch>, HashMap<String, String>), ReadError> {
    read_projected_where(path, columns, time_column, selection, slack_us, None)
}

/// [`read_projected`], keeping only the rows where the column `non_null` is not null: that
/// column is decoded first, the others only for the rows kept.
pub fn read_projected_where(
    path: &Path,
    columns: &[&str],
    time_column: &str,
    selection: &Selection,
    slack_us: i64,
    non_null: Option<&str>,
) -> Result<(Vec<RecordBatch>, HashMap<String, String>), ReadError> {
    read_inner(
        path,
        columns,
        time_column,
        selection,
        slack_us,
        non_null,
        None,
    )
}

/// [`read_projected`] of some rows only: `rows` are sorted indices among the rows that
/// `read_projected` with the same arguments returns (pages holding none are not decoded).
pub fn read_rows(
    path: &Path,
    columns: &[&str],
    time_column: &str,
    selection: &Selection,
    slack_us: i64,
    rows: &[usize],
) -> Result<Vec<RecordBatch>, ReadError> {
    read_inner(
        path,
        columns,
        time_column,
        selection,
        slack_us,
        None,
        Some(rows),
    )
    .map(|r| r.0)
}

fn read_inner(
    path: &Path,
    columns: &[&str],
    time_column: &str,
    selection: &Selection,
    slack_us: i64,
    non_null: Option<&str>,
    rows: Option<&[usize]>,
) -> Result<(Vec<RecordBatch>, HashMap<String, String>), ReadError> {
    let file = File::open(path).map_err(|e| ReadError::Io(path.to_path_buf(), e))?;
    let parquet_err = |e| ReadError::Parquet(path.to_path_buf(), e);
    // With a row selection, the page index lets the reader skip pages holding no chosen row.
    let options = ArrowReaderOptions::new().with_page_index(rows.is_some());
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(parquet_err)?;
    let metadata = builder.metadata().clone();
    let key_values: HashMap<String, String> = metadata
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    let schema_descr = metadata.file_metadata().schema_descr();
    let time_index =
        (0..schema_descr.num_columns()).find(|&i| schema_descr.column(i).name() == time_column);
    let row_groups: Vec<usize> = (0..metadata.num_row_groups())
        .filter(|&i| {
            let Some(ci) = time_index else { return true };
            match metadata.row_group(i).column(ci).statistics() {
                Some(Statistics::Int64(s)) => {
                    let (Some(&min), Some(&max)) = (s.min_opt(), s.max_opt()) else {
                        return true;
                    };
                    selection.until_us.is_none_or(|u| min - slack_us < u)
                        && selection
                            .since_us
                            .is_none_or(|since| max + slack_us >= since)
                }
                _ => true,
            }
        })
        .collect();
    let mask = ProjectionMask::columns(schema_descr, columns.iter().copied());
    let mut builder = builder;
    if let Some(name) = non_null {
        let filter_mask = ProjectionMask::columns(schema_descr, [name]);
        let predicate = ArrowPredicateFn::new(filter_mask, |batch: RecordBatch| {
            arrow::compute::is_not_null(batch.column(0).as_ref())
        });
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
    }
    if let Some(rows) = rows {
        let total: usize = row_groups
            .iter()
            .map(|&i| metadata.row_group(i).num_rows() as usize)
            .sum();
        let ranges = rows.iter().map(|&r| r..r + 1);
        builder = builder.with_row_selection(RowSelection::from_consecutive_ranges(ranges, total));
    }
    let reader = builder
        .with_projection(mask)
        .with_row_groups(row_groups)
        .build()
        .map_err(parquet_err)?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ReadError::Arrow(path.to_path_buf(), e))?;
    Ok((batches, key_values))
}

/// `read(file)` of every file, decoded on up to one thread per core (8 at most) a few files
/// at a time, yielded in file order: Parquet decoding is most of a long report's time, and
/// only that many files' batches are in memory at once.
pub fn read_files_in_parallel<'a, T: Send + 'a>(
    files: Vec<PathBuf>,
    read: impl Fn(&Path) -> Result<T, ReadError> + Sync + 'a,
) -> impl Iterator<Item = (PathBuf, Result<T, ReadError>)> + 'a {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let chunks: Vec<Vec<PathBuf>> = files.chunks(threads).map(|c| c.to_vec()).collect();
    chunks.into_iter().flat_map(move |chunk| {
        let read = &read;
        let decoded: Vec<Result<T, ReadError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = chunk
                .iter()
                .map(|path| scope.spawn(move || read(path)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a Parquet reader thread panicked"))
                .collect()
        });
        chunk.into_iter().zip(decoded).collect::<Vec<_>>()
    })
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ReadError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ReadError::Format(format!("column {name} missing or of another type")))
}

/// One `intervals` row, borrowed from the batch it was read in (the histogram and heatmap
/// only when asked for).
pub struct IntervalRecord<'a> {
    pub window_start_us: i64,
    pub window_ns: i64,
    pub protocol: &'a str,
    pub side: &'a str,
    pub client_ip: &'a str,
    pub comm: &'a str,
    pub server: &'a str,
    pub status: &'a str,
    pub count: i64,
    pub errors: i64,
    pub histogram_bytes: Option<&'a [u8]>,
    /// The row's heatmap, a list per sub-window of bucket counts (a slice of the batch read,
    /// not a copy): see [`heatmap_counts`].
    pub heatmap: Option<ArrayRef>,
    pub heatmap_sub_window_ns: i64,
}

/// The bucket counts of each heatmap sub-window of a row's `heatmap`.
pub fn heatmap_counts(heatmap: &ArrayRef) -> impl Iterator<Item = ArrayRef> + '_ {
    let sub_windows = heatmap.as_list::<i32>();
    (0..sub_windows.len()).map(move |i| sub_windows.value(i))
}

/// What to read of `intervals` besides the keys and counts.
#[derive(Clone, Copy)]
pub struct IntervalColumns {
    pub histogram: bool,
    pub heatmap: bool,
}

/// Hands each selected `intervals` row to `visit`, one file in memory at a time (a day of
/// windows, held at once, took gigabytes), and returns the heatmap bucket upper bounds (ns).
pub fn for_each_interval(
    dir: &Path,
    selection: &Selection,
    wanted: IntervalColumns,
    mut visit: impl FnMut(IntervalRecord<'_>) -> Result<(), ReadError>,
) -> Result<Vec<i64>, ReadError> {
    let mut columns = vec![
        "window_start",
        "window_ns",
        "protocol",
        "side",
        "client_addr",
        "comm",
        "server_addr",
        "status",
        "count",
        "errors",
        "heatmap_sub_window_ns",
    ];
    if wanted.histogram {
        columns.push("hdr");
    }
    if wanted.heatmap {
        columns.push("heatmap_counts");
    }
    let mut bucket_bounds: Vec<i64> = Vec::new();
    for (path, decoded) in
        read_files_in_parallel(table_files(dir, "intervals", selection), |path| {
            read_projected(path, &columns, "window_start", selection, 0)
        })
    {
        let (batches, metadata) = decoded?;
        if let Some(bounds) = metadata.get("l7tap.heatmap.bucket_upper_bounds_ns") {
            let parsed: Vec<i64> = serde_json::from_str(bounds).map_err(|e| {
                ReadError::Format(format!("{}: bucket bounds: {e}", path.display()))
            })?;
            if !bucket_bounds.is_empty() && bucket_bounds != parsed {
                return Err(ReadError::Format(format!(
                    "{}: heatmap buckets differ from other files",
                    path.display()
                )));
            }
            bucket_bounds = parsed;
        }
        for batch in &batches {
            let window_start = column::<TimestampMicrosecondArray>(batch, "window_start")?;
            let window_ns = column::<Int64Array>(batch, "window_ns")?;
            let protocol = column::<StringArray>(batch, "protocol")?;
            let side = column::<StringArray>(batch, "side")?;
            let client = column::<StringArray>(batch, "client_addr")?;
            let comm = column::<StringArray>(batch, "comm")?;
            let server = column::<StringArray>(batch, "server_addr")?;
            let status = column::<StringArray>(batch, "status")?;
            let count = column::<Int64Array>(batch, "count")?;
            let errors = column::<Int64Array>(batch, "errors")?;
            let hdr = if wanted.histogram {
                Some(column::<BinaryArray>(batch, "hdr")?)
            } else {
                None
            };
            let sub_window_ns = column::<Int64Array>(batch, "heatmap_sub_window_ns")?;
            let heatmap = if wanted.heatmap {
                Some(column::<ListArray>(batch, "heatmap_counts")?)
            } else {
                None
            };
            for row in 0..batch.num_rows() {
                let start = window_start.value(row);
                if !selection.time_matches(start)
                    || !selection.key_matches(
                        protocol.value(row),
                        server.value(row),
                        client.value(row),
                    )
                {
                    continue;
                }
                visit(IntervalRecord {
                    window_start_us: start,
                    window_ns: window_ns.value(row),
                    protocol: protocol.value(row),
                    side: side.value(row),
                    client_ip: client.value(row),
                    comm: comm.value(row),
                    server: server.value(row),
                    status: status.value(row),
                    count: count.value(row),
                    errors: errors.value(row),
                    histogram_bytes: hdr.map(|h| h.value(row)),
                    heatmap: heatmap.map(|lists| lists.value(row)),
                    heatmap_sub_window_ns: sub_window_ns.value(row),
                })?;
            }
        }
    }
    Ok(bucket_bounds)
}

/// The side shown per (protocol, server): `server` when the capture has rows of the server's
/// own view, else `client`.
pub type Sides = BTreeMap<(String, String), String>;

/// First pass over `intervals` (keys only): the side per server, and the shortest heatmap
/// sub-window (ns; 0 when there are no rows).
pub fn server_sides(dir: &Path, selection: &Selection) -> Result<(Sides, i64), ReadError> {
    let mut sides = ShownSides::default();
    let mut sub_window_ns = 0i64;
    let keys_only = IntervalColumns {
        histogram: false,
        heatmap: false,
    };
    for_each_interval(dir, selection, keys_only, |r| {
        if r.heatmap_sub_window_ns > 0
            && (sub_window_ns == 0 || r.heatmap_sub_window_ns < sub_window_ns)
        {
            sub_window_ns = r.heatmap_sub_window_ns;
        }
        match sides
            .0
            .get_mut(r.protocol)
            .and_then(|s| s.get_mut(r.server))
        {
            Some(side) => {
                if r.side == "server" && side != "server" {
                    *side = "server".to_string();
                }
            }
            None => {
                let servers = sides.0.entry(r.protocol.to_string()).or_default();
                servers.insert(r.server.to_string(), r.side.to_string());
            }
        }
        Ok(())
    })?;
    let flat = sides
        .0
        .into_iter()
        .flat_map(|(p, servers)| {
            servers
                .into_iter()
                .map(move |(s, side)| ((p.clone(), s), side))
        })
        .collect();
    Ok((flat, sub_window_ns))
}

/// [`Sides`] nested by protocol and server, so that a row's borrowed strings look it up
/// without building an owned key per row.
#[derive(Default)]
pub struct ShownSides(BTreeMap<String, BTreeMap<String, String>>);

impl ShownSides {
    pub fn new(sides: &Sides) -> Self {
        let mut nested = ShownSides::default();
        for ((protocol, server), side) in sides {
            nested
                .0
                .entry(protocol.clone())
                .or_default()
                .insert(server.clone(), side.clone());
        }
        nested
    }

    /// Whether a row is of the side shown for its server.
    pub fn is_shown(&self, protocol: &str, server: &str, side: &str) -> bool {
        self.0
            .get(protocol)
            .and_then(|servers| servers.get(server))
            .is_some_and(|s| s == side)
    }
}

/// A time span as reported: first window start to last window end, Unix µs.
#[derive(Clone, Copy, Debug)]
struct Span {
    start_us: i64,
    end_us: i64,
}

/// Latency and count figures of one client of one server.
struct ClientFigures {
    client_ip: String,
    comm: String,
    requests: i64,
    errors: i64,
    incomplete: i64,
    latencies: Histogram<u64>,
    /// The windows' histograms, summed before `latencies` is built from them.
    latency_sum: HdrSum,
    error_names: BTreeMap<String, i64>,
}

/// Per (protocol, server), per (client IP, comm).
type FiguresByServer = BTreeMap<(String, String), BTreeMap<(String, String), ClientFigures>>;

fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits are valid")
}

/// The `report` command's options.
pub struct ReportOptions {
    pub dir: PathBuf,
    pub selection: Selection,
    pub latency_objective_ns: u64,
    pub json: bool,
}

/// Builds the report (text or JSON) for `options`.
pub fn report(options: &ReportOptions) -> Result<String, ReadError> {
    let selection = &options.selection;
    let (sides, _) = server_sides(&options.dir, selection)?;
    let shown = ShownSides::new(&sides);
    let mut span = None::<Span>;
    // Figures in a vector, found by a key built in one reused buffer (no allocation per row).
    let mut figures_at: HashMap<String, usize> = HashMap::new();
    let mut all_figures: Vec<((String, String), ClientFigures)> = Vec::new();
    let mut key = String::new();
    let with_histograms = IntervalColumns {
        histogram: true,
        heatmap: false,
    };
    for_each_interval(&options.dir, selection, with_histograms, |r| {
        if !shown.is_shown(r.protocol, r.server, r.side) {
            return Ok(());
        }
        let end = r.window_start_us + r.window_ns / NANOS_PER_MICRO;
        span = Some(match span {
            None => Span {
                start_us: r.window_start_us,
                end_us: end,
            },
            Some(s) => Span {
                start_us: s.start_us.min(r.window_start_us),
                end_us: s.end_us.max(end),
            },
        });
        key.clear();
        for part in [r.protocol, r.server, r.client_ip, r.comm] {
            key.push_str(part);
            key.push('\0');
        }
        let index = match figures_at.get(key.as_str()) {
            Some(&i) => i,
            None => {
                figures_at.insert(key.clone(), all_figures.len());
                all_figures.push((
                    (r.protocol.to_string(), r.server.to_string()),
                    ClientFigures {
                        client_ip: r.client_ip.to_string(),
                        comm: r.comm.to_string(),
                        requests: 0,
                        errors: 0,
                        incomplete: 0,
                        latencies: new_histogram(),
                        latency_sum: HdrSum::default(),
                        error_names: BTreeMap::new(),
                    },
                ));
                all_figures.len() - 1
            }
        };
        let figures = &mut all_figures[index].1;
        figures.requests += r.count;
        figures.errors += r.errors;
        if r.status == "incomplete" {
            figures.incomplete += r.count;
            return Ok(());
        }
        if let Some(bytes) = r.histogram_bytes {
            figures
                .latency_sum
                .add(bytes)
                .map_err(|e| ReadError::Histogram(format!("hdr of {}: {e}", r.server)))?;
        }
        Ok(())
    })?;
    let mut servers: FiguresByServer = BTreeMap::new();
    for (server, figures) in all_figures {
        servers
            .entry(server)
            .or_default()
            .insert((figures.client_ip.clone(), figures.comm.clone()), figures);
    }
    let span = span.map(|s| Span {
        start_us: selection.since_us.unwrap_or(s.start_us),
        end_us: selection.until_us.unwrap_or(s.end_us),
    });
    let seconds = span
        .map_or(0.0, |s| (s.end_us - s.start_us) as f64 / 1e6)
        .max(1e-9);

    let mut deserializer = Deserializer::new();
    for figures in servers
        .values_mut()
        .flat_map(|clients| clients.values_mut())
    {
        if let Some(sum) = figures
            .latency_sum
            .histogram(&mut deserializer)
            .map_err(ReadError::Histogram)?
        {
            figures
                .latencies
                .add(&sum)
                .map_err(|e| ReadError::Histogram(format!("merging histograms: {e:?}")))?;
        }
    }
    add_error_names(&options.dir, selection, &sides, &mut servers)?;
    let health = read_capture_health(&options.dir, selection)?;

    let objective = options.latency_objective_ns;
    let mut json_servers = Vec::new();
    let mut text = String::new();
    if let Some(s) = span {
        let _ = writeln!(
            text,
            "l7tap report of {} from {} to {} ({:.0} s)\n",
            options.dir.display(),
            format_time_us(s.start_us),
            format_time_us(s.end_us),
            seconds
        );
    } else {
        let _ = writeln!(
            text,
            "l7tap report of {}: no requests selected\n",
            options.dir.display()
        );
    }
    for ((protocol, server), clients) in &servers {
        let side = &sides[&(protocol.clone(), server.clone())];
        let mut clients: Vec<&ClientFigures> = clients.values().collect();
        clients.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then(a.client_ip.cmp(&b.client_ip))
        });
        let mut total = new_histogram();
        let (mut requests, mut errors) = (0i64, 0i64);
        for c in &clients {
            total.add(&c.latencies).expect("same-range histograms add");
            requests += c.requests;
            errors += c.errors;
        }
        let availability = if requests > 0 {
            1.0 - errors as f64 / requests as f64
        } else {
            1.0
        };
        let under_objective = count_at_most(&total, objective);
        let latency_sli = if !total.is_empty() {
            under_objective as f64 / total.len() as f64
        } else {
            1.0
        };
        let view = if side == "server" {
            "server's own view (side = server)"
        } else {
            "clients' view (side = client; no server-side capture of this server)"
        };
        let _ = writeln!(text, "== {protocol} server {server} — {view}");
        let _ = writeln!(
            text,
            "{:<40} {:<16} {:>9} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10}  top errors",
            "client", "observed comm", "requests", "req/s", "errors", "err %", "p50", "p95", "p99"
        );
        let mut json_clients = Vec::new();
        for c in &clients {
            let error_pct = percent(c.errors, c.requests);
            let (p50, p95, p99) = quantiles(&c.latencies);
            let mut top: Vec<(&String, &i64)> = c.error_names.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            top.truncate(3);
            let top_text: Vec<String> = top.iter().map(|(n, k)| format!("{n} ×{k}")).collect();
            let _ = writeln!(
                text,
                "{:<40} {:<16} {:>9} {:>9.2} {:>7} {:>6.2}% {:>10} {:>10} {:>10}  {}",
                c.client_ip,
                c.comm,
                c.requests,
                c.requests as f64 / seconds,
                c.errors,
                error_pct,
                format_ns(p50),
                format_ns(p95),
                format_ns(p99),
                top_text.join(", ")
            );
            json_clients.push(serde_json::json!({
                "client": c.client_ip,
                "comm": c.comm,
                "requests": c.requests,
                "requests_per_second": c.requests as f64 / seconds,
                "errors": c.errors,
                "error_percent": error_pct,
                "incomplete": c.incomplete,
                "p50_ns": p50,
                "p95_ns": p95,
                "p99_ns": p99,
                "top_errors": top.iter().map(|(n, k)| serde_json::json!({"name": n, "count": k})).collect::<Vec<_>>(),
            }));
        }
        let _ = writeln!(
            text,
            "SLI: availability {:.4}% ({} errors of {} requests); latency {:.4}% of {} answered requests within {}",
            availability * 100.0,
            errors,
            requests,
            latency_sli * 100.0,
            total.len(),
            format_ns(objective)
        );
        let _ = writeln!(text);
        json_servers.push(serde_json::json!({
            "protocol": protocol,
            "server": server,
            "side": side,
            "clients": json_clients,
            "sli": {
                "requests": requests,
                "errors": errors,
                "availability": availability,
                "latency_objective_ns": objective,
                "answered_requests": total.len(),
                "within_objective": under_objective,
                "latency_sli": latency_sli,
            },
        }));
    }
    let _ = writeln!(text, "== capture health ({} windows)", health.windows);
    let _ = writeln!(
        text,
        "events {}  lost samples {}  ring drops {}  parse errors {}  resyncs {}",
        health.events, health.lost_samples, health.ring_drops, health.parse_errors, health.resyncs
    );
    let _ = writeln!(text, "{}", health.verdict());
    if options.json {
        let document = serde_json::json!({
            "dir": options.dir.display().to_string(),
            "start": span.map(|s| format_time_us(s.start_us)),
            "end": span.map(|s| format_time_us(s.end_us)),
            "seconds": seconds,
            "servers": json_servers,
            "capture_health": {
                "windows": health.windows,
                "events": health.events,
                "lost_samples": health.lost_samples,
                "ring_drops": health.ring_drops,
                "parse_errors": health.parse_errors,
                "resyncs": health.resyncs,
                "complete": health.complete(),
            },
        });
        return Ok(serde_json::to_string_pretty(&document).expect("JSON values serialize") + "\n");
    }
    Ok(text)
}

/// Requests at or below `limit_ns` (values equivalent to the limit at the histogram's precision
/// count as within it).
fn count_at_most(histogram: &Histogram<u64>, limit_ns: u64) -> u64 {
    if histogram.is_empty() {
        return 0;
    }
    histogram.count_between(0, limit_ns)
}

fn quantiles(histogram: &Histogram<u64>) -> (u64, u64, u64) {
    if histogram.is_empty() {
        return (0, 0, 0);
    }
    let q = |q: f64| histogram.highest_equivalent(histogram.value_at_quantile(q));
    (q(0.50), q(0.95), q(0.99))
}

fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `1.23 ms`-style durations.
pub fn format_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Adds the error names (from `requests`, error rows only) to the clients' figures.
fn add_error_names(
    dir: &Path,
    selection: &Selection,
    sides: &BTreeMap<(String, String), String>,
    servers: &mut FiguresByServer,
) -> Result<(), ReadError> {
    let columns = [
        "ts",
        "protocol",
        "side",
        "comm",
        "client_addr",
        "server_addr",
        "status",
        "error_name",
    ];
    // Error rows are the ones with an error code: that one integer column is decoded for
    // every row, the strings only for errors (about 1 % of a day's rows, not 100 %).
    for (_, decoded) in read_files_in_parallel(table_files(dir, "requests", selection), |path| {
        read_projected_where(path, &columns, "ts", selection, 0, Some("error_code"))
    }) {
        let (batches, _) = decoded?;
        for batch in &batches {
            let ts = column::<TimestampMicrosecondArray>(batch, "ts")?;
            let protocol = column::<StringArray>(batch, "protocol")?;
            let side = column::<StringArray>(batch, "side")?;
            let comm = column::<StringArray>(batch, "comm")?;
            let client = column::<StringArray>(batch, "client_addr")?;
            let server = column::<StringArray>(batch, "server_addr")?;
            let status = column::<StringArray>(batch, "status")?;
            let error_name = column::<StringArray>(batch, "error_name")?;
            for row in 0..batch.num_rows() {
                if status.value(row) != "error" || !selection.time_matches(ts.value(row)) {
                    continue;
                }
                let key = (
                    protocol.value(row).to_string(),
                    server.value(row).to_string(),
                );
                if sides.get(&key).is_none_or(|s| s != side.value(row)) {
                    continue;
                }
                let client_ip = ip_of(client.value(row)).to_string();
                let Some(figures) = servers
                    .get_mut(&key)
                    .and_then(|c| c.get_mut(&(client_ip, comm.value(row).to_string())))
                else {
                    continue;
                };
                let name = if error_name.is_null(row) {
                    "(unnamed)".to_string()
                } else {
                    error_name.value(row).to_string()
                };
                *figures.error_names.entry(name).or_default() += 1;
            }
        }
    }
    Ok(())
}

/// Capture counters over the selected windows.
#[derive(Default)]
struct CaptureHealth {
    windows: u64,
    events: i64,
    lost_samples: i64,
    ring_drops: i64,
    parse_errors: i64,
    resyncs: i64,
}

impl CaptureHealth {
    fn complete(&self) -> bool {
        self.lost_samples == 0
            && self.ring_drops == 0
            && self.parse_errors == 0
            && self.resyncs == 0
    }

    fn verdict(&self) -> String {
        if self.windows == 0 {
            "no capture_stats rows in range: completeness unknown".to_string()
        } else if self.complete() {
            "no events lost and no parser trouble: the numbers above cover all traffic seen".into()
        } else if self.lost_samples + self.ring_drops > 0 {
            format!(
                "{} events lost in transport ({:.3}% of events): counts are lower bounds",
                self.lost_samples + self.ring_drops,
                percent(
                    self.lost_samples + self.ring_drops,
                    self.events + self.lost_samples + self.ring_drops
                )
            )
        } else {
            "parsers lost their position on some streams: requests there may be missing or incomplete"
                .into()
        }
    }
}

/// Sums `capture_stats`: machine-wide rows (`cpu` null) when the capture wrote them, else the
/// per-CPU rows (never both, which would count twice).
fn read_capture_health(dir: &Path, selection: &Selection) -> Result<CaptureHealth, ReadError> {
    let columns = [
        "window_start",
        "cpu",
        "events",
        "lost_samples",
        "ring_drops",
        "parse_errors",
        "resyncs",
    ];
    let mut machine = CaptureHealth::default();
    let mut per_cpu = CaptureHealth::default();
    let time_only = Selection {
        since_us: selection.since_us,
        until_us: selection.until_us,
        ..Selection::default()
    };
    let mut machine_windows = std::collections::BTreeSet::new();
    let mut cpu_windows = std::collections::BTreeSet::new();
    for path in table_files(dir, "capture_stats", &time_only) {
        let (batches, _) = read_projected(&path, &columns, "window_start", &time_only, 0)?;
        for batch in &batches {
            let start = column::<TimestampMicrosecondArray>(batch, "window_start")?;
            let cpu = column::<Int32Array>(batch, "cpu")?;
            let counters: Vec<&Int64Array> = columns[2..]
                .iter()
                .map(|name| column::<Int64Array>(batch, name))
                .collect::<Result<_, _>>()?;
            for row in 0..batch.num_rows() {
                if !time_only.time_matches(start.value(row)) {
                    continue;
                }
                let (target, windows) = if cpu.is_null(row) {
                    (&mut machine, &mut machine_windows)
                } else {
                    (&mut per_cpu, &mut cpu_windows)
                };
                windows.insert(start.value(row));
                target.events += counters[0].value(row);
                target.lost_samples += counters[1].value(row);
                target.ring_drops += counters[2].value(row);
                target.parse_errors += counters[3].value(row);
                target.resyncs += counters[4].value(row);
            }
        }
    }
    if !machine_windows.is_empty() {
        machine.windows = machine_windows.len() as u64;
        Ok(machine)
    } else {
        per_cpu.windows = cpu_windows.len() as u64;
        Ok(per_cpu)
    }
}

/// Command-line arguments of `l7tap report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Output directory of `l7tap capture` (holds `requests/`, `intervals/`, `capture_stats/`).
    pub dir: PathBuf,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Latency objective of the latency SLI (e.g. 100ms, 1s, 500us).
    #[arg(long, default_value = "100ms", value_parser = parse_latency_ns)]
    pub latency_objective: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// Output formats of `l7tap report`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// Row filters shared by `report` and `heatmap`.
#[derive(clap::Args, Clone)]
pub struct FilterArgs {
    /// Only this protocol.
    #[arg(long, value_parser = ["clickhouse", "zookeeper"])]
    pub protocol: Option<String>,
    /// Only this server (`ip:port`, as in `server_addr`).
    #[arg(long)]
    pub server: Option<String>,
    /// From this time on (UTC `2026-11-25T11:30:00Z` or Unix seconds).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Before this time (same formats as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
}

impl FilterArgs {
    /// The selection these filters describe (for `client`, an IP or `ip:port`).
    pub fn selection(&self, client: Option<String>) -> Selection {
        Selection {
            protocol: self.protocol.clone(),
            server: self.server.clone(),
            client,
            since_us: self.since,
            until_us: self.until,
        }
    }
}

/// Parses `100ms`, `1s`, `250us`, `5000ns` (a bare number is milliseconds) into ns.
pub fn parse_latency_ns(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad latency {text:?}"))?;
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" | "" => 1e6,
        "s" => 1e9,
        _ => {
            return Err(format!(
                "bad latency unit in {text:?} (use ns, us, ms or s)"
            ))
        }
    };
    Ok((value * scale).round() as u64)
}

/// Runs `l7tap report` and prints the result.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let text = report(&ReportOptions {
        dir: args.dir,
        selection: args.filters.selection(None),
        latency_objective_ns: args.latency_objective,
        json: matches!(args.format, ReportFormat::Json),
    })?;
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_format_in_utc() {
        let t = parse_time("2024-06-01T10:00:00Z").unwrap();
        assert_eq!(t, 1_717_236_000_000_000);
        assert_eq!(parse_time("2024-06-01 10:00:00").unwrap(), t);
        assert_eq!(parse_time("1717236000").unwrap(), t);
        assert_eq!(format_time_us(t), "2024-06-01T10:00:00Z");
        assert_eq!(
            format_time_us(parse_time("2000-02-29T23:59:59Z").unwrap()),
            "2000-02-29T23:59:59Z"
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn addresses_lose_their_port() {
        assert_eq!(ip_of("10.0.0.2:40001"), "10.0.0.2");
        assert_eq!(ip_of("10.0.0.2"), "10.0.0.2");
        assert_eq!(ip_of("[::1]:9000"), "::1");
        assert_eq!(ip_of("::1"), "::1");
    }

    #[test]
    fn latency_objectives_take_units() {
        assert_eq!(parse_latency_ns("100ms").unwrap(), 100_000_000);
        assert_eq!(parse_latency_ns("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_latency_ns("250us").unwrap(), 250_000);
        assert_eq!(parse_latency_ns("20").unwrap(), 20_000_000);
        assert!(parse_latency_ns("3 parsecs").is_err());
    }

    #[test]
    fn partitions_prune_by_hour_with_one_hour_of_slack() {
        let selection = Selection {
            since_us: Some(parse_time("2024-06-01T10:30:00Z").unwrap()),
            until_us: Some(parse_time("2024-06-01T11:00:00Z").unwrap()),
            ..Selection::default()
        };
        let hour = |h: &str| partition_start_us("date=2024-06-01", h).unwrap();
        let kept = |start: i64| partition_may_hold(&selection, start);
        assert!(!kept(hour("hour=09")));
        assert!(kept(hour("hour=10")));
        assert!(kept(hour("hour=11"))); // may hold late rows of 10:xx
        assert!(!kept(hour("hour=12")));
    }
}
