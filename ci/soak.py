#!/usr/bin/env python3
"""Soak: one long capture of steady test-bed load; l7tap's memory must level off and its
counts must equal the servers' own view. Not run in CI (it takes an hour by default).

    bash ci/testbed.sh start && bash ci/testbed.sh schema
    cargo build --release -p l7tap
    python3 ci/soak.py --l7tap target/release/l7tap --workdir /tmp/l7tap-soak [--minutes 60]

Load, for the whole run, started after the capture and stopped before it:
  - ClickHouse native: `ch_load.py --persistent-idle`, --ch-clients connections, one query
    each per --interval (a query_id prefix of its own);
  - ZooKeeper: `zk_load.py --persistent-idle`, --zk-clients sessions, one getData of
    `/zookeeper` each per --interval.
Both run as the process name `l7tap-soak-load` (Python started through a link of that
name), and the capture keeps only that name's connections (`--comm`): whatever else uses
the test bed meanwhile (tests, benchmarks) changes neither the load l7tap sees nor its
memory. So the records checked are the clients' side.

Checks:
  1. the capture's resident memory (VmRSS, sampled every minute) grows by at most 5 % from
     minute 10 to the last minute. The sink holds each Parquet file's rows until the file
     rolls (every 5 min by default), so RSS is a saw-tooth of that period: each point is the
     largest sample of the --roll-minutes up to it (minutes 6-10 against the last five);
  2. ClickHouse: the client-side records of the load's query_ids equal the final
     `system.query_log` rows of that prefix on ch1 (count and error count);
  3. ZooKeeper: the client-side getData records of `/zookeeper` equal the getData
     requests the load sent (l7tap's own count, the load's count);
  4. no event was lost (kernel, rings); parser errors and resyncs are reported.

Prints one line per minute (RSS, events) and writes `soak.json` in the workdir.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "accept"))
import duckdb  # noqa: E402

from common import ROOT, Capture, verdict  # noqa: E402

RSS_GROWTH_LIMIT = 0.05
LOAD_NAME = "l7tap-soak-load"  # 15 bytes: the kernel's comm keeps all of it


def memory_kib(pid):
    """VmRSS, and its parts: RssAnon (the process's own memory) and RssFile (pages of its
    binary and libraries it has touched so far), KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                fields[name] = int(value.split()[0])
    if len(fields) != 3:
        raise RuntimeError(f"no VmRSS/RssAnon/RssFile for {pid}")
    return fields


