//! Files on disk: naming and Hive partitions, rolling by size, age and hour, temp-then-rename,
//! mode 0640, never overwriting, unwritable directory and full disk without losing rows, and a
//! SIGKILL of a writing process leaving every published file intact.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use l7tap_protocols::{Side, Status};
use l7tap_sinks::{run_id_of_file_name, ParquetSink, RunId, SinkConfig, SinkError};

const HOUR_NS: u64 = 3_600_000_000_000;
/// The run id of the sinks these tests make.
const RUN: &str = "20240601T095900Z_0a9f3c";

fn config(out: &Path) -> SinkConfig {
    named_config(out, "node-1.example")
}

fn named_config(out: &Path, host: &str) -> SinkConfig {
    let mut config = SinkConfig::new(out, host, OFFSET_NS);
    config.run_id = RunId::parse(RUN).unwrap();
    config
}

/// Pushes `count` requests starting `start_offset_ns` after the base, 1 ms apart.
fn push_requests(sink: &mut ParquetSink, start_offset_ns: u64, count: u64) {
    let client = conn(Side::Client, "10.1.0.1:40000", "10.1.0.2:9000", "app");
    for i in 0..count {
        let query = format!(
            "SELECT {} FROM t{} WHERE k = '{:x}'",
            i,
            i % 7,
            i * 2654435761
        );
        sink.push_batch(&clickhouse_request(
            &client,
            start_offset_ns + i * 1_000_000,
            250_000,
            &query,
            Status::Ok,
        ));
    }
}

fn total_rows(out: &Path, table: &str) -> usize {
    parquet_files(&out.join(table))
        .iter()
        .map(|path| read_file(path).num_rows())
        .sum()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn files_are_named_and_partitioned_by_their_first_row() {
    let out = TempDir::new("layout");
    let mut sink = ParquetSink::new(named_config(out.path(), "my host/1")).unwrap();
    // 2024-06-01T10:00:00Z + 12.345 s.
    push_requests(&mut sink, 12_345_000_000, 10);
    sink.finish().unwrap();
    let files = parquet_files(out.path());
    assert_eq!(files.len(), 1);
    let relative = files[0].strip_prefix(out.path()).unwrap();
    assert_eq!(
        relative.to_string_lossy(),
        "requests/date=2024-06-01/hour=10/my_host_1-20240601T095900Z_0a9f3c-20240601T100012Z-000000.parquet"
    );
    assert_eq!(run_id_of_file_name(&file_name(&files[0])), Some(RUN));
    let committed = sink.take_committed_files();
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].path, files[0]);
    assert_eq!(committed[0].rows, 10);
    assert_eq!(
        committed[0].bytes,
        std::fs::metadata(&files[0]).unwrap().len()
    );
    // No leftovers: no temporary file, no other table's directory for empty tables.
    assert_eq!(all_files(out.path()), files);
}

