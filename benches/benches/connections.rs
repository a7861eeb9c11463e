//! Memory with 10 000 open tracked connections: `l7tap replay` of a synthetic recording in
//! which 10 000 client connections (70 % ZooKeeper, 30 % ClickHouse) open, make 5 requests
//! each and stay open to the end, every ZooKeeper one holding the first 1 KiB of an
//! unfinished request in its buffer; the event time (20 s) stays below the idle timeout, so
//! no connection expires before the replay ends. Reported: the process's peak RSS, next to
//! the same requests over 10 connections (the baseline: rings, sink, binary), both measured
//! in the same run, alternated.
//!
//! `cargo build --release -p l7tap && cargo bench -p l7tap-benches --bench connections`
//! (environment: `L7TAP_BIN`, `CONNECTIONS` (default 10 000), `CONNECTIONS_KEEP=1` keeps the
//! recordings in the temporary directory it prints, for profiling). Goal: ≤ 256 MiB.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use l7tap_benches::process::{built_l7tap_bin, run_measured, Usage};
use l7tap_benches::synthetic::{write_recording, Produced, Traffic};

const MIB: f64 = (1 << 20) as f64;

fn replay(bin: &Path, recording: &Path, dir: &Path) -> (Usage, serde_like::Summary) {
    let out = dir.join("out");
    let summary = dir.join("summary.json");
    let _ = std::fs::remove_dir_all(&out);
    let usage = run_measured(
        Command::new(bin)
            .arg("replay")
            .arg(recording)
            .arg("--out")
            .arg(&out)
            .arg("--summary-json")
            .arg(&summary)
            .args(["--actors", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        None,
    )
    .expect("running l7tap");
    assert_eq!(usage.exit_code, 0, "l7tap replay failed");
    let text = std::fs::read_to_string(&summary).expect("summary");
    (usage, serde_like::Summary(text))
}

/// Reads counters out of the summary JSON (a flat object of integers) without a JSON crate.
mod serde_like {
    pub struct Summary(pub String);

    impl Summary {
        pub fn get(&self, key: &str) -> u64 {
            let needle = format!("\"{key}\":");
            self.0
                .find(&needle)
                .map(|at| {
                    self.0[at + needle.len()..]
                        .trim_start()
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                        .parse()
                        .unwrap_or(0)
                })
                .unwrap_or(0)
        }
    }
}

fn make(dir: &Path, name: &str, connections: usize) -> (PathBuf, Produced) {
    let path = dir.join(name);
    let produced = write_recording(
        &path,
        &Traffic {
            connections,
            requests: 50_000,
            span_ns: 20_000_000_000,
            close_at_end: false,
            pending_bytes: 1024,
            ..Traffic::default()
        },
    )
    .unwrap();
    (path, produced)
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test` of the benches only checks they build.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bin = built_l7tap_bin();
    let many: usize = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("l7tap-bench-connections-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (few_rec, few) = make(&dir, "few.rec", 10);
    let (many_rec, many_produced) = make(&dir, "many.rec", many);
    let mut few_rss = 0u64;
    let mut many_rss = 0u64;
    for round in 0..3 {
        let (f, fs) = replay(&bin, &few_rec, &dir);
        let (m, ms) = replay(&bin, &many_rec, &dir);
        if round == 0 {
            for (s, produced, connections) in [(&fs, &few, 10), (&ms, &many_produced, many)] {
                let open = s.get("events.open");
                assert_eq!(open, connections as u64, "connections opened");
                assert_eq!(s.get("connections.expired"), 0, "none may expire");
                assert_eq!(s.get("output.requests"), produced.requests);
            }
        }
        println!(
            "  round {round}: 10 connections {:.1} MiB, {many} connections {:.1} MiB",
            f.max_rss_bytes as f64 / MIB,
            m.max_rss_bytes as f64 / MIB
        );
        few_rss = few_rss.max(f.max_rss_bytes);
        many_rss = many_rss.max(m.max_rss_bytes);
    }
    if std::env::var_os("CONNECTIONS_KEEP").is_some() {
        println!("recordings kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "connections: peak RSS {:.1} MiB with {many} open tracked connections, {:.1} MiB with 10 \
         (baseline, same {} requests): {:.1} KiB per connection; goal <= 256 MiB",
        many_rss as f64 / MIB,
        few_rss as f64 / MIB,
        many_produced.requests,
        (many_rss as f64 - few_rss as f64) / 1024.0 / (many - 10) as f64
    );
}
