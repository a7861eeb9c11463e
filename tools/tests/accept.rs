//! Acceptance tests against the real servers of `ci/testbed.sh`: each runs a script under
//! `ci/accept/` that drives a known workload while `l7tap capture` runs and compares the
//! Parquet output with the workload's own counts and the servers' own records. Needs root;
//! built only with `--features live-tests` (see ci/test.sh). The tests run one at a time:
//! the server-side oracles (`mntr`, `system.query_log`) count everything a server does.
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts the test bed, runs `ci/accept/<name>` with the built binary and a fresh work
/// directory, and fails with the script's report unless it exits 0.
fn accept(name: &str, extra: &[&str]) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for step in ["start", "schema"] {
        let status = Command::new("bash")
            .arg(root().join("ci/testbed.sh"))
            .arg(step)
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success(), "ci/testbed.sh {step} failed");
    }
    let workdir = std::env::temp_dir().join(format!(
        "l7tap-accept-{}-{}",
        name.trim_end_matches(".py"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&workdir);
    let out = Command::new("python3")
        .arg(root().join("ci/accept").join(name))
        .arg("--l7tap")
        .arg(env!("CARGO_BIN_EXE_l7tap"))
        .arg("--workdir")
        .arg(&workdir)
        .args(extra)
        .current_dir(root())
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "ci/accept/{name} failed:\n{report}");
    let _ = std::fs::remove_dir_all(&workdir);
}

/// Issue acceptance for ZooKeeper: a kazoo workload of > 5,000 ops with > 500 in flight;
/// records per op and outcome equal what it sent on both sides, the server side equals
/// the `mntr` packets_received delta, and the auth secret reaches no output.
#[test]
fn zookeeper_records_match_the_workload_and_mntr() {
    accept("zookeeper.py", &[]);
}

/// Issue acceptance for ClickHouse: 2,000 native queries of the mixed workload from 4
/// clients; the server-side records equal both servers' `system.query_log` per status and
/// exception code, their durations agree with the server's clocks within 2 ms for >= 99 %,
/// nothing is lost, and the password of the workload's user reaches no output.
#[test]
fn clickhouse_records_match_query_log() {
    accept("clickhouse.py", &[]);
}

/// Acceptance for ClickHouse over HTTP: GET and POST, keep-alive, failing queries, a
/// large and a gzip result to both servers' HTTP ports; the server-side records equal each
/// server's `system.query_log` rows with `interface = 2` per query_id, status and error code;
/// at least 99 % of durations are within 2 ms of the server's own span of the request (its
/// trace log), none is shorter than `query_duration_ms` or longer than the client's round
/// trip; nginx traffic gives nothing, nothing is lost, and the password reaches no output.
#[test]
fn clickhouse_http_records_match_query_log() {
    accept("clickhouse_http.py", &[]);
}

/// Issue acceptance for `report` and `heatmap`: three clients run fast SELECTs, `SELECT
/// sleep(0.2)` and failing queries; the report's requests and errors per client equal
/// `system.query_log`; the PNG's 200 ms+ row and errors row are drawn; in headless Chromium
/// the HTML page logs no error and a drag over the 200 ms+ row (the errors row) lists exactly
/// the sleep (failing) queries.
#[test]
fn report_and_heatmap_match_query_log() {
    accept("report.py", &[]);
}

/// Acceptance of object-storage outputs against the test bed's S3 server (moto): a replay to
/// s3:// holds the same rows as to a directory (pyarrow and chdb's s3()), two --host names
/// share one prefix, wrong settings fail fast in one line, moto frozen for 30 s in the middle
/// of a capture leaves every row in the bucket exactly once, and files a SIGKILL left in the
/// spool are uploaded by the next run.
#[test]
fn object_storage_outputs_hold_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("synthetic.rec");
    let produced = l7tap_benches::synthetic::write_recording(
        &recording,
        &l7tap_benches::synthetic::Traffic {
            connections: 40,
            requests: 20_000,
            span_ns: 25_000_000_000,
            ..l7tap_benches::synthetic::Traffic::default()
        },
    )
    .unwrap();
    let recording = recording.display().to_string();
    let requests = produced.requests.to_string();
    accept(
        "object_storage.py",
        &["--recording", &recording, "--requests", &requests],
    );
}

/// Acceptance of the ClickHouse output (`--sink clickhouse://…`): wrong settings fail fast in
/// one line, l7tap never records its own inserts (either end), a replay into user-made
/// ReplicatedMergeTree tables behind a Distributed table over the two-shard cluster holds as
/// many rows per table as the replay's Parquet, and a capture whose target is frozen for 20 s
/// (a proxy in front of ch1) leaves every `requests` row there exactly once.
#[test]
fn clickhouse_sink_holds_every_row_once_and_never_itself() {
    accept("clickhouse_sink.py", &[]);
}

/// Acceptance of client identity: batch-loader (in a cgroup made for it), dashboard,
/// clickhouse-client and quick-exit (each exits right after its query), a kazoo session and
/// the ClickHouse servers' own remote() and ZooKeeper traffic; `report --format json` shows
/// each client as its own row per server, named by application, with requests and errors
/// equal to what it sent and to `system.query_log` (by query id and by connection port).
#[test]
fn clients_are_told_apart_by_application_and_match_query_log() {
    accept("identity.py", &[]);
}

/// Acceptance of TLS (ClickHouse's secure native ports): Python clickhouse_driver
/// (secure=True: Python's ssl, SSL_*_ex), clickhouse-client --secure (Poco, SSL_read/write),
/// a client with OpenSSL linked in statically (`ci/tls-static-client.sh`) and a Go client
/// (`ci/tls-go-client.sh`: crypto/tls, probed at its RET instructions), some started
/// after the capture began and two connections opened before it; both sides' records
/// equal both servers' `system.query_log` per query_id and outcome, >= 99 % of server-side
/// durations are within 2 ms of `query_duration_ms`, every record of a secure port says
/// tls = true (none of a plaintext port does), and nothing was built from ciphertext or
/// lost.
#[test]
fn tls_records_match_query_log() {
    let built = Command::new("bash")
        .arg(root().join("ci/tls-static-client.sh"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "ci/tls-static-client.sh failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let client = String::from_utf8(built.stdout).unwrap();
    let go_client = go_tls_client();
    accept(
        "tls.py",
        &["--static-client", client.trim(), "--go-client", &go_client],
    );
}

/// Acceptance of ZooKeeper over TLS (the test bed's zktls, secure client port 2281): kazoo
/// with use_ssl=True (Python's ssl, the system's libssl) runs the ZooKeeper workload; its
/// client-side records equal what it sent per op and outcome and the frames it wrote, all
/// say tls = true, the server side (the JVM's own TLS, not hooked) gives no record, nothing
/// is lost and the auth secret reaches no output.
#[test]
fn zookeeper_tls_client_records_match_the_workload() {
    accept("zookeeper_tls.py", &[]);
}

/// Never harm the watched process: TLS clients (Python, clickhouse-client, the Go client)
/// query without pause while captures attach and stop (SIGINT, SIGKILL); every query
/// succeeds with the right answer.
#[test]
fn tls_clients_survive_captures_starting_and_stopping() {
    let go_client = go_tls_client();
    accept("tls.py", &["--mode", "survive", "--go-client", &go_client]);
}

/// Builds the Go crypto/tls client (cached) and returns its path.
fn go_tls_client() -> String {
    let built = Command::new("bash")
        .arg(root().join("ci/tls-go-client.sh"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "ci/tls-go-client.sh failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    String::from_utf8(built.stdout).unwrap().trim().to_string()
}
