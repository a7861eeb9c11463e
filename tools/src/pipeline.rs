//! Wires the stages together: kernel buffers (or a recording) → router → actor rings →
//! actors → output thread (Parquet); prints progress and the summary.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use l7tap_actors::{Actor, ActorConfig, BatchPool, Summary};
use l7tap_aggregate::{Aggregator, AggregatorConfig};
use l7tap_ingest::pcap::{CaptureFormat, PcapOptions};
use l7tap_ingest::reactor::{self, KernelBuffer, ReactorStats};
use l7tap_ingest::recording::{RecordingHeader, RecordingReader, RecordingWriter};
use l7tap_ingest::ring::{frame_ring, FrameProducer};
use l7tap_ingest::{Router, RouterStats, Tag};
use l7tap_probes::{KernelCounters, PerProtocol, ProbeConfig, Probes, Transport};
use l7tap_protocols::Protocol;
use l7tap_sinks::output::{ShipStats, Shipper, UploadSettings};
use l7tap_sinks::{Output, RunId};

use crate::output::{self, OutputConfig, OutputReport};
use crate::stats::{CounterSnapshot, KernelRows, KernelWindows};
use crate::tls_attach::TlsAttacher;
use crate::untrusted;
use crate::CommonArgs;

/// Bytes of each actor's input ring.
const RING_BYTES: usize = 16 << 20;

pub struct CaptureOptions {
    pub duration: Option<Duration>,
    pub record: Option<PathBuf>,
    /// Payload bytes captured per syscall segment, per protocol.
    pub capture_bytes: PerProtocol<u32>,
    /// Last bytes of a cut syscall segment sent on their own, per protocol.
    pub tail_bytes: PerProtocol<u32>,
    /// Server ports of ClickHouse's HTTP interface.
    pub clickhouse_http_ports: Vec<u16>,
    pub ringbuf: bool,
    pub perf_pages: usize,
    pub ready_file: Option<PathBuf>,
    pub common: CommonArgs,
}

/// Actor threads and the output thread.
struct Workers {
    actors: Vec<JoinHandle<Summary>>,
    output: JoinHandle<OutputReport>,
    /// Kernel counter rows for `capture_stats`; dropped when the reactor is done.
    kernel_rows: Sender<KernelRows>,
    kernel_windows: KernelWindows,
}

/// Where the tables go, made ready before any capture work: an object-storage output is
/// probed with a write (a wrong endpoint, bucket or credentials, or a read-only user, is one
/// line and exit status 1), its spool directory is created and its uploader started (which
/// first uploads files an earlier run left in the spool).
struct PreparedOutput {
    output: Output,
    host: String,
    /// Where the sink writes: the output directory, or the output's spool directory.
    write_dir: PathBuf,
    shipper: Option<Shipper>,
    ship_stats: Option<Arc<ShipStats>>,
}

fn prepare_output(common: &CommonArgs) -> Result<PreparedOutput> {
    let output = common.output();
    let host = common.host();
    let write_dir = output.write_dir(&common.spool_root());
    let mut shipper = None;
    match &output {
        Output::Directory(_) => {
            let removed =
                l7tap_sinks::remove_stale_temp_files(&write_dir, &host).with_context(|| {
                    format!(
                        "removing temporary files left under {}",
                        write_dir.display()
                    )
                })?;
            say_removed(removed, &write_dir);
        }
        Output::Bucket(bucket) => {
            bucket.probe(&host)?;
            prepare_spool(&write_dir, &host)?;
            let settings = UploadSettings {
                spool_max_bytes: common.spool_max_bytes,
                finish_wait: common.upload_wait,
                ..UploadSettings::default()
            };
            shipper = Some(Shipper::start(bucket, &write_dir, settings)?);
        }
        Output::ClickHouse(clickhouse) => {
            let client = clickhouse.client()?;
            client.probe()?;
            prepare_spool(&write_dir, &host)?;
            let settings = UploadSettings {
                spool_max_bytes: common.spool_max_bytes,
                finish_wait: common.upload_wait,
                ..UploadSettings::default()
            };
            shipper = Some(
                Shipper::start_to(Box::new(client), &write_dir, settings)
                    .with_context(|| format!("starting the inserts into {clickhouse}"))?,
            );
        }
    }
    let ship_stats = shipper.as_ref().map(Shipper::stats);
    Ok(PreparedOutput {
        output,
        host,
        write_dir,
        shipper,
        ship_stats,
    })
}

