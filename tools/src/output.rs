//! The output thread: takes the actors' records and closed windows and the reactor's
//! kernel counter rows, merges each window's interval rows across actors, and writes the
//! three Parquet tables, retrying (with rows kept in memory) when a write fails. For an
//! uploading output, each published file is handed to the output's [`Shipper`], and what it
//! dropped past the spool bound is counted in the next `capture_stats` machine row.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use l7tap_actors::{ActorOutput, BatchPool, WindowStats};
use l7tap_aggregate::{merge_interval_rows, IntervalRow};
use l7tap_sinks::output::uploader::ShipReport;
use l7tap_sinks::output::{ShipStats, Shipper};
use l7tap_sinks::{CaptureStatsRow, ParquetSink, RunId, SinkConfig};

use crate::allocator::Releaser;
use crate::stats::{add_counter, GAP_RESYNCS};

pub struct OutputConfig {
    /// Where the sink writes (the output directory, or the output's spool directory).
    pub out_dir: PathBuf,
    pub host: String,
    /// See [`SinkConfig::host_partition`].
    pub host_partition: bool,
    /// Uploads published files, for an object-storage output.
    pub shipper: Option<Shipper>,
    /// This run's id, in every file written.
    pub run_id: RunId,
    pub monotonic_to_unix_ns: i64,
    pub window_ns: u64,
    pub redact: bool,
    pub roll_bytes: u64,
    pub roll_age: Duration,
    pub n_actors: usize,
    /// Written record batches go back here, for the actors to reuse.
    pub batch_pool: BatchPool,
}

/// What the output thread wrote.
#[derive(Debug, Default)]
pub struct OutputReport {
    /// The run id of the files written.
    pub run_id: String,
    pub requests: u64,
    pub interval_rows: u64,
    pub capture_stats_rows: u64,
    pub files: u64,
    pub write_errors: u64,
    pub rows_dropped: u64,
    /// The last write error, if the capture ended with rows it could not write.
    pub final_error: Option<String>,
    /// What the uploader did, for an object-storage output.
    pub shipped: Option<ShipReport>,
    /// Start of the last window published (Unix ns).
    pub last_window_start: Option<i64>,
}

/// The uploader's counters reported in `capture_stats` machine rows, as the change since the
/// last row.
struct UploadCounters {
    stats: std::sync::Arc<ShipStats>,
    reported: [u64; 3],
}

impl UploadCounters {
    fn take_new(&mut self) -> Vec<(&'static str, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = [
            self.stats.dropped_files.load(Relaxed),
            self.stats.dropped_rows.load(Relaxed),
            self.stats.failed_attempts.load(Relaxed),
        ];
        let names = [
            "upload.dropped_files",
            "upload.dropped_rows",
            "upload.failed_attempts",
        ];
        let new = names
            .into_iter()
            .zip(now.iter().zip(self.reported))
            .filter(|(_, (now, before))| **now > *before)
            .map(|(name, (now, before))| (name, now - before))
            .collect();
        self.reported = now;
        new
    }
}

/// Hands the files the sink published since the last call to the shipper (if any).
fn ship_committed(
    sink: &mut ParquetSink,
    shipper: &mut Option<Shipper>,
    report: &mut OutputReport,
) {
    for file in sink.take_committed_files() {
        report.files += 1;
        if let Some(shipper) = shipper {
            shipper.ship(&file);
        }
    }
}

struct PendingWindow {
    rows: Vec<IntervalRow>,
    stats: CaptureStatsRow,
}

