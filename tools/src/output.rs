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
use crate::stats::{add_counter, KernelRows, GAP_RESYNCS};

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
    /// Kernel counter rows will come (a live capture, or a recording's counter frames): a
    /// window is published only once they have come for it, so it gets one machine row.
    pub kernel_counters: bool,
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
    kernel: Receiver<KernelRows>,
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
    let mut progress = Progress {
        actors: vec![i64::MIN; config.n_actors],
        kernel: if config.kernel_counters {
            i64::MIN
        } else {
            i64::MAX
        },
    };
    let mut pending: BTreeMap<i64, PendingWindow> = BTreeMap::new();
    let mut last_flush = Instant::now();
    let mut last_error_shown: Option<Instant> = None;
    let mut kernel_open = true;
    let mut releaser = Releaser::new();
    loop {
        select! {
            recv(actors) -> msg => match msg {
                Ok(msg) => handle(msg, &mut sink, &mut pending, &mut progress, &config, &mut report, &mut upload_counters),
                Err(_) => {
                    // Every actor is done. The reactor's last rows can still be queued: select
                    // picks among ready channels at random.
                    for msg in kernel.iter() {
                        take_kernel_rows(msg, &mut sink, &mut pending, &mut progress, &config, &mut report);
                    }
                    break;
                }
            },
            recv(kernel) -> msg => match msg {
                Ok(msg) => {
                    take_kernel_rows(msg, &mut sink, &mut pending, &mut progress, &config, &mut report);
                    publish_ready(&mut pending, progress.ready(), config.window_ns, &mut sink, &mut report, &mut upload_counters);
                }
                Err(_) => {
                    kernel_open = false;
                    progress.kernel = i64::MAX;
                }
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

/// How far each source of a window's rows has come (Unix ns): a window is published once
/// every actor has closed it and the kernel's counts cover it.
struct Progress {
    actors: Vec<i64>,
    kernel: i64,
}

impl Progress {
    fn ready(&self) -> i64 {
        let actors = self.actors.iter().copied().min().unwrap_or(i64::MIN);
        actors.min(self.kernel)
    }
}

/// Takes the reactor's kernel rows: the per-CPU rows are written; the machine's ring drops
/// and TLS attach counters wait in their window's machine row, which the actors' counters complete.
fn take_kernel_rows(
    msg: KernelRows,
    sink: &mut ParquetSink,
    pending: &mut BTreeMap<i64, PendingWindow>,
    progress: &mut Progress,
    config: &OutputConfig,
    report: &mut OutputReport,
) {
    for row in &msg.rows {
        if row.cpu.is_none() {
            let machine = &mut window(pending, row.window_start_unix_ns, config.window_ns).stats;
            machine.ring_drops += row.ring_drops;
            for &(name, value) in &row.counters {
                if value > 0 {
                    add_counter(&mut machine.counters, name, value);
                }
            }
        } else {
            sink.push_capture_stats(row);
            report.capture_stats_rows += 1;
        }
    }
    progress.kernel = progress.kernel.max(msg.complete_until_unix_ns);
}

/// Takes one actor message; publishes the windows every actor has closed.
fn handle(
    msg: ActorOutput,
    sink: &mut ParquetSink,
    pending: &mut BTreeMap<i64, PendingWindow>,
    progress: &mut Progress,
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
            if let Some(p) = progress.actors.get_mut(actor) {
                *p = until_unix_ns;
            }
            publish_ready(
                pending,
                progress.ready(),
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
        if value > 0 {
            add_counter(&mut row.counters, name, value);
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use arrow::array::{Array, Int32Array, Int64Array, MapArray, TimestampMicrosecondArray};

    use super::*;
    use crate::outdir::{column, read_projected, table_files, Selection};
    use crate::report::named_counter;

    const WINDOW_NS: u64 = 10_000_000_000;
    /// A window boundary in 2026.
    const START: i64 = 1_790_000_000_000_000_000;

    fn config(dir: &std::path::Path) -> OutputConfig {
        OutputConfig {
            out_dir: dir.to_path_buf(),
            host: "test-host".into(),
            host_partition: false,
            shipper: None,
            run_id: RunId::generate(SystemTime::now()),
            monotonic_to_unix_ns: 0,
            window_ns: WINDOW_NS,
            redact: false,
            roll_bytes: 1 << 30,
            roll_age: Duration::from_secs(3600),
            n_actors: 1,
            kernel_counters: true,
            batch_pool: BatchPool::default(),
        }
    }

    fn kernel_row(window: i64, cpu: Option<u32>, ring_drops: u64) -> CaptureStatsRow {
        CaptureStatsRow {
            window_start_unix_ns: START + window * WINDOW_NS as i64,
            window_ns: WINDOW_NS,
            cpu,
            ring_drops,
            events: 1,
            ..Default::default()
        }
    }

    fn actor_closes(until_window: i64, windows: std::ops::Range<i64>) -> ActorOutput {
        ActorOutput::Windows {
            actor: 0,
            until_unix_ns: START + until_window * WINDOW_NS as i64,
            rows: Vec::new(),
            stats: windows
                .map(|w| WindowStats {
                    window_start_unix_ns: START + w * WINDOW_NS as i64,
                    events: 5,
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// (window index, cpu or -1, events, ring drops, `tls.attached`, named counters) of every
    /// `capture_stats` row, sorted.
    fn capture_stats(dir: &std::path::Path) -> Vec<(i64, i32, i64, i64, i64, usize)> {
        let columns = ["window_start", "cpu", "events", "ring_drops", "counters"];
        let mut rows = Vec::new();
        for path in table_files(dir, "capture_stats", &Selection::default()).unwrap() {
            let (batches, _) =
                read_projected(&path, &columns, "window_start", &Selection::default(), 0).unwrap();
            for batch in batches {
                let start = column::<TimestampMicrosecondArray>(&batch, "window_start").unwrap();
                let cpu = column::<Int32Array>(&batch, "cpu").unwrap();
                let events = column::<Int64Array>(&batch, "events").unwrap();
                let drops = column::<Int64Array>(&batch, "ring_drops").unwrap();
                let counters = column::<MapArray>(&batch, "counters").unwrap();
                for i in 0..batch.num_rows() {
                    rows.push((
                        (start.value(i) * 1000 - START) / WINDOW_NS as i64,
                        if cpu.is_null(i) { -1 } else { cpu.value(i) },
                        events.value(i),
                        drops.value(i),
                        named_counter(counters, i, "tls.attached"),
                        counters.value_length(i) as usize,
                    ));
                }
            }
        }
        rows.sort();
        rows
    }

    /// The actors close windows 0 and 1 before the reactor has sent the kernel's rows of
    /// window 0: every window still gets one machine row, with the kernel's ring drops and the
    /// actors' events, in whatever order the output thread takes the two channels.
    #[test]
    fn each_window_gets_one_machine_row_when_the_actors_are_ahead_of_the_kernel() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let (actors, actors_rx) = crossbeam_channel::unbounded();
            let (kernel, kernel_rx) = crossbeam_channel::unbounded();
            // A snapshot inside window 0: nothing of the kernel's is complete yet.
            kernel
                .send(KernelRows {
                    rows: Vec::new(),
                    complete_until_unix_ns: START + 1_000_000_000,
                })
                .unwrap();
            actors.send(actor_closes(2, 0..2)).unwrap();
            // The next snapshot, in window 1, ends window 0 for the kernel.
            kernel
                .send(KernelRows {
                    rows: vec![kernel_row(0, None, 3), kernel_row(0, Some(0), 0)],
                    complete_until_unix_ns: START + WINDOW_NS as i64 + 1_000_000_000,
                })
                .unwrap();
            actors.send(actor_closes(3, 2..3)).unwrap();
            drop(actors);
            // The reactor's last rows come after the actors are done.
            kernel
                .send(KernelRows {
                    rows: vec![kernel_row(1, None, 4), kernel_row(1, Some(0), 0)],
                    complete_until_unix_ns: i64::MAX,
                })
                .unwrap();
            drop(kernel);
            let report = run(config(dir.path()), actors_rx, kernel_rx);
            assert_eq!(report.final_error, None);
            assert_eq!(report.capture_stats_rows, 5);
            assert_eq!(
                capture_stats(dir.path()),
                vec![
                    (0, -1, 5, 3, 0, 0),
                    (0, 0, 1, 0, 0, 0),
                    (1, -1, 5, 4, 0, 0),
                    (1, 0, 1, 0, 0, 0),
                    (2, -1, 5, 0, 0, 0),
                ]
            );
        }
    }

    /// The kernel's TLS attach counters reach their window's machine row; a zero one is left
    /// out.
    #[test]
    fn the_kernel_machine_counters_reach_the_machine_row() {
        let dir = tempfile::tempdir().unwrap();
        let (actors, actors_rx) = crossbeam_channel::unbounded();
        let (kernel, kernel_rx) = crossbeam_channel::unbounded();
        let mut machine = kernel_row(0, None, 0);
        machine.counters = vec![("tls.attached", 6), ("tls.attach_failed", 0)];
        kernel
            .send(KernelRows {
                rows: vec![machine],
                complete_until_unix_ns: i64::MAX,
            })
            .unwrap();
        actors.send(actor_closes(1, 0..1)).unwrap();
        drop((actors, kernel));
        run(config(dir.path()), actors_rx, kernel_rx);
        assert_eq!(capture_stats(dir.path()), vec![(0, -1, 5, 0, 6, 1)]);
    }
}
