//! Bad input, from the input side: absurd flags, unreadable output directories and Parquet
//! files, hostile process names, fixtures holding credentials, leftovers of a killed run.
//! Each is a clear error naming the flag or file (exit 1 or clap's 2, never a panic's 101)
//! before any side effect, or output that is safe to print and to share. No run of the
//! binary here may panic or hang (see `l7tap`); `cargo test --release` in ci/test.sh runs
//! them against the release binary.
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use l7tap_abi::events::{build, ConnId, EventKind, Flow, Header, Role};
use l7tap_abi::Protocol;
use l7tap_benches::process::MemoryCgroup;
use l7tap_ingest::recording::{RecordingHeader, RecordingWriter};
use l7tap_ingest::Tag;
use l7tap_protocols::fixture::parse_chunks;
use l7tap_protocols::Direction;

/// How long one run on a bad input may take before it counts as a hang.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Memory any one run may use beyond twice its largest input file.
const MEMORY_ALLOWANCE: u64 = 200 << 20;

/// Runs the binary on one bad input, as a careless or hostile user would. Whatever the
/// input, it must not panic, must end within [`HANG_LIMIT`] (it is killed then, and the
/// test fails), and must stay under twice the largest file it was given plus
/// [`MEMORY_ALLOWANCE`] of peak memory, measured in a memory cgroup of its own (as root;
/// without root there is no cgroup to make, and the run says that memory went unmeasured).
fn l7tap(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_l7tap"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: geteuid has no preconditions.
    let cgroup = if unsafe { libc::geteuid() } == 0 {
        let cgroup = MemoryCgroup::create("bad-input").expect("a memory cgroup for the run");
        cgroup.join_before_exec(&mut command);
        Some(cgroup)
    } else {
        eprintln!("{args:?}: peak memory not measured (not root: no memory cgroup)");
        None
    };
    // Reaped by the waitpid below, after the watchdog may have killed it.
    #[allow(clippy::zombie_processes)]
    let mut child = command.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let (finished, watched) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let hung = watched.recv_timeout(HANG_LIMIT).is_err();
        if hung {
            // SAFETY: kill(2) on our own child, which is not reaped before `finished` is
            // sent, so the pid cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        hung
    });
    let mut status = 0;
    // SAFETY: `pid` is our own child, waited for once, here (the `Child` handle never
    // waits); `status` is valid for writes.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    let _ = finished.send(());
    assert!(rc == pid, "waitpid: {}", std::io::Error::last_os_error());
    let hung = watchdog.join().unwrap();
    let out = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!hung, "{args:?} hung: killed after {HANG_LIMIT:?}: {err}");
    assert!(
        out.status.code() != Some(101) && !err.contains("panicked"),
        "{args:?} panicked: {err}"
    );
    if let Some(cgroup) = cgroup {
        let peak = cgroup.peak_bytes().unwrap();
        let limit = 2 * largest_input(args) + MEMORY_ALLOWANCE;
        assert!(
            peak <= limit,
            "{args:?} peaked at {} MiB, over {} MiB",
            peak >> 20,
            limit >> 20
        );
    }
    out
}

/// Bytes of the largest file among the arguments that name files or directories.
fn largest_input(args: &[&str]) -> u64 {
    fn largest(path: &Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::read_dir(path)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| largest(&e.path()))
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        }
    }
    args.iter()
        .map(|a| largest(Path::new(a)))
        .max()
        .unwrap_or(0)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_dir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("l7tap-bad-{label}-"))
        .tempdir()
        .unwrap()
}

