//! `l7tap heatmap`: a latency heatmap (x = time per heatmap sub-window, usually a second; y = the
//! log-spaced latency buckets of the `intervals` file metadata; colour = requests) with a separate
//! row of errors, drawn from the `intervals` table alone.
//!
//! The time axis has columns only where data is (see the `axis` module): a stretch of more than
//! a minute without data, such as the month between two captures, is one grey column labelled
//! with its length, and when the data would need more than [`MAX_COLUMNS`] columns, each column
//! covers more seconds (2, 5, 10, 15, 30, 60...). The grid, and so memory, follows the data and
//! not the time span: a dense axis over the span took gigabytes for two captures a month apart.
//! Gaps rather than wider columns alone, because a latency heatmap is read for short spikes:
//! two short captures far apart keep their one-second columns side by side, which columns a
//! month wide would have merged into one.
//!
//! `.png` is drawn with plotters (axes labelled, log colour scale). `.html` is one self-contained
//! page (no network): an inline canvas renderer with the grid embedded as JSON; hovering a cell
//! shows its counts, and dragging a rectangle lists the requests inside it, read from the
//! `requests` table when the page is written (at most [`MAX_EMBEDDED_REQUESTS`]: beyond that
//! every cell keeps the same share, errors and slowest first; the page says when rows were cut). Requests whose answer was never seen (`incomplete`,
//! no duration) are left out. Per server, the server's own view is used when captured (as in
//! `l7tap report`).
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::Int64Type;
use plotters::prelude::*;

use crate::untrusted::{for_json, for_terminal};

mod axis;
use axis::{gap_label, TimeAxis, MAX_COLUMNS};

use crate::outdir::{
    check_output_dir, column_if_present, for_each_interval, format_time_us, heatmap_counts,
    open_output, read_files_in_parallel, read_projected, read_rows, runs_selected, server_sides,
    several_runs_note, table_files, ClientOf, IntervalColumns, ReadError, Selection, ShownSides,
};

/// Requests embedded in an HTML heatmap at most.
pub const MAX_EMBEDDED_REQUESTS: usize = 20_000;

/// Command-line arguments of `l7tap heatmap`.
#[derive(clap::Args)]
pub struct HeatmapArgs {
    /// Output of `l7tap capture`: a directory, or the s3://BUCKET/PREFIX it wrote to.
    pub dir: PathBuf,
    /// Image to write: `.png` or `.html`.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub filters: crate::outdir::FilterArgs,
    /// Only this client: its IP (or `ip:port`, whose port is ignored), application
    /// (`client_app`) or process name (`client_process`).
    #[arg(long)]
    pub client: Option<String>,
}

/// Time × latency-bucket counts.
pub struct HeatmapGrid {
    /// Upper bounds of all buckets, ns (the last bucket is above the last bound).
    pub bucket_bounds_ns: Vec<i64>,
    /// First and last (inclusive) bucket index shown.
    pub first_bucket: usize,
    pub last_bucket: usize,
    /// Where each column is in time, gaps included.
    pub axis: TimeAxis,
    /// `counts[column][bucket - first_bucket]`.
    pub counts: Vec<Vec<i64>>,
    /// Errors per column.
    pub errors: Vec<i64>,
    /// Side used per `(protocol, server)`.
    pub sides: BTreeMap<(String, String), String>,
}

impl HeatmapGrid {
    fn rows(&self) -> usize {
        self.last_bucket - self.first_bucket + 1
    }

    fn max_count(&self) -> i64 {
        let cells = self.counts.iter().flatten().copied().max().unwrap_or(0);
        cells
            .max(self.errors.iter().copied().max().unwrap_or(0))
            .max(1)
    }

    /// `≤ 200 ms`-style label of a bucket.
    fn bucket_label(&self, bucket: usize) -> String {
        match self.bucket_bounds_ns.get(bucket) {
            Some(&bound) => format!("≤{}", short_ns(bound)),
            None => format!(">{}", short_ns(*self.bucket_bounds_ns.last().unwrap_or(&0))),
        }
    }
}

fn short_ns(ns: i64) -> String {
    let (value, unit) = if ns >= 1_000_000_000 {
        (ns as f64 / 1e9, "s")
    } else if ns >= 1_000_000 {
        (ns as f64 / 1e6, "ms")
    } else if ns >= 1_000 {
        (ns as f64 / 1e3, "µs")
    } else {
        (ns as f64, "ns")
    };
    format!("{value}{unit}")
}

