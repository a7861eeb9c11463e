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
//! and requests by `ts`; the output directory is read through [`crate::outdir`], which skips files
//! by partition and row groups by statistics before any row is decoded.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arrow::array::{
    Array, Int32Array, Int64Array, MapArray, StringArray, TimestampMicrosecondArray,
};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

use crate::hdr_sum::HdrSum;
use crate::outdir::{
    check_output_dir, column, column_if_present, for_each_interval, format_time_us, ip_of,
    open_output, read_files_in_parallel, read_projected, read_projected_where, runs_selected,
    server_sides, several_runs_note, table_files, FilterArgs, IntervalColumns, ReadError, Runs,
    Selection, ShownSides,
};
use crate::stats::GAP_RESYNCS;
use crate::untrusted::{for_json, for_terminal};

const NANOS_PER_MICRO: i64 = 1_000;

/// A time span as reported: first window start to last window end, Unix µs.
#[derive(Clone, Copy, Debug)]
struct Span {
    start_us: i64,
    end_us: i64,
}

/// What one report row stands for: a client application (the default), a process name, or
/// an address. A client whose application (or process) is unknown — a remote one — is shown
/// by its address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    #[default]
    App,
    Process,
    Address,
}

impl GroupBy {
    /// The row label of a client.
    fn label<'a>(self, address: &'a str, app: &'a str, process: &'a str) -> &'a str {
        let named = match self {
            GroupBy::App => app,
            GroupBy::Process => process,
            GroupBy::Address => "",
        };
        if named.is_empty() {
            address
        } else {
            named
        }
    }
}

/// Latency and count figures of one client of one server.
struct ClientFigures {
    /// The row's client: application, process name or address (see [`GroupBy`]).
    label: String,
    /// The applications, process names and addresses the row covers (the known ones).
    apps: std::collections::BTreeSet<String>,
    processes: std::collections::BTreeSet<String>,
    addresses: std::collections::BTreeSet<String>,
    comm: String,
    requests: i64,
    errors: i64,
    incomplete: i64,
    latencies: Histogram<u64>,
    /// The windows' histograms, summed before `latencies` is built from them.
    latency_sum: HdrSum,
    error_names: BTreeMap<String, i64>,
}

/// Per (protocol, server), per (client label, comm).
type FiguresByServer = BTreeMap<(String, String), BTreeMap<(String, String), ClientFigures>>;

fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits are valid")
}

/// The `report` command's options.
pub struct ReportOptions {
    pub dir: PathBuf,
    /// The output as the user named it (a directory, or an object-storage URL read through a
    /// downloaded copy in `dir`).
    pub shown: String,
    /// The runs `dir` holds (the selected ones are in `selection`).
    pub runs: Runs,
    pub selection: Selection,
    pub latency_objective_ns: u64,
    pub json: bool,
    pub group_by: GroupBy,
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
        let label = options
            .group_by
            .label(r.client_ip, r.client_app, r.client_process);
        key.clear();
        for part in [r.protocol, r.server, label, r.comm] {
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
                        label: label.to_string(),
                        apps: Default::default(),
                        processes: Default::default(),
                        addresses: Default::default(),
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
        for (set, value) in [
            (&mut figures.apps, r.client_app),
            (&mut figures.processes, r.client_process),
            (&mut figures.addresses, r.client_ip),
        ] {
            if !value.is_empty() && !set.contains(value) {
                set.insert(value.to_string());
            }
        }
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
            .insert((figures.label.clone(), figures.comm.clone()), figures);
    }
    let span = span.map(|s| Span {
        start_us: selection.since_us.unwrap_or(s.start_us),
        end_us: selection.until_us.unwrap_or(s.end_us),
    });
    let span_seconds = span.map_or(0.0, |s| (s.end_us - s.start_us) as f64 / 1e6);

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
    add_error_names(
        &options.dir,
        selection,
        options.group_by,
        &sides,
        &mut servers,
    )?;
    let health = read_capture_health(&options.dir, selection)?;
    // Rates are per second of capture: over the span of captures a month apart, they would be
    // diluted by the month in between. Outputs without capture_stats fall back to the span.
    let seconds = if health.captured_us > 0 {
        health.captured_us as f64 / 1e6
    } else {
        span_seconds
    }
    .max(1e-9);

