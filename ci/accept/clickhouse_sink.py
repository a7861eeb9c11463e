#!/usr/bin/env python3
"""Acceptance of the ClickHouse output (`--sink clickhouse://HOST:PORT/DATABASE`) against the
test bed's two ClickHouse 18.16 servers, run by tools/tests/accept.rs:

    python3 ci/accept/clickhouse_sink.py --l7tap BIN --workdir DIR

* fail fast: an unreachable server, a missing database, a wrong password and a read-only user
  are each one line and exit status 1, before the probes load; the password never reaches
  stderr;
* created tables, and never itself: a live capture writes into a scratch database on ch1
  (8123), where l7tap creates MergeTree tables; ch1's query_log shows its inserts (and their
  client ports), and no row of the capture is one of them, on either end (the server end is
  ClickHouse's, whose peer is l7tap);
* a fault: tables made by the user, ReplicatedMergeTree on both shards (`l7tap_cluster`: ch1
  and ch2) behind a Distributed table on ch1, reached through a small TCP proxy in front of
  ch1's HTTP port; the proxy is frozen (SIGSTOP) for 20 s in the middle of a live capture with
  --record, then resumed; afterwards the `requests` rows through the Distributed table are the
  rows of a replay of the capture's recording to Parquet, none twice, and `intervals` has as
  many;
* the cluster: that recording replayed into another such cluster database: `count()` of each
  of the three tables through the Distributed table equals the replay's Parquet.

Why a proxy and not the server: freezing ch1 itself would stall every other client of the
test bed for 20 s; a frozen proxy is the same fault seen from l7tap (connections accepted by
the kernel, requests buffered, no answer: the insert times out and is retried), and the
requests it held reach ch1 when it resumes, so ch1 receives the same block twice, which the
Replicated tables must deduplicate.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from common import Capture, verdict

CH1_HTTP, CH1_TCP, CH2_TCP = 8123, 9000, 9001
PASSWORD, READER, READER_PASSWORD = "l7tap-secret-pw", "l7tap_reader", "l7tap-reader-pw"
TABLES = ("requests", "intervals", "capture_stats")
# Deterministic sharding keys: a retried block must split across shards the same way.
SHARDING = {
    "requests": "cityHash64(ts_us, client_addr, server_addr)",
    "intervals": "cityHash64(window_start_us, client_addr, server_addr, operation)",
    "capture_stats": "cityHash64(window_start_us, ifNull(cpu, -1))",
}
ORDER = {
    "requests": "(protocol, server_addr, ts)",
    "intervals": "(protocol, server_addr, window_start)",
    "capture_stats": "(window_start)",
}
failures = []


STARTED = time.time()


def say(message):
    print(f"[{time.time() - STARTED:5.1f}s] {message}", flush=True)


def fail(message):
    print("FAIL:", message, flush=True)
    failures.append(message)


def ch(port, query):
    from clickhouse_driver import Client
    return Client("127.0.0.1", port=port).execute(query)


def env_with(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("L7TAP_CLICKHOUSE")}
    env.update(extra)
    return env


def fail_fast(args, scratch):
    cases = [
        ("unreachable", f"clickhouse://127.0.0.1:1/{scratch}", {}, "unreachable"),
        ("missing database", f"clickhouse://127.0.0.1:{CH1_HTTP}/l7tap_no_such_db", {},
         "does not exist"),
        ("bad password", f"clickhouse://l7tap@127.0.0.1:{CH1_HTTP}/{scratch}",
         {"L7TAP_CLICKHOUSE_PASSWORD": "not-" + PASSWORD}, "credentials were refused"),
        ("read-only user", f"clickhouse://{READER}@127.0.0.1:{CH1_HTTP}/{scratch}",
         {"L7TAP_CLICKHOUSE_PASSWORD": READER_PASSWORD}, "may not write"),
    ]
    for name, url, extra, expected in cases:
        started = time.time()
        done = subprocess.run(
            [args.l7tap, "capture", "--duration", "1s", "--sink", url,
             "--spool", f"{args.workdir}/spool-fail"],
            env=env_with(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=60)
        lines = done.stderr.strip().splitlines()
        if done.returncode != 1 or len(lines) != 1 or expected not in lines[0]:
            fail(f"fail fast, {name}: exit {done.returncode}, stderr {done.stderr!r}")
        elif "attached" in done.stderr or time.time() - started > 15:
            fail(f"fail fast, {name}: not before the probes loaded ({done.stderr!r})")
        else:
            say(f"fail fast, {name}: {lines[0]}")
        for secret in (PASSWORD, READER_PASSWORD):
            if secret in done.stderr or secret in done.stdout:
                fail(f"fail fast, {name}: a password reached the output")
    # The password comes from a file too; a password in the URL is refused without repeating it.
    with open(f"{args.workdir}/password", "w") as f:
        f.write("wrong-" + PASSWORD + "\n")
    done = subprocess.run(
        [args.l7tap, "capture", "--duration", "1s", "--sink",
         f"clickhouse://l7tap@127.0.0.1:{CH1_HTTP}/{scratch}"],
        env=env_with(L7TAP_CLICKHOUSE_PASSWORD_FILE=f"{args.workdir}/password"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if done.returncode != 1 or "credentials were refused" not in done.stderr:
        fail(f"password file: exit {done.returncode}, {done.stderr!r}")
    done = subprocess.run(
        [args.l7tap, "capture", "--sink", f"clickhouse://l7tap:{PASSWORD}@127.0.0.1:8123/x"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if done.returncode == 0 or PASSWORD in done.stderr:
        fail(f"a password in the URL: exit {done.returncode}, {done.stderr!r}")


def workload(stop, port, counter):
    """ClickHouse queries until `stop` is set, a few per second."""
    from clickhouse_driver import Client
    client = Client("127.0.0.1", port=port, client_name="sink-accept")
    while not stop.is_set():
        client.execute("SELECT count() FROM system.one")
        counter[0] += 1
        time.sleep(0.05)


def with_workload(seconds, during=None):
    stop, counter = threading.Event(), [0]
    thread = threading.Thread(target=workload, args=(stop, CH2_TCP, counter), daemon=True)
    thread.start()
    if during:
        during()
    else:
        time.sleep(seconds)
    stop.set()
    thread.join()
    return counter[0]


def never_itself(args, scratch):
    """A live capture into tables l7tap creates: none of its own inserts is a record."""
    started = time.time()
    capture = Capture(args.l7tap, f"{args.workdir}/self",
                      ["--spool", f"{args.workdir}/spool-self"],
                      out=f"clickhouse://127.0.0.1:{CH1_HTTP}/{scratch}")
    queries = with_workload(6)
    capture.stop()
    for table in TABLES:
        engine = ch(CH1_TCP, f"SELECT engine FROM system.tables WHERE database = '{scratch}' "
                             f"AND name = '{table}'")
        if engine != [("MergeTree",)]:
            fail(f"created tables: {scratch}.{table} is {engine}")
    ch(CH1_TCP, "SYSTEM FLUSH LOGS")
    inserts = ch(CH1_TCP, f"""
        SELECT DISTINCT port FROM system.query_log
        WHERE type = 2 AND interface = 2 AND query LIKE 'INSERT INTO `{scratch}`.%'
          AND event_time >= toDateTime({int(started) - 1})""")
    ports = [p for (p,) in inserts]
    rows = ch(CH1_TCP, f"SELECT count() FROM {scratch}.requests")[0][0]
    own = ch(CH1_TCP, f"SELECT count() FROM {scratch}.requests WHERE query LIKE '%`{scratch}`%'")
    by_port = ch(CH1_TCP, f"""
        SELECT count() FROM {scratch}.requests
        WHERE toUInt16(extract(client_addr, ':(\\\\d+)$')) IN ({','.join(map(str, ports)) or '0'})
          AND server_addr LIKE '%:{CH1_HTTP}'""")
    say(f"never itself: {len(ports)} insert connections of l7tap in ch1's query_log, "
          f"{rows} requests rows ({queries} workload queries), {own[0][0]} of l7tap's inserts, "
          f"{by_port[0][0]} rows on l7tap's connections")
    if len(ports) < 3:
        fail(f"never itself: only {len(ports)} inserts of l7tap in query_log")
    if own[0][0] or by_port[0][0]:
        fail("never itself: l7tap captured its own inserts")
    if rows < queries:
        fail(f"never itself: {rows} requests rows for {queries} workload queries")


class Proxy:
    """A TCP proxy 127.0.0.1:PORT -> ch1's HTTP port, in a process of its own (frozen with
    SIGSTOP as a server would be)."""

    CODE = r"""
