//! The benchmark table: reads the JSON lines `ci/bench.sh` writes (one per run: a workload,
//! a mode — without an agent, with l7tap over the perf array or the ring buffer, with
//! tcpdump — the load generator's report and what was measured of the agent) and prints one
//! Markdown table, one row per workload, comparing each mode with the runs without an agent.
//!
//! Throughputs and latencies are compared as ratios of medians over the alternated runs.
//! Agent CPU per request is the agent's user+sys time plus the eBPF programs' run time over
//! the run, divided by the requests the load generator completed.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use crate::report::LoadReport;

/// A bad results file.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("results line {line}: {error}")]
    BadLine {
        line: usize,
        error: serde_json::Error,
    },
}

/// What was measured of the agent (l7tap or tcpdump) during one run.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AgentMeasure {
    /// User + system CPU time of the agent process over the load (ns).
    #[serde(default)]
    pub cpu_ns: f64,
    /// Run time of the eBPF programs over the load (ns; 0 for tcpdump).
    #[serde(default)]
    pub bpf_ns: f64,
    /// Peak resident set size (VmHWM, KiB).
    #[serde(default)]
    pub hwm_kb: f64,
    /// l7tap's `--summary-json` counters.
    #[serde(default)]
    pub summary: BTreeMap<String, f64>,
    /// Packets tcpdump reported dropped by the kernel.
    #[serde(default)]
    pub dropped: Option<f64>,
}

/// What was measured of the watched server during one run.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServerMeasure {
    /// User + system CPU time of the server process over the load (ns).
    pub cpu_ns: f64,
}

/// One run as `ci/bench.sh` records it.
#[derive(Clone, Debug, Deserialize)]
pub struct RunResult {
    pub workload: String,
    /// `none`, `l7tap`, `l7tap-perf` or `tcpdump`.
    pub mode: String,
    /// `clickhouse`, `zookeeper` or `none`: whose records l7tap should produce.
    #[serde(default)]
    pub protocol: String,
    /// Connection ends l7tap sees per request (2 when client and server are both local).
    #[serde(default = "two")]
    pub sides: f64,
    /// Throughput ratio the workload should reach with l7tap (none: no goal).
    #[serde(default)]
    pub throughput_goal: Option<f64>,
    #[serde(default)]
    pub load: Option<LoadReport>,
    #[serde(default)]
    pub agent: Option<AgentMeasure>,
    /// The watched server's CPU (none for the echo loop, whose server is the load generator).
    #[serde(default)]
    pub server: Option<ServerMeasure>,
    #[serde(default)]
    pub error: Option<String>,
}

fn two() -> f64 {
    2.0
}

/// Agent CPU per request, in µs, above which the table flags a row.
pub const CPU_GOAL_US: f64 = 2.0;

pub fn parse_results(text: &str) -> Result<Vec<RunResult>, SuiteError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|error| SuiteError::BadLine { line: i + 1, error })
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The runs of one workload in one mode that produced a load report.
struct ModeRuns<'a> {
    runs: Vec<&'a RunResult>,
}

