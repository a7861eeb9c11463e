//! `l7tap diff BASELINE CANDIDATE`: what changed between two captures, per query shape.
//!
//! Both outputs (directories, or `s3://` outputs through [`crate::outdir::open_output`]) are
//! read from `intervals`: rows are grouped by protocol, server, operation and query
//! fingerprint (the `fingerprint` key the capture wrote), their HDR histograms summed, and the
//! side shown per server chosen as `report` does (the server's own view when the capture has
//! it). Per group: requests, rate (per second of the output's span of windows), error rate,
//! mean and p50/p90/p99/p99.9 of the answered requests (`incomplete` ones count as requests,
//! not in latencies), and whether each changed beyond noise: significantly ([`stats`]) *and*
//! by at least the minimum effect (`--min-effect`, default 10 %; a latency also by at least
//! [`MIN_LATENCY_CHANGE_NS`], an error rate by at least [`MIN_ERROR_RATE_CHANGE`]). The
//! significance test sees sampling noise only; the minimum effect stands for what it cannot
//! see, the difference between two runs of one workload (load on the machine, caches).
//! A quantile's change must pass two tests: the order-statistic intervals of [`stats`]
//! (independent requests), and the batch means of [`batch_means`] (requests correlated in
//! time, as a stall of the machine makes them), for which `requests` is read: the start time
//! and duration of each answered request of the groups compared, bounded in number
//! ([`durations`]), and one query text per fingerprint, to show what it is. An output without
//! `requests` is tested by the order statistics alone.
pub mod batch_means;
pub mod durations;
pub mod fail_on;
pub mod html;
pub mod stats;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use arrow::array::{Array, Int64Array, StringArray};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use l7tap_protocols::fingerprint::{fingerprint_zookeeper_into, redact_query, Fingerprint};

use crate::hdr_sum::HdrSum;
use crate::outdir::{
    check_output_dir, column, column_if_present, for_each_interval, open_output, read_projected,
    runs_selected, server_sides, several_runs_note, table_files, IntervalColumns, ReadError,
    Selection, ShownSides,
};
use crate::untrusted::{for_json, for_terminal};
use batch_means::{batch_estimate, batch_interval, BatchInterval};
use fail_on::{Metric, Rule, Threshold};
use stats::{quantile_bounds, quantile_change, two_proportion_z, Direction, QuantileBounds};

/// The quantiles compared, in thousandths.
pub const QUANTILES: [u16; 4] = [500, 900, 990, 999];
/// A latency change smaller than this is never beyond noise: on loopback, scheduling alone
/// moves a request by tens of µs.
pub const MIN_LATENCY_CHANGE_NS: f64 = 50_000.0;
/// An error-rate change smaller than this (0.5 percentage point) is never beyond noise.
pub const MIN_ERROR_RATE_CHANGE: f64 = 0.005;
/// Exit status of a diff that found a `--fail-on` regression.
pub const REGRESSION_EXIT_STATUS: i32 = 3;

/// `l7tap diff`'s flags.
#[derive(clap::Args)]
pub struct DiffArgs {
    /// Output of the baseline run: a directory or the s3://BUCKET/PREFIX it wrote to.
    pub baseline: PathBuf,
    /// Output of the candidate run, the same way.
    pub candidate: PathBuf,
    /// Only this protocol family.
    #[arg(long)]
    pub protocol: Option<String>,
    /// Only this server (`ip:port`).
    #[arg(long)]
    pub server: Option<String>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
    /// Also write an HTML page with both latency distributions of each group.
    #[arg(long, value_name = "FILE.html")]
    pub html: Option<PathBuf>,
    /// Smallest relative change called beyond noise (with a significant test), in percent.
    #[arg(long, default_value = "10%", value_parser = parse_percent)]
    pub min_effect: f64,
    /// Exit with status 3 when a group regressed significantly by more than this: METRIC>+N
    /// with METRIC p50, p90, p99, p99.9, mean or errors and N in %, ns/us/ms/s (latencies) or
    /// pp (error rate), e.g. 'p99>+10%' or 'p50>+2ms,errors>+1pp' (repeatable).
    #[arg(long = "fail-on", value_name = "RULE", value_delimiter = ',', value_parser = parse_rule)]
    pub fail_on: Vec<Rule>,
    /// Rows of the text table (by impact); 0: all.
    #[arg(long, default_value_t = 40)]
    pub top: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
}