pub fn run(
    mut config: OutputConfig,
    actors: Receiver<ActorOutput>,
    kernel: Receiver<Vec<CaptureStatsRow>>,
) -> OutputReport {
    let mut report = OutputReport {
        run_id: config.run_id.to_string(),
        ..OutputReport::default()
    };
    let sink_config = {
        let mut c = SinkConfig::new(
            &config.out_dir,
            config.host.clone(),
            config.monotonic_to_unix_ns,
        );
        c.host_partition = config.host_partition;
        c.run_id = config.run_id.clone();
        c.redact_queries = config.redact;
        c.roll_bytes = config.roll_bytes;
        c.roll_age = config.roll_age;
        c
    };
    let mut shipper = config.shipper.take();
    let mut upload_counters = shipper.as_ref().map(|s| UploadCounters {
        stats: s.stats(),
        reported: [0; 3],
    });
    let mut sink = match ParquetSink::new(sink_config) {
        Ok(s) => s,
        Err(e) => {
            report.final_error = Some(e.to_string());
            // Keep draining so actors never block on a full channel.
            for _ in actors.iter() {}
            report.shipped = shipper.map(Shipper::finish);
            return report;
        }
    };
    let mut progress = vec![i64::MIN; config.n_actors];
    let mut pending: BTreeMap<i64, PendingWindow> = BTreeMap::new();
    let mut last_flush = Instant::now();
    let mut last_error_shown: Option<Instant> = None;
    let mut kernel_open = true;
    let mut releaser = Releaser::new();
    loop {
        select! {
            recv(actors) -> msg => match msg {
                Ok(msg) => handle(msg, &mut sink, &mut pending, &mut progress, &config, &mut report, &mut upload_counters),
                Err(_) => break, // every actor is done
            },
            recv(kernel) -> msg => match msg {
                Ok(rows) => {
                    for row in &rows {
                        if row.cpu.is_none() {
                            // The machine row is completed by the actors' share of the window.
                            window(&mut pending, row.window_start_unix_ns, config.window_ns)
                                .stats.ring_drops += row.ring_drops;
                        } else {
                            sink.push_capture_stats(row);
                            report.capture_stats_rows += 1;
                        }
                    }
                }
                Err(_) => { kernel_open = false; }
            },
            default(Duration::from_millis(200)) => {}
        }
        if !kernel_open {
            // The reactor is done; only actor messages remain.
            while let Ok(msg) = actors.recv() {
                handle(
                    msg,
                    &mut sink,
                    &mut pending,
                    &mut progress,
                    &config,
                    &mut report,
                    &mut upload_counters,
                );
            }
            break;
        }
        if last_flush.elapsed() >= Duration::from_secs(1) {
            last_flush = Instant::now();
            if let Err(e) = sink.try_flush() {
                report.write_errors += 1;
                if last_error_shown.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    eprintln!("l7tap: writing Parquet failed, rows are kept and retried: {e}");
                    last_error_shown = Some(Instant::now());
                }
            }
            ship_committed(&mut sink, &mut shipper, &mut report);
        }
        // Here, where the large buffers (encoded row groups, written batches) are freed.
        releaser.tick();
    }
    let last_window_start = pending
        .keys()
        .next_back()
        .copied()
        .or(report.last_window_start);
    publish_ready(
        &mut pending,
        i64::MAX,
        config.window_ns,
        &mut sink,
        &mut report,
        &mut upload_counters,
    );
    // Final flush: retry a few times (a full disk may clear), then report what is left.
    let mut result = sink.finish();
    for _ in 0..3 {
        if result.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        result = sink.finish();
    }
    if let Err(e) = result {
        report.final_error = Some(e.to_string());
    }
    ship_committed(&mut sink, &mut shipper, &mut report);
    // Files dropped past the spool bound at this last flush: one more machine row says so
    // (capture_stats files are never dropped).
    if let Some(counters) = &mut upload_counters {
        let new = counters.take_new();
        if !new.is_empty() {
            let mut row = CaptureStatsRow {
                window_start_unix_ns: last_window_start.unwrap_or(0),
                window_ns: config.window_ns,
                cpu: None,
                ..Default::default()
            };
            row.counters = new;
            sink.push_capture_stats(&row);
            report.capture_stats_rows += 1;
            if let Err(e) = sink.finish() {
                report.final_error.get_or_insert(e.to_string());
            }
            ship_committed(&mut sink, &mut shipper, &mut report);
        }
    }
    report.shipped = shipper.map(Shipper::finish);
    let stats = sink.stats();
    report.rows_dropped = [stats.requests, stats.intervals, stats.capture_stats]
        .iter()
        .map(|t| t.rows_dropped)
        .sum();
    report
}