#[test]
fn runs_into_one_directory_are_told_apart_by_name_and_metadata() {
    let out = TempDir::new("runs");
    // Two runs with the defaults: each sink makes its own run id.
    let first = SinkConfig::new(out.path(), "node-1.example", OFFSET_NS);
    let second = SinkConfig::new(out.path(), "node-1.example", OFFSET_NS);
    assert_ne!(first.run_id, second.run_id);
    let runs = [first.run_id.to_string(), second.run_id.to_string()];
    for config in [first, second] {
        let mut sink = ParquetSink::new(config).unwrap();
        push_requests(&mut sink, 0, 5);
        sink.finish().unwrap();
    }
    let files = parquet_files(out.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let mut seen: Vec<String> = files
        .iter()
        .map(|path| {
            let run = run_id_of_file_name(&file_name(path))
                .unwrap_or_else(|| panic!("no run id in {path:?}"))
                .to_string();
            let metadata = file_metadata(path);
            assert!(
                metadata.contains(&("l7tap.run_id".to_string(), run.clone())),
                "{path:?}: {metadata:?}"
            );
            run
        })
        .collect();
    seen.sort();
    let mut expected = runs.to_vec();
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn files_roll_at_hour_boundaries_and_late_rows_stay_in_the_open_file() {
    let out = TempDir::new("hour");
    let mut sink = ParquetSink::new(config(out.path())).unwrap();
    // Rows from 10:59:59.990 to 11:00:00.009, then a late row of 10:59:59.
    push_requests(&mut sink, HOUR_NS - 10_000_000, 20);
    let client = conn(Side::Client, "10.1.0.1:40000", "10.1.0.2:9000", "app");
    sink.push_batch(&clickhouse_request(
        &client,
        HOUR_NS - 1_000_000_000,
        5_000_000_000,
        "SELECT sleep(5)",
        Status::Ok,
    ));
    sink.finish().unwrap();
    let files = parquet_files(out.path());
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(out.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "requests/date=2024-06-01/hour=10/node-1.example-20240601T095900Z_0a9f3c-20240601T105959Z-000000.parquet",
            "requests/date=2024-06-01/hour=11/node-1.example-20240601T095900Z_0a9f3c-20240601T110000Z-000001.parquet",
        ]
    );
    assert_eq!(read_file(&files[0]).num_rows(), 10);
    assert_eq!(
        read_file(&files[1]).num_rows(),
        11,
        "10 rows of 11:00 and the late one"
    );
}

#[test]
fn files_roll_by_size() {
    let out = TempDir::new("size");
    let mut config = config(out.path());
    config.roll_bytes = 256 * 1024;
    config.batch_rows = 1000;
    config.row_group_rows = 4000;
    let mut sink = ParquetSink::new(config).unwrap();
    push_requests(&mut sink, 0, 100_000);
    sink.finish().unwrap();
    let files = parquet_files(out.path());
    assert!(files.len() >= 3, "{} files", files.len());
    for path in &files[..files.len() - 1] {
        let size = std::fs::metadata(path).unwrap().len();
        // Within a batch (and the footer) of the roll size.
        assert!(
            (200 * 1024..=320 * 1024).contains(&size),
            "{} is {size} bytes",
            path.display()
        );
    }
    assert_eq!(total_rows(out.path(), "requests"), 100_000);
    // Sequence numbers follow each other.
    for (seq, path) in files.iter().enumerate() {
        assert!(
            file_name(path).ends_with(&format!("-{seq:06}.parquet")),
            "{}",
            path.display()
        );
    }
}

#[test]
fn files_roll_by_age_and_are_written_under_a_temporary_name_until_then() {
    let out = TempDir::new("age");
    let mut config = config(out.path());
    config.roll_age = Duration::from_secs(300);
    let mut sink = ParquetSink::new(config).unwrap();
    let t0 = Instant::now();
    push_requests(&mut sink, 0, 100);
    sink.try_flush_at(t0).unwrap();
    // In progress: only a hidden temporary file, mode 0640.
    let files = all_files(out.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let temp = file_name(&files[0]);
    assert!(
        temp.starts_with(".node-1.example-") && temp.ends_with(".parquet.tmp"),
        "{temp}"
    );
    assert!(parquet_files(out.path()).is_empty());
    assert_eq!(sink.buffered_rows(), 100);

    push_requests(&mut sink, 1_000_000_000, 100);
    sink.try_flush_at(t0 + Duration::from_secs(299)).unwrap();
    assert!(parquet_files(out.path()).is_empty(), "not yet 5 min old");
    sink.try_flush_at(t0 + Duration::from_secs(300)).unwrap();
    let files = parquet_files(out.path());
    assert_eq!(files.len(), 1);
    assert_eq!(read_file(&files[0]).num_rows(), 200);
    assert_eq!(
        all_files(out.path()),
        files,
        "the temporary file was renamed"
    );
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(sink.buffered_rows(), 0);

    // The next rows start a new file.
    push_requests(&mut sink, 2_000_000_000, 5);
    sink.finish().unwrap();
    assert_eq!(parquet_files(out.path()).len(), 2);
    assert_eq!(total_rows(out.path(), "requests"), 205);
}

#[test]
fn existing_files_are_never_overwritten() {
    let out = TempDir::new("collision");
    let taken = out.path().join(format!(
        "requests/date=2024-06-01/hour=10/node-1.example-{RUN}-20240601T100000Z-000000.parquet"
    ));
    std::fs::create_dir_all(taken.parent().unwrap()).unwrap();
    std::fs::write(&taken, b"someone else's file").unwrap();
    let mut sink = ParquetSink::new(config(out.path())).unwrap();
    push_requests(&mut sink, 0, 3);
    sink.finish().unwrap();
    assert_eq!(std::fs::read(&taken).unwrap(), b"someone else's file");
    let files = parquet_files(out.path());
    assert_eq!(files.len(), 2);
    assert_eq!(read_file(&files[1]).num_rows(), 3);
    assert!(file_name(&files[1]).ends_with("-000001.parquet"));
}

#[test]
fn unwritable_directory_is_a_typed_error_and_loses_no_rows() {
    let out = TempDir::new("unwritable");
    // A regular file where the table directory should be: creating the partition fails even
    // for root (which ignores permission bits).
    let blocker = out.path().join("requests");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let mut sink = ParquetSink::new(config(out.path())).unwrap();
    push_requests(&mut sink, 0, 1000);
    let error = sink.try_flush().unwrap_err();
    assert!(matches!(error, SinkError::CreateDir { .. }), "{error}");
    assert!(error.is_retryable());
    assert!(!error.is_disk_full());
    assert_eq!(sink.buffered_rows(), 1000);
    // More rows while broken; finish fails too but keeps them.
    push_requests(&mut sink, 2_000_000_000, 500);
    assert!(sink.finish().is_err());
    assert_eq!(sink.buffered_rows(), 1500);
    assert_eq!(sink.stats().requests.flush_errors, 2);

    std::fs::remove_file(&blocker).unwrap();
    sink.try_flush().unwrap();
    sink.finish().unwrap();
    assert_eq!(sink.buffered_rows(), 0);
    assert_eq!(total_rows(out.path(), "requests"), 1500);
    assert_eq!(sink.stats().requests.rows_dropped, 0);
}

/// A tmpfs mounted for the test (needs CAP_SYS_ADMIN; the test is skipped without it).
struct SmallFileSystem {
    dir: TempDir,
}

impl SmallFileSystem {
    fn mount(size: &str) -> Option<SmallFileSystem> {
        let dir = TempDir::new("tmpfs");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        ok.then_some(SmallFileSystem { dir })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallFileSystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn full_disk_is_a_typed_error_and_loses_no_rows() {
    let Some(fs) = SmallFileSystem::mount("256k") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let out = fs.dir.path();
    let mut config = config(out);
    config.roll_bytes = 64 * 1024;
    config.batch_rows = 500;
    config.row_group_rows = 1000;
    config.sync_every_bytes = 16 * 1024;
    let mut sink = ParquetSink::new(config).unwrap();
    // Incompressible-ish rows: far more than 256 KiB once encoded.
    let mut error = None;
    for round in 0..40 {
        push_requests(&mut sink, round * 1_000_000_000, 1000);
        if let Err(e) = sink.try_flush() {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("the disk never filled");
    assert!(error.is_disk_full(), "{error}");
    let pushed = sink.stats().requests.rows_pushed;
    let published_before = sink.stats().requests.rows_committed;
    assert!(
        published_before > 0,
        "some files were published before the disk filled"
    );
    // Everything published so far is intact and readable.
    assert_eq!(total_rows(out, "requests") as u64, published_before);
    assert_eq!(sink.buffered_rows(), pushed - published_before);
    // Still full: retrying fails the same way and loses nothing.
    assert!(sink.try_flush().unwrap_err().is_disk_full());
    assert_eq!(sink.buffered_rows(), pushed - published_before);

    fs.resize("64m");
    sink.finish().unwrap();
    assert_eq!(sink.buffered_rows(), 0);
    assert_eq!(total_rows(out, "requests") as u64, pushed);
    assert_eq!(sink.stats().requests.rows_dropped, 0);
    let leftovers: Vec<_> = all_files(out)
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "parquet"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn memory_budget_drops_and_counts_rows_while_writes_fail() {
    let out = TempDir::new("budget");
    std::fs::write(out.path().join("requests"), b"blocker").unwrap();
    let mut config = config(out.path());
    config.max_buffered_bytes = 1 << 20;
    let mut sink = ParquetSink::new(config).unwrap();
    for round in 0..20 {
        push_requests(&mut sink, round * 1_000_000_000, 2000);
        let _ = sink.try_flush();
    }
    let stats = sink.stats().requests;
    assert!(stats.rows_dropped > 0);
    assert_eq!(stats.rows_pushed, 40_000);
    std::fs::remove_file(out.path().join("requests")).unwrap();
    sink.finish().unwrap();
    assert_eq!(
        total_rows(out.path(), "requests") as u64,
        stats.rows_pushed - stats.rows_dropped
    );
}

/// Runs in a child process (see below): writes files forever, committing small ones.
#[test]
fn child_writer_process() {
    let Ok(dir) = std::env::var("L7TAP_SINKS_CHILD_OUT") else {
        return; // not the child
    };
    let mut config = config(Path::new(&dir));
    config.roll_bytes = 32 * 1024;
    config.batch_rows = 200;
    config.row_group_rows = 400;
    let mut sink = ParquetSink::new(config).unwrap();
    for round in 0.. {
        push_requests(&mut sink, round * 500_000_000, 400);
        sink.try_flush().unwrap();
    }
}

#[test]
fn sigkill_leaves_every_published_file_intact() {
    let out = TempDir::new("sigkill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("L7TAP_SINKS_CHILD_OUT", out.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while parquet_files(out.path()).len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let files = parquet_files(out.path());
    assert!(
        files.len() >= 5,
        "the child published {} files",
        files.len()
    );
    for path in &files {
        let rows = read_file(path).num_rows();
        assert!(rows > 0, "{}", path.display());
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
    // Whatever else is there is a hidden temporary file, which the next start removes.
    let mut temporary = 0;
    for path in all_files(out.path()) {
        let name = file_name(&path);
        assert!(
            name.ends_with(".parquet") || (name.starts_with('.') && name.ends_with(".parquet.tmp")),
            "{name}"
        );
        temporary += name.ends_with(".tmp") as usize;
    }
    let other_host = files[0]
        .parent()
        .unwrap()
        .join(".other-host-20240601T100000Z-000000.parquet.tmp");
    std::fs::write(&other_host, b"another writer's file").unwrap();
    assert_eq!(
        l7tap_sinks::remove_stale_temp_files(out.path(), "node-1.example").unwrap(),
        temporary
    );
    assert!(other_host.exists());
    assert_eq!(parquet_files(out.path()), files);
}