/// Creates an output's spool directory and removes the temporary files an earlier run of this
/// host left there.
fn prepare_spool(write_dir: &Path, host: &str) -> Result<()> {
    std::fs::create_dir_all(write_dir)
        .with_context(|| format!("creating the spool {}", write_dir.display()))?;
    let removed = l7tap_sinks::output::spool::remove_stale_temp_files(write_dir, host)
        .with_context(|| {
            format!(
                "removing temporary files left under {}",
                write_dir.display()
            )
        })?;
    say_removed(removed, write_dir);
    Ok(())
}

/// Starts the actors and the output thread; returns them with the actors' ring producers.
/// `kernel_counters`: counter snapshots will be given to [`Workers::kernel_snapshot`].
fn start_workers(
    common: &CommonArgs,
    monotonic_to_unix_ns: i64,
    kernel_counters: bool,
    prepared: &mut PreparedOutput,
) -> Result<(Workers, Vec<FrameProducer>)> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let n = common
        .actors
        .unwrap_or_else(|| cores.len().saturating_sub(1).max(1));
    let window_ns = common.interval.as_nanos() as u64;
    let aggregation = AggregatorConfig {
        window_ns,
        heatmap_sub_window_ns: common.heatmap_resolution.as_nanos() as u64,
        monotonic_to_unix_offset_ns: monotonic_to_unix_ns,
    };
    // Validate once here, so a bad --interval is a clear error, not an actor panic.
    Aggregator::new(aggregation).context("invalid --interval / --heatmap-resolution")?;
    // Messages are batches of up to 1024 records or a closed window's rows: 32 of them cover
    // the output thread's longest pause (a Parquet flush) at any rate an actor reaches,
    // without holding tens of MiB of records when it falls behind.
    let (tx, rx) = crossbeam_channel::bounded(32);
    let batch_pool = BatchPool::default();
    let mut producers = Vec::with_capacity(n);
    let mut actors = Vec::with_capacity(n);
    for i in 0..n {
        let (p, c) = frame_ring(RING_BYTES);
        producers.push(p);
        let config = ActorConfig {
            // Actors take the cores after the first, which the reactor keeps.
            core: (cores.len() > 1).then(|| cores[(i + 1) % cores.len()].id),
            frames_only: common.frames_only,
            max_query_bytes: common.max_query_bytes,
            filter: common.filter(),
            aggregation: Some(aggregation),
            batch_pool: batch_pool.clone(),
            ..ActorConfig::default()
        };
        let actor = Actor::new(config, c, tx.clone(), i);
        actors.push(
            std::thread::Builder::new()
                .name(format!("l7tap-actor-{i}"))
                .spawn(move || actor.run())
                .context("spawning an actor thread")?,
        );
    }
    drop(tx);
    let (kernel_rows, kernel_rx) = crossbeam_channel::unbounded();
    let config = OutputConfig {
        out_dir: prepared.write_dir.clone(),
        host: prepared.host.clone(),
        host_partition: prepared.output.host_partition(),
        shipper: prepared.shipper.take(),
        // One id per run: this is called once per capture or replay.
        run_id: RunId::generate(std::time::SystemTime::now()),
        monotonic_to_unix_ns,
        window_ns,
        redact: common.redact,
        roll_bytes: common.roll_bytes,
        roll_age: common.roll_age(),
        n_actors: n,
        kernel_counters,
        batch_pool,
    };
    let output = std::thread::Builder::new()
        .name("l7tap-output".into())
        .spawn(move || output::run(config, rx, kernel_rx))
        .context("spawning the output thread")?;
    let workers = Workers {
        actors,
        output,
        kernel_rows,
        kernel_windows: KernelWindows::new(window_ns, monotonic_to_unix_ns),
    };
    Ok((workers, producers))
}

impl Workers {
    /// Takes a kernel counter snapshot (live tick or recorded frame).
    fn kernel_snapshot(&mut self, snap: CounterSnapshot) {
        // Sent even without rows: how far the kernel's counts go gates the output's windows.
        let _ = self.kernel_rows.send(self.kernel_windows.observe(snap));
    }

