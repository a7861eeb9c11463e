//! The `intervals` table row by row ([`for_each_interval`]), and the side shown per server
//! ([`server_sides`], [`ShownSides`]).
use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, ListArray, StringArray,
    TimestampMicrosecondArray,
};

use super::error::ReadError;
use super::partitions::table_files;
use super::read::{column, column_if_present, read_files_in_parallel, read_projected};
use super::selection::{ClientOf, Selection};

/// One `intervals` row, borrowed from the batch it was read in (the histogram and heatmap
/// only when asked for).
pub struct IntervalRecord<'a> {
    pub window_start_us: i64,
    pub window_ns: i64,
    pub protocol: &'a str,
    pub side: &'a str,
    pub client_ip: &'a str,
    /// The client's application and process name; empty when unknown (a remote client, or
    /// a file written before the columns existed).
    pub client_app: &'a str,
    pub client_process: &'a str,
    pub comm: &'a str,
    pub server: &'a str,
    pub operation: &'a str,
    pub status: &'a str,
    /// The rows' query fingerprint; none in files written before the column existed.
    pub fingerprint: Option<i64>,
    pub count: i64,
    pub errors: i64,
    pub sum_ns: i64,
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
        "operation",
        "status",
        "count",
        "errors",
        "sum_ns",
        "heatmap_sub_window_ns",
        "client_app",
        "client_process",
        "fingerprint",
    ];
    if wanted.histogram {
        columns.push("hdr");
    }
    if wanted.heatmap {
        columns.push("heatmap_counts");
    }
    let mut bucket_bounds: Vec<i64> = Vec::new();
    for (path, decoded) in
        read_files_in_parallel(table_files(dir, "intervals", selection)?, |path| {
            read_projected(path, &columns, "window_start", selection, 0)
        })
    {
        let (batches, metadata) = decoded?;
        let named = |e: ReadError| e.in_file(&path);
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
            let window_start =
                column::<TimestampMicrosecondArray>(batch, "window_start").map_err(named)?;
            let window_ns = column::<Int64Array>(batch, "window_ns").map_err(named)?;
            let protocol = column::<StringArray>(batch, "protocol").map_err(named)?;
            let side = column::<StringArray>(batch, "side").map_err(named)?;
            let client = column::<StringArray>(batch, "client_addr").map_err(named)?;
            let comm = column::<StringArray>(batch, "comm").map_err(named)?;
            let client_app =
                column_if_present::<StringArray>(batch, "client_app").map_err(named)?;
            let client_process =
                column_if_present::<StringArray>(batch, "client_process").map_err(named)?;
            let server = column::<StringArray>(batch, "server_addr").map_err(named)?;
            let operation = column::<StringArray>(batch, "operation").map_err(named)?;
            let status = column::<StringArray>(batch, "status").map_err(named)?;
            let fingerprint =
                column_if_present::<Int64Array>(batch, "fingerprint").map_err(named)?;
            let count = column::<Int64Array>(batch, "count").map_err(named)?;
            let errors = column::<Int64Array>(batch, "errors").map_err(named)?;
            let sum_ns = column::<Int64Array>(batch, "sum_ns").map_err(named)?;
            let hdr = if wanted.histogram {
                Some(column::<BinaryArray>(batch, "hdr").map_err(named)?)
            } else {
                None
            };
            let sub_window_ns =
                column::<Int64Array>(batch, "heatmap_sub_window_ns").map_err(named)?;
            let heatmap = if wanted.heatmap {
                Some(column::<ListArray>(batch, "heatmap_counts").map_err(named)?)
            } else {
                None
            };
            for row in 0..batch.num_rows() {
                let start = window_start.value(row);
                let app = client_app.map_or("", |c| c.value(row));
                let process = client_process.map_or("", |c| c.value(row));
                if !selection.time_matches(start)
                    || !selection.key_matches(
                        protocol.value(row),
                        server.value(row),
                        &ClientOf {
                            ip: client.value(row),
                            app,
                            process,
                        },
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
                    client_app: app,
                    client_process: process,
                    comm: comm.value(row),
                    server: server.value(row),
                    operation: operation.value(row),
                    status: status.value(row),
                    fingerprint: fingerprint.map(|f| f.value(row)),
                    count: count.value(row),
                    errors: errors.value(row),
                    sum_ns: sum_ns.value(row),
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