/// Builds the grid of the selected `intervals` rows: one pass for the side shown per server,
/// one adding each row's heatmap into its columns (no row is kept).
pub fn build_grid(dir: &Path, selection: &Selection) -> Result<HeatmapGrid, ReadError> {
    let (sides, sub_window_ns) = server_sides(dir, selection)?;
    let shown = ShownSides::new(&sides);
    if sides.is_empty() {
        return Err(ReadError::Format(format!(
            "no intervals rows selected under {}",
            dir.display()
        )));
    }
    let column_us = if sub_window_ns > 0 {
        (sub_window_ns / 1_000).max(1)
    } else {
        1_000_000
    };
    let mut buckets = 0;
    let mut cells: HashMap<i64, (Vec<i64>, i64)> = HashMap::new();
    let with_heatmap = IntervalColumns {
        histogram: false,
        heatmap: true,
    };
    let bounds = for_each_interval(dir, selection, with_heatmap, |r| {
        if r.status == "incomplete" || !shown.is_shown(r.protocol, r.server, r.side) {
            return Ok(());
        }
        let Some(heatmap) = &r.heatmap else {
            return Ok(());
        };
        let error = r.status == "error";
        let sub_us = (r.heatmap_sub_window_ns / 1_000).max(1);
        for (i, counts) in heatmap_counts(heatmap).enumerate() {
            let counts = counts.as_primitive::<Int64Type>().values();
            if buckets == 0 {
                buckets = counts.len();
            }
            let column_start = r.window_start_us + i as i64 * sub_us;
            let column = (column_start.div_euclid(column_us)) * column_us;
            let cell = cells.entry(column).or_insert_with(|| (vec![0; buckets], 0));
            for (k, &c) in counts.iter().enumerate().take(buckets) {
                cell.0[k] += c;
                if error {
                    cell.1 += c;
                }
            }
        }
        Ok(())
    })?;
    let buckets = bounds.len() + 1;
    for (cell, _) in cells.values_mut() {
        cell.resize(buckets, 0);
    }
    if cells.is_empty() {
        return Err(ReadError::Format(format!(
            "no answered requests in the intervals rows selected under {}",
            dir.display()
        )));
    }
    let cells: BTreeMap<i64, (Vec<i64>, i64)> = cells.into_iter().collect();
    let used: Vec<usize> = (0..buckets)
        .filter(|&k| cells.values().any(|(c, _)| c[k] > 0))
        .collect();
    let first_bucket = used.first().copied().unwrap_or(0).saturating_sub(1);
    let last_bucket = (used.last().copied().unwrap_or(0) + 1).min(buckets - 1);
    // Columns only where data is, within a bounded count: see the axis module.
    let starts: Vec<i64> = cells.keys().copied().collect();
    let axis = TimeAxis::of(&starts, column_us, MAX_COLUMNS);
    let mut counts = vec![vec![0; last_bucket - first_bucket + 1]; axis.columns];
    let mut errors = vec![0; axis.columns];
    for (t, (cell, error_count)) in &cells {
        let column = axis
            .column_of(*t)
            .expect("the axis has a column for every cell it was built from");
        for (sum, count) in counts[column]
            .iter_mut()
            .zip(&cell[first_bucket..=last_bucket])
        {
            *sum += count;
        }
        errors[column] += *error_count;
    }
    Ok(HeatmapGrid {
        bucket_bounds_ns: bounds,
        first_bucket,
        last_bucket,
        axis,
        counts,
        errors,
        sides,
    })
}

/// Log colour scale: white-ish for few requests to dark red for the most.
fn colour(count: i64, max: i64) -> RGBColor {
    let x = ((count as f64).ln_1p() / (max as f64).ln_1p()).clamp(0.0, 1.0);
    // From pale yellow (255, 237, 160) to dark red (128, 0, 38).
    let lerp = |a: f64, b: f64| (a + (b - a) * x).round() as u8;
    RGBColor(lerp(255.0, 128.0), lerp(237.0, 0.0), lerp(160.0, 38.0))
}