fn parse_rule(text: &str) -> Result<Rule, String> {
    let mut rules = fail_on::parse_rules(text)?;
    match rules.len() {
        1 => Ok(rules.remove(0)),
        _ => Err(format!("--fail-on {text:?}: one rule per value")),
    }
}

/// `10%` or `10` → 0.10.
fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value / 100.0),
        _ => Err(format!("{text:?} is not a percentage (e.g. 10%)")),
    }
}

impl DiffArgs {
    /// The flags, checked before anything is read.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(html) = &self.html {
            let extension = html
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if !matches!(extension.as_str(), "html" | "htm") {
                anyhow::bail!("--html must end in .html");
            }
            if html.is_dir() {
                anyhow::bail!("--html {}: is a directory", html.display());
            }
        }
        Ok(())
    }

    fn selection(&self) -> Selection {
        Selection {
            protocol: self.protocol.clone(),
            server: self.server.clone(),
            ..Selection::default()
        }
    }
}

/// What a group is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub protocol: String,
    pub server: String,
    pub operation: String,
    /// None: rows written before fingerprints existed.
    pub fingerprint: Option<Fingerprint>,
}

/// One group's figures in one output.
#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    incomplete: u64,
    /// Sum of the answered requests' durations.
    sum_ns: u64,
    latency: HdrSum,
}

/// One output read.
pub struct OutputFigures {
    pub shown: String,
    /// Requests of every group.
    pub requests: u64,
    /// Seconds from the first window's start to the last one's end.
    pub span_s: f64,
    pub groups: BTreeMap<GroupKey, Side>,
    /// One query text per (protocol, fingerprint), as shown.
    pub texts: HashMap<(String, Fingerprint), String>,
}

/// One group in one output, summed.
pub struct Side {
    pub requests: u64,
    pub errors: u64,
    pub incomplete: u64,
    pub sum_ns: u64,
    pub latency: Option<Histogram<u64>>,
    /// The answered requests' durations in time order, from `requests` (empty without it).
    pub durations: Vec<u64>,
}

impl Side {
    pub fn answered(&self) -> u64 {
        self.requests - self.incomplete
    }

