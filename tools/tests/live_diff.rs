//! `l7tap diff` of live captures: ten pairs of short captures of one fixed test-bed load
//! (ClickHouse `SELECT 1` and ZooKeeper `getData` at a fixed rate), and nothing may be flagged
//! at the default threshold. Needs root and `ci/testbed.sh`; built with `--features
//! live-tests`.
//!
//! Each capture keeps only its own load's processes (`--pid`): the load starts once the
//! capture is attached and the capture stops (SIGTERM) once the load is done, so captures can
//! overlap in time (two at once, to keep the test under 90 s) without sharing a request.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const PAIRS: usize = 10;
/// Captures running at once.
const AT_ONCE: usize = 2;
/// Seconds each load runs.
const LOAD_SECONDS: &str = "2.5";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn l7tap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_l7tap"))
}

fn wait_for(path: &Path, what: &str) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{what} did not happen in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A load script that waits for `go` to exist, then runs (`exec`: the pid stays the one the
/// capture filters on).
fn load_waiting_for(go: &Path, script: &str, args: &str) -> Child {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "while [ ! -e '{go}' ]; do sleep 0.02; done; exec python3 '{script}' {args}",
            go = go.display(),
            script = root().join(script).display(),
        ))
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// One capture of its own fixed-rate load into `out`.
fn capture_one(dir: &Path, index: usize) -> PathBuf {
    let go = dir.join(format!("go-{index}"));
    let ready = dir.join(format!("ready-{index}"));
    let out = dir.join(format!("out-{index}"));
    let loads = [
        load_waiting_for(
            &go,
            "ci/load/ch_load.py",
            &format!("--persistent-idle --clients 2 --interval 0.02 --port 9000 --duration {LOAD_SECONDS}"),
        ),
        load_waiting_for(
            &go,
            "ci/load/zk_load.py",
            &format!("--persistent-idle --clients 2 --interval 0.01 --duration {LOAD_SECONDS}"),
        ),
    ];
    let pids: Vec<String> = loads.iter().map(|l| l.id().to_string()).collect();
    let capture = l7tap()
        .args([
            "capture",
            "--protocols",
            "clickhouse,zookeeper",
            "--pid",
            &pids.join(","),
        ])
        .arg("--out")
        .arg(&out)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ready, "the capture's attach");
    std::fs::write(&go, b"").unwrap();
    for load in loads {
        let done = load.wait_with_output().unwrap();
        assert!(
            done.status.success(),
            "load failed: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    let interrupted = Command::new("kill")
        .args(["-TERM", &capture.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let finished = capture.wait_with_output().unwrap();
    assert!(
        finished.status.success(),
        "capture {index} failed:\n{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    out
}

fn diff_json(baseline: &Path, candidate: &Path) -> Value {
    let out = l7tap()
        .arg("diff")
        .arg(baseline)
        .arg(candidate)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn ten_pairs_of_captures_of_one_workload_flag_nothing() {
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(root().join("ci/testbed.sh"))
        .arg("start")
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success());
    let dir = std::env::temp_dir().join(format!("l7tap-test-live-diff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let next = AtomicUsize::new(0);
    let mut outputs: Vec<(usize, PathBuf)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::SeqCst);
                        if index >= 2 * PAIRS {
                            return done;
                        }
                        done.push((index, capture_one(&dir, index)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    outputs.sort();
    let captured = started.elapsed();

    let mut worst = Vec::new();
    for pair in outputs.chunks(2) {
        let diff = diff_json(&pair[0].1, &pair[1].1);
        let groups = diff["groups"].as_array().unwrap();
        // Both protocols were seen in both captures, in numbers worth testing.
        for (protocol, operation) in [("clickhouse", "SELECT"), ("zookeeper", "getData")] {
            let group = groups
                .iter()
                .find(|g| g["protocol"] == protocol && g["operation"] == operation)
                .unwrap_or_else(|| panic!("no {protocol} {operation} group: {diff:#}"));
            for side in ["baseline", "candidate"] {
                let requests = group[side]["requests"].as_u64().unwrap_or(0);
                assert!(
                    requests >= 150,
                    "{protocol} {side}: {requests} requests: {group:#}"
                );
            }
        }
        let largest = groups
            .iter()
            .flat_map(|g| g["quantiles"].as_array().unwrap())
            .filter(|q| q["quantile"] != "p99.9")
            .filter_map(|q| q["relative_change"].as_f64())
            .fold(0.0f64, |m, c| m.max(c.abs()));
        worst.push(largest);
        let flagged: Vec<&Value> = groups.iter().filter(|g| g["flagged"] == true).collect();
        assert!(
            flagged.is_empty(),
            "pair {}-{}: flagged at the default threshold: {flagged:#?}",
            pair[0].0,
            pair[1].0
        );
    }
    eprintln!(
        "{} captures in {:.1} s, total {:.1} s; largest |relative change| of p50/p90/p99 per pair: {:?}",
        2 * PAIRS,
        captured.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        worst.iter().map(|w| format!("{:.0}%", w * 100.0)).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