/// Pixel geometry of a written PNG (printed as JSON so scripts and tests can find the rows).
#[derive(Default)]
struct PngLayout {
    width: u32,
    height: u32,
    plot_left: i32,
    plot_right: i32,
    /// Per shown bucket: (upper bound ns or -1 for overflow, top y, bottom y).
    latency_rows: Vec<(i64, i32, i32)>,
    errors_row: (i32, i32),
    /// Per gap column: (empty time µs, left x, right x).
    gaps: Vec<(i64, i32, i32)>,
}

/// Fill and line of a gap column.
const GAP_COLOUR: RGBColor = RGBColor(225, 225, 225);
const GAP_LINE: RGBColor = RGBColor(110, 110, 110);

fn load_font() -> bool {
    const CANDIDATES: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
    ];
    for path in CANDIDATES {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

fn write_png(grid: &HeatmapGrid, path: &Path, title: &str) -> DrawResult<PngLayout> {
    let labels = load_font();
    if !labels {
        eprintln!(
            "l7tap: no TrueType font found (DejaVu or Liberation Sans); drawing without labels"
        );
    }
    let (width, height) = (1280u32, 720u32);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (main, scale_area) = root.split_horizontally(width - 110);
    let (latency_area, errors_area) = main.split_vertically(height - 120);
    let columns = grid.counts.len() as f64;
    let rows = grid.rows() as f64;
    let max = grid.max_count();
    // A gap column has no time of its own: its label is drawn in the column. Across days,
    // the labels carry the date.
    let last_start = grid.axis.runs.last().map_or(0, |r| r.start_us);
    let time_chars =
        if format_time_us(grid.axis.start_us())[..10] == format_time_us(last_start)[..10] {
            11..19
        } else {
            5..19
        };
    let x_label = |x: &f64| {
        let column = x.max(0.0) as usize;
        // The right edge of the plot is the end of the last run.
        let start = match grid.axis.runs.last() {
            Some(run) if column >= grid.axis.columns => {
                Some(run.start_us + (column - run.first_column) as i64 * grid.axis.column_us)
            }
            _ => grid.axis.start_of(column),
        };
        start
            .map(|us| format_time_us(us)[time_chars.clone()].replace('T', " "))
            .unwrap_or_default()
    };

    let mut chart = ChartBuilder::on(&latency_area);
    chart
        .margin(10)
        .x_label_area_size(if labels { 30 } else { 0 })
        .y_label_area_size(if labels { 80 } else { 0 });
    if labels {
        chart.caption(title, ("sans-serif", 18));
    }
    let mut chart = chart.build_cartesian_2d(0.0..columns, 0.0..rows)?;
    if labels {
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("time (UTC)")
            .y_desc("latency bucket")
            .x_label_formatter(&x_label)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .y_labels(grid.rows() + 1)
            // Row j spans bucket first_bucket + j; the line between rows is a bucket bound.
            .y_label_formatter(&|y: &f64| {
                let line = y.round();
                if (y - line).abs() > 1e-6 {
                    return String::new();
                }
                let bucket = grid.first_bucket as i64 + line as i64 - 1;
                if bucket < 0 {
                    "0".to_string()
                } else {
                    grid.bucket_bounds_ns
                        .get(bucket as usize)
                        .map(|&b| short_ns(b))
                        .unwrap_or_default()
                }
            })
            .draw()?;
    }
    chart.draw_series(grid.counts.iter().enumerate().flat_map(|(x, column)| {
        column
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(move |(y, &c)| {
                Rectangle::new(
                    [(x as f64, y as f64), (x as f64 + 1.0, y as f64 + 1.0)],
                    colour(c, max).filled(),
                )
            })
    }))?;
    let gaps: Vec<(usize, i64)> = grid.axis.gaps().collect();
    // Grey across the rows, with a line so that a gap narrower than a pixel still shows.
    chart.draw_series(gaps.iter().map(|&(x, _)| {
        Rectangle::new(
            [(x as f64, 0.0), (x as f64 + 1.0, rows)],
            GAP_COLOUR.filled(),
        )
    }))?;
    chart.draw_series(gaps.iter().flat_map(|&(x, _)| {
        [x as f64, x as f64 + 1.0]
            .map(|edge| PathElement::new(vec![(edge, 0.0), (edge, rows)], GAP_LINE.stroke_width(1)))
    }))?;
    if labels {
        let style = ("sans-serif", 13)
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK);
        for &(x, length_us) in &gaps {
            let (px, py) = chart.backend_coord(&(x as f64 + 0.5, rows));
            root.draw(&Text::new(
                format!("no data for {}", gap_label(length_us)),
                (px + 7, py + 4),
                style.clone(),
            ))?;
        }
    }
    let mut layout = PngLayout {
        width,
        height,
        ..PngLayout::default()
    };
    for &(x, length_us) in &gaps {
        let (left, _) = chart.backend_coord(&(x as f64, 0.0));
        let (right, _) = chart.backend_coord(&(x as f64 + 1.0, 0.0));
        layout.gaps.push((length_us, left, right));
    }
    let (left, _) = chart.backend_coord(&(0.0, 0.0));
    let (right, _) = chart.backend_coord(&(columns, 0.0));
    layout.plot_left = left;
    layout.plot_right = right;
    for row in 0..grid.rows() {
        let (_, bottom) = chart.backend_coord(&(0.0, row as f64));
        let (_, top) = chart.backend_coord(&(0.0, row as f64 + 1.0));
        let bound = grid
            .bucket_bounds_ns
            .get(grid.first_bucket + row)
            .copied()
            .unwrap_or(-1);
        layout.latency_rows.push((bound, top, bottom));
    }

    let mut errors_chart = ChartBuilder::on(&errors_area);
    errors_chart
        .margin(10)
        .x_label_area_size(if labels { 30 } else { 0 })
        .y_label_area_size(if labels { 80 } else { 0 });
    let mut errors_chart = errors_chart.build_cartesian_2d(0.0..columns, 0.0..1.0)?;
    if labels {
        errors_chart
            .configure_mesh()
            .disable_mesh()
            .x_label_formatter(&x_label)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .y_labels(0)
            .y_desc("errors")
            .draw()?;
    }
    errors_chart.draw_series(gaps.iter().map(|&(x, _)| {
        Rectangle::new(
            [(x as f64, 0.0), (x as f64 + 1.0, 1.0)],
            GAP_COLOUR.filled(),
        )
    }))?;
    errors_chart.draw_series(grid.errors.iter().enumerate().filter(|(_, &c)| c > 0).map(
        |(x, &c)| {
            Rectangle::new(
                [(x as f64, 0.0), (x as f64 + 1.0, 1.0)],
                colour(c, max).filled(),
            )
        },
    ))?;
    let (_, bottom) = errors_chart.backend_coord(&(0.0, 0.0));
    let (_, top) = errors_chart.backend_coord(&(0.0, 1.0));
    layout.errors_row = (top, bottom);

    let mut scale = ChartBuilder::on(&scale_area);
    scale
        .margin(10)
        .margin_top(40)
        .y_label_area_size(if labels { 60 } else { 0 });
    let mut scale = scale.build_cartesian_2d(0.0..1.0, (1.0..max as f64 + 1.0).log_scale())?;
    if labels {
        scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc("requests per cell")
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .y_label_formatter(&|v: &f64| format!("{:.0}", v - 1.0))
            .draw()?;
    }
    let steps = 100;
    scale.draw_series((0..steps).map(|i| {
        let low = ((max as f64 + 1.0).ln() * i as f64 / steps as f64).exp();
        let high = ((max as f64 + 1.0).ln() * (i + 1) as f64 / steps as f64).exp();
        Rectangle::new(
            [(0.0, low), (1.0, high)],
            colour((low - 1.0).round() as i64, max).filled(),
        )
    }))?;
    root.present()?;
    Ok(layout)
}