fn text(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// A clear error: non-zero, not a panic, one message naming `what`.
fn assert_clear_error(out: &Output, what: &str, context: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{context}: succeeded: {err}");
    assert_ne!(out.status.code(), Some(101), "{context}: panicked: {err}");
    assert!(!err.contains("panicked"), "{context}: {err}");
    assert!(err.contains(what), "{context}: {what:?} not in {err}");
}

// ---- one validation layer ----------------------------------------------------------------

#[test]
fn absurd_capture_and_replay_flags_are_errors_that_name_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--actors", "0"], "--actors"),
        (&["--actors", "100000"], "--actors"),
        (&["--max-query-bytes", "0"], "--max-query-bytes"),
        (&["--interval", "99999999999999999999999h"], "--interval"),
        (&["--interval", "2d"], "--interval"),
        (&["--interval", "0s"], "--interval"),
        (
            &["--heatmap-resolution", "99999999999999999999999h"],
            "--heatmap-resolution",
        ),
        (&["--heatmap-resolution", "1ms"], "--heatmap-resolution"),
        (&["--heatmap-resolution", "3s"], "--heatmap-resolution"),
        (&["--roll-age", "99999999999999999999999h"], "--roll-age"),
        (&["--roll-age", "0s"], "--roll-age"),
        (&["--roll-bytes", "0"], "--roll-bytes"),
        (&["--app", ""], "--app"),
        (&["--app", "dashboard,"], "--app"),
    ];
    let dir = temp_dir("flags");
    // Flags are checked before the recording is opened: a missing one is not the error.
    let missing = text(&dir.path().join("no-such-recording"));
    let out_dir = text(&dir.path().join("out"));
    for (flags, named) in cases {
        for command in ["replay", "capture"] {
            let mut args = vec![command];
            if command == "replay" {
                args.push(&missing);
            }
            args.extend(["--out", &out_dir]);
            args.extend(flags.iter());
            let out = l7tap(&args);
            assert_clear_error(&out, named, &format!("{args:?}"));
        }
    }
    assert!(
        !dir.path().join("out").exists(),
        "a rejected run created --out"
    );
}

#[test]
fn capture_checks_every_flag_before_it_touches_the_recording() {
    let dir = temp_dir("record");
    let record = dir.path().join("earlier.l7rec");
    std::fs::write(&record, b"an earlier recording").unwrap();
    let out_dir = text(&dir.path().join("out"));
    for flags in [
        &["--duration", "99999999999999999999999h"][..],
        &["--duration", "36500d"],
        &["--actors", "0"],
        &["--interval", "0s"],
        &["--capture-bytes-clickhouse", "0"],
        &["--capture-bytes-zookeeper", "1000000"],
        &["--tail-bytes-clickhouse", "100000"],
        &["--capture-bytes", "clickhouse_http=0"],
        &["--tail-bytes", "zookeeper=100000"],
        &["--clickhouse-http-ports", "1,2,3,4,5,6,7,8,9"],
        &["--clickhouse-http-ports", "0"],
        &["--perf-pages", "3"],
    ] {
        let mut args = vec!["capture", "--record", record.to_str().unwrap()];
        args.extend(["--out", &out_dir]);
        args.extend(flags);
        let out = l7tap(&args);
        assert_clear_error(&out, flags[0], &format!("{flags:?}"));
        assert_eq!(
            std::fs::read(&record).unwrap(),
            b"an earlier recording",
            "{flags:?} truncated --record"
        );
    }
}

#[test]
fn impossible_times_are_refused_by_report_and_heatmap() {
    let dir = temp_dir("times");
    std::fs::create_dir(dir.path().join("intervals")).unwrap();
    let png = text(&dir.path().join("h.png"));
    for time in [
        "2024-13-01T00:00:00Z",
        "2024-06-01T99:00:00Z",
        "2024-02-30",
        "nan",
        "300000-01-01",
        "1e300",
    ] {
        for flag in ["--since", "--until"] {
            let out = l7tap(&["report", &text(dir.path()), flag, time]);
            assert_clear_error(&out, flag, &format!("report {flag} {time}"));
            let out = l7tap(&["heatmap", &text(dir.path()), "--out", &png, flag, time]);
            assert_clear_error(&out, flag, &format!("heatmap {flag} {time}"));
        }
    }
    let out = l7tap(&[
        "report",
        &text(dir.path()),
        "--since",
        "2024-06-02",
        "--until",
        "2024-06-01",
    ]);
    assert_clear_error(&out, "--since", "an empty range");
    let out = l7tap(&["report", &text(dir.path()), "--app", " "]);
    assert_clear_error(&out, "--app", "an empty application");
    let out = l7tap(&["heatmap", &text(dir.path()), "--out", &png, "--app", ""]);
    assert_clear_error(&out, "--app", "an empty application");
}

// ---- a recording with credentials and hostile process names -------------------------------

const CLICKHOUSE_COMM: &str = "a/\u{1b}[2J\u{1b}]0;x\u{7}";
const ZOOKEEPER_COMM: &str = "../z\u{1b}[31m";
const CLICKHOUSE_PASSWORD: &[u8] = b"ch-secret-pw";
const ZOOKEEPER_AUTH: &[u8] = b"l7tap:zk-secret-auth";
const BASE_UNIX_NS: i64 = 1_717_236_000_000_000_000;
const BASE_MONOTONIC_NS: u64 = 5_000_000_000_000;