    pub fn mean_ns(&self) -> Option<f64> {
        (self.answered() > 0).then(|| self.sum_ns as f64 / self.answered() as f64)
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    fn quantile(&self, q: u16, z: f64) -> Option<QuantileBounds> {
        quantile_bounds(self.latency.as_ref()?, f64::from(q) / 1000.0, z)
    }
}

/// Reads one output's `intervals` into groups.
pub fn read_output(out: &Path, selection: &Selection) -> Result<OutputFigures, ReadError> {
    let view = open_output(out, selection)?;
    check_output_dir(&view.dir)?;
    let runs = runs_selected(&view.dir, &[])?;
    if let Some(note) = several_runs_note(Path::new(&view.shown), &runs, &[]) {
        eprintln!("l7tap: {}", for_terminal(&note));
    }
    let (sides, _) = server_sides(&view.dir, selection)?;
    let shown = ShownSides::new(&sides);
    let mut tallies: HashMap<GroupKey, Tally> = HashMap::new();
    let mut span: Option<(i64, i64)> = None;
    let with_histograms = IntervalColumns {
        histogram: true,
        heatmap: false,
    };
    for_each_interval(&view.dir, selection, with_histograms, |r| {
        if !shown.is_shown(r.protocol, r.server, r.side) {
            return Ok(());
        }
        let end = r.window_start_us + r.window_ns / 1_000;
        span = Some(span.map_or((r.window_start_us, end), |(a, b)| {
            (a.min(r.window_start_us), b.max(end))
        }));
        let key = GroupKey {
            protocol: r.protocol.to_owned(),
            server: r.server.to_owned(),
            operation: r.operation.to_owned(),
            fingerprint: r.fingerprint.map(Fingerprint::from_i64),
        };
        let tally = tallies.entry(key).or_default();
        let count = r.count.max(0) as u64;
        tally.requests += count;
        tally.errors += r.errors.max(0) as u64;
        if r.status == "incomplete" {
            tally.incomplete += count;
            return Ok(());
        }
        tally.sum_ns = tally.sum_ns.saturating_add(r.sum_ns.max(0) as u64);
        if let Some(bytes) = r.histogram_bytes {
            tally
                .latency
                .add(bytes)
                .map_err(|e| ReadError::Format(format!("intervals hdr: {e}")))?;
        }
        Ok(())
    })?;
    let mut durations = durations::request_durations(&view.dir, selection, &shown)?;
    let mut deserializer = Deserializer::new();
    let mut groups = BTreeMap::new();
    for (key, tally) in tallies {
        let latency = tally
            .latency
            .histogram(&mut deserializer)
            .map_err(|e| ReadError::Format(format!("intervals hdr: {e}")))?;
        let durations = durations.remove(&key).unwrap_or_default();
        groups.insert(
            key,
            Side {
                requests: tally.requests,
                errors: tally.errors,
                incomplete: tally.incomplete,
                sum_ns: tally.sum_ns,
                latency,
                durations,
            },
        );
    }
    let wanted: HashSet<(String, Fingerprint)> = groups
        .keys()
        .filter_map(|k| Some((k.protocol.clone(), k.fingerprint?)))
        .collect();
    let texts = query_texts(&view.dir, selection, wanted)?;
    Ok(OutputFigures {
        shown: view.shown.clone(),
        requests: groups.values().map(|s| s.requests).sum(),
        span_s: span.map_or(0.0, |(a, b)| (b - a) as f64 / 1e6),
        groups,
        texts,
    })
}

/// Longest query text shown.
const TEXT_LIMIT: usize = 300;

/// One `requests` row's text per wanted fingerprint, normalised for display (literals of SQL
/// replaced by `?` whatever the capture's `--redact`; a ZooKeeper path as its pattern). Files
/// are read until every fingerprint has its text.
fn query_texts(
    dir: &Path,
    selection: &Selection,
    mut wanted: HashSet<(String, Fingerprint)>,
) -> Result<HashMap<(String, Fingerprint), String>, ReadError> {
    let mut texts = HashMap::new();
    wanted.retain(|(_, f)| !f.is_other());
    let columns = ["ts", "protocol", "operation", "fingerprint", "query"];
    let mut pattern = String::new();
    for path in table_files(dir, "requests", selection)? {
        if wanted.is_empty() {
            break;
        }
        let (batches, _) = read_projected(&path, &columns, "ts", selection, 0)?;
        for batch in &batches {
            let named = |e: ReadError| e.in_file(&path);
            let Some(fingerprint) =
                column_if_present::<Int64Array>(batch, "fingerprint").map_err(named)?
            else {
                continue;
            };
            let protocol = column::<StringArray>(batch, "protocol").map_err(named)?;
            let operation = column::<StringArray>(batch, "operation").map_err(named)?;
            let query = column::<StringArray>(batch, "query").map_err(named)?;
            for row in 0..batch.num_rows() {
                let key = (
                    protocol.value(row).to_owned(),
                    Fingerprint::from_i64(fingerprint.value(row)),
                );
                if !wanted.remove(&key) {
                    continue;
                }
                let raw = (!query.is_null(row)).then(|| query.value(row));
                let text = match key.0.as_str() {
                    "zookeeper" => {
                        fingerprint_zookeeper_into(operation.value(row), "", raw, &mut pattern);
                        pattern.clone()
                    }
                    _ => raw.map_or_else(String::new, |q| {
                        redact_query(q)
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                    }),
                };
                texts.insert(key, truncate(&text, TEXT_LIMIT));
            }
        }
    }
    Ok(texts)
}

fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// One quantile of one group compared.
#[derive(Clone, Debug)]
pub struct QuantileDiff {
    pub q: u16,
    pub baseline: Option<QuantileBounds>,
    pub candidate: Option<QuantileBounds>,
    /// The batch-means interval of the change; none when either side lacks the requests.
    pub batches: Option<BatchInterval>,
    /// Whether the batch means were available on both sides (then they must agree).
    pub batch_tested: bool,
    /// Significant by both tests, whichever the size.
    pub significant: Option<Direction>,
    /// Significant and beyond the minimum effect.
    pub flagged: bool,
}

impl QuantileDiff {
    pub fn relative(&self) -> Option<f64> {
        let (b, c) = (self.baseline?, self.candidate?);
        (b.estimate > 0).then(|| c.estimate as f64 / b.estimate as f64 - 1.0)
    }
}

/// One group compared.
pub struct GroupDiff {
    pub key: GroupKey,
    pub text: String,
    pub baseline: Option<Side>,
    pub candidate: Option<Side>,
    pub quantiles: Vec<QuantileDiff>,
    /// z of the two-proportion test (positive: more errors in the candidate).
    pub error_z: f64,
    pub error_flagged: bool,
    /// Time spent (count × mean), the larger of the two sides, ns.
    pub impact_ns: u64,
    /// The `--fail-on` rules this group trips.
    pub tripped: Vec<Rule>,
}

impl GroupDiff {
    pub fn flagged(&self) -> bool {
        self.error_flagged || self.quantiles.iter().any(|q| q.flagged)
    }
}

/// The whole comparison.
pub struct Diff {
    pub baseline: OutputFigures,
    pub candidate: OutputFigures,
    pub groups: Vec<GroupDiff>,
    pub min_effect: f64,
    pub z: f64,
}

/// Compares two outputs' groups.
pub fn compare(
    mut baseline: OutputFigures,
    mut candidate: OutputFigures,
    min_effect: f64,
    rules: &[Rule],
) -> Diff {
    let z = stats::DEFAULT_Z;
    let keys: Vec<GroupKey> = baseline
        .groups
        .keys()
        .chain(candidate.groups.keys())
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut groups = Vec::with_capacity(keys.len());
    for key in keys {
        let b = baseline.groups.remove(&key);
        let c = candidate.groups.remove(&key);
        let text = match key.fingerprint {
            None => "(no fingerprint: written before the column existed)".to_owned(),
            Some(f) if f.is_other() => "(other: fingerprints folded past the cap)".to_owned(),
            Some(f) => {
                let k = (key.protocol.clone(), f);
                candidate
                    .texts
                    .get(&k)
                    .or_else(|| baseline.texts.get(&k))
                    .cloned()
                    .unwrap_or_default()
            }
        };
        groups.push(compare_group(key, text, b, c, min_effect, z, rules));
    }
    groups.sort_by(|a, b| {
        b.impact_ns
            .cmp(&a.impact_ns)
            .then_with(|| a.key.cmp(&b.key))
    });
    Diff {
        baseline,
        candidate,
        groups,
        min_effect,
        z,
    }
}

fn compare_group(
    key: GroupKey,
    text: String,
    baseline: Option<Side>,
    candidate: Option<Side>,
    min_effect: f64,
    z: f64,
    rules: &[Rule],
) -> GroupDiff {
    let impact_ns = [&baseline, &candidate]
        .iter()
        .filter_map(|s| s.as_ref().map(|s| s.sum_ns))
        .max()
        .unwrap_or(0);
    let mut quantiles = Vec::new();
    for q in QUANTILES {
        let b = baseline.as_ref().and_then(|s| s.quantile(q, z));
        let c = candidate.as_ref().and_then(|s| s.quantile(q, z));
        let order_statistics = match (&b, &c) {
            (Some(b), Some(c)) => quantile_change(b, c),
            _ => None,
        };
        let (batch_tested, batches) = match (&baseline, &candidate) {
            (Some(sb), Some(sc)) if !sb.durations.is_empty() && !sc.durations.is_empty() => {
                let qf = f64::from(q) / 1000.0;
                let interval = batch_estimate(&sb.durations, qf)
                    .zip(batch_estimate(&sc.durations, qf))
                    .map(|(eb, ec)| batch_interval(&eb, &ec));
                (true, interval)
            }
            _ => (false, None),
        };
        let significant = match batch_tested {
            true => order_statistics.filter(|&d| batches.and_then(|i| i.significant()) == Some(d)),
            false => order_statistics,
        };
        let mut diff = QuantileDiff {
            q,
            baseline: b,
            candidate: c,
            batches,
            batch_tested,
            significant,
            flagged: false,
        };
        diff.flagged = significant.is_some()
            && diff.relative().is_some_and(|r| r.abs() >= min_effect)
            && match (b, c) {
                (Some(b), Some(c)) => {
                    (c.estimate as f64 - b.estimate as f64).abs() >= MIN_LATENCY_CHANGE_NS
                }
                _ => false,
            };
        quantiles.push(diff);
    }
    let (error_z, error_flagged) = match (&baseline, &candidate) {
        (Some(b), Some(c)) => {
            let z_value = two_proportion_z(b.errors, b.requests, c.errors, c.requests);
            let (rb, rc) = (b.error_rate(), c.error_rate());
            let relative_ok = rb == 0.0 || ((rc / rb) - 1.0).abs() >= min_effect;
            let flagged =
                z_value.abs() >= z && (rc - rb).abs() >= MIN_ERROR_RATE_CHANGE && relative_ok;
            (z_value, flagged)
        }
        _ => (0.0, false),
    };
    let mut group = GroupDiff {
        key,
        text,
        baseline,
        candidate,
        quantiles,
        error_z,
        error_flagged,
        impact_ns,
        tripped: Vec::new(),
    };
    group.tripped = rules
        .iter()
        .copied()
        .filter(|rule| trips(rule, &group, z))
        .collect();
    group
}

/// Whether `rule` trips on `group`: worse by more than its threshold, and significantly.
fn trips(rule: &Rule, group: &GroupDiff, z: f64) -> bool {
    let (Some(b), Some(c)) = (&group.baseline, &group.candidate) else {
        return false;
    };
    let beyond = |base: f64, cand: f64, threshold: Threshold| match threshold {
        Threshold::Percent(p) => cand > base && (base == 0.0 || (cand / base - 1.0) * 100.0 > p),
        Threshold::Nanos(ns) => cand - base > ns,
        Threshold::Points(pp) => (cand - base) * 100.0 > pp,
    };
    match rule.metric {
        Metric::Quantile(q) => group.quantiles.iter().any(|d| {
            d.q == q
                && d.significant == Some(Direction::Up)
                && match (d.baseline, d.candidate) {
                    (Some(qb), Some(qc)) => {
                        beyond(qb.estimate as f64, qc.estimate as f64, rule.threshold)
                    }
                    _ => false,
                }
        }),
        Metric::Mean => {
            let central_up = group
                .quantiles
                .iter()
                .any(|d| matches!(d.q, 500 | 900) && d.significant == Some(Direction::Up));
            central_up
                && match (b.mean_ns(), c.mean_ns()) {
                    (Some(mb), Some(mc)) => beyond(mb, mc, rule.threshold),
                    _ => false,
                }
        }
        Metric::ErrorRate => {
            group.error_z >= z && beyond(b.error_rate(), c.error_rate(), rule.threshold)
        }
    }
}

/// Runs `l7tap diff`.
pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let selection = args.selection();
    let baseline = read_output(&args.baseline, &selection)
        .map_err(|e| anyhow::anyhow!("baseline {}: {e}", args.baseline.display()))?;
    let candidate = read_output(&args.candidate, &selection)
        .map_err(|e| anyhow::anyhow!("candidate {}: {e}", args.candidate.display()))?;
    let diff = compare(baseline, candidate, args.min_effect, &args.fail_on);
    let out = match args.format {
        DiffFormat::Text => render_text(&diff, args.top, &args.fail_on),
        DiffFormat::Json => render_json(&diff, &args.fail_on),
    };
    print!("{out}");
    std::io::stdout().flush()?;
    if let Some(path) = &args.html {
        html::write_html(&diff, path)
            .map_err(|e| anyhow::anyhow!("--html {}: {e}", path.display()))?;
    }
    let tripped: Vec<&GroupDiff> = diff
        .groups
        .iter()
        .filter(|g| !g.tripped.is_empty())
        .collect();
    if !tripped.is_empty() {
        for group in &tripped {
            let rules: Vec<String> = group.tripped.iter().map(Rule::to_string).collect();
            eprintln!(
                "l7tap diff: regression ({}): {}",
                rules.join(", "),
                for_terminal(&group_label(&group.key))
            );
        }
        std::process::exit(REGRESSION_EXIT_STATUS);
    }
    Ok(())
}