/// One request embedded in the HTML page.
struct EmbeddedRequest {
    end_column: i64,
    bucket: usize,
    ts_us: i64,
    duration_ns: i64,
    client: String,
    server: String,
    status: String,
    query: String,
}

/// A request the first pass keeps for the page: its rank in its cell (errors first, then the
/// slowest) and where it is (file, row among the file's selected row groups).
type Candidate = std::cmp::Reverse<(bool, i64, usize, usize)>;

/// Typed columns of one `requests` batch.
fn typed<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ReadError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ReadError::Format(format!("requests.{name} missing or of another type")))
}

/// The per-cell quota that keeps at most `limit` requests, from the grid's own counts (errors
/// are in the latency rows too); `usize::MAX` when everything fits.
fn cell_quota(grid: &HeatmapGrid, limit: usize) -> usize {
    let cells: Vec<usize> = grid
        .counts
        .iter()
        .flatten()
        .map(|&c| c.max(0) as usize)
        .collect();
    if cells.iter().sum::<usize>() <= limit {
        return usize::MAX;
    }
    largest_fitting_quota(&cells, limit)
}

/// The largest per-cell quota with which cells of `sizes` keep at most `limit` items in all.
fn largest_fitting_quota(sizes: &[usize], limit: usize) -> usize {
    let kept_with = |quota: usize| sizes.iter().map(|&c| c.min(quota)).sum::<usize>();
    let (mut low, mut high) = (0, limit);
    while low < high {
        let quota = (low + high).div_ceil(2);
        if kept_with(quota) <= limit {
            low = quota;
        } else {
            high = quota - 1;
        }
    }
    low
}