fn fixture(path: &str) -> Vec<(Direction, Vec<u8>)> {
    let path = format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    parse_chunks(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .into_iter()
        .map(|chunk| (chunk.dir, chunk.bytes))
        .collect()
}

/// A recording of two connections: a ClickHouse client logging in with a password and a
/// ZooKeeper client sending digest auth, each under a process name with escape sequences.
fn write_recording(path: &Path) {
    let mut out = RecordingWriter::create(
        path,
        &RecordingHeader {
            monotonic_to_unix_ns: BASE_UNIX_NS - BASE_MONOTONIC_NS as i64,
            capture_bytes: 65536,
            n_cpus: 1,
        },
    )
    .unwrap();
    let connections = [
        (
            Protocol::ClickHouse,
            CLICKHOUSE_COMM,
            "10.1.0.2:9000",
            fixture("clickhouse/py_password-1.chunks"),
        ),
        (
            Protocol::ZooKeeper,
            ZOOKEEPER_COMM,
            "10.1.0.1:2181",
            fixture("zookeeper/auth-1.chunks"),
        ),
    ];
    let mut ts = BASE_MONOTONIC_NS;
    for (i, (protocol, comm, server, chunks)) in connections.into_iter().enumerate() {
        let conn = ConnId {
            tgid: 1000 + i as u32,
            fd: 10,
            start_ns: BASE_MONOTONIC_NS - 1_000,
        };
        let header = |kind, flow, ts_ns| Header {
            kind,
            ts_ns,
            conn,
            tid: conn.tgid,
            protocol: Some(protocol),
            role: Role::Client,
            flow,
        };
        let client: SocketAddr = format!("10.0.0.{}:4000{i}", i + 1).parse().unwrap();
        let server: SocketAddr = server.parse().unwrap();
        let open = build::open(
            &header(EventKind::Open, Flow::Egress, ts),
            client,
            server,
            comm,
        );
        out.write(Tag::KernelEvent, &[&open]).unwrap();
        for (direction, bytes) in chunks {
            ts += 100_000;
            let flow = match direction {
                Direction::ClientToServer => Flow::Egress,
                Direction::ServerToClient => Flow::Ingress,
            };
            let data = build::data(
                &header(EventKind::Data, flow, ts),
                bytes.len() as u64,
                &bytes,
            );
            out.write(Tag::KernelEvent, &[&data]).unwrap();
        }
        ts += 100_000;
        let close = build::close(&header(EventKind::Close, Flow::Egress, ts));
        out.write(Tag::KernelEvent, &[&close]).unwrap();
    }
    out.write(Tag::Watermark, &[&(ts + 1_000_000).to_le_bytes()])
        .unwrap();
    out.finish().unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---- dump ---------------------------------------------------------------------------------

#[test]
fn dump_writes_private_files_with_safe_names_and_warns() {
    let dir = temp_dir("dump");
    let recording = dir.path().join("rec.l7rec");
    write_recording(&recording);
    let chunks = dir.path().join("chunks");
    let out = l7tap(&["dump", &text(&recording), "--out", &text(&chunks)]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("raw payloads"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err}");
    assert_eq!(mode(&chunks), 0o700);
    let files = files_in(&chunks);
    // One file per connection, both directly in --out: a `/` in a name made no directory.
    assert_eq!(files.len(), 2, "{files:?}");
    let mut all = String::new();
    for file in &files {
        assert!(file.is_file(), "{file:?}");
        assert_eq!(mode(file), 0o600, "{file:?}");
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{name}"
        );
        all.push_str(&std::fs::read_to_string(file).unwrap());
    }
    // Without --scrub the fixtures are raw: that is what the warning is for.
    assert!(all.contains(&hex(CLICKHOUSE_PASSWORD)));
    assert!(all.contains(&hex(ZOOKEEPER_AUTH)));
}

#[test]
fn dump_scrub_replaces_credentials_with_filler_of_the_same_length() {
    let dir = temp_dir("scrub");
    let recording = dir.path().join("rec.l7rec");
    write_recording(&recording);
    let raw_dir = dir.path().join("raw");
    let scrubbed_dir = dir.path().join("scrubbed");
    assert!(
        l7tap(&["dump", &text(&recording), "--out", &text(&raw_dir)])
            .status
            .success()
    );
    let out = l7tap(&[
        "dump",
        &text(&recording),
        "--out",
        &text(&scrubbed_dir),
        "--scrub",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (raw, scrubbed) = (files_in(&raw_dir), files_in(&scrubbed_dir));
    assert_eq!(raw.len(), 2);
    for (raw, scrubbed) in raw.iter().zip(&scrubbed) {
        let raw_chunks = parse_chunks(&std::fs::read_to_string(raw).unwrap()).unwrap();
        let text = std::fs::read_to_string(scrubbed).unwrap();
        assert!(!text.contains(&hex(CLICKHOUSE_PASSWORD)), "{scrubbed:?}");
        assert!(!text.contains(&hex(ZOOKEEPER_AUTH)), "{scrubbed:?}");
        let chunks = parse_chunks(&text).unwrap();
        // Same chunks, same lengths; only credential bytes differ.
        assert_eq!(chunks.len(), raw_chunks.len());
        let mut changed = 0;
        for (a, b) in raw_chunks.iter().zip(&chunks) {
            assert_eq!(a.bytes.len(), b.bytes.len());
            for (x, y) in a.bytes.iter().zip(&b.bytes) {
                if x != y {
                    assert_eq!(*y, b'*');
                    changed += 1;
                }
            }
        }
        let name = scrubbed.file_name().unwrap().to_str().unwrap();
        if name.starts_with("clickhouse") {
            assert_eq!(changed, CLICKHOUSE_PASSWORD.len(), "{name}");
        } else {
            // The auth data; the session passwords of ConnectRequest (zeros for a new
            // session, not all of them differ from the filler) and ConnectResponse.
            assert!(changed >= ZOOKEEPER_AUTH.len() + 16, "{name}: {changed}");
        }
    }
}

// ---- hostile process names in reports, and leftovers --------------------------------------

/// Replays the recording into `out`; returns replay's stderr.
fn replay(recording: &Path, out: &Path) -> String {
    let output = l7tap(&["replay", &text(recording), "--out", &text(out)]);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    err
}

#[test]
fn process_names_reach_the_terminal_escaped() {
    let dir = temp_dir("comm");
    let recording = dir.path().join("rec.l7rec");
    write_recording(&recording);
    let out_dir = dir.path().join("out");
    let err = replay(&recording, &out_dir);
    assert!(!err.contains('\u{1b}'), "{err}");
    let report = l7tap(&["report", &text(&out_dir)]);
    assert!(report.status.success(), "{}", stderr(&report));
    let shown = String::from_utf8(report.stdout).unwrap();
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
        "{shown}"
    );
    assert!(shown.contains("a/\\x1b[2J"), "{shown}");
    let json = l7tap(&["report", &text(&out_dir), "--format", "json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let json = String::from_utf8(json.stdout).unwrap();
    assert!(!json.contains('\u{1b}'), "{json}");
    // The JSON still says what the name was.
    let document: serde_json::Value = serde_json::from_str(&json).unwrap();
    let comms: Vec<&str> = document["servers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["clients"].as_array().unwrap())
        .map(|c| c["comm"].as_str().unwrap())
        .collect();
    assert!(comms.contains(&CLICKHOUSE_COMM), "{comms:?}");
}

#[test]
fn replay_removes_the_temporary_files_of_an_earlier_killed_run_of_this_host() {
    let dir = temp_dir("tmp");
    let recording = dir.path().join("rec.l7rec");
    write_recording(&recording);
    let out_dir = dir.path().join("out");
    let hour = out_dir.join("requests/date=2024-06-01/hour=10");
    std::fs::create_dir_all(&hour).unwrap();
    let host = l7tap_sinks::sink::sanitize_host(&l7tap_sinks::default_host_name());
    let ours = hour.join(format!(".{host}-20240601T100000Z-000000.parquet.tmp"));
    let other_host = hour.join(".another-host-20240601T100000Z-000000.parquet.tmp");
    for file in [&ours, &other_host] {
        std::fs::write(file, b"left by a killed run").unwrap();
    }
    let err = replay(&recording, &out_dir);
    assert!(err.contains("removed 1 temporary files"), "{err}");
    assert!(!ours.exists());
    assert!(other_host.exists(), "another host's file was removed");
}

// ---- unreadable inputs --------------------------------------------------------------------

#[test]
fn report_and_heatmap_of_a_directory_that_is_not_an_output_are_errors() {
    let dir = temp_dir("notout");
    let png = text(&dir.path().join("h.png"));
    let missing = text(&dir.path().join("missing"));
    for (target, named) in [
        (missing.as_str(), "missing"),
        (&text(dir.path()), "intervals"),
    ] {
        let out = l7tap(&["report", target]);
        assert_clear_error(&out, named, &format!("report {target}"));
        assert_eq!(out.status.code(), Some(1));
        let out = l7tap(&["heatmap", target, "--out", &png]);
        assert_clear_error(&out, named, &format!("heatmap {target}"));
    }
}

/// The Parquet files of `table` under `out`.
fn table_files(out: &Path, table: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for date in files_in(&out.join(table)) {
        for hour in files_in(&date) {
            files.extend(
                files_in(&hour)
                    .into_iter()
                    .filter(|f| f.extension().is_some_and(|e| e == "parquet")),
            );
        }
    }
    files
}

/// A valid Parquet file with one Int64 column `x`: not a file of l7tap.
fn write_foreign_parquet(path: &Path) {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn foreign_or_damaged_parquet_files_are_errors_that_name_the_file() {
    let dir = temp_dir("parquet");
    let recording = dir.path().join("rec.l7rec");
    write_recording(&recording);
    let pristine = dir.path().join("out");
    replay(&recording, &pristine);
    for table in ["requests", "intervals", "capture_stats"] {
        for damage in ["foreign", "cut"] {
            let out_dir = dir.path().join(format!("{table}-{damage}"));
            Command::new("cp")
                .arg("-r")
                .arg(&pristine)
                .arg(&out_dir)
                .status()
                .unwrap();
            let file = table_files(&out_dir, table)[0].clone();
            match damage {
                "foreign" => write_foreign_parquet(&file),
                _ => {
                    let bytes = std::fs::read(&file).unwrap();
                    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
                }
            }
            let name = file.file_name().unwrap().to_str().unwrap();
            let out = l7tap(&["report", &text(&out_dir)]);
            assert_clear_error(&out, name, &format!("report, {damage} {table}"));
            if table != "capture_stats" {
                let html = text(&dir.path().join(format!("{table}-{damage}.html")));
                let out = l7tap(&["heatmap", &text(&out_dir), "--out", &html]);
                assert_clear_error(&out, name, &format!("heatmap, {damage} {table}"));
            }
        }
    }
}

// ---- runs that can be told apart ----------------------------------------------------------

/// The runs of `out`'s files, by the run id in their names (`None`: a name without one).
fn runs_of_files(out: &Path) -> Vec<Option<String>> {
    let mut runs: Vec<Option<String>> = ["requests", "intervals", "capture_stats"]
        .iter()
        .flat_map(|table| table_files(out, table))
        .map(|file| {
            let name = file.file_name().unwrap().to_str().unwrap().to_string();
            l7tap_sinks::run_id_of_file_name(&name).map(str::to_string)
        })
        .collect();
    runs.sort();
    runs.dedup();
    runs
}

/// `report --format json` of `out` with `flags`: the requests of every server, the runs read,
/// and stderr.
fn report_requests(out: &Path, flags: &[&str]) -> (i64, Vec<String>, String) {
    let mut args = vec!["report", text_ref(out), "--format", "json"];
    args.extend(flags);
    let output = l7tap(&args);
    let err = stderr(&output);
    assert!(output.status.success(), "{args:?}: {err}");
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let requests = document["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sli"]["requests"].as_i64().unwrap())
        .sum();
    let read = document["runs"]["read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    (requests, read, err)
}

fn text_ref(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Every file under `dir`, temporary ones included.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in files_in(dir) {
        if entry.is_dir() {
            files.extend(all_files(&entry));
        } else {
            files.push(entry);
        }
    }
    files
}

#[test]
fn a_second_run_into_one_directory_is_refused_unless_appended_and_then_told_apart() {
    let dir = temp_dir("runs");
    let recording = dir.path().join("rec.l7rec");
    write_recording(&recording);
    let out_dir = dir.path().join("out");
    let first_err = replay(&recording, &out_dir);
    let first = runs_of_files(&out_dir);
    assert_eq!(first.len(), 1, "{first:?}");
    let first = first[0].clone().expect("files carry a run id");
    assert!(first_err.contains(&format!("(run {first})")), "{first_err}");
    let (one_run, read, err) = report_requests(&out_dir, &[]);
    assert!(one_run > 0);
    assert_eq!(read, [first.as_str()]);
    assert!(!err.contains("runs"), "one run needs no note: {err}");

    // A second run into the same directory: refused before it writes anything.
    let files_before = all_files(&out_dir);
    for args in [
        &["replay", text_ref(&recording), "--out", text_ref(&out_dir)][..],
        &["capture", "--out", text_ref(&out_dir), "--duration", "1s"],
    ] {
        let command = args[0];
        let out = l7tap(args);
        assert_clear_error(&out, "--append", command);
        let err = stderr(&out);
        assert!(err.contains(text_ref(&out_dir)), "{err}");
        assert!(
            err.contains("1 earlier run") && err.contains(&first),
            "{err}"
        );
        assert_eq!(all_files(&out_dir), files_before, "{command} wrote files");
    }

    // With --append it runs; report says there are two runs, reads both unless told which.
    let output = l7tap(&[
        "replay",
        text_ref(&recording),
        "--out",
        text_ref(&out_dir),
        "--append",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let runs: Vec<String> = runs_of_files(&out_dir).into_iter().flatten().collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let second = runs.iter().find(|r| **r != first).unwrap().clone();
    let (both, read, err) = report_requests(&out_dir, &[]);
    assert_eq!(both, 2 * one_run);
    assert_eq!(read, runs);
    assert!(
        err.contains("holds 2 runs") && err.contains(&first) && err.contains(&second),
        "{err}"
    );
    let text_report = l7tap(&["report", text_ref(&out_dir)]);
    let shown = String::from_utf8(text_report.stdout).unwrap();
    assert!(shown.contains("holds 2 runs"), "{shown}");
    for (flags, run) in [
        (vec!["--run", second.as_str()], &second),
        (vec!["--run", first.as_str()], &first),
    ] {
        let (requests, read, err) = report_requests(&out_dir, &flags);
        assert_eq!(requests, one_run, "{flags:?}");
        assert_eq!(read, [run.as_str()]);
        assert!(!err.contains("all are read"), "{err}");
    }
    let both_named = format!("{first},{second}");
    assert_eq!(report_requests(&out_dir, &["--run", &both_named]).0, both);
    let html = dir.path().join("h.html");
    let heatmap = l7tap(&["heatmap", text_ref(&out_dir), "--out", text_ref(&html)]);
    assert!(heatmap.status.success(), "{}", stderr(&heatmap));
    assert!(
        stderr(&heatmap).contains("holds 2 runs"),
        "{}",
        stderr(&heatmap)
    );

    // A run the directory does not hold, or text that is no run id: clear errors.
    let absent = "20000101T000000Z_000000";
    for (run, named) in [(absent, absent), ("last", "not a run id")] {
        let out = l7tap(&["report", text_ref(&out_dir), "--run", run]);
        assert_clear_error(&out, named, run);
        let out = l7tap(&[
            "heatmap",
            text_ref(&out_dir),
            "--out",
            text_ref(&html),
            "--run",
            run,
        ]);
        assert_clear_error(&out, named, run);
    }
}

#[test]
fn files_written_without_a_run_id_are_read_as_the_unnamed_run() {
    let dir = temp_dir("unnamed");
    let recording = dir.path().join("rec.l7rec");
    write_recording(&recording);
    let out_dir = dir.path().join("out");
    replay(&recording, &out_dir);
    let (one_run, _, _) = report_requests(&out_dir, &[]);
    // Names as older versions wrote them: `<host>-<start>-<seq>.parquet`.
    for table in ["requests", "intervals", "capture_stats"] {
        for file in table_files(&out_dir, table) {
            let name = file.file_name().unwrap().to_str().unwrap();
            let run = l7tap_sinks::run_id_of_file_name(name).unwrap();
            let old = name.replace(&format!("-{run}-"), "-");
            std::fs::rename(&file, file.with_file_name(old)).unwrap();
        }
    }
    assert_eq!(runs_of_files(&out_dir), [None]);
    let output = l7tap(&[
        "replay",
        text_ref(&recording),
        "--out",
        text_ref(&out_dir),
        "--append",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (both, read, err) = report_requests(&out_dir, &[]);
    assert_eq!(both, 2 * one_run);
    assert_eq!(read.len(), 2, "{read:?}");
    assert!(err.contains("unnamed"), "{err}");
    let (old_only, read, _) = report_requests(&out_dir, &["--run", "unnamed"]);
    assert_eq!(old_only, one_run);
    assert_eq!(read, ["unnamed"]);
}
