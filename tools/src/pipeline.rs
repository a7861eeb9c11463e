//! Wires the stages together: kernel buffers (or a recording) → router → actor rings →
//! actors → record consumer; prints progress and the summary.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::Receiver;
use l7tap_actors::{Actor, ActorConfig, Summary};
use l7tap_ingest::reactor::{self, KernelBuffer, ReactorStats};
use l7tap_ingest::recording::{RecordingHeader, RecordingReader, RecordingWriter};
use l7tap_ingest::ring::{frame_ring, FrameProducer};
use l7tap_ingest::{Router, RouterStats, Tag};
use l7tap_probes::{KernelCounters, ProbeConfig, Probes, Transport};
use l7tap_protocols::CapturedRequest;

use crate::CommonArgs;

/// Bytes of each actor's input ring.
const RING_BYTES: usize = 16 << 20;

pub struct CaptureOptions {
    pub duration: Option<Duration>,
    pub record: Option<PathBuf>,
    pub capture_bytes_clickhouse: u32,
    pub capture_bytes_zookeeper: u32,
    pub ringbuf: bool,
    pub perf_pages: usize,
    pub ready_file: Option<PathBuf>,
    pub common: CommonArgs,
}

/// Actor threads and the thread that takes their records.
struct Workers {
    actors: Vec<JoinHandle<Summary>>,
    records: JoinHandle<u64>,
}

/// Starts the actors and the record thread; returns them with the actors' ring producers.
fn start_workers(common: &CommonArgs) -> (Workers, Vec<FrameProducer>) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let n = common
        .actors
        .unwrap_or_else(|| cores.len().saturating_sub(1).max(1));
    let (tx, rx) = crossbeam_channel::bounded::<Vec<CapturedRequest>>(256);
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
            ..ActorConfig::default()
        };
        let actor = Actor::new(config, c, tx.clone());
        actors.push(
            std::thread::Builder::new()
                .name(format!("l7tap-actor-{i}"))
                .spawn(move || actor.run())
                .expect("spawning an actor thread"),
        );
    }
    drop(tx);
    let records = std::thread::Builder::new()
        .name("l7tap-records".into())
        .spawn(move || consume_records(rx))
        .expect("spawning the record thread");
    (Workers { actors, records }, producers)
}

/// Takes record batches until every actor has finished. The Parquet sink plugs in here.
fn consume_records(rx: Receiver<Vec<CapturedRequest>>) -> u64 {
    let mut n = 0u64;
    for batch in rx {
        n += batch.len() as u64;
    }
    n
}

impl Workers {
    fn join(self) -> Result<(Summary, u64)> {
        let mut summary = Summary::default();
        for a in self.actors {
            let s = a
                .join()
                .map_err(|_| anyhow::anyhow!("an actor thread panicked"))?;
            summary.merge(&s);
        }
        let records = self
            .records
            .join()
            .map_err(|_| anyhow::anyhow!("the record thread panicked"))?;
        Ok((summary, records))
    }
}

fn add_ingest_counters(summary: &mut Summary, stats: &RouterStats) {
    summary.add("ingest.events", stats.events.load(Relaxed));
    summary.add("ingest.event_bytes", stats.event_bytes.load(Relaxed));
    summary.add("ingest.ring_drops", stats.ring_drops.load(Relaxed));
    summary.add("ingest.malformed", stats.malformed.load(Relaxed));
}

fn add_kernel_counters(summary: &mut Summary, per_cpu: &[KernelCounters]) {
    let mut total = KernelCounters::default();
    for (cpu, c) in per_cpu.iter().enumerate() {
        total.add(c);
        summary.add(&format!("kernel.cpu{cpu}.events_failed"), c.events_failed);
    }
    summary.add("kernel.events_emitted", total.events_emitted);
    summary.add("kernel.events_failed", total.events_failed);
    summary.add("kernel.bytes_failed", total.bytes_failed);
    summary.add("kernel.classify_checks", total.classify_checks);
    summary.add("kernel.classified", total.classified);
    summary.add("kernel.ignored", total.ignored);
    summary.add("kernel.last_output_errno", total.last_error.unsigned_abs());
}

/// Bytes of one CPU's counters in a recording frame.
const COUNTERS_BYTES: usize = 7 * 8;