/// Reads the requests shown by the grid (its side per server, answered ones), keeping the
/// [`MAX_EMBEDDED_REQUESTS`] spread over the cells. Returns them and how many matched in all.
///
/// Two passes, so that a day of requests costs neither the memory of all its rows nor the
/// decoding of all its query texts: the first reads the few columns that place a request in a
/// cell and keeps, per cell, the best candidates up to the quota the grid's counts allow; the
/// second reads the text columns of the kept rows only (a row selection per file).
fn read_embedded_requests(
    dir: &Path,
    selection: &Selection,
    grid: &HeatmapGrid,
) -> Result<(Vec<EmbeddedRequest>, usize), ReadError> {
    let mut place_columns = vec![
        "ts",
        "duration_ns",
        "protocol",
        "side",
        "server_addr",
        "status",
    ];
    if selection.selects_clients() {
        place_columns.extend(["client_addr", "client_app", "client_process"]);
    }
    // Side shown per (protocol, server), compared as &str (no allocation per row).
    let sides: Vec<(&str, &str, &str)> = grid
        .sides
        .iter()
        .map(|((p, s), side)| (p.as_str(), s.as_str(), side.as_str()))
        .collect();
    let quota = cell_quota(grid, MAX_EMBEDDED_REQUESTS);
    if quota == 0 {
        // More non-empty cells than rows the page may hold: no cell gets a share, so nothing
        // is read. The grid's counts are the requests that matched.
        let matched = grid.counts.iter().flatten().sum::<i64>().max(0) as usize;
        return Ok((Vec::new(), matched));
    }
    let slack_us = grid.axis.column_us.max(10_000_000);
    let files = table_files(dir, "requests", selection)?;
    let mut cells: HashMap<(i64, usize), BinaryHeap<Candidate>> = HashMap::new();
    let mut matched = 0usize;
    let decoded_files = read_files_in_parallel(files.clone(), |path| {
        read_projected(path, &place_columns, "ts", selection, slack_us)
    });
    for (file, (_, decoded)) in decoded_files.enumerate() {
        let (batches, _) = decoded?;
        let named = |e: ReadError| e.in_file(&files[file]);
        let mut first_row = 0;
        for batch in &batches {
            let ts = typed::<TimestampMicrosecondArray>(batch, "ts").map_err(named)?;
            let duration = typed::<Int64Array>(batch, "duration_ns").map_err(named)?;
            let protocol = typed::<StringArray>(batch, "protocol").map_err(named)?;
            let side = typed::<StringArray>(batch, "side").map_err(named)?;
            let server = typed::<StringArray>(batch, "server_addr").map_err(named)?;
            let status = typed::<StringArray>(batch, "status").map_err(named)?;
            let client = match selection.selects_clients() {
                true => Some((
                    typed::<StringArray>(batch, "client_addr").map_err(named)?,
                    column_if_present::<StringArray>(batch, "client_app").map_err(named)?,
                    column_if_present::<StringArray>(batch, "client_process").map_err(named)?,
                )),
                false => None,
            };
            for row in 0..batch.num_rows() {
                let (p, s) = (protocol.value(row), server.value(row));
                if status.value(row) == "incomplete"
                    || !sides
                        .iter()
                        .any(|&(sp, ss, sd)| sp == p && ss == s && sd == side.value(row))
                    || client.is_some_and(|(address, app, process)| {
                        fn known(c: Option<&StringArray>, row: usize) -> &str {
                            c.filter(|c| !c.is_null(row)).map_or("", |c| c.value(row))
                        }
                        !selection.client_matches(&ClientOf {
                            ip: address.value(row),
                            app: known(app, row),
                            process: known(process, row),
                        })
                    })
                {
                    continue;
                }
                let duration_ns = duration.value(row);
                let end_us = ts.value(row) + duration_ns / 1_000;
                let Some(end_column) = grid.axis.column_of(end_us) else {
                    continue;
                };
                let end_column = end_column as i64;
                let bucket = grid
                    .bucket_bounds_ns
                    .iter()
                    .position(|&b| duration_ns.max(1) <= b)
                    .unwrap_or(grid.bucket_bounds_ns.len());
                matched += 1;
                let heap = cells.entry((end_column, bucket)).or_default();
                heap.push(std::cmp::Reverse((
                    status.value(row) == "error",
                    duration_ns,
                    file,
                    first_row + row,
                )));
                if heap.len() > quota {
                    heap.pop();
                }
            }
            first_row += batch.num_rows();
        }
    }
    let mut by_file: BTreeMap<usize, Vec<(usize, i64, usize)>> = BTreeMap::new();
    for ((end_column, bucket), heap) in cells {
        for std::cmp::Reverse((_, _, file, row)) in heap {
            by_file
                .entry(file)
                .or_default()
                .push((row, end_column, bucket));
        }
    }
    let text_columns = [
        "ts",
        "duration_ns",
        "client_addr",
        "server_addr",
        "status",
        "query",
    ];
    let mut requests = Vec::new();
    for (file, mut rows) in by_file {
        rows.sort_unstable();
        let wanted: Vec<usize> = rows.iter().map(|r| r.0).collect();
        let batches = read_rows(
            &files[file],
            &text_columns,
            "ts",
            selection,
            slack_us,
            &wanted,
        )?;
        let named = |e: ReadError| e.in_file(&files[file]);
        let mut kept = rows.iter();
        for batch in &batches {
            let ts = typed::<TimestampMicrosecondArray>(batch, "ts").map_err(named)?;
            let duration = typed::<Int64Array>(batch, "duration_ns").map_err(named)?;
            let client = typed::<StringArray>(batch, "client_addr").map_err(named)?;
            let server = typed::<StringArray>(batch, "server_addr").map_err(named)?;
            let status = typed::<StringArray>(batch, "status").map_err(named)?;
            let query = typed::<StringArray>(batch, "query").map_err(named)?;
            for row in 0..batch.num_rows() {
                let &(_, end_column, bucket) = kept.next().ok_or_else(|| {
                    ReadError::Format(format!(
                        "{}: more rows than selected",
                        files[file].display()
                    ))
                })?;
                requests.push(EmbeddedRequest {
                    end_column,
                    bucket,
                    ts_us: ts.value(row),
                    duration_ns: duration.value(row),
                    client: client.value(row).to_string(),
                    server: server.value(row).to_string(),
                    status: status.value(row).to_string(),
                    query: if query.is_null(row) {
                        String::new()
                    } else {
                        query.value(row).chars().take(300).collect()
                    },
                });
            }
        }
    }
    // The grid's counts set the quota; the rows' own cells set the final cut.
    let mut requests = sample_per_cell(requests, MAX_EMBEDDED_REQUESTS);
    requests.sort_by_key(|r| r.ts_us);
    Ok((requests, matched))
}