impl<'a> ModeRuns<'a> {
    fn loads(&self) -> impl Iterator<Item = &'a LoadReport> + '_ {
        self.runs.iter().filter_map(|r| r.load.as_ref())
    }
    fn median_of(&self, f: impl Fn(&LoadReport) -> f64) -> Option<f64> {
        median(self.loads().map(f).collect())
    }
    fn throughput(&self) -> Option<f64> {
        self.median_of(|l| l.throughput)
    }
    /// Median agent CPU (µs) per captured request — each completed request counted once
    /// per connection end on this host — as (process, eBPF).
    fn cpu_per_request_us(&self) -> Option<(f64, f64)> {
        let per_run: Vec<(f64, f64)> = self
            .runs
            .iter()
            .filter_map(|r| {
                let (load, agent) = (r.load.as_ref()?, r.agent.as_ref()?);
                (load.ok > 0).then(|| {
                    let n = load.ok as f64 * r.sides.max(1.0) * 1000.0;
                    (agent.cpu_ns / n, agent.bpf_ns / n)
                })
            })
            .collect();
        Some((
            median(per_run.iter().map(|p| p.0).collect())?,
            median(per_run.iter().map(|p| p.1).collect())?,
        ))
    }
    /// Median CPU of the watched server per completed request (µs).
    fn server_cpu_per_request_us(&self) -> Option<f64> {
        median(
            self.runs
                .iter()
                .filter_map(|r| {
                    let (load, server) = (r.load.as_ref()?, r.server.as_ref()?);
                    (load.ok > 0).then(|| server.cpu_ns / load.ok as f64 / 1000.0)
                })
                .collect(),
        )
    }
    fn counter_total(&self, key: &str) -> f64 {
        // + 0.0: an empty f64 sum is -0.0, which would print as "-0".
        self.runs
            .iter()
            .filter_map(|r| r.agent.as_ref()?.summary.get(key))
            .sum::<f64>()
            + 0.0
    }
    /// Records l7tap produced for the protocol and the records expected, over all runs.
    fn records_vs_expected(&self, protocol: &str) -> Option<(f64, f64)> {
        let keys: Vec<String> = ["ok", "error", "cancelled", "incomplete"]
            .iter()
            .map(|status| format!("records.{protocol}.{status}"))
            .collect();
        let mut records = 0.0;
        let mut expected = 0.0;
        for r in &self.runs {
            let (Some(load), Some(agent)) = (&r.load, &r.agent) else {
                continue;
            };
            records += keys
                .iter()
                .filter_map(|k| agent.summary.get(k))
                .sum::<f64>();
            expected += load.ok as f64 * r.sides;
        }
        (records > 0.0).then_some((records, expected))
    }
    fn hwm_mib(&self) -> Option<f64> {
        median(
            self.runs
                .iter()
                .filter_map(|r| r.agent.as_ref())
                .map(|a| a.hwm_kb / 1024.0)
                .filter(|m| *m > 0.0)
                .collect(),
        )
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "n/a".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The rendered table and the workloads that could not produce a row.
pub struct Table {
    pub markdown: String,
    pub missing: Vec<String>,
}

/// How far below tcpdump's throughput ratio l7tap's may be.
const TCPDUMP_MARGIN: f64 = 0.01;
/// How far below the floor's throughput ratio l7tap's may be.
const FLOOR_MARGIN: f64 = 0.02;

const HEADER: &str = "| workload | req/s without | l7tap ÷ | tcpdump ÷ | floor ÷ | p50 µs | p50 ÷ | p99 µs | p99 ÷ | l7tap µs per captured request (proc + bpf) | events lost | records / expected | l7tap RSS MiB | server CPU µs per request | server CPU ÷ (l7tap / floor) | perf ÷ | perf lost | perf µs per captured request | runs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";

/// Builds the table from all runs, rows in the order of `expected` (then any other workload).
pub fn table(results: &[RunResult], expected: &[String]) -> Table {
    let mut order: Vec<String> = expected.to_vec();
    for r in results {
        if !order.contains(&r.workload) {
            order.push(r.workload.clone());
        }
    }
    let mut markdown = String::from(HEADER);
    let mut missing = Vec::new();
    for workload in &order {
        let mode = |m: &str| ModeRuns {
            runs: results
                .iter()
                .filter(|r| &r.workload == workload && r.mode == m && r.load.is_some())
                .collect(),
        };
        let (none, l7tap, perf, tcpdump, floor) = (
            mode("none"),
            mode("l7tap"),
            mode("l7tap-perf"),
            mode("tcpdump"),
            mode("floor"),
        );
        let errors: Vec<&str> = results
            .iter()
            .filter(|r| &r.workload == workload)
            .filter_map(|r| r.error.as_deref())
            .collect();
        if none.runs.is_empty() || l7tap.runs.is_empty() {
            missing.push(workload.clone());
            let _ = writeln!(
                markdown,
                "| {workload} | could not be produced: {} |",
                errors.first().copied().unwrap_or("no runs")
            );
            continue;
        }
        let first = l7tap.runs[0];
        let base_tput = none.throughput();
        let tput_ratio = ratio(l7tap.throughput(), base_tput);
        let goal_mark = |r: Option<f64>, goal: Option<f64>| match (r, goal) {
            (Some(r), Some(g)) => format!("{r:.3}{}", if r >= g { "" } else { " ✗" }),
            (Some(r), None) => format!("{r:.3}"),
            _ => "n/a".into(),
        };
        let (p50, p99) = (none.median_of(|l| l.p50_us), none.median_of(|l| l.p99_us));
        let cpu = |m: &ModeRuns| match m.cpu_per_request_us() {
            Some((proc_us, bpf_us)) => format!(
                "{:.2} ({proc_us:.2} + {bpf_us:.2}){}",
                proc_us + bpf_us,
                if proc_us + bpf_us <= CPU_GOAL_US {
                    ""
                } else {
                    " ✗"
                }
            ),
            None => "n/a".into(),
        };
        let lost = |m: &ModeRuns| {
            if m.runs.is_empty() {
                return "n/a".to_string();
            }
            let failed = m.counter_total("kernel.events_failed");
            let emitted = m.counter_total("kernel.events_emitted");
            let drops = m.counter_total("ingest.ring_drops");
            let mut s = format!("{failed:.0} / {emitted:.0}");
            if drops > 0.0 {
                let _ = write!(s, " (+{drops:.0} ring drops)");
            }
            s
        };
        let records = if first.protocol == "none" || first.protocol.is_empty() {
            "—".to_string()
        } else {
            match l7tap.records_vs_expected(&first.protocol) {
                Some((got, want)) => format!("{got:.0} / {want:.0}"),
                None => "n/a".into(),
            }
        };
        // ✗ where l7tap's ratio is further below a reference's than its margin.
        let behind = |reference: f64, margin: f64| match tput_ratio {
            Some(r) if r < reference - margin => " ✗",
            _ => "",
        };
        let tcpdump_ratio = ratio(tcpdump.throughput(), base_tput);
        let tcpdump_cell = match (tcpdump_ratio, tcpdump.runs.is_empty()) {
            (Some(r), false) => {
                let dropped: f64 = tcpdump
                    .runs
                    .iter()
                    .filter_map(|r| r.agent.as_ref()?.dropped)
                    .sum();
                let mark = behind(r, TCPDUMP_MARGIN);
                if dropped > 0.0 {
                    format!("{r:.3} ({dropped:.0} dropped){mark}")
                } else {
                    format!("{r:.3}{mark}")
                }
            }
            _ => "n/a".into(),
        };
        let floor_cell = match ratio(floor.throughput(), base_tput) {
            Some(r) if !floor.runs.is_empty() => format!("{r:.3}{}", behind(r, FLOOR_MARGIN)),
            _ => "n/a".into(),
        };
        let server_base = none.server_cpu_per_request_us();
        let server_ratio =
            |m: &ModeRuns| fmt_opt(ratio(m.server_cpu_per_request_us(), server_base), 2);
        let server_cell = if server_base.is_some() {
            format!("{} / {}", server_ratio(&l7tap), server_ratio(&floor))
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            markdown,
            "| {workload} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{}/{}/{}/{} |",
            fmt_opt(base_tput, 0),
            goal_mark(tput_ratio, first.throughput_goal),
            tcpdump_cell,
            floor_cell,
            fmt_opt(p50, 0),
            fmt_opt(ratio(l7tap.median_of(|l| l.p50_us), p50), 2),
            fmt_opt(p99, 0),
            fmt_opt(ratio(l7tap.median_of(|l| l.p99_us), p99), 2),
            cpu(&l7tap),
            lost(&l7tap),
            records,
            fmt_opt(l7tap.hwm_mib(), 0),
            fmt_opt(server_base, 1),
            server_cell,
            fmt_opt(ratio(perf.throughput(), base_tput), 3),
            lost(&perf),
            cpu(&perf),
            none.runs.len(),
            l7tap.runs.len(),
            tcpdump.runs.len(),
            perf.runs.len(),
            floor.runs.len(),
        );
    }
    markdown.push_str(
        "\n÷: with the agent divided by without (medians of the alternated runs). \
         ✗: goal missed (throughput ≥ the row's goal; l7tap CPU ≤ 2 µs per captured request; \
         l7tap's ratio at most 0.01 below tcpdump's and 0.02 below the floor's, marked in their \
         cells). floor: a BPF program that returns at once, on every tracepoint l7tap uses \
         (`l7tap-floor`): what no tracepoint-based agent can go under. \
         A captured request is a completed request seen at one connection end: l7tap sees both \
         the client's and the server's socket here, so each request counts twice (echo: once). \
         events lost: kernel.events_failed / kernel.events_emitted over all l7tap runs. \
         records / expected: l7tap's records.<protocol>.{ok,error,cancelled,incomplete} against the load generator's \
         answered requests × connection ends on this host (n/a until the parsers produce records). \
         server CPU: user + system time of the watched server's process per completed request, \
         without an agent, and with l7tap and with the floor divided by without (n/a for the echo \
         loop, whose server is the load generator). \
         runs: without / l7tap (ring buffer, the default) / tcpdump / l7tap over perf buffers / floor.\n",
    );
    Table { markdown, missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(workload: &str, mode: &str, tput: f64, p50: f64, agent: &str) -> String {
        format!(
            r#"{{"workload":"{workload}","mode":"{mode}","protocol":"clickhouse","sides":2,"throughput_goal":0.97,
            "load":{{"workload":"x","target":"t","connections":1,"rate":null,"in_flight":1,"duration_s":1.0,
            "throughput":{tput},"sent":1000,"ok":1000,"failed":0,"p50_us":{p50},"p99_us":{p50},"p999_us":1,"max_us":1}}{agent}}}"#
        )
        .replace('\n', " ")
    }

    /// The table's row of `workload`.
    fn row(markdown: &str, workload: &str) -> String {
        let start = format!("| {workload} |");
        markdown
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("no row {workload} in {markdown}"))
            .to_string()
    }