/// `protocol server operation fingerprint`.
pub fn group_label(key: &GroupKey) -> String {
    format!(
        "{} {} {} {}",
        key.protocol,
        key.server,
        key.operation,
        fingerprint_name(key.fingerprint)
    )
}

pub fn fingerprint_name(fingerprint: Option<Fingerprint>) -> String {
    fingerprint.map_or_else(|| "-".to_owned(), |f| f.to_string())
}

/// `1.23ms`, `850us`, `2.1s`.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.0}us", ns / 1e3)
    }
}

fn quantile_name(q: u16) -> &'static str {
    match q {
        500 => "p50",
        900 => "p90",
        990 => "p99",
        _ => "p99.9",
    }
}

fn render_text(diff: &Diff, top: usize, rules: &[Rule]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== l7tap diff: baseline {} ({} requests in {:.0} s), candidate {} ({} requests in {:.0} s)",
        for_terminal(&diff.baseline.shown),
        diff.baseline.requests,
        diff.baseline.span_s,
        for_terminal(&diff.candidate.shown),
        diff.candidate.requests,
        diff.candidate.span_s
    );
    let flagged = diff.groups.iter().filter(|g| g.flagged()).count();
    let _ = writeln!(
        out,
        "{} groups (protocol, server, operation, fingerprint), by impact (time spent = count × mean, the larger side); \
         {flagged} changed beyond noise (*: 99.9% intervals apart, by order statistics and by batch means, and ≥ {:.0}%, ≥ 50us / ≥ 0.5 pp)",
        diff.groups.len(),
        diff.min_effect * 100.0
    );
    if !rules.is_empty() {
        let names: Vec<String> = rules.iter().map(Rule::to_string).collect();
        let tripped = diff.groups.iter().filter(|g| !g.tripped.is_empty()).count();
        let _ = writeln!(
            out,
            "--fail-on {}: {tripped} groups regressed",
            names.join(",")
        );
    }
    let _ = writeln!(
        out,
        "{:<10} {:<21} {:<9} {:<16} {:>19} {:>13} {:>13} {:>13} {:>22} {:>22} {:>22} {:>22}  query",
        "protocol",
        "server",
        "operation",
        "fingerprint",
        "time spent",
        "requests",
        "req/s",
        "errors %",
        "p50",
        "p90",
        "p99",
        "p99.9"
    );
    let shown = if top == 0 { diff.groups.len() } else { top };
    for group in diff.groups.iter().take(shown) {
        let b = group.baseline.as_ref();
        let c = group.candidate.as_ref();
        let time = format!(
            "{}→{}",
            b.map_or("-".into(), |s| format_ns(s.sum_ns as f64)),
            c.map_or("-".into(), |s| format_ns(s.sum_ns as f64))
        );
        let requests = format!(
            "{}→{}",
            b.map_or("-".into(), |s| s.requests.to_string()),
            c.map_or("-".into(), |s| s.requests.to_string())
        );
        let rate = |side: Option<&Side>, span_s: f64| match side {
            Some(s) if span_s > 0.0 => format!("{:.1}", s.requests as f64 / span_s),
            _ => "-".into(),
        };
        let rates = format!(
            "{}→{}",
            rate(b, diff.baseline.span_s),
            rate(c, diff.candidate.span_s)
        );
        let errors = format!(
            "{}→{}{}",
            b.map_or("-".into(), |s| format!("{:.1}", s.error_rate() * 100.0)),
            c.map_or("-".into(), |s| format!("{:.1}", s.error_rate() * 100.0)),
            if group.error_flagged { "*" } else { "" }
        );
        let mut line = format!(
            "{:<10} {:<21} {:<9} {:<16} {:>19} {:>13} {:>13} {:>13}",
            for_terminal(&group.key.protocol),
            for_terminal(&group.key.server),
            for_terminal(&group.key.operation),
            fingerprint_name(group.key.fingerprint),
            time,
            requests,
            rates,
            errors
        );
        for q in &group.quantiles {
            let cell = match (q.baseline, q.candidate) {
                (Some(qb), Some(qc)) => format!(
                    "{}→{} {:+.0}%{}",
                    format_ns(qb.estimate as f64),
                    format_ns(qc.estimate as f64),
                    q.relative().unwrap_or(0.0) * 100.0,
                    if q.flagged { "*" } else { " " }
                ),
                (Some(qb), None) => format!("{}→- ", format_ns(qb.estimate as f64)),
                (None, Some(qc)) => format!("-→{} ", format_ns(qc.estimate as f64)),
                (None, None) => "- ".into(),
            };
            let _ = write!(line, " {cell:>22}");
        }
        let _ = writeln!(out, "{line}  {}", for_terminal(&group.text));
    }
    if diff.groups.len() > shown {
        let _ = writeln!(
            out,
            "({} more groups; --top 0 shows all)",
            diff.groups.len() - shown
        );
    }
    out
}