/// Keeps at most `limit` requests so that every heatmap cell keeps some: each cell keeps up to
/// the same quota (the largest that fits), its errors first, then its slowest requests.
fn sample_per_cell(requests: Vec<EmbeddedRequest>, limit: usize) -> Vec<EmbeddedRequest> {
    if requests.len() <= limit {
        return requests;
    }
    let mut cells: BTreeMap<(i64, usize), Vec<EmbeddedRequest>> = BTreeMap::new();
    for request in requests {
        cells
            .entry((request.end_column, request.bucket))
            .or_default()
            .push(request);
    }
    let sizes: Vec<usize> = cells.values().map(Vec::len).collect();
    let quota = largest_fitting_quota(&sizes, limit);
    let mut kept = Vec::with_capacity(limit);
    for (_, mut cell) in cells {
        cell.sort_by_key(|r| (r.status != "error", std::cmp::Reverse(r.duration_ns)));
        cell.truncate(quota);
        kept.extend(cell);
    }
    kept
}

const HTML_TEMPLATE: &str = include_str!("heatmap.html");

fn write_html(
    grid: &HeatmapGrid,
    requests: &[EmbeddedRequest],
    matched: usize,
    path: &Path,
    title: &str,
) -> std::io::Result<()> {
    let labels: Vec<String> = (grid.first_bucket..=grid.last_bucket)
        .map(|b| grid.bucket_label(b))
        .collect();
    let data = serde_json::json!({
        "title": title,
        "start_us": grid.axis.start_us(),
        "column_us": grid.axis.column_us,
        "runs": grid.axis.runs.iter().map(|r| [r.first_column as i64, r.start_us, r.columns as i64]).collect::<Vec<_>>(),
        "gaps": grid.axis.gaps().map(|(column, length_us)| serde_json::json!([column, length_us, gap_label(length_us)])).collect::<Vec<_>>(),
        "first_bucket": grid.first_bucket,
        "bucket_labels": labels,
        "requests_matched": matched,
        "requests_embedded": requests.len(),
        "requests": requests.iter().map(|r| serde_json::json!([
            r.end_column, r.bucket, format_time_us(r.ts_us), r.ts_us % 1_000_000, r.duration_ns, r.client, r.server, r.status, r.query
        ])).collect::<Vec<_>>(),
    });
    // The grid is written straight to text (a JSON value per cell would take 30 times its
    // memory), then spliced into the object.
    let mut json = serde_json::to_string(&data).expect("JSON values serialize");
    json.pop();
    json.push_str(",\"counts\":");
    json.push_str(&serde_json::to_string(&grid.counts).expect("integers serialize"));
    json.push_str(",\"errors\":");
    json.push_str(&serde_json::to_string(&grid.errors).expect("integers serialize"));
    json.push('}');
    // Safe inside <script>: no `</script>`, and no `://` (the page makes no references out).
    let json = json
        .replace("</", "<\\/")
        .replace("://", ":\\/\\/")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let page = HTML_TEMPLATE
        .replace("{{TITLE}}", &html_escape(title))
        .replace("{{DATA}}", &json);
    std::fs::write(path, page)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Runs `l7tap heatmap`.
impl HeatmapArgs {
    /// The flags, checked before anything is read or written.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.filters.validate().map_err(anyhow::Error::msg)?;
        if !matches!(self.extension().as_str(), "png" | "html" | "htm") {
            anyhow::bail!("--out must end in .png or .html");
        }
        if self.out.is_dir() {
            anyhow::bail!("--out {}: is a directory", self.out.display());
        }
        Ok(())
    }

    /// The extension of `--out`, lower case.
    fn extension(&self) -> String {
        self.out
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase()
    }
}