    #[test]
    fn ratios_of_medians_and_missing_rows() {
        let agent = r#","agent":{"cpu_ns":1000000,"bpf_ns":500000,"hwm_kb":20480,"summary":{"kernel.events_failed":3,"kernel.events_emitted":100,"records.clickhouse.ok":1400,"records.clickhouse.error":100,"records.clickhouse.client.op.x.ok":700}}"#;
        let text = [
            line("ch", "none", 1000.0, 100.0, ""),
            line("ch", "l7tap", 950.0, 110.0, agent),
            line("ch", "none", 1000.0, 100.0, ""),
            line("ch", "l7tap", 990.0, 110.0, agent),
            line("zk", "none", 1000.0, 100.0, ""),
            r#"{"workload":"zk","mode":"l7tap","error":"l7tap did not attach"}"#.to_string(),
        ]
        .join("\n");
        let results = parse_results(&text).unwrap();
        let t = table(&results, &["ch".into(), "zk".into(), "echo".into()]);
        assert_eq!(t.missing, vec!["zk".to_string(), "echo".to_string()]);
        let ch = row(&t.markdown, "ch");
        assert!(ch.contains("| 0.970 |"), "{ch}");
        assert!(ch.contains("0.75 (0.50 + 0.25)"), "{ch}");
        assert!(ch.contains("6 / 200"), "{ch}");
        assert!(ch.contains("3000 / 4000"), "{ch}");
        assert!(ch.contains("| 20 |"), "{ch}");
        assert!(t
            .markdown
            .contains("| zk | could not be produced: l7tap did not attach |"));
    }