/// Takes one actor message; publishes the windows every actor has closed.
fn handle(
    msg: ActorOutput,
    sink: &mut ParquetSink,
    pending: &mut BTreeMap<i64, PendingWindow>,
    progress: &mut [i64],
    config: &OutputConfig,
    report: &mut OutputReport,
    upload_counters: &mut Option<UploadCounters>,
) {
    match msg {
        ActorOutput::Requests(batch) => {
            sink.push_batch(&batch);
            report.requests += batch.len() as u64;
            config.batch_pool.give(batch);
        }
        ActorOutput::Windows {
            actor,
            until_unix_ns,
            rows,
            stats,
        } => {
            for row in rows {
                window(pending, row.window_start_unix_ns, config.window_ns)
                    .rows
                    .push(row);
            }
            for s in stats {
                add_stats(
                    &mut window(pending, s.window_start_unix_ns, config.window_ns).stats,
                    &s,
                );
            }
            if let Some(p) = progress.get_mut(actor) {
                *p = until_unix_ns;
            }
            let ready = progress.iter().copied().min().unwrap_or(i64::MIN);
            publish_ready(
                pending,
                ready,
                config.window_ns,
                sink,
                report,
                upload_counters,
            );
        }
    }
}

fn window(
    pending: &mut BTreeMap<i64, PendingWindow>,
    start: i64,
    window_ns: u64,
) -> &mut PendingWindow {
    pending.entry(start).or_insert_with(|| PendingWindow {
        rows: Vec::new(),
        stats: CaptureStatsRow {
            window_start_unix_ns: start,
            window_ns,
            cpu: None,
            ..Default::default()
        },
    })
}

fn add_stats(row: &mut CaptureStatsRow, s: &WindowStats) {
    row.events += s.events;
    row.bytes += s.bytes;
    row.parse_errors += s.trouble.parse_errors;
    row.resyncs += s.trouble.resyncs;
    if s.trouble.gap_resyncs > 0 {
        add_counter(&mut row.counters, GAP_RESYNCS, s.trouble.gap_resyncs);
    }
    row.connections += s.connections;
    for (name, value) in [
        ("identity.resolved", s.identities_resolved),
        ("identity.unresolved", s.identities_unresolved),
    ] {
        if value == 0 {
            continue;
        }
        match row.counters.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += value,
            None => row.counters.push((name, value)),
        }
    }
}

/// Publishes every window that every actor has closed: interval rows merged across actors,
/// and the machine's `capture_stats` row.
fn publish_ready(
    pending: &mut BTreeMap<i64, PendingWindow>,
    ready_until: i64,
    window_ns: u64,
    sink: &mut ParquetSink,
    report: &mut OutputReport,
    upload_counters: &mut Option<UploadCounters>,
) {
    let ready: Vec<i64> = pending
        .keys()
        .copied()
        .take_while(|&start| {
            ready_until == i64::MAX || start.saturating_add(window_ns as i64) <= ready_until
        })
        .collect();
    for start in ready {
        let w = pending.remove(&start).expect("key listed above");
        report.last_window_start = Some(start);
        match merge_interval_rows(w.rows) {
            Ok(rows) => {
                // Encoded as they are pushed: a window of many keys is tens of MiB of dense
                // heatmaps in column builders, a fraction of that encoded.
                for chunk in rows.chunks(1024) {
                    sink.push_intervals(chunk);
                    if let Err(e) = sink.encode_intervals() {
                        report.write_errors += 1;
                        eprintln!("l7tap: encoding interval rows failed: {e}");
                    }
                }
                report.interval_rows += rows.len() as u64;
            }
            Err(e) => eprintln!("l7tap: merging interval rows failed: {e}"),
        }
        let mut stats = w.stats;
        if let Some(counters) = upload_counters {
            stats.counters.extend(counters.take_new());
        }
        sink.push_capture_stats(&stats);
        report.capture_stats_rows += 1;
    }
}