    fn join(mut self) -> Result<(Summary, OutputReport)> {
        let _ = self.kernel_rows.send(self.kernel_windows.finish());
        drop(self.kernel_rows);
        let mut summary = Summary::default();
        for a in self.actors {
            let s = a
                .join()
                .map_err(|_| anyhow::anyhow!("an actor thread panicked"))?;
            summary.merge(&s);
        }
        let output = self
            .output
            .join()
            .map_err(|_| anyhow::anyhow!("the output thread panicked"))?;
        Ok((summary, output))
    }
}

fn add_ingest_counters(summary: &mut Summary, stats: &RouterStats) {
    summary.add("ingest.events", stats.events.load(Relaxed));
    summary.add("ingest.event_bytes", stats.event_bytes.load(Relaxed));
    summary.add("ingest.malformed", stats.malformed.load(Relaxed));
    summary.add("ingest.identity_frames", stats.identities.load(Relaxed));
}

fn add_kernel_counters(summary: &mut Summary, snap: &CounterSnapshot) {
    let mut total = KernelCounters::default();
    for (cpu, c) in snap.per_cpu.iter().enumerate() {
        total.add(c);
        summary.add(&format!("kernel.cpu{cpu}.events_failed"), c.events_failed);
    }
    summary.add("ingest.ring_drops", snap.ring_drops);
    summary.add("kernel.events_emitted", total.events_emitted);
    summary.add("kernel.bytes_emitted", total.bytes_emitted);
    summary.add("kernel.events_failed", total.events_failed);
    summary.add("kernel.bytes_failed", total.bytes_failed);
    summary.add("kernel.classify_checks", total.classify_checks);
    summary.add("kernel.classified", total.classified);
    summary.add("kernel.ignored", total.ignored);
    summary.add("kernel.last_output_errno", total.last_error.unsigned_abs());
    summary.add("kernel.tls_payloads", total.tls_payloads);
    summary.add("kernel.tls_lost", total.tls_lost);
    // From the snapshot (not the attacher), so that a replay reports them too.
    summary.add("tls.symbols_attached", snap.tls_attached);
    summary.add("tls.attach_failures", snap.tls_attach_failed);
}