    #[test]
    fn server_cpu_per_request_is_compared_with_the_runs_without_an_agent() {
        let server = |ns: u64| format!(r#","server":{{"cpu_ns":{ns}}}"#);
        let text = [
            // 1000 requests per run: 40 and 44 µs per request without, 50 with l7tap,
            // 42 with the floor.
            line("zk", "none", 1000.0, 100.0, &server(40_000_000)),
            line("zk", "none", 1000.0, 100.0, &server(44_000_000)),
            line("zk", "l7tap", 900.0, 110.0, &server(50_000_000)),
            line("zk", "floor", 990.0, 101.0, &server(42_000_000)),
            // no server measured (the echo loop)
            line("echo", "none", 1000.0, 100.0, ""),
            line("echo", "l7tap", 990.0, 100.0, ""),
        ]
        .join("\n");
        let t = table(
            &parse_results(&text).unwrap(),
            &["zk".into(), "echo".into()],
        );
        // The two server columns follow the RSS column.
        let server_cells = |name: &str| {
            let row = row(&t.markdown, name);
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let rss = HEADER
                .split('|')
                .map(str::trim)
                .position(|c| c == "l7tap RSS MiB");
            let at = rss.expect("an RSS column") + 1;
            (cells[at].to_string(), cells[at + 1].to_string())
        };
        assert_eq!(server_cells("zk"), ("42.0".into(), "1.19 / 1.00".into()));
        assert_eq!(server_cells("echo"), ("n/a".into(), "n/a".into()));
    }

    #[test]
    fn floor_and_tcpdump_columns_mark_an_l7tap_ratio_behind_them() {
        let floor_agent = r#","agent":{"cpu_ns":0,"bpf_ns":100000,"hwm_kb":2048}"#;
        let tcpdump_agent = r#","agent":{"cpu_ns":1000000,"hwm_kb":2048,"dropped":0}"#;
        let text = [
            line("ch", "none", 1000.0, 100.0, ""),
            line("ch", "l7tap", 950.0, 110.0, ""),
            line("ch", "tcpdump", 965.0, 105.0, tcpdump_agent),
            line("ch", "floor", 980.0, 101.0, floor_agent),
            line("zk", "none", 1000.0, 100.0, ""),
            line("zk", "l7tap", 975.0, 110.0, ""),
            line("zk", "tcpdump", 980.0, 105.0, tcpdump_agent),
            line("zk", "floor", 990.0, 101.0, floor_agent),
        ]
        .join("\n");
        let results = parse_results(&text).unwrap();
        let t = table(&results, &["ch".into(), "zk".into()]);
        // ch: l7tap 0.950 is 0.015 behind tcpdump and 0.030 behind the floor.
        let ch = row(&t.markdown, "ch");
        assert!(ch.contains("| 0.965 ✗ | 0.980 ✗ |"), "{ch}");
        assert!(ch.ends_with("| 1/1/1/0/1 |"), "{ch}");
        // zk: 0.975 is within 0.01 of tcpdump's 0.980 and 0.02 of the floor's 0.990.
        let zk = row(&t.markdown, "zk");
        assert!(zk.contains("| 0.980 | 0.990 |"), "{zk}");
    }
}