pub fn run(args: HeatmapArgs) -> anyhow::Result<()> {
    let view = open_output(&args.dir, &args.filters.selection(args.client.clone()))?;
    check_output_dir(&view.dir)?;
    let runs = runs_selected(&view.dir, &args.filters.runs)?;
    if let Some(note) = several_runs_note(Path::new(&view.shown), &runs, &args.filters.runs) {
        eprintln!("l7tap: {}", for_terminal(&note));
    }
    let extension = args.extension();
    let selection = args.filters.selection(args.client.clone());
    let grid = build_grid(&view.dir, &selection)?;
    let mut title = format!(
        "{} requests from {} ({} s per column)",
        grid.sides
            .keys()
            .map(|(p, s)| format!("{p} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        format_time_us(grid.axis.start_us()),
        grid.axis.column_us as f64 / 1e6
    );
    let gaps = grid.axis.gaps().count();
    if gaps > 0 {
        title.push_str(&format!(
            ", {gaps} stretch{} without data collapsed",
            if gaps == 1 { "" } else { "es" }
        ));
    }
    if let Some(client) = &args.client {
        title.push_str(&format!(", client {client}"));
    }
    match extension.as_str() {
        "png" => {
            let layout = write_png(&grid, &args.out, &title)
                .map_err(|e| anyhow::anyhow!("drawing {}: {e}", args.out.display()))?;
            let rows: Vec<serde_json::Value> = layout.latency_rows.iter().map(|(bound, top, bottom)| serde_json::json!({"upper_bound_ns": bound, "top": top, "bottom": bottom})).collect();
            println!(
                "{}",
                for_json(
                    &serde_json::json!({
                        "out": args.out.display().to_string(),
                        "width": layout.width, "height": layout.height,
                        "plot_left": layout.plot_left, "plot_right": layout.plot_right,
                        "columns": grid.counts.len(),
                        "latency_rows": rows,
                        "errors_row": {"top": layout.errors_row.0, "bottom": layout.errors_row.1},
                        "column_us": grid.axis.column_us,
                        "gaps": layout.gaps.iter().map(|(length_us, left, right)| serde_json::json!({"seconds": length_us / 1_000_000, "left": left, "right": right})).collect::<Vec<_>>(),
                    })
                    .to_string()
                )
            );
        }
        "html" | "htm" => {
            let (requests, matched) = read_embedded_requests(&view.dir, &selection, &grid)?;
            write_html(&grid, &requests, matched, &args.out, &title)?;
            println!(
                "{}",
                for_json(
                    &serde_json::json!({
                        "out": args.out.display().to_string(),
                        "columns": grid.counts.len(),
                        "column_us": grid.axis.column_us,
                        "gaps": grid.axis.gaps().map(|(_, length_us)| length_us / 1_000_000).collect::<Vec<_>>(),
                        "requests_matched": matched,
                        "requests_embedded": requests.len(),
                    })
                    .to_string()
                )
            );
            if matched > requests.len() {
                eprintln!(
                    "l7tap: {matched} requests matched; the page holds {} of them, spread over the cells",
                    requests.len()
                );
            }
        }
        _ => anyhow::bail!("--out must end in .png or .html"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(end_column: i64, bucket: usize, duration_ns: i64, status: &str) -> EmbeddedRequest {
        EmbeddedRequest {
            end_column,
            bucket,
            ts_us: 0,
            duration_ns,
            client: String::new(),
            server: String::new(),
            status: status.to_string(),
            query: String::new(),
        }
    }

    fn grid(counts: Vec<Vec<i64>>) -> HeatmapGrid {
        HeatmapGrid {
            bucket_bounds_ns: vec![1_000, 2_000],
            first_bucket: 0,
            last_bucket: 2,
            axis: TimeAxis::of(
                &(0..counts.len() as i64)
                    .map(|c| c * 1_000_000)
                    .collect::<Vec<_>>(),
                1_000_000,
                MAX_COLUMNS,
            ),
            errors: vec![0; counts.len()],
            counts,
            sides: BTreeMap::new(),
        }
    }

    #[test]
    fn the_quota_is_the_largest_share_every_cell_can_keep() {
        // Cells of 50, 30, 5 and 1 requests: 10 each keeps 10 + 10 + 5 + 1 = 26.
        let g = grid(vec![vec![50, 0, 30], vec![5, 1, 0]]);
        assert_eq!(cell_quota(&g, 86), usize::MAX);
        assert_eq!(cell_quota(&g, 26), 10);
        assert_eq!(cell_quota(&g, 27), 10);
        assert_eq!(cell_quota(&g, 28), 11);
        // Fewer rows than non-empty cells: no cell gets a share.
        assert_eq!(cell_quota(&g, 3), 0);
    }

    #[test]
    fn a_cut_keeps_every_cell_errors_and_slowest_first() {
        let mut requests: Vec<EmbeddedRequest> =
            (0..1000).map(|i| request(0, 5, i, "ok")).collect();
        requests.push(request(0, 5, 1, "error"));
        requests.extend((0..3).map(|i| request(1, 9, 500 + i, "ok")));
        let kept = sample_per_cell(requests, 100);
        assert!(kept.len() <= 100);
        assert_eq!(kept.iter().filter(|r| r.end_column == 1).count(), 3);
        let busy: Vec<&EmbeddedRequest> = kept.iter().filter(|r| r.end_column == 0).collect();
        assert_eq!(busy.len(), 97);
        assert!(busy.iter().any(|r| r.status == "error"));
        assert!(busy
            .iter()
            .filter(|r| r.status == "ok")
            .all(|r| r.duration_ns >= 904));
    }
}