pub fn capture(opts: CaptureOptions) -> Result<()> {
    // Pre-flight: the output is checked (and its uploader started) before the probes load.
    let mut prepared = prepare_output(&opts.common)?;
    let config = ProbeConfig {
        capture_bytes: opts.capture_bytes,
        tail_bytes: opts.tail_bytes,
        clickhouse_http_ports: opts.clickhouse_http_ports.clone(),
        transport: if opts.ringbuf {
            Transport::RingBuf
        } else {
            Transport::PerfArray
        },
        ..ProbeConfig::default()
    };
    let mut probes = Probes::load(&config)?;
    let mut buffers: Vec<KernelBuffer> = if opts.ringbuf {
        vec![KernelBuffer::Ring(probes.take_ringbuf()?)]
    } else {
        probes
            .take_perf_buffers(opts.perf_pages)?
            .into_iter()
            .map(|(cpu, buffer)| KernelBuffer::Perf { cpu, buffer })
            .collect()
    };
    let n_cpus = l7tap_probes::online_cpus()?.len() as u32;
    let offset = l7tap_ingest::monotonic_to_unix_ns();
    let recorder = match &opts.record {
        Some(path) => Some(
            RecordingWriter::create(
                path,
                &RecordingHeader {
                    monotonic_to_unix_ns: offset,
                    capture_bytes: config.max_capture_bytes(),
                    n_cpus,
                },
            )
            .context("creating the recording")?,
        ),
        None => None,
    };
    let (mut workers, producers) = start_workers(&opts.common, offset, true, &mut prepared)?;
    // Who is at each connection's ends is read from /proc at its open, while the process
    // still exists; the frames go to the actors and the recording.
    // A ClickHouse server is named by its native port, not its HTTP one.
    let identities = l7tap_ingest::join::Identities::new(l7tap_ingest::procfs::ProcFs::default())
        .naming_no_process_by(&opts.clickhouse_http_ports);
    let mut router = Router::new(producers, recorder, false).with_identities(Box::new(identities));
    let stats = router.stats();

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    probes.attach()?;
    // TLS libraries of the running processes, before the capture says it is attached.
    let mut tls = TlsAttacher::start(&mut probes)?;
    if let Some(path) = &opts.ready_file {
        std::fs::write(path, b"attached\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let started = Instant::now();
    let deadline = opts.duration.map(|d| started + d);
    let progress = Progress::new();
    let mut last = CounterSnapshot::default();
    let mut last_events = 0u64;
    let stop_for_tick = stop.clone();
    let mut tick = |router: &mut Router,
                    rs: &ReactorStats,
                    probes: &mut Probes,
                    tls: &mut TlsAttacher,
                    workers: &mut Workers| {
        tls.poll(probes);
        let snap = CounterSnapshot {
            monotonic_ns: l7tap_ingest::monotonic_ns(),
            ring_drops: stats.ring_drops.load(Relaxed),
            tls_attached: tls.attached,
            tls_attach_failed: tls.failed,
            per_cpu: probes.counters().unwrap_or_default(),
        };
        router.record_only(Tag::KernelCounters, &snap.encode())?;
        let lost: u64 = snap.per_cpu.iter().map(|c| c.events_failed).sum();
        let events = stats.events.load(Relaxed);
        let mut connections = String::new();
        for protocol in Protocol::ALL {
            let opened = stats.opened[protocol.index()].load(Relaxed);
            let _ = write!(connections, " {} {opened}", protocol.name());
        }
        let upload = prepared
            .ship_stats
            .as_ref()
            .map(|s| format!("  {}", s.progress_text()))
            .unwrap_or_default();
        progress.update(format!(
            "{:>5.0}s  {:>8} events/s  connections:{connections}  lost {} (loader saw {})  ring drops {}{upload}",
            started.elapsed().as_secs_f64(),
            events - last_events,
            lost,
            rs.loader_lost,
            snap.ring_drops,
        ));
        last_events = events;
        last = snap.clone();
        workers.kernel_snapshot(snap);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop_for_tick.store(true, Relaxed);
        }
        Ok(())
    };
    let mut reactor_stats = reactor::run_live(&mut buffers, &mut router, &stop, |r, rs| {
        tick(r, rs, &mut probes, &mut tls, &mut workers)
    })?;
    tls.stop();
    probes.detach()?;
    reactor::finish_live(&mut buffers, &mut router, &mut reactor_stats)?;
    tick(
        &mut router,
        &reactor_stats,
        &mut probes,
        &mut tls,
        &mut workers,
    )?;
    progress.finish();
    router.finish().context("finishing the recording")?;
    let (mut summary, output) = workers.join()?;
    add_ingest_counters(&mut summary, &stats);
    add_kernel_counters(&mut summary, &last);
    eprint!("{}", tls.report());
    report(
        &summary,
        &output,
        Some(&reactor_stats),
        &opts.common,
        started.elapsed(),
    )
}

pub fn replay(file: &Path, clickhouse_http_ports: &[u16], common: CommonArgs) -> Result<()> {
    if CaptureFormat::of_file(file)?.is_some() {
        return replay_packets(file, clickhouse_http_ports, common);
    }
    let started = Instant::now();
    let mut reader = RecordingReader::open(file)?;
    let mut prepared = prepare_output(&common)?;
    // A recording holds the live capture's counter snapshots, one per second.
    let (mut workers, producers) = start_workers(
        &common,
        reader.header.monotonic_to_unix_ns,
        true,
        &mut prepared,
    )?;
    let mut router = Router::new(producers, None, true);
    let stats = router.stats();
    let mut last = CounterSnapshot::default();
    l7tap_ingest::replay::run_replay(&mut reader, &mut router, |tag, body| {
        if tag == Tag::KernelCounters {
            if let Some(snap) = CounterSnapshot::decode(body) {
                last = snap.clone();
                workers.kernel_snapshot(snap);
            }
        }
    })?;
    if reader.truncated_tail {
        eprintln!("l7tap: the recording ends inside a frame (was the capture killed?); replayed up to its last whole frame");
    }
    drop(router);
    let (mut summary, output) = workers.join()?;
    add_ingest_counters(&mut summary, &stats);
    add_kernel_counters(&mut summary, &last);
    report(&summary, &output, None, &common, started.elapsed())
}

/// `l7tap replay FILE.pcap`: the packet capture's connections through the same router and
/// actors. Timestamps are the packets' (Unix time: the offset to it is 0).
fn replay_packets(file: &Path, clickhouse_http_ports: &[u16], common: CommonArgs) -> Result<()> {
    let started = Instant::now();
    let mut prepared = prepare_output(&common)?;
    // Packets carry no kernel counters.
    let (workers, producers) = start_workers(&common, 0, false, &mut prepared)?;
    let mut router = Router::new(producers, None, true);
    let stats = router.stats();
    let options = PcapOptions {
        clickhouse_http_ports: clickhouse_http_ports.to_vec(),
    };
    let counts = l7tap_ingest::pcap::run_pcap_replay(file, &options, &mut router)?;
    if let Some(why) = &counts.stopped {
        eprintln!(
            "l7tap: {}: {why}",
            untrusted::for_terminal(&file.display().to_string())
        );
    }
    drop(router);
    let (mut summary, output) = workers.join()?;
    add_ingest_counters(&mut summary, &stats);
    for (name, n) in counts.named() {
        summary.add(name, n);
    }
    report(&summary, &output, None, &common, started.elapsed())
}

/// Says how many temporary files an earlier run of this host left under `dir` (killed, or
/// out of disk before it could publish them) were removed.
fn say_removed(removed: usize, dir: &Path) {
    if removed > 0 {
        eprintln!(
            "l7tap: removed {removed} temporary files left under {} by an earlier run",
            untrusted::for_terminal(&dir.display().to_string())
        );
    }
}

fn report(
    summary: &Summary,
    output: &OutputReport,
    reactor: Option<&ReactorStats>,
    common: &CommonArgs,
    elapsed: Duration,
) -> Result<()> {
    let mut summary = summary.clone();
    summary.add("output.requests", output.requests);
    summary.add("output.interval_rows", output.interval_rows);
    summary.add("output.capture_stats_rows", output.capture_stats_rows);
    if let Some(ship) = &output.shipped {
        summary.add("upload.files", ship.uploaded_files);
        summary.add("upload.files_left_in_spool", ship.left_files);
        summary.add("upload.dropped_files", ship.dropped_files);
        summary.add("upload.dropped_rows", ship.dropped_rows);
    }
    let summary = &summary;
    let mut out = String::new();
    out.push_str(&format!(
        "l7tap summary ({:.1}s): {} events, {} requests, {} interval rows, {} files in {} (run {})\n",
        elapsed.as_secs_f64(),
        summary.get("ingest.events"),
        output.requests,
        output.interval_rows,
        output.files,
        untrusted::for_terminal(&common.out.display().to_string()),
        output.run_id,
    ));
    for (k, v) in summary.iter() {
        if !k.starts_with("kernel.cpu") {
            // Keys can hold process names.
            out.push_str(&format!("  {:<40} {v}\n", untrusted::for_terminal(k)));
        }
    }
    if let Some(r) = reactor {
        out.push_str(&format!(
            "  {:<40} {}\n",
            "loader.lost (undercounts; see kernel.events_failed)", r.loader_lost
        ));
    }
    if output.write_errors > 0 || output.rows_dropped > 0 {
        out.push_str(&format!(
            "  output: {} failed writes (retried), {} rows dropped\n",
            output.write_errors, output.rows_dropped
        ));
    }
    eprint!("{out}");
    if let Some(path) = &common.summary_json {
        std::fs::write(path, summary.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(e) = &output.final_error {
        anyhow::bail!(
            "some rows could not be written to {}: {e}",
            common.out.display()
        );
    }
    Ok(())
}

/// The live progress line on stderr: redrawn in place on a terminal, a plain line every 10 s
/// otherwise (logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_plain: std::cell::Cell<Instant>,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg}").unwrap());
            bar
        });
        Progress {
            bar,
            last_plain: std::cell::Cell::new(Instant::now()),
        }
    }

    fn update(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => {
                if self.last_plain.get().elapsed() >= Duration::from_secs(10) {
                    eprintln!("{line}");
                    self.last_plain.set(Instant::now());
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