fn counters_to_bytes(per_cpu: &[KernelCounters]) -> Vec<u8> {
    let mut out = Vec::with_capacity(per_cpu.len() * COUNTERS_BYTES);
    for c in per_cpu {
        for v in [
            c.events_emitted,
            c.events_failed,
            c.bytes_failed,
            c.classify_checks,
            c.classified,
            c.ignored,
            c.last_error as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn counters_from_bytes(b: &[u8]) -> Vec<KernelCounters> {
    b.chunks_exact(COUNTERS_BYTES)
        .map(|c| {
            let v = |i: usize| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap());
            KernelCounters {
                events_emitted: v(0),
                events_failed: v(1),
                bytes_failed: v(2),
                classify_checks: v(3),
                classified: v(4),
                ignored: v(5),
                last_error: v(6) as i64,
            }
        })
        .collect()
}

pub fn capture(opts: CaptureOptions) -> Result<()> {
    let config = ProbeConfig {
        capture_bytes_clickhouse: opts.capture_bytes_clickhouse,
        capture_bytes_zookeeper: opts.capture_bytes_zookeeper,
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
    let recorder = match &opts.record {
        Some(path) => Some(
            RecordingWriter::create(
                path,
                &RecordingHeader {
                    monotonic_to_unix_ns: l7tap_ingest::monotonic_to_unix_ns(),
                    capture_bytes: opts
                        .capture_bytes_clickhouse
                        .max(opts.capture_bytes_zookeeper),
                    n_cpus,
                },
            )
            .context("creating the recording")?,
        ),
        None => None,
    };
    let (workers, producers) = start_workers(&opts.common);
    let mut router = Router::new(producers, recorder, false);
    let stats = router.stats();

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    probes.attach()?;
    if let Some(path) = &opts.ready_file {
        std::fs::write(path, b"attached\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let started = Instant::now();
    let deadline = opts.duration.map(|d| started + d);
    let progress = Progress::new();
    let mut last_counters = Vec::new();
    let mut last_events = 0u64;
    let stop_for_tick = stop.clone();
    let mut tick = |router: &mut Router, rs: &ReactorStats, probes: &Probes| {
        let counters = probes.counters().unwrap_or_default();
        router.record_only(Tag::KernelCounters, &counters_to_bytes(&counters))?;
        let lost: u64 = counters.iter().map(|c| c.events_failed).sum();
        let events = stats.events.load(Relaxed);
        progress.update(format!(
            "{:>5.0}s  {:>8} events/s  connections: clickhouse {} zookeeper {}  lost {} (loader saw {})  ring drops {}",
            started.elapsed().as_secs_f64(),
            events - last_events,
            stats.opened_clickhouse.load(Relaxed),
            stats.opened_zookeeper.load(Relaxed),
            lost,
            rs.loader_lost,
            stats.ring_drops.load(Relaxed),
        ));
        last_events = events;
        last_counters = counters;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop_for_tick.store(true, Relaxed);
        }
        Ok(())
    };
    let mut reactor_stats = reactor::run_live(&mut buffers, &mut router, &stop, |r, rs| {
        tick(r, rs, &probes)
    })?;
    probes.detach()?;
    reactor::finish_live(&mut buffers, &mut router, &mut reactor_stats)?;
    tick(&mut router, &reactor_stats, &probes)?;
    progress.finish();
    let drops = stats.ring_drops.load(Relaxed);
    router.record_only(Tag::RingDrops, &drops.to_le_bytes())?;
    router.finish().context("finishing the recording")?;
    let (mut summary, n_records) = workers.join()?;
    add_ingest_counters(&mut summary, &stats);
    add_kernel_counters(&mut summary, &last_counters);
    report(
        &summary,
        n_records,
        Some(&reactor_stats),
        &opts.common,
        started.elapsed(),
    )
}

pub fn replay(file: &Path, common: CommonArgs) -> Result<()> {
    let started = Instant::now();
    let mut reader = RecordingReader::open(file)?;
    let (workers, producers) = start_workers(&common);
    let mut router = Router::new(producers, None, true);
    let stats = router.stats();
    let mut counters = Vec::new();
    let mut recorded_drops = 0u64;
    reactor::run_replay(&mut reader, &mut router, |tag, body| match tag {
        Tag::KernelCounters => counters = counters_from_bytes(body),
        Tag::RingDrops => {
            recorded_drops = u64::from_le_bytes(
                body.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 8]),
            )
        }
        _ => {}
    })?;
    if reader.truncated_tail {
        eprintln!("l7tap: the recording ends inside a frame (was the capture killed?); replayed up to its last whole frame");
    }
    drop(router);
    let (mut summary, n_records) = workers.join()?;
    add_ingest_counters(&mut summary, &stats);
    // Live ring drops are part of the recording; a replay itself never drops.
    summary.add("ingest.ring_drops", recorded_drops);
    add_kernel_counters(&mut summary, &counters);
    report(&summary, n_records, None, &common, started.elapsed())
}

fn report(
    summary: &Summary,
    n_records: u64,
    reactor: Option<&ReactorStats>,
    common: &CommonArgs,
    elapsed: Duration,
) -> Result<()> {
    let mut out = String::new();
    out.push_str(&format!(
        "l7tap summary ({:.1}s): {} events, {} records\n",
        elapsed.as_secs_f64(),
        summary.get("ingest.events"),
        n_records
    ));
    for (k, v) in summary.iter() {
        if !k.starts_with("kernel.cpu") {
            out.push_str(&format!("  {k:<40} {v}\n"));
        }
    }
    if let Some(r) = reactor {
        out.push_str(&format!(
            "  {:<40} {}\n",
            "loader.lost (undercounts; see kernel.events_failed)", r.loader_lost
        ));
    }
    eprint!("{out}");
    if let Some(path) = &common.summary_json {
        std::fs::write(path, summary.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
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