def ch(port, sql):
    out = subprocess.run(["clickhouse-client", "--port", str(port), "--query", sql],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--l7tap", default=f"{ROOT}/target/release/l7tap")
    ap.add_argument("--workdir", default="/tmp/l7tap-soak")
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--baseline-minute", type=int, default=10,
                    help="the minute whose RSS later minutes are compared with")
    ap.add_argument("--ch-clients", type=int, default=4)
    ap.add_argument("--zk-clients", type=int, default=4)
    ap.add_argument("--roll-minutes", type=int, default=5,
                    help="the capture's --roll-age, and the period each RSS point covers")
    ap.add_argument("--interval", type=float, default=0.05,
                    help="seconds between two requests of one connection")
    args = ap.parse_args()
    if args.minutes <= args.baseline_minute:
        sys.exit(f"--minutes must exceed --baseline-minute ({args.baseline_minute})")

    os.makedirs(args.workdir, exist_ok=True)
    python = os.path.join(args.workdir, LOAD_NAME)
    if os.path.lexists(python):
        os.remove(python)
    os.symlink(sys.executable, python)
    capture = Capture(args.l7tap, args.workdir, ["--protocols", "clickhouse,zookeeper",
                                                 "--comm", LOAD_NAME,
                                                 "--roll-age", f"{args.roll_minutes}m"])
    load_seconds = args.minutes * 60
    prefix = f"soak-{os.getpid()}-{int(time.time())}"
    ch_out = open(f"{args.workdir}/ch_load.json", "w")
    zk_out = open(f"{args.workdir}/zk_load.json", "w")
    loads = [
        subprocess.Popen([python, f"{ROOT}/ci/load/ch_load.py", "--persistent-idle",
                          "--clients", str(args.ch_clients), "--interval", str(args.interval),
                          "--duration", str(load_seconds), "--query-id-prefix", prefix],
                         stdout=ch_out),
        subprocess.Popen([python, f"{ROOT}/ci/load/zk_load.py", "--persistent-idle",
                          "--clients", str(args.zk_clients), "--interval", str(args.interval),
                          "--duration", str(load_seconds)],
                         stdout=zk_out),
    ]
    samples = []  # (minute, VmRSS KiB)
    parts = []  # (minute, RssAnon KiB, RssFile KiB)
    started = time.monotonic()
    try:
        for minute in range(1, args.minutes + 1):
            time.sleep(max(0.0, started + minute * 60 - time.monotonic()))
            if capture.process.poll() is not None:
                raise RuntimeError("the capture ended early: " + capture.log()[-2000:])
            memory = memory_kib(capture.pid)
            samples.append((minute, memory["VmRSS"]))
            parts.append((minute, memory["RssAnon"], memory["RssFile"]))
            print(f"soak: minute {minute}: l7tap RSS {memory['VmRSS'] / 1024:.1f} MiB (anon "
                  f"{memory['RssAnon'] / 1024:.1f}, file {memory['RssFile'] / 1024:.1f})",
                  flush=True)
    except BaseException as e:
        for load in loads:
            load.send_signal(signal.SIGTERM)
        capture.abandon(f"soak interrupted: {e!r}")
    for load in loads:
        if load.wait(timeout=120) != 0:
            capture.abandon(f"a load failed (exit {load.returncode})")
    ch(9000, "SYSTEM FLUSH LOGS")
    time.sleep(1)  # the last answers reach the actors
    capture.stop()

    failures = []
    def level(minute):  # the largest sample of the roll period up to `minute`
        return max(rss for m, rss in samples if minute - args.roll_minutes < m <= minute)

    base, last = level(args.baseline_minute), level(samples[-1][0])
    growth = (last - base) / base
    print(f"soak: RSS by minute {args.baseline_minute} {base / 1024:.1f} MiB, by minute "
          f"{samples[-1][0]} {last / 1024:.1f} MiB: {100 * growth:+.2f} % "
          f"(limit +{100 * RSS_GROWTH_LIMIT:g} %)")
    if growth > RSS_GROWTH_LIMIT:
        failures.append(f"RSS grew {100 * growth:.2f} % from minute {args.baseline_minute}")

    requests = f"read_parquet('{capture.out_dir}/requests/*/*/*.parquet')"
    (records, record_errors), = duckdb.sql(f"""
        SELECT count(*), count(*) FILTER (WHERE status = 'error') FROM {requests}
        WHERE protocol = 'clickhouse' AND side = 'client' AND query_id LIKE '{prefix}-%'""").fetchall()
    (rows, row_errors), = [tuple(map(int, r)) for r in ch(9000, f"""
        SELECT count(), countIf(type != 2) FROM system.query_log
        WHERE type IN (2, 3, 4) AND event_date >= yesterday() AND query_id LIKE '{prefix}-%'""")]
    print(f"soak: clickhouse: {records} client records ({record_errors} errors), query_log "
          f"{rows} rows ({row_errors} errors)")
    if (records, record_errors) != (rows, row_errors):
        failures.append(f"clickhouse records {records}/{record_errors} != query_log {rows}/{row_errors}")

    zk_sent = json.load(open(f"{args.workdir}/zk_load.json"))["requests"]["by_op"].get("getData", 0)
    (zk_records,), = duckdb.sql(f"""
        SELECT count(*) FROM {requests}
        WHERE protocol = 'zookeeper' AND side = 'client' AND operation = 'getData'
          AND query = '/zookeeper'""").fetchall()
    print(f"soak: zookeeper: {zk_records} client getData records of /zookeeper, the load sent "
          f"{zk_sent}")
    if zk_records != zk_sent:
        failures.append(f"zookeeper getData records {zk_records} != sent {zk_sent}")

    summary = json.load(open(capture.summary_path))
    lost = {k: v for k, v in summary.items()
            if k in ("kernel.events_failed", "ingest.ring_drops") and v}
    if lost:
        failures.append(f"events were lost: {lost}")
    # Connections open before the capture (ClickHouse's own pools and ZooKeeper session) are
    # joined mid-stream, where a resync is how a parser finds its place: reported, not failed.
    trouble = {k: v for k, v in summary.items() if k.startswith("parse.") and v
               and k.rsplit(".", 1)[1] in ("errors", "resyncs", "resync_bytes")}
    print(f"soak: parser counters: {trouble or 'no errors or resyncs'}")
    json.dump({"minutes": args.minutes, "rss_kib_by_minute": samples,
               "anon_and_file_kib_by_minute": parts,
               "rss_growth": growth, "clickhouse": {"records": records, "query_log": rows},
               "zookeeper": {"records": zk_records, "sent": zk_sent}, "lost": lost,
               "parser_counters": trouble},
              open(f"{args.workdir}/soak.json", "w"), indent=2)
    verdict(failures, f"soak: {args.minutes} min, RSS {100 * growth:+.2f} %, counts equal")


if __name__ == "__main__":
    main()
