//! Checks of every command's flags, run first thing, before any side effect (loading the
//! probes, creating or truncating `--record`, the output directory or any other file): a bad
//! flag is one error that names it, never a panic or a half-done run. An `--out` holding earlier
//! runs is refused here too, unless `--append`. Whether an object-storage `--out` can be
//! written is found by a probe write, a separate pre-flight step ([`crate::pipeline`]) that runs
//! before the probes load.
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use l7tap_aggregate::{Aggregator, AggregatorConfig};
use l7tap_sinks::Output;

use crate::outdir::runs_in;
use crate::{CaptureArgs, Command, CommonArgs};

/// Actor threads at most (each has a 16 MiB input ring).
pub const MAX_ACTORS: usize = 256;
/// `--max-query-bytes` at least: a ZooKeeper request is recognised by its path, and a path
/// cut to nothing (or a byte) cannot be told from garbage.
pub const MIN_QUERY_BYTES: usize = 64;
/// `--max-query-bytes` at most.
pub const MAX_QUERY_BYTES: usize = 16 << 20;
/// `--duration` at most (ten years; also keeps the deadline within `Instant`'s range).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);
/// `--roll-age` range.
pub const MIN_ROLL_AGE: Duration = Duration::from_millis(1);
pub const MAX_ROLL_AGE: Duration = Duration::from_secs(86_400);
/// `--upload-wait` at most.
pub const MAX_UPLOAD_WAIT: Duration = Duration::from_secs(86_400);
/// Heatmap sub-windows per `--interval` at most: each is a row of bucket counts per key.
pub const MAX_SUB_WINDOWS: u128 = 3_600;
/// `--perf-pages` at most (256 MiB per CPU).
pub const MAX_PERF_PAGES: usize = 65_536;

/// Parses `10s`, `5m`, `2h`, `1d`, `250ms` (a bare number is seconds); rejects what a
/// [`Duration`] cannot hold.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {s:?} is out of range"))
}

fn check_range(flag: &str, value: Duration, min: Duration, max: Duration) -> Result<()> {
    if value < min || value > max {
        bail!(
            "{flag} {} is out of range: use {} to {}",
            show(value),
            show(min),
            show(max)
        );
    }
    Ok(())
}

fn show(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// An output path that must be a directory (or not exist yet).
fn check_directory_path(flag: &str, path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        bail!("{flag} is empty");
    }
    if path.exists() && !path.is_dir() {
        bail!("{flag} {}: exists and is not a directory", path.display());
    }
    Ok(())
}

/// An output path that must be a file (or not exist yet).
fn check_file_path(flag: &str, path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        bail!("{flag} is empty");
    }
    if path.is_dir() {
        bail!("{flag} {}: is a directory", path.display());
    }
    Ok(())
}

/// Refuses an output directory that holds published files of earlier runs: the new run's
/// counts would silently add up with theirs in `report` and `heatmap`.
fn check_no_earlier_run(out: &Path) -> Result<()> {
    let runs = runs_in(out).map_err(|e| anyhow!("--out {}: {e}", out.display()))?;
    if runs.is_empty() {
        return Ok(());
    }
    bail!(
        "--out {} already holds {} earlier run{} ({} files; {}): choose another directory, or pass \
         --append to add this run to it (report and heatmap then tell the runs apart with --run)",
        out.display(),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        runs.files(),
        runs.ids()
    );
}

impl CommonArgs {
    /// The flags shared by `capture` and `replay`.
    pub fn validate(&self) -> Result<()> {
        let output = Output::parse(&self.out)?;
        match &output {
            Output::Directory(directory) => {
                check_directory_path("--out", &directory.path)?;
                if !self.append {
                    check_no_earlier_run(&directory.path)?;
                }
            }
            // A shared prefix holds many hosts' runs by design; each file names its host and
            // run, which `report --run` selects.
            Output::Bucket(_) => check_directory_path("--spool", &self.spool_root())?,
            // Rows go into tables, which hold many hosts' runs by design (`run_id` apart).
            Output::ClickHouse(_) => check_directory_path("--spool", &self.spool_root())?,
        }
        if let Some(host) = &self.host {
            if host.is_empty() || host.len() > 255 {
                bail!("--host must be 1 to 255 characters");
            }
        }
        check_range(
            "--upload-wait",
            self.upload_wait,
            Duration::ZERO,
            MAX_UPLOAD_WAIT,
        )?;
        if self.spool_max_bytes == 0 {
            bail!("--spool-max-bytes must be positive");
        }
        if let Some(path) = &self.summary_json {
            check_file_path("--summary-json", path)?;
        }
        if let Some(n) = self.actors {
            if n == 0 || n > MAX_ACTORS {
                bail!("--actors {n} is out of range: use 1 to {MAX_ACTORS}");
            }
        }
        if !(MIN_QUERY_BYTES..=MAX_QUERY_BYTES).contains(&self.max_query_bytes) {
            bail!(
                "--max-query-bytes {} is out of range: use {MIN_QUERY_BYTES} to {MAX_QUERY_BYTES}",
                self.max_query_bytes
            );
        }
        let interval_ns = self.interval.as_nanos();
        let resolution_ns = self.heatmap_resolution.as_nanos();
        if interval_ns == 0 || interval_ns > 86_400_000_000_000 {
            bail!(
                "--interval {} is out of range: use up to one day",
                show(self.interval)
            );
        }
        if resolution_ns == 0 || interval_ns / resolution_ns > MAX_SUB_WINDOWS {
            bail!(
                "--heatmap-resolution {} is out of range: at most {MAX_SUB_WINDOWS} per --interval",
                show(self.heatmap_resolution)
            );
        }
        // Both fit in u64 here (checked above); the aggregator checks that they divide.
        if let Err(e) = Aggregator::new(AggregatorConfig {
            window_ns: interval_ns as u64,
            heatmap_sub_window_ns: resolution_ns as u64,
            monotonic_to_unix_offset_ns: 0,
        }) {
            bail!("invalid --interval / --heatmap-resolution: {e}");
        }
        if self.apps.iter().any(|app| app.trim().is_empty()) {
            bail!("--app has an empty name: name applications as `requests.client_app` shows them");
        }
        if let Some(roll_age) = self.roll_age {
            check_range("--roll-age", roll_age, MIN_ROLL_AGE, MAX_ROLL_AGE)?;
        }
        if self.roll_bytes == 0 {
            bail!("--roll-bytes must be positive");
        }
        Ok(())
    }
}

