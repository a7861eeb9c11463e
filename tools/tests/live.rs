//! Live tests: the real probes against the real servers of `ci/testbed.sh` (ZooKeeper, two
//! ClickHouse servers in a cluster, Redis, nginx, PostgreSQL), driven by the load scripts
//! under `ci/load/`. Needs root; built only with `--features live-tests` (see ci/test.sh).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn l7tap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_l7tap"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn script(path: &str) -> Command {
    let mut c = Command::new(if path.ends_with(".py") {
        "python3"
    } else {
        "bash"
    });
    c.arg(root().join(path)).current_dir(root());
    c
}

/// The flat summary JSON written by `--summary-json`.
fn summary(path: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().trim_end_matches(',').split_once(": ")?;
            Some((k.trim_matches('"').to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn sum_matching(s: &BTreeMap<String, u64>, f: impl Fn(&str) -> bool) -> u64 {
    s.iter().filter(|(k, _)| f(k)).map(|(_, v)| v).sum()
}

struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn background(mut cmd: Command) -> Background {
    Background(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
    )
}

fn wait_for(path: &Path, what: &str) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{what} did not happen in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn live_capture_classifies_real_servers_and_replay_reproduces_it() {
    run(script("ci/testbed.sh").arg("start"));
    run(script("ci/testbed.sh").arg("schema"));
    let dir = tempdir("live");

    // Connections opened before the capture: an idle ClickHouse pool and a ZooKeeper
    // session that keep talking.
    let mut ch_idle = script("ci/load/ch_load.py");
    ch_idle.args(["--persistent-idle", "--clients", "2", "--port", "9000"]);
    let _ch_idle = background(ch_idle);
    let mut zk_idle = script("ci/load/zk_load.py");
    zk_idle.arg("--persistent-idle");
    let _zk_idle = background(zk_idle);
    std::thread::sleep(Duration::from_secs(4));

    let record = dir.join("capture.rec");
    let live_json = dir.join("live.json");
    let ready = dir.join("ready");
    let mut capture = l7tap();
    capture
        .args(["capture", "--duration", "25s", "--out"])
        .arg(dir.join("out"))
        .arg("--record")
        .arg(&record)
        .arg("--summary-json")
        .arg(&live_json)
        .arg("--ready-file")
        .arg(&ready);
    let capture = capture.stderr(Stdio::piped()).spawn().unwrap();
    wait_for(&ready, "the capture's attach");

    let mut others = script("ci/load/other_load.sh");
    others.args(["--duration", "10"]);
    let others = others.spawn().unwrap();
    run(script("ci/load/ch_load.py").args([
        "--queries",
        "300",
        "--clients",
        "4",
        "--port",
        "9000",
        "--mix",
        "mixed",
        "--compression",
        "mixed",
    ]));
    run(script("ci/load/zk_load.py").args(["--ops", "1000", "--inflight", "200"]));
    let others = others.wait_with_output().unwrap();
    assert!(others.status.success(), "other_load.sh failed");

    let out = capture.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "capture failed:\n{log}");
    let live = summary(&live_json);

    // Both protocols, both sides.
    for key in [
        "connections.clickhouse.client",
        "connections.clickhouse.server",
        "connections.zookeeper.client",
        "connections.zookeeper.server",
    ] {
        assert!(live.get(key).copied().unwrap_or(0) > 0, "no {key}:\n{log}");
    }
    // ClickHouse → ZooKeeper (ReplicatedMergeTree) and ClickHouse → ClickHouse
    // (Distributed): clickhouse-server seen as the client.
    assert!(
        live.get("connections.zookeeper.client.comm.clickhouse-serv")
            .copied()
            .unwrap_or(0)
            > 0,
        "no ClickHouse → ZooKeeper connection:\n{log}"
    );
    assert!(
        live.get("connections.clickhouse.client.comm.clickhouse-serv")
            .copied()
            .unwrap_or(0)
            > 0,
        "no ClickHouse → ClickHouse connection:\n{log}"
    );
    // Connections open before the capture are classified from a request mid-stream.
    assert!(
        sum_matching(&live, |k| k.starts_with("connections.clickhouse.")
            && k.ends_with("detected_by.clickhouse_query"))
            > 0,
        "the idle ClickHouse pool was not classified mid-stream:\n{log}"
    );
    assert!(
        sum_matching(&live, |k| k.starts_with("connections.zookeeper.")
            && k.ends_with("detected_by.zookeeper_request"))
            > 0,
        "the idle ZooKeeper session was not classified mid-stream:\n{log}"
    );
    // HTTP, Redis and PostgreSQL ran at the same time and are never classified.
    for port in [8080, 6379, 5432] {
        let n = sum_matching(&live, |k| k.ends_with(&format!(".server_port.{port}")));
        assert_eq!(n, 0, "traffic on port {port} was classified:\n{log}");
    }
    assert!(live["ingest.events"] > 0);

    // Parquet: every table readable, as many request rows as records produced, and the
    // credentials the load used (ClickHouse password, ZooKeeper digest auth) nowhere.
    let out_dir = dir.join("out");
    let counts = run(Command::new("python3").arg("-c").arg(format!(
        "import duckdb\n\
         for t in ['requests', 'intervals', 'capture_stats']:\n\
         \x20   print(duckdb.sql(\"select count(*) from read_parquet('{d}/\" + t + \"/*/*/*.parquet')\").fetchall()[0][0])\n\
         print(duckdb.sql(\"select count(*) - count(distinct window_start) from read_parquet('{d}/capture_stats/*/*/*.parquet') where cpu is null\").fetchall()[0][0])",
        d = out_dir.display()
    )));
    let counts: Vec<u64> = counts.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(counts[0], live["output.requests"], "requests rows");
    assert_eq!(counts[1], live["output.interval_rows"], "intervals rows");
    assert!(counts[2] > 0, "no capture_stats rows");
    assert_eq!(
        counts[2], live["output.capture_stats_rows"],
        "capture_stats rows"
    );
    assert_eq!(counts[3], 0, "windows with more than one machine row");
    run(script("ci/check-no-secrets.py")
        .arg(&out_dir)
        .args(["l7tap-secret-pw", "zk-secret-auth", "--also"])
        .arg(&live_json));

    // The replay of the recording reproduces the live summary exactly.
    let replay_json = dir.join("replay.json");
    run(l7tap()
        .arg("replay")
        .arg(&record)
        .arg("--out")
        .arg(dir.join("replay-out"))
        .arg("--summary-json")
        .arg(&replay_json));
    assert_eq!(summary(&replay_json), live);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `zk_load.py --ops OPS --inflight 50` and returns the path its requests went under.
fn zk_load_run_path(ops: u32) -> String {
    let out =
        run(script("ci/load/zk_load.py").args(["--ops", &ops.to_string(), "--inflight", "50"]));
    out.split("\"run_path\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("zk_load's run_path")
        .to_string()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("l7tap-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two captures at once on one host, each into its own directory, started one after the
/// other: each attaches its own probes and sees every query of the load, on both sides, as
/// if it were alone.
#[test]
fn two_captures_at_once_each_see_every_query() {
    run(script("ci/testbed.sh").arg("start"));
    let dir = tempdir("two-captures");
    let prefix = format!("two-captures-{}", std::process::id());
    let mut captures = Vec::new();
    for name in ["first", "second"] {
        let ready = dir.join(format!("{name}.ready"));
        let mut capture = l7tap();
        capture
            .args([
                "capture",
                "--duration",
                "20s",
                "--protocols",
                "clickhouse,zookeeper",
            ])
            .arg("--out")
            .arg(dir.join(name))
            .arg("--summary-json")
            .arg(dir.join(format!("{name}.json")))
            .arg("--ready-file")
            .arg(&ready);
        captures.push((name, capture.stderr(Stdio::piped()).spawn().unwrap()));
        wait_for(&ready, &format!("the {name} capture's attach"));
    }
    run(script("ci/load/ch_load.py").args([
        "--queries",
        "100",
        "--clients",
        "2",
        "--port",
        "9000",
        "--mix",
        "select1",
        "--query-id-prefix",
        &prefix,
    ]));
    let zk_run_path = zk_load_run_path(300);

    let mut seen = Vec::new();
    for (name, capture) in captures {
        let out = capture.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the {name} capture failed:\n{log}");
        let live = summary(&dir.join(format!("{name}.json")));
        for key in ["kernel.events_failed", "ingest.ring_drops"] {
            assert_eq!(
                live.get(key).copied().unwrap_or(0),
                0,
                "{name}: {key}:\n{log}"
            );
        }
        // Per side: ClickHouse records of the load's query_ids, ZooKeeper records of its
        // paths.
        let counts = run(Command::new("python3").arg("-c").arg(format!(
            "import duckdb\n\
             print(duckdb.sql(\"\"\"select side, protocol, count(*) from read_parquet('{d}/requests/*/*/*.parquet')\n\
               where query_id like '{prefix}-%' or (protocol = 'zookeeper' and query like '{zk}%')\n\
               group by all order by all\"\"\").fetchall())",
            d = dir.join(name).display(),
            zk = zk_run_path,
        )));
        seen.push((name, counts.trim().to_string()));
    }
    for (name, counts) in &seen {
        for side in ["client", "server"] {
            let clickhouse = format!("('{side}', 'clickhouse', 100)");
            assert!(
                counts.contains(&clickhouse),
                "{name}: {counts}, expected {clickhouse}"
            );
            let zookeeper = format!("('{side}', 'zookeeper', ");
            assert!(
                counts.contains(&zookeeper),
                "{name}: no ZooKeeper {side} record: {counts}"
            );
        }
    }
    assert_eq!(
        seen[0].1, seen[1].1,
        "the two captures saw different traffic"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One load captured twice at once, by `l7tap capture --record` and by `tcpdump -i lo -w`
/// on the same ports; both replayed. On the server side, the pcap's replay has the same
/// ClickHouse queries (by query_id) and ZooKeeper requests (by session, xid and path) as
/// the recording's; the latencies differ by the capture point (syscall exit against the
/// packet on the wire), and the test prints by how much.
#[test]
fn a_tcpdump_capture_replays_to_the_same_requests_as_a_live_capture() {
    run(script("ci/testbed.sh").arg("start"));
    let dir = tempdir("pcap");
    let prefix = format!("pcap-{}", std::process::id());
    let pcap = dir.join("lo.pcap");
    let mut tcpdump = Command::new("tcpdump");
    tcpdump
        // A 128 MiB buffer: on a loaded host tcpdump falls behind ClickHouse's large results
        // (its default 2 MiB dropped 5.7 MB of them here).
        .args(["-i", "lo", "-s", "0", "-B", "131072", "-w"])
        .arg(&pcap)
        .args(["tcp port 9000 or tcp port 2181"]);
    let tcpdump = tcpdump
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (bash ci/install-deps.sh installs it)");
    wait_for(&pcap, "tcpdump's start");
    let record = dir.join("capture.rec");
    let ready = dir.join("ready");
    let capture = l7tap()
        .args([
            "capture",
            "--duration",
            "20s",
            "--protocols",
            "clickhouse,zookeeper",
        ])
        .arg("--out")
        .arg(dir.join("live-out"))
        .arg("--record")
        .arg(&record)
        .arg("--ready-file")
        .arg(&ready)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ready, "the capture's attach");
    // Let tcpdump's capture settle too (it writes its file before it listens).
    std::thread::sleep(Duration::from_secs(1));
    run(script("ci/load/ch_load.py").args([
        "--queries",
        "200",
        "--clients",
        "2",
        "--port",
        "9000",
        "--mix",
        "mixed",
        "--query-id-prefix",
        &prefix,
    ]));
    let zk_run_path = zk_load_run_path(500);
    let out = capture.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "capture failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SIGINT: tcpdump writes what it holds and exits.
    run(Command::new("kill")
        .arg("-INT")
        .arg(tcpdump.id().to_string()));
    let dumped = tcpdump.wait_with_output().unwrap();
    assert!(
        dumped.status.success(),
        "tcpdump failed: {}",
        String::from_utf8_lossy(&dumped.stderr)
    );

    for (input, out_dir, json) in [
        (&record, "rec-out", "rec.json"),
        (&pcap, "pcap-out", "pcap.json"),
    ] {
        run(l7tap()
            .arg("replay")
            .arg(input)
            .arg("--out")
            .arg(dir.join(out_dir))
            .arg("--summary-json")
            .arg(dir.join(json)));
    }
    let pcap_summary = summary(&dir.join("pcap.json"));
    assert!(pcap_summary["pcap.connections.classified"] > 0);
    assert_eq!(
        pcap_summary.get("pcap.bytes.lost").copied().unwrap_or(0),
        0,
        "{pcap_summary:?}"
    );

    // Server-side requests of the load, keyed by query_id, or session, xid and path.
    let compare = run(Command::new("python3").arg("-c").arg(format!(
        r#"import duckdb
def load(d, view):
    duckdb.sql(f"""create view {{view}} as select
        case when protocol = 'clickhouse' then query_id
             else printf('%d/%d/%s', zk_session_id, zk_xid, query) end as key,
        protocol, status, duration_ns
      from read_parquet('{{d}}/requests/*/*/*.parquet')
      where side = 'server' and (query_id like '{prefix}-%'
        or (protocol = 'zookeeper' and query like '{zk}%'))""")
load('{rec}', 'rec')
load('{pcap}', 'pcap')
for p in ['clickhouse', 'zookeeper']:
    n_rec = duckdb.sql(f"select count(*), count(distinct key) from rec where protocol = '{{p}}'").fetchall()[0]
    n_pcap = duckdb.sql(f"select count(*), count(distinct key) from pcap where protocol = '{{p}}'").fetchall()[0]
    # As multisets: watch notifications (xid -1) and pings (xid -2) repeat a key.
    def grouped(v):
        return f"select key, status, count(*) from {{v}} where protocol = '{{p}}' group by all"
    only = duckdb.sql(f"select count(*) from ({{grouped('rec')}} except {{grouped('pcap')}})").fetchall()[0][0]
    only_pcap = duckdb.sql(f"select count(*) from ({{grouped('pcap')}} except {{grouped('rec')}})").fetchall()[0][0]
    d = duckdb.sql(f"""select median(p.duration_ns - r.duration_ns), quantile_cont(abs(p.duration_ns - r.duration_ns), 0.9),
        max(abs(p.duration_ns - r.duration_ns)), median(r.duration_ns)
      from rec r join pcap p using (key) where r.protocol = '{{p}}'
        and key in (select key from rec group by key having count(*) = 1)""").fetchall()[0]
    print(p, n_rec[0], n_rec[1], n_pcap[0], n_pcap[1], only, only_pcap, *[int(x) for x in d])
"#,
        rec = dir.join("rec-out").display(),
        pcap = dir.join("pcap-out").display(),
        zk = zk_run_path,
    )));
    eprintln!("protocol, rows and keys in the recording's replay, in the pcap's, (key, status, count) only in one or the other, latency pcap - live of unique keys (ns): median, p90 of |diff|, max |diff|, live median");
    eprintln!("{compare}");
    for line in compare.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n: Vec<i64> = f[1..].iter().map(|x| x.parse().unwrap()).collect();
        assert!(n[0] > 0, "{line}");
        assert_eq!(
            (n[2], n[3]),
            (n[0], n[1]),
            "{}: the pcap's replay differs: {line}",
            f[0]
        );
        assert_eq!(
            (n[4], n[5]),
            (0, 0),
            "{}: requests in one replay only: {line}",
            f[0]
        );
    }
    assert!(compare.contains("clickhouse 200 200 "), "{compare}");
    let _ = std::fs::remove_dir_all(&dir);
}