    let objective = options.latency_objective_ns;
    let mut json_servers = Vec::new();
    let mut text = String::new();
    if let Some(s) = span {
        let covered = if seconds + 1.0 < span_seconds {
            format!("{seconds:.0} s captured in a span of {span_seconds:.0} s")
        } else {
            format!("{span_seconds:.0} s")
        };
        let _ = writeln!(
            text,
            "l7tap report of {} from {} to {} ({covered})\n",
            for_terminal(&options.shown),
            format_time_us(s.start_us),
            format_time_us(s.end_us),
        );
    } else {
        let _ = writeln!(
            text,
            "l7tap report of {}: no requests selected\n",
            for_terminal(&options.shown)
        );
    }
    if let Some(note) = several_runs_note(Path::new(&options.shown), &options.runs, &selection.runs)
    {
        let _ = writeln!(text, "{}\n", for_terminal(&note));
    }
    for ((protocol, server), clients) in &servers {
        let side = &sides[&(protocol.clone(), server.clone())];
        let mut clients: Vec<&ClientFigures> = clients.values().collect();
        clients.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.label.cmp(&b.label)));
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
        let _ = writeln!(
            text,
            "== {} server {} — {view}",
            for_terminal(protocol),
            for_terminal(server)
        );
        let _ = writeln!(
            text,
            "{:<32} {:<18} {:<16} {:<16} {:>9} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10}  top errors",
            "client",
            "process",
            "address",
            "observed comm",
            "requests",
            "req/s",
            "errors",
            "err %",
            "p50",
            "p95",
            "p99"
        );
        let mut json_clients = Vec::new();
        for c in &clients {
            let error_pct = percent(c.errors, c.requests);
            let (p50, p95, p99) = quantiles(&c.latencies);
            let mut top: Vec<(&String, &i64)> = c.error_names.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            top.truncate(3);
            let top_text: Vec<String> = top
                .iter()
                .map(|(n, k)| format!("{} ×{k}", for_terminal(n)))
                .collect();
            let processes = joined(&c.processes);
            let addresses = joined(&c.addresses);
            let _ =
                writeln!(
                text,
                "{:<32} {:<18} {:<16} {:<16} {:>9} {:>9.2} {:>7} {:>6.2}% {:>10} {:>10} {:>10}  {}",
                for_terminal(&c.label),
                for_terminal(if processes.is_empty() { "-" } else { &processes }),
                for_terminal(&addresses),
                for_terminal(&c.comm),
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
                "client": c.label,
                "app": (!c.apps.is_empty()).then(|| joined(&c.apps)),
                "process": (!processes.is_empty()).then_some(processes),
                "address": addresses,
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
            "dir": options.shown,
            "start": span.map(|s| format_time_us(s.start_us)),
            "end": span.map(|s| format_time_us(s.end_us)),
            "seconds": seconds,
            "span_seconds": span_seconds,
            "runs": {
                "in_dir": options.runs.0.keys().collect::<Vec<_>>(),
                "read": if selection.runs.is_empty() {
                    options.runs.0.keys().cloned().collect::<Vec<_>>()
                } else {
                    selection.runs.clone()
                },
            },
            "servers": json_servers,
            "capture_health": {
                "windows": health.windows,
                "events": health.events,
                "lost_samples": health.lost_samples,
                "ring_drops": health.ring_drops,
                "parse_errors": health.parse_errors,
                "resyncs": health.resyncs,
                "resyncs_after_capture_gaps": health.gap_resyncs,
                "complete": health.complete(),
                "verdict": health.verdict(),
            },
        });
        let json = serde_json::to_string_pretty(&document).expect("JSON values serialize");
        return Ok(for_json(&json).into_owned() + "\n");
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