fn bounds_json(b: &Option<QuantileBounds>) -> serde_json::Value {
    match b {
        None => serde_json::Value::Null,
        Some(b) => serde_json::json!({"ns": b.estimate, "low_ns": b.low, "high_ns": b.high}),
    }
}

fn side_json(side: &Option<Side>, span_s: f64) -> serde_json::Value {
    match side {
        None => serde_json::Value::Null,
        Some(s) => serde_json::json!({
            "requests": s.requests,
            "rate_per_s": if span_s > 0.0 { s.requests as f64 / span_s } else { 0.0 },
            "errors": s.errors,
            "error_rate": s.error_rate(),
            "incomplete": s.incomplete,
            "time_spent_ns": s.sum_ns,
            "mean_ns": s.mean_ns(),
        }),
    }
}

fn render_json(diff: &Diff, rules: &[Rule]) -> String {
    let groups: Vec<serde_json::Value> = diff
        .groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "protocol": g.key.protocol,
                "server": g.key.server,
                "operation": g.key.operation,
                "fingerprint": fingerprint_name(g.key.fingerprint),
                "query": g.text,
                "impact_ns": g.impact_ns,
                "baseline": side_json(&g.baseline, diff.baseline.span_s),
                "candidate": side_json(&g.candidate, diff.candidate.span_s),
                "quantiles": g.quantiles.iter().map(|q| serde_json::json!({
                    "quantile": quantile_name(q.q),
                    "baseline": bounds_json(&q.baseline),
                    "candidate": bounds_json(&q.candidate),
                    "relative_change": q.relative(),
                    "batch_means": q.batches.map(|i| serde_json::json!({
                        "difference_ns": i.difference_ns,
                        "half_width_ns": i.half_width_ns,
                        "degrees_of_freedom": i.degrees_of_freedom,
                    })),
                    "batch_tested": q.batch_tested,
                    "significant": q.significant.map(|d| match d { Direction::Up => "up", Direction::Down => "down" }),
                    "flagged": q.flagged,
                })).collect::<Vec<_>>(),
                "error_rate_z": g.error_z,
                "error_rate_flagged": g.error_flagged,
                "flagged": g.flagged(),
                "fail_on_tripped": g.tripped.iter().map(Rule::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    let value = serde_json::json!({
        "baseline": {"output": diff.baseline.shown, "span_s": diff.baseline.span_s, "requests": diff.baseline.requests},
        "candidate": {"output": diff.candidate.shown, "span_s": diff.candidate.span_s, "requests": diff.candidate.requests},
        "test": {
            "quantiles": "order-statistic (binomial) confidence intervals from each side's HDR histogram do not overlap, and the batch-means interval of the difference (time-ordered batches of the requests table, Student's t) excludes 0",
            "error_rate": "two-proportion z-test, pooled",
            "z": diff.z,
            "min_effect": diff.min_effect,
            "min_latency_change_ns": MIN_LATENCY_CHANGE_NS,
            "min_error_rate_change": MIN_ERROR_RATE_CHANGE,
        },
        "fail_on": rules.iter().map(Rule::to_string).collect::<Vec<_>>(),
        "groups": groups,
    });
    let text = serde_json::to_string_pretty(&value).expect("JSON values serialize");
    format!("{}\n", for_json(&text))
}
