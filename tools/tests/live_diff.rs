//! `l7tap diff` of live captures: ten pairs of short captures of one test-bed load
//! (ClickHouse `SELECT 1` and ZooKeeper `getData` at a fixed mean rate), and nothing may be
//! flagged at the default threshold. Needs root and `ci/testbed.sh`; built with `--features
//! live-tests`.
//!
//! The two captures of a pair run at once, each keeping only its own load's processes
//! (`--pid`): both loads start together once both captures are attached, and the captures
//! stop (SIGTERM) once the loads are done. So the two sides of a pair are two samples of one
//! workload under the same conditions, with no request in common. (Pairs captured one after
//! the other on the shared 2-core development machine, load average 10-16 from other work,
//! differed by up to 60 % in ZooKeeper's p50 between two 2.5 s captures: a real change of
//! what the captures saw, which `diff` rightly flags.)
//!
//! Each load sends its requests as Poisson arrivals (`--arrivals poisson`), with seeds of its
//! own per side and pair. With fixed periods, the two copies started at once kept one phase
//! relation for the whole run: one copy could meet the other's requests on the server every
//! time and the other never, a difference of the whole run that no batch of it shows (0 and
//! 5 of 10 pairs were marked in two runs, e.g. ClickHouse p50 -44 %, ZooKeeper `getData` p50
//! -27 %, each steady across the run's batches).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PAIRS: usize = 10;
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

/// A capture keeping only the processes `pids`, into `out`; attached once `ready` exists.
fn start_capture(dir: &Path, name: &str, pids: &[u32]) -> (Child, PathBuf, PathBuf) {
    let ready = dir.join(format!("ready-{name}"));
    let out = dir.join(format!("out-{name}"));
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
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
    (capture, out, ready)
}

/// Pair `index`: two captures at once, each of its own copy of the fixed-rate load.
fn capture_pair(dir: &Path, index: usize) -> [PathBuf; 2] {
    let go = dir.join(format!("go-{index}"));
    let mut loads = Vec::new();
    let mut captures = Vec::new();
    for (side_index, side) in ["a", "b"].into_iter().enumerate() {
        // Poisson arrivals, a seed of their own per load, side and pair (see the module doc).
        let seed = 4 * index + 2 * side_index;
        let ch = load_waiting_for(
            &go,
            "ci/load/ch_load.py",
            &format!(
                "--persistent-idle --arrivals poisson --seed {seed} --clients 2 --interval 0.02 \
                 --port 9000 --duration {LOAD_SECONDS}"
            ),
        );
        let zk = load_waiting_for(
            &go,
            "ci/load/zk_load.py",
            &format!(
                "--persistent-idle --arrivals poisson --seed {} --clients 2 --interval 0.01 \
                 --duration {LOAD_SECONDS}",
                seed + 1
            ),
        );
        captures.push(start_capture(
            dir,
            &format!("{index}{side}"),
            &[ch.id(), zk.id()],
        ));
        loads.extend([ch, zk]);
    }
    for (_, _, ready) in &captures {
        wait_for(ready, "a capture's attach");
    }
    std::fs::write(&go, b"").unwrap();
    for load in loads {
        let done = load.wait_with_output().unwrap();
        assert!(
            done.status.success(),
            "load failed: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    let outputs = captures.into_iter().map(|(capture, out, _)| {
        let stopped = Command::new("kill")
            .args(["-TERM", &capture.id().to_string()])
            .status()
            .unwrap();
        assert!(stopped.success());
        let finished = capture.wait_with_output().unwrap();
        assert!(
            finished.status.success(),
            "a capture of pair {index} failed:\n{}",
            String::from_utf8_lossy(&finished.stderr)
        );
        out
    });
    let outputs: Vec<PathBuf> = outputs.collect();
    [outputs[0].clone(), outputs[1].clone()]
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

    let pairs: Vec<[PathBuf; 2]> = (0..PAIRS).map(|index| capture_pair(&dir, index)).collect();
    let captured = started.elapsed();

    let mut worst = Vec::new();
    for (index, pair) in pairs.iter().enumerate() {
        let diff = diff_json(&pair[0], &pair[1]);
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
            "pair {index}: flagged at the default threshold: {flagged:#?}"
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