/// The values of a set, comma-separated.
fn joined(values: &std::collections::BTreeSet<String>) -> String {
    values
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
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
    group_by: GroupBy,
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
        "client_app",
        "client_process",
    ];
    // Error rows are the ones with an error code: that one integer column is decoded for
    // every row, the strings only for errors (about 1 % of a day's rows, not 100 %).
    for (path, decoded) in
        read_files_in_parallel(table_files(dir, "requests", selection)?, |path| {
            read_projected_where(path, &columns, "ts", selection, 0, Some("error_code"))
        })
    {
        let (batches, _) = decoded?;
        let named = |e: ReadError| e.in_file(&path);
        for batch in &batches {
            let ts = column::<TimestampMicrosecondArray>(batch, "ts").map_err(named)?;
            let protocol = column::<StringArray>(batch, "protocol").map_err(named)?;
            let side = column::<StringArray>(batch, "side").map_err(named)?;
            let comm = column::<StringArray>(batch, "comm").map_err(named)?;
            let client = column::<StringArray>(batch, "client_addr").map_err(named)?;
            let server = column::<StringArray>(batch, "server_addr").map_err(named)?;
            let status = column::<StringArray>(batch, "status").map_err(named)?;
            let error_name = column::<StringArray>(batch, "error_name").map_err(named)?;
            let client_app =
                column_if_present::<StringArray>(batch, "client_app").map_err(named)?;
            let client_process =
                column_if_present::<StringArray>(batch, "client_process").map_err(named)?;
            let known = |c: Option<&StringArray>, row: usize| -> String {
                c.filter(|c| !c.is_null(row))
                    .map_or(String::new(), |c| c.value(row).to_string())
            };
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
                let (app, process) = (known(client_app, row), known(client_process, row));
                let label = group_by
                    .label(ip_of(client.value(row)), &app, &process)
                    .to_string();
                let Some(figures) = servers
                    .get_mut(&key)
                    .and_then(|c| c.get_mut(&(label, comm.value(row).to_string())))
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
    /// Time the capture ran within the selected range: its `capture_stats` windows, each
    /// counted once and clipped to `--since`/`--until`, µs.
    captured_us: i64,
    events: i64,
    lost_samples: i64,
    ring_drops: i64,
    parse_errors: i64,
    resyncs: i64,
    /// Of `resyncs`, those after bytes the capture cut or lost.
    gap_resyncs: i64,
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
        } else if self.parse_errors == 0 && self.resyncs == self.gap_resyncs {
            format!(
                "{} resyncs, each where the capture cut a payload (its limit, --capture-bytes) or \
                 lost bytes and the parser could not step over them: requests there may be \
                 incomplete; no parser fault",
                self.resyncs
            )
        } else {
            format!(
                "parsers lost their position on some streams ({} parse errors; {} of {} resyncs \
                 on bytes that were all captured): requests there may be missing or incomplete",
                self.parse_errors,
                self.resyncs - self.gap_resyncs,
                self.resyncs
            )
        }
    }
}

/// Sums `capture_stats`: machine-wide rows (`cpu` null) when the capture wrote them, else the
/// per-CPU rows (never both, which would count twice).
/// The value of counter `name` in row `row` of a `counters` map column (0 when absent).
pub(crate) fn named_counter(map: &MapArray, row: usize, name: &str) -> i64 {
    let entries = map.value(row);
    let (Some(keys), Some(values)) = (
        entries.column(0).as_any().downcast_ref::<StringArray>(),
        entries.column(1).as_any().downcast_ref::<Int64Array>(),
    ) else {
        return 0;
    };
    (0..keys.len())
        .filter(|&i| keys.value(i) == name)
        .map(|i| values.value(i))
        .sum()
}