import socket, sys, threading
listener = socket.socket(); listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0)); listener.listen(128)
print(listener.getsockname()[1], flush=True)
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    client, _ = listener.accept()
    server = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    threading.Thread(target=pipe, args=(client, server), daemon=True).start()
    threading.Thread(target=pipe, args=(server, client), daemon=True).start()
"""

    def __init__(self, target):
        self.process = subprocess.Popen([sys.executable, "-c", self.CODE, str(target)],
                                        stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())

    def stop(self):
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait()


def make_cluster_tables(database, scratch):
    """ReplicatedMergeTree tables on both shards, of the structure l7tap created in `scratch`,
    and a Distributed table over them on ch1."""
    for port in (CH1_TCP, CH2_TCP):
        ch(port, f"CREATE DATABASE IF NOT EXISTS {database}")
    for table in TABLES:
        for port in (CH1_TCP, CH2_TCP):
            # The structure comes from ch1's scratch table (DESCRIBE keeps Nested columns).
            columns = ", ".join(f"`{name}` {kind}" for name, kind, *_ in
                                ch(CH1_TCP, f"DESCRIBE TABLE {scratch}.{table}"))
            time_column = "ts" if table == "requests" else "window_start"
            ch(port, f"""CREATE TABLE {database}.{table}_local ({columns})
                ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{database}/{table}',
                                             '{{replica}}')
                PARTITION BY toDate({time_column}) ORDER BY {ORDER[table]}""")
        ch(CH1_TCP, f"""CREATE TABLE {database}.{table} AS {database}.{table}_local
            ENGINE = Distributed(l7tap_cluster, {database}, {table}_local, {SHARDING[table]})""")


def parquet_rows(out_dir, table, columns=None):
    import pyarrow.dataset as ds
    path = f"{out_dir}/{table}"
    if not os.path.isdir(path):
        return 0 if columns is None else []
    dataset = ds.dataset(path, format="parquet")
    if columns is None:
        return dataset.count_rows()
    return dataset.to_table(columns=columns).to_pylist()


def distributed_counts(database, expected):
    """count() per table through the Distributed table once each holds its expected count (it
    forwards blocks to the other shard in the background; 60 s at most), and per shard."""
    deadline, counts = time.time() + 60, {}
    while time.time() < deadline:
        counts = {t: ch(CH1_TCP, f"SELECT count() FROM {database}.{t}")[0][0] for t in TABLES}
        if counts == expected:
            break
        time.sleep(1)
    per_shard = {t: (ch(CH1_TCP, f"SELECT count() FROM {database}.{t}_local")[0][0],
                     ch(CH2_TCP, f"SELECT count() FROM {database}.{t}_local")[0][0])
                 for t in TABLES}
    return counts, per_shard


def cluster_counts(args, database, recording, replayed):
    """A replay of the recording into the cluster: count() per table equals its Parquet."""
    done = subprocess.run(
        [args.l7tap, "replay", recording, "--sink", f"clickhouse://127.0.0.1:{CH1_HTTP}/{database}",
         "--spool", f"{args.workdir}/spool-replay"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if done.returncode != 0:
        fail("replay into the cluster failed: " + done.stderr[-2000:])
        return
    expected = {table: parquet_rows(replayed, table) for table in TABLES}
    counts, per_shard = distributed_counts(database, expected)
    say(f"cluster: a replay's count() through the Distributed table {counts}, its Parquet "
          f"{expected}, per shard (ch1, ch2) {per_shard}")
    if counts != expected:
        fail(f"cluster: counts {counts} != the replay's Parquet {expected}")
    if any(0 in pair for pair in per_shard.values()):
        fail(f"cluster: a shard holds no rows of a table: {per_shard}")


def deduplicated_blocks(database, offsets):
    """Blocks of `database` the servers logged as already there since `offsets` (log level
    information, as the test bed starts them)."""
    found = 0
    for path, offset in offsets.items():
        with open(path, "rb") as f:
            f.seek(offset)
            found += sum(1 for line in f
                         if database.encode() in line and b"already exists; ignoring" in line)
    return found


def cluster_and_fault(args, database):
    testbed = os.environ.get("L7TAP_TESTBED_DIR", "/tmp/l7tap-testbed")
    logs = [f"{testbed}/{n}/log/clickhouse-server.log" for n in ("ch1", "ch2")]
    offsets = {path: os.path.getsize(path) for path in logs if os.path.exists(path)}
    proxy = Proxy(CH1_HTTP)
    recording = f"{args.workdir}/fault.rec"
    capture = Capture(args.l7tap, f"{args.workdir}/fault",
                      ["--spool", f"{args.workdir}/spool-fault", "--record", recording],
                      out=f"clickhouse://127.0.0.1:{proxy.port}/{database}")
    frozen = {}

    def freeze():
        time.sleep(3)
        os.kill(proxy.process.pid, signal.SIGSTOP)
        frozen["at"] = time.time()
        time.sleep(20)
        os.kill(proxy.process.pid, signal.SIGCONT)
        frozen["for"] = time.time() - frozen["at"]
        time.sleep(4)

    try:
        queries = with_workload(0, during=freeze)
        capture.stop()
        say("fault: capture stopped")
    finally:
        proxy.stop()
    log = capture.log()
    retried = len(re.findall(r"failed \(\d+ attempts\)", log))
    say(f"fault: proxy frozen {frozen.get('for', 0):.0f} s, {queries} workload queries, "
          f"{retried} insert failures said on stderr")
    if "goes through again" not in log:
        fail("fault: the capture never said its inserts went through again:\n" + log[-3000:])
    replayed = f"{args.workdir}/replayed"
    shutil.rmtree(replayed, ignore_errors=True)
    done = subprocess.run([args.l7tap, "replay", recording, "--out", replayed],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if done.returncode != 0:
        fail("replay failed: " + done.stderr[-2000:])
        return None
    expected = {table: parquet_rows(replayed, table) for table in TABLES}
    # capture_stats rows count what the live run itself did (the uploader's failed attempts, in
    # a machine row of their own at the end when they came last), which a replay into a
    # directory does not: the live capture's own count is their oracle.
    written = json.load(open(capture.summary_path))["output.capture_stats_rows"]
    counts, per_shard = distributed_counts(database, dict(expected, capture_stats=written))
    say(f"fault: count() through the Distributed table {counts}, Parquet of the replay "
          f"{expected}, capture_stats rows the capture wrote {written}, per shard (ch1, ch2) "
          f"{per_shard}")
    for table in ("requests", "intervals"):
        if counts[table] != expected[table]:
            fail(f"fault: {table}: {counts[table]} rows, the replay's Parquet has {expected[table]}")
    if counts["capture_stats"] != written:
        fail(f"fault: capture_stats: {counts['capture_stats']} rows, the capture wrote {written}")
    key = ["ts", "duration_ns", "side", "client_addr", "server_addr", "operation", "status"]
    in_parquet = sorted(
        (int(r["ts"].timestamp() * 1_000_000), r["duration_ns"], r["side"], r["client_addr"],
         r["server_addr"], r["operation"], r["status"])
        for r in parquet_rows(replayed, "requests", key))
    in_clickhouse = sorted(ch(CH1_TCP, f"""
        SELECT ts_us, duration_ns, side, client_addr, server_addr, operation, status
        FROM {database}.requests"""))
    if in_parquet != in_clickhouse:
        extra = len(set(in_clickhouse) - set(in_parquet))
        missing = len(set(in_parquet) - set(in_clickhouse))
        fail(f"fault: requests rows differ from the replay's: {missing} missing, {extra} "
             f"unexpected, {len(in_clickhouse) - len(set(in_clickhouse))} repeated")
    else:
        say(f"fault: the {len(in_parquet)} requests rows equal the replay's, none twice "
            f"({deduplicated_blocks(database, offsets)} blocks sent again were deduplicated "
            "by the Replicated tables)")
    return recording, replayed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--l7tap", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    suffix = f"{os.getpid()}_{int(time.time())}"
    scratch, database = f"l7tap_sink_scratch_{suffix}", f"l7tap_sink_{suffix}"
    replay_database = f"l7tap_sink_replay_{suffix}"
    ch(CH1_TCP, f"CREATE DATABASE {scratch}")
    try:
        fail_fast(args, scratch)
        never_itself(args, scratch)
        make_cluster_tables(database, scratch)
        outputs = cluster_and_fault(args, database)
        if outputs:
            make_cluster_tables(replay_database, scratch)
            cluster_counts(args, replay_database, *outputs)
    finally:
        for db in (database, replay_database):
            for port in (CH1_TCP, CH2_TCP):
                for table in TABLES:
                    for name in (table, f"{table}_local"):
                        ch(port, f"DROP TABLE IF EXISTS {db}.{name}")
                ch(port, f"DROP DATABASE IF EXISTS {db}")
        ch(CH1_TCP, f"DROP DATABASE IF EXISTS {scratch}")
    verdict(failures, "ClickHouse sink: fail fast, never itself, cluster counts and fault ok")


if __name__ == "__main__":
    main()
