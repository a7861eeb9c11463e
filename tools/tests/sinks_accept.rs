//! The Parquet output through the whole pipeline, without a kernel: `l7tap replay` of
//! synthetic recordings (`l7tap_benches::synthetic`: ZooKeeper and ClickHouse clients) goes
//! through the router, the actors, the parsers, the aggregation and the sink, and what it
//! writes is read back by other programs.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use l7tap_benches::synthetic::{write_recording, Produced, Traffic};

/// Signal number of SIGKILL on Linux.
const SIGKILL: i32 = 9;

/// A directory removed when the test ends.
fn temp_dir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("l7tap-sinks-accept-{label}-"))
        .tempdir()
        .unwrap()
}

fn l7tap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_l7tap"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Published files of a table (not the `.….parquet.tmp` of a file being written).
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            files.extend(parquet_files(&path));
        } else if name.ends_with(".parquet") && !name.starts_with('.') {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every row of a Parquet file, read with the parquet crate's Arrow reader.
fn read_rows(path: &Path) -> Result<usize, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = 0;
    for batch in reader {
        rows += batch.map_err(|e| e.to_string())?.num_rows();
    }
    Ok(rows)
}

/// pyarrow, DuckDB, ClickHouse (chdb) and Spark (pyspark) read the three tables: schemas,
/// row counts equal to the requests in the recording, and `intervals` percentiles against
/// exact quantiles of `requests`.
#[test]
fn replayed_tables_read_back_with_pyarrow_duckdb_clickhouse_and_spark() {
    let dir = temp_dir("readers");
    let recording = dir.path().join("synthetic.rec");
    // 35 s of event time: four 10 s windows, each key with hundreds of requests.
    let produced: Produced = write_recording(
        &recording,
        &Traffic {
            connections: 40,
            requests: 30_000,
            span_ns: 35_000_000_000,
            ..Traffic::default()
        },
    )
    .unwrap();
    let out = dir.path().join("out");
    let summary = dir.path().join("summary.json");
    let replay = l7tap()
        .arg("replay")
        .arg(&recording)
        .arg("--out")
        .arg(&out)
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(
        summary["output.requests"].as_u64(),
        Some(produced.requests),
        "{summary}"
    );
    let check = Command::new("python3")
        .arg(repo_root().join("tools/tests/read_back_readers.py"))
        .arg(&out)
        .arg(format!("--clickhouse={}", produced.clickhouse))
        .arg(format!("--zookeeper={}", produced.zookeeper))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("0 failed"), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
}

/// A replay killed with SIGKILL while it writes: every file it published reads back in full,
/// and what it was still writing is only ever a hidden `.….parquet.tmp`.
#[test]
fn sigkill_mid_replay_leaves_every_published_file_readable() {
    let dir = temp_dir("kill");
    let recording = dir.path().join("synthetic.rec");
    let produced = write_recording(
        &recording,
        &Traffic {
            connections: 200,
            requests: 1_500_000,
            span_ns: 120_000_000_000,
            ..Traffic::default()
        },
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut child = l7tap()
        .arg("replay")
        .arg(&recording)
        .arg("--out")
        .arg(&out)
        .args([
            "--actors",
            "1",
            "--roll-bytes",
            "65536",
            "--roll-age",
            "200ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill once a few `requests` files are out, i.e. mid-way through writing.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed_after = 0;
    while Instant::now() < deadline {
        killed_after = parquet_files(&out.join("requests")).len();
        if killed_after >= 3 {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "the replay ended before it was killed ({status}); make the recording larger"
    );
    assert!(killed_after >= 3, "killed with {killed_after} files out");

    let files = parquet_files(&out);
    let mut request_rows = 0;
    for file in &files {
        let rows = read_rows(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(rows > 0, "{}: empty", file.display());
        if file.starts_with(out.join("requests")) {
            request_rows += rows;
        }
    }
    assert!(request_rows > 0 && (request_rows as u64) < produced.requests);
    eprintln!(
        "killed mid-way: {} files published ({request_rows} of {} requests) all read back",
        files.len(),
        produced.requests
    );
}