fn read_capture_health(dir: &Path, selection: &Selection) -> Result<CaptureHealth, ReadError> {
    let columns = [
        "window_start",
        "window_ns",
        "cpu",
        "events",
        "lost_samples",
        "ring_drops",
        "parse_errors",
        "resyncs",
        "counters",
    ];
    let mut machine = CaptureHealth::default();
    let mut per_cpu = CaptureHealth::default();
    let time_only = Selection {
        runs: selection.runs.clone(),
        since_us: selection.since_us,
        until_us: selection.until_us,
        ..Selection::default()
    };
    // Window start -> its length (µs).
    let mut machine_windows = BTreeMap::new();
    let mut cpu_windows = BTreeMap::new();
    for path in table_files(dir, "capture_stats", &time_only)? {
        let (batches, _) = read_projected(&path, &columns, "window_start", &time_only, 0)?;
        let named = |e: ReadError| e.in_file(&path);
        for batch in &batches {
            let start =
                column::<TimestampMicrosecondArray>(batch, "window_start").map_err(named)?;
            let window_ns = column::<Int64Array>(batch, "window_ns").map_err(named)?;
            let cpu = column::<Int32Array>(batch, "cpu").map_err(named)?;
            let named_counters = column::<MapArray>(batch, "counters").map_err(named)?;
            let counters: Vec<&Int64Array> = columns[3..columns.len() - 1]
                .iter()
                .map(|name| column::<Int64Array>(batch, name).map_err(named))
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
                windows.insert(start.value(row), window_ns.value(row) / NANOS_PER_MICRO);
                target.events += counters[0].value(row);
                target.lost_samples += counters[1].value(row);
                target.ring_drops += counters[2].value(row);
                target.parse_errors += counters[3].value(row);
                target.resyncs += counters[4].value(row);
                target.gap_resyncs += named_counter(named_counters, row, GAP_RESYNCS);
            }
        }
    }
    let (mut health, windows) = if !machine_windows.is_empty() {
        (machine, machine_windows)
    } else {
        (per_cpu, cpu_windows)
    };
    health.windows = windows.len() as u64;
    health.captured_us = windows
        .iter()
        .map(|(&start, &length)| {
            let end = start.saturating_add(length.max(0));
            let start = start.max(selection.since_us.unwrap_or(i64::MIN));
            let end = end.min(selection.until_us.unwrap_or(i64::MAX));
            (end - start).max(0)
        })
        .sum();
    Ok(health)
}

/// Command-line arguments of `l7tap report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Output of `l7tap capture`: a directory (holds `requests/`, `intervals/`,
    /// `capture_stats/`) or the s3://BUCKET/PREFIX it wrote to.
    pub dir: PathBuf,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Latency objective of the latency SLI (e.g. 100ms, 1s, 500us).
    #[arg(long, default_value = "100ms", value_parser = parse_latency_ns)]
    pub latency_objective: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// One row per client application (container, systemd unit or process name; a remote
    /// client by its address), per process name, or per client address.
    #[arg(long, value_enum, default_value_t = GroupBy::App)]
    pub group_by: GroupBy,
}

/// Output formats of `l7tap report`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
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
    let ns = (value * scale).round();
    // `as u64` would saturate: a huge objective is a typo, not a wish.
    if !ns.is_finite() || ns > u64::MAX as f64 {
        return Err(format!("latency {text:?} is out of range"));
    }
    Ok(ns as u64)
}

/// Runs `l7tap report` and prints the result.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let view = open_output(&args.dir, &args.filters.selection(None))?;
    check_output_dir(&view.dir)?;
    let runs = runs_selected(&view.dir, &args.filters.runs)?;
    let json = matches!(args.format, ReportFormat::Json);
    // The text report says it in its header; JSON readers get a note besides its `runs`.
    if json && args.filters.runs.is_empty() {
        if let Some(note) = several_runs_note(Path::new(&view.shown), &runs, &[]) {
            eprintln!("l7tap: {}", for_terminal(&note));
        }
    }
    let text = report(&ReportOptions {
        dir: view.dir.clone(),
        shown: view.shown.clone(),
        runs,
        selection: args.filters.selection(None),
        latency_objective_ns: args.latency_objective,
        json,
        group_by: args.group_by,
    })?;
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_objectives_take_units() {
        assert_eq!(parse_latency_ns("100ms").unwrap(), 100_000_000);
        assert_eq!(parse_latency_ns("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_latency_ns("250us").unwrap(), 250_000);
        assert_eq!(parse_latency_ns("20").unwrap(), 20_000_000);
        assert!(parse_latency_ns("3 parsecs").is_err());
    }

    #[test]
    fn latency_objectives_beyond_u64_are_errors() {
        let huge = format!("{}s", "9".repeat(30));
        assert!(parse_latency_ns(&huge)
            .unwrap_err()
            .contains("out of range"));
    }
}
