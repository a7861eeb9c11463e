//! Full replay pipeline throughput on one core: `l7tap replay` of a synthetic recording
//! (`l7tap_benches::synthetic`: 70 % ZooKeeper getData/exists, 30 % ClickHouse `SELECT 1`,
//! 200 connections) through ingest → one actor (reorder, reassembly, parsers, aggregation) →
//! the output thread (Parquet, zstd, fsync), with every thread of the process pinned to one
//! CPU, so requests per wall second are requests per core.
//!
//! `cargo build --release -p l7tap && cargo bench -p l7tap-benches --bench pipeline`
//! (environment: `L7TAP_BIN`, `PIPELINE_REQUESTS` (default 1 000 000), `PIPELINE_ROUNDS`
//! (default 3), `PIPELINE_RECORDING=FILE` to keep the recording for profiling, e.g.
//! `taskset -c 1 perf record -g l7tap replay FILE --actors 1`). Goal: ≥ 500 k requests/s.
//!
//! Baselines measured in the same run, alternated with it:
//! - `read`: this process reads the recording frame by frame (file and framing only);
//! - `frames only`: `l7tap replay --frames-only`, the same process and threads with the
//!   parsers, aggregation and sink left out (the actor only counts frames).
//!
//! Each figure is the best of the rounds (least disturbed by other processes).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use l7tap_benches::process::{built_l7tap_bin, last_allowed_cpu, run_measured, Usage};
use l7tap_benches::synthetic::{write_recording, Traffic};
use l7tap_ingest::recording::RecordingReader;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn replay(bin: &PathBuf, recording: &PathBuf, out: &PathBuf, frames_only: bool) -> Usage {
    let _ = std::fs::remove_dir_all(out);
    let mut command = Command::new(bin);
    command
        .arg("replay")
        .arg(recording)
        .arg("--out")
        .arg(out)
        .args(["--actors", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if frames_only {
        command.arg("--frames-only");
    }
    let usage = run_measured(&mut command, Some(last_allowed_cpu())).expect("running l7tap");
    assert_eq!(usage.exit_code, 0, "l7tap replay failed");
    usage
}

fn read_frames(recording: &Path) -> Duration {
    let started = Instant::now();
    let mut reader = RecordingReader::open(recording).expect("recording");
    let mut body = Vec::with_capacity(1 << 16);
    let mut frames = 0u64;
    while reader.next_frame(&mut body).expect("frame").is_some() {
        frames += 1;
    }
    std::hint::black_box(frames);
    started.elapsed()
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test` of the benches only checks they build.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bin = built_l7tap_bin();
    let dir = std::env::temp_dir().join(format!("l7tap-bench-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keep = std::env::var_os("PIPELINE_RECORDING").map(PathBuf::from);
    let recording = keep.clone().unwrap_or_else(|| dir.join("synthetic.rec"));
    let out = dir.join("out");
    let requests = env_or("PIPELINE_REQUESTS", 1_000_000);
    let rounds = env_or("PIPELINE_ROUNDS", 3);
    let produced = write_recording(
        &recording,
        &Traffic {
            connections: 200,
            requests,
            span_ns: requests * 100_000, // 10 k requests/s of event time
            ..Traffic::default()
        },
    )
    .unwrap();
    println!(
        "pipeline: {} requests ({} ClickHouse, {} ZooKeeper), {} events, {:.0} MB recording, \
         all threads on CPU {}",
        produced.requests,
        produced.clickhouse,
        produced.zookeeper,
        produced.events,
        produced.file_bytes as f64 / 1e6,
        last_allowed_cpu()
    );
    let mut read = Duration::MAX;
    let mut frames: Option<Usage> = None;
    let mut full: Option<Usage> = None;
    let best = |best: Option<Usage>, new: Usage| match best {
        Some(b) if b.wall <= new.wall => Some(b),
        _ => Some(new),
    };
    for round in 0..rounds {
        read = read.min(read_frames(&recording));
        let f = replay(&bin, &recording, &out, true);
        let p = replay(&bin, &recording, &out, false);
        println!(
            "  round {round}: frames only {:.2} s wall / {:.2} s CPU, full {:.2} s wall / {:.2} s CPU",
            f.wall.as_secs_f64(),
            f.cpu.as_secs_f64(),
            p.wall.as_secs_f64(),
            p.cpu.as_secs_f64()
        );
        frames = best(frames, f);
        full = best(full, p);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if keep.is_none() {
        let _ = std::fs::remove_file(&recording);
    }
    let (frames, full) = (frames.unwrap(), full.unwrap());
    let rate = |t: Duration| produced.requests as f64 / t.as_secs_f64();
    println!(
        "pipeline read (baseline):        {:>7.0} k requests/s ({:.2} s)",
        rate(read) / 1e3,
        read.as_secs_f64()
    );
    println!(
        "pipeline frames only (baseline): {:>7.0} k requests/s on one core ({:.2} µs CPU/request)",
        rate(frames.wall) / 1e3,
        frames.cpu.as_secs_f64() * 1e6 / produced.requests as f64
    );
    println!(
        "pipeline full replay:            {:>7.0} k requests/s on one core ({:.2} µs CPU/request); \
         {:.2}x the frames-only time, goal >= 500 k/s",
        rate(full.wall) / 1e3,
        full.cpu.as_secs_f64() * 1e6 / produced.requests as f64,
        full.wall.as_secs_f64() / frames.wall.as_secs_f64()
    );
}