impl CaptureArgs {
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = self.duration {
            check_range("--duration", d, Duration::from_nanos(1), MAX_DURATION)?;
        }
        if let Some(path) = &self.record {
            check_file_path("--record", path)?;
        }
        if let Some(path) = &self.ready_file {
            check_file_path("--ready-file", path)?;
        }
        let max_capture = l7tap_probes::MAX_CAPTURE_BYTES;
        let generic_capture = self
            .capture_bytes
            .iter()
            .map(|(protocol, bytes)| (format!("--capture-bytes {}=", protocol.name()), *bytes));
        for (flag, value) in [
            (
                "--capture-bytes-clickhouse ".to_string(),
                self.capture_bytes_clickhouse,
            ),
            (
                "--capture-bytes-zookeeper ".to_string(),
                self.capture_bytes_zookeeper,
            ),
        ]
        .into_iter()
        .chain(generic_capture)
        {
            if value == 0 || value > max_capture {
                bail!("{flag}{value} is out of range: use 1 to {max_capture}");
            }
        }
        let max_tail = l7tap_probes::MAX_TAIL_BYTES;
        let generic_tail = self
            .tail_bytes
            .iter()
            .map(|(protocol, bytes)| (format!("--tail-bytes {}=", protocol.name()), *bytes));
        for (flag, value) in [(
            "--tail-bytes-clickhouse ".to_string(),
            self.tail_bytes_clickhouse,
        )]
        .into_iter()
        .chain(generic_tail)
        {
            if value > max_tail {
                bail!("{flag}{value} is out of range: use 0 to {max_tail}");
            }
        }
        check_clickhouse_http_ports(&self.clickhouse_http_ports)?;
        if !self.perf_pages.is_power_of_two() || self.perf_pages > MAX_PERF_PAGES {
            bail!(
                "--perf-pages {} must be a power of two, at most {MAX_PERF_PAGES}",
                self.perf_pages
            );
        }
        self.common.validate()
    }
}

/// `--clickhouse-http-ports` fits the probes' table and names ports.
fn check_clickhouse_http_ports(ports: &[u16]) -> Result<()> {
    let max_ports = l7tap_probes::MAX_CLICKHOUSE_HTTP_PORTS;
    if ports.len() > max_ports {
        bail!(
            "--clickhouse-http-ports names {} ports: at most {max_ports}",
            ports.len()
        );
    }
    if ports.contains(&0) {
        bail!("--clickhouse-http-ports: 0 is not a port");
    }
    Ok(())
}

impl Command {
    /// The flags of the command (what their parsers could not check alone).
    pub fn validate(&self) -> Result<()> {
        match self {
            Command::Capture(a) => a.validate(),
            Command::Replay(a) => {
                check_clickhouse_http_ports(&a.clickhouse_http_ports)?;
                a.common.validate()
            }
            Command::Dump { out, .. } => check_directory_path("--out", out),
            Command::Report(a) => a.filters.validate().map_err(anyhow::Error::msg),
            Command::Heatmap(a) => a.validate(),
            Command::Diff(a) => a.validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_common_units() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn durations_a_duration_cannot_hold_are_errors() {
        let huge = "9".repeat(30);
        assert!(parse_duration(&huge).unwrap_err().contains("out of range"));
        assert!(parse_duration("99999999999999999999999d").is_err());
        assert!(parse_duration("nan").is_err());
        assert!(parse_duration("").is_err());
    }
}
