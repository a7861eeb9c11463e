#!/usr/bin/env python3
"""TLS acceptance check against the real test bed (issue 15): ClickHouse's secure native
ports (ch1 9440, ch2 9441), plaintext read from OpenSSL by uprobes.

`records` (the default) captures while these clients query both secure ports, each query
with its own query_id:
  - two Python clickhouse_driver connections (secure=True, verify=False: Python's ssl
    module, which calls SSL_read_ex/SSL_write_ex), opened and used BEFORE the capture
    starts, and used again while it runs (a capture started on open TLS connections);
  - Python clients started after the capture began (new processes, new connections);
  - clickhouse-client --secure (Poco and OpenSSL's SSL_read/SSL_write), one process per
    query, all started after the capture began;
  - the statically linked OpenSSL client ci/tls-static-client.sh builds, when given
    (--static-client: its own copy of SSL_read/SSL_write, found in its symbol table);
  - the Go client ci/tls-go-client.sh builds, when given (--go-client: Go's crypto/tls,
    read at crypto/tls.(*Conn).Write/Read's entry and RET instructions); its records, both
    sides, one per query_id, are checked on their own too;
a share of the queries fail (code 60). Then, against each server's system.query_log:
  1. server-side records on the secure ports equal query_log's final rows, one per
     query_id, with the same status and code; client-side records too (both ends are
     hooked), one per query_id;
  2. >= 99 % of server-side durations are within 2 ms of query_duration_ms;
  3. every record on a secure port says tls = true;
  4. nothing was built from ciphertext: no record on a secure port without one of our
     query_ids, no ClickHouse resync or garbage, no TLS plaintext lost, no event lost.

`survive` starts and stops captures (SIGINT, then SIGKILL) while TLS clients query without
pause (with --go-client, the Go client too), the captures attaching to and detaching from
the libraries the clients use; every query of every client must succeed with the right
answer.

    ci/accept/tls.py --l7tap target/release/l7tap --workdir /tmp/tls-accept [--mode survive]
"""
import argparse, collections, json, os, signal, subprocess, sys, threading, time, uuid

import duckdb
from clickhouse_driver import Client

from clickhouse import processed_in
from common import Capture, verdict

TLS_PORTS = {9440: "ch1", 9441: "ch2"}
PLAIN_PORTS = {9000: "ch1", 9001: "ch2"}
TESTBED = os.environ.get("L7TAP_TESTBED_DIR", "/tmp/l7tap-testbed")
CLIENT_CONFIG = f"{TESTBED}/client-tls.xml"
TOLERANCE_MS = 2.0
WITHIN_GOAL = 0.99
STATUS_OF_TYPE = {2: "ok", 3: "error", 4: "error"}
STATIC_START_DELAY_MS = 2500
GO_CLIENT_COMM = "tls-go-client"


def sql_of(i, compressed):
    """The i-th query of a client: mostly small SELECTs, a larger result, a failure. The
    larger result has 20,000 rows (~280 KB) on compressed connections and 1,000 (~13 KB) on
    uncompressed ones: a server write larger than the capture limit (16 KiB) is cut, and an
    uncompressed Data block has no length the parser could skip the cut by (a resync, as
    over plaintext)."""
    if i % 10 == 3:
        return "SELECT * FROM l7tap.no_such_table"  # code 60
    if i % 10 == 7:
        rows = 20000 if compressed else 1000
        return f"SELECT number, toString(number) FROM system.numbers LIMIT {rows}"
    return f"SELECT {i}, 'tls'"


def run_query(client, sql, query_id):
    """Runs one query; returns 'ok' or the error code."""
    try:
        client.execute(sql, query_id=query_id)
        return "ok"
    except Exception as e:  # clickhouse_driver.errors.ServerException carries .code
        code = getattr(e, "code", None)
        if code is None:
            raise
        return code


def python_client(port, prefix, n):
    """A client process of its own: n queries on one secure, compressed connection."""
    client = Client("127.0.0.1", port=port, secure=True, verify=False, compression="lz4")
    out = collections.Counter()
    for i in range(n):
        out[str(run_query(client, sql_of(i, True), f"{prefix}-{i}"))] += 1
    client.disconnect()
    print(json.dumps(out))


def cli_query(port, sql, query_id):
    p = subprocess.run(["clickhouse-client", "--host", "127.0.0.1", "--port", str(port), "--secure",
                        "--config-file", CLIENT_CONFIG, "--query_id", query_id, "--query", sql],
                       capture_output=True, text=True)
    if p.returncode == 0:
        return "ok"
    if "Code: 60" in p.stderr:
        return 60
    raise RuntimeError(f"clickhouse-client failed: {p.stderr[-500:]}")


def ch(port, sql):
    res = subprocess.run(["clickhouse-client", "--port", str(port), "--query", sql],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in res.splitlines() if line]


def query_log(port, prefix):
    rows = ch(port, f"""
        SELECT type, query_id, query_duration_ms, extract(exception, '^Code: ([0-9]+)')
        FROM system.query_log
        WHERE type IN (2, 3, 4) AND event_date >= yesterday() AND query_id LIKE '{prefix}-%'""")
    return [{"type": int(r[0]), "query_id": r[1], "ms": int(r[2]),
             "code": int(r[3]) if r[3] else None} for r in rows]


def records(args):
    prefix = f"tls{uuid.uuid4().hex[:8]}"
    failures = []
    # Connections open before the capture, with a query each (not captured).
    early = {port: Client("127.0.0.1", port=port, secure=True, verify=False) for port in TLS_PORTS}
    for port, client in early.items():
        client.execute("SELECT 'before the capture'", query_id=f"{prefix}-before-{port}")
    # Only the secure ports' connections: the parse counters below are then theirs alone
    # (other jobs may query the plaintext ports meanwhile).
    capture = Capture(args.l7tap, args.workdir, ["--protocols", "clickhouse", "--port",
                                                 ",".join(map(str, TLS_PORTS))]
                      + (["--record", args.record] if args.record else []))
    logs = {port: f"{TESTBED}/{name}/log/clickhouse-server.log" for port, name in TLS_PORTS.items()}
    offsets = {port: os.path.getsize(path) if os.path.exists(path) else 0 for port, path in logs.items()}
    sent = collections.Counter()
    started = time.time()
    # Python clients started after the capture began.
    procs = []
    for port in TLS_PORTS:
        for k in range(args.python_clients):
            procs.append(subprocess.Popen([sys.executable, __file__, "--client", str(port),
                                           f"{prefix}-py{port}x{k}", str(args.queries)],
                                          stdout=subprocess.PIPE, text=True))
    # The early connections, and clickhouse-client processes, meanwhile.
    for i in range(args.queries):
        for port, client in early.items():
            sent[("early", run_query(client, sql_of(i, False), f"{prefix}-early{port}-{i}"))] += 1
    for i in range(args.cli_queries):
        for port in TLS_PORTS:  # clickhouse-client compresses (lz4) by default
            sent[("clickhouse-client", cli_query(port, sql_of(i, True), f"{prefix}-cli{port}-{i}"))] += 1
    if args.static_client:
        # A new executable is found by the capture's next scan of /proc (every second): the
        # client waits STATIC_START_DELAY_S before it connects (its own TLS functions are
        # not attached before that scan).
        static = [subprocess.Popen([args.static_client, "127.0.0.1", str(port), f"{prefix}-static{port}",
                                    str(args.queries), str(STATIC_START_DELAY_MS)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for port in TLS_PORTS]
        for port, p in zip(TLS_PORTS, static):
            out, err = p.communicate()
            if p.returncode != 0:
                failures.append(f"static client on {port} failed: {err[-300:]}")
            else:
                for k, v in json.loads(out).items():
                    sent[("static", k)] += v
    if args.go_client:
        # Like the static client: a new executable, found by the capture's next scan.
        go = [subprocess.Popen([args.go_client, "127.0.0.1", str(port), f"{prefix}-go{port}",
                                str(args.queries), str(STATIC_START_DELAY_MS)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for port in TLS_PORTS]
        for port, p in zip(TLS_PORTS, go):
            out, err = p.communicate()
            if p.returncode != 0:
                failures.append(f"Go client on {port} failed: {err[-300:]}")
            else:
                for k, v in json.loads(out).items():
                    sent[("go", k)] += v
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            capture.abandon(f"a Python client failed ({p.returncode})")
        for k, v in json.loads(out).items():
            sent[("python", k)] += v
    elapsed = time.time() - started
    for port in TLS_PORTS:
        ch(next(p for p, n in PLAIN_PORTS.items() if n == TLS_PORTS[port]), "SYSTEM FLUSH LOGS")
    time.sleep(1)
    capture.stop()
    for client in early.values():
        client.disconnect()
    print(f"workload {prefix}: {sum(sent.values())} queries in {elapsed:.1f} s (load average "
          f"{os.getloadavg()[0]:.1f}): "
          + ", ".join(f"{c} {s}: {n}" for (c, s), n in sorted(sent.items(), key=str)))

    recs = duckdb.sql(f"""
        SELECT side, status, CAST(split_part(server_addr, ':', 2) AS INTEGER) AS port, query_id,
               duration_ns, error_code, comm, tls
        FROM read_parquet('{capture.out_dir}/requests/*/*/*.parquet')
        WHERE protocol = 'clickhouse'
    """).fetchall()
    cols = ["side", "status", "port", "query_id", "duration_ns", "error_code", "comm", "tls"]
    recs = [dict(zip(cols, r)) for r in recs]
    ours = lambda r: (r["query_id"] or "").startswith(prefix + "-")

    # 1. and 2. Records against query_log, per server and side. Durations as in
    # ci/accept/clickhouse.py: within 2 ms of query_duration_ms, or else not over the
    # server's own end-to-end time ("Processed in", its log) + 2 ms: on a busy machine the
    # server thread is descheduled outside its inner watch now and then.
    within = outside_watch = total = 0
    worst = []
    for port, name in TLS_PORTS.items():
        qlog = [q for q in query_log(next(p for p, n in PLAIN_PORTS.items() if n == name), prefix)
                if "-before-" not in q["query_id"]]
        processed = processed_in(logs[port], offsets[port], prefix, {q["query_id"] for q in qlog},
                                 {q["query_id"] for q in qlog if q["type"] == 2})
        by_id = {q["query_id"]: q for q in qlog}
        for side in ("server", "client"):
            got = collections.defaultdict(list)
            for r in recs:
                if r["side"] == side and r["port"] == port and ours(r):
                    got[r["query_id"]].append(r)
            want = collections.Counter(STATUS_OF_TYPE[q["type"]] for q in qlog)
            have = collections.Counter(r["status"] for rs in got.values() for r in rs)
            print(f"{name} :{port} {side:6} query_log {len(qlog):4} {dict(want)}; l7tap "
                  f"{sum(len(v) for v in got.values()):4} {dict(have)}; by client "
                  + str(dict(collections.Counter(qid.split('-')[1].rstrip('0123456789x')
                                                 for qid in got))))
            for qid in set(got) - set(by_id):
                failures.append(f"{name} {side}: {qid}: {len(got[qid])} records, no query_log row")
            for q in qlog:
                rs = got.get(q["query_id"], [])
                if len(rs) != 1:
                    failures.append(f"{name} {side}: {q['query_id']}: {len(rs)} records for one query_log row")
                    continue
                r = rs[0]
                if r["status"] != STATUS_OF_TYPE[q["type"]] or (q["type"] != 2 and r["error_code"] != q["code"]):
                    failures.append(f"{name} {side}: {q['query_id']}: l7tap {r['status']} {r['error_code']}, "
                                    f"query_log type {q['type']} code {q['code']}")
                if side == "server":
                    ms = r["duration_ns"] / 1e6
                    total += 1
                    end_to_end = processed.get(q["query_id"])
                    if ms < q["ms"]:
                        failures.append(f"{q['query_id']}: l7tap {ms:.3f} ms is shorter than "
                                        f"query_duration_ms {q['ms']}")
                    if ms - q["ms"] <= TOLERANCE_MS:
                        within += 1
                    elif end_to_end is not None and ms <= end_to_end + 0.5 + TOLERANCE_MS:
                        outside_watch += 1
                        worst.append((ms - q["ms"], q["query_id"], q["ms"], end_to_end, ms))
                    else:
                        worst.append((ms - q["ms"], q["query_id"], q["ms"], end_to_end, ms))
        if len(qlog) < args.queries:
            failures.append(f"{name}: only {len(qlog)} queries in query_log")
    share = (within + outside_watch) / (total or 1)
    print(f"durations of {total} server-side records: {within} within {TOLERANCE_MS:g} ms of "
          f"query_duration_ms ({100 * within / (total or 1):.2f} %); {outside_watch} more not over "
          f"the server's own end-to-end time + {TOLERANCE_MS:g} ms ({100 * share:.2f} %, goal "
          f"{100 * WITHIN_GOAL:g} %)")
    for w in sorted(worst, reverse=True)[:5]:
        print(f"  largest: {w[1]}: query_log {w[2]} ms, server end to end "
              f"{'?' if w[3] is None else w[3]} ms, l7tap {w[4]:.3f} ms")
    if share < WITHIN_GOAL:
        failures.append(f"only {100 * share:.2f} % of durations agree with the server's clocks")

    # 3. The tls column (plaintext records say false: ci/accept/clickhouse.py checks it).
    secure = [r for r in recs if r["port"] in TLS_PORTS]
    print(f"records on secure ports: {len(secure)} (tls=true: {sum(1 for r in secure if r['tls'])})")
    if not all(r["tls"] for r in secure):
        failures.append(f"{sum(1 for r in secure if not r['tls'])} records on secure ports say tls = false")
    if len(secure) != len(recs):
        failures.append(f"{len(recs) - len(secure)} records of other ports despite --port")

    # 4. Nothing from ciphertext, nothing lost.
    strays = [r for r in secure if not ours(r)]
    if strays:
        failures.append(f"{len(strays)} records on secure ports are not the workload's: {strays[:3]}")
    summary = json.load(open(capture.summary_path))
    shown = {k: v for k, v in summary.items()
             if k.startswith(("tls.", "kernel.tls", "parse.clickhouse", "stream.clickhouse",
                              "kernel.classif", "kernel.ignored"))}
    print("summary:", json.dumps(shown, sort_keys=True))
    bad = {k: v for k, v in summary.items() if v and (
        k in ("kernel.events_failed", "ingest.ring_drops", "kernel.tls_lost", "parse.clickhouse.errors"))}
    if bad:
        failures.append(f"loss or garbage: {bad}")
    # Resyncs: a connection whose capture starts mid-stream (the early ones) resyncs a few
    # times on its first answers, over plaintext too; the twin measures it on the same
    # traffic over the plaintext ports. Connections seen from their start must not resync.
    twin = plaintext_twin_resyncs(args)
    midstream_sides = 2 * len(early)  # client and server side of each early connection
    expected = twin * midstream_sides
    resyncs = summary.get("parse.clickhouse.resyncs", 0)
    print(f"resyncs: {resyncs}; the same traffic from mid-stream over plaintext: {twin} per "
          f"connection side, so {expected} expected for {len(early)} early connections (2 sides)")
    if resyncs != expected:
        failures.append(f"{resyncs} resyncs on TLS connections, {expected} expected from the "
                        f"plaintext twin")
    if summary.get("tls.symbols_attached", 0) < 4:
        failures.append(f"only {summary.get('tls.symbols_attached', 0)} TLS functions attached")
    attached = [l for l in capture.log().splitlines() if l.startswith("  tls:")]
    print("\n".join(attached))
    if args.go_client:
        check_go_records(args, recs, prefix, attached, failures)
    verdict(failures)


def check_go_records(args, recs, prefix, attached, failures):
    """The Go client's records on their own: per secure port and side, one record per query
    (the checks above already matched each with query_log), all tls = true, the client side
    named by the Go process."""
    go_bin = os.path.realpath(args.go_client)
    if not any(go_bin in l and "Go binary built by go1." in l for l in attached):
        failures.append(f"the summary does not list {go_bin} as an attached Go binary")
    if not any(go_bin in l and "crypto/tls.(*Conn).Write" in l and "crypto/tls.(*Conn).Read" in l
               for l in attached):
        failures.append(f"crypto/tls.(*Conn).Write and Read are not attached in {go_bin}")
    for port in TLS_PORTS:
        ids = {f"{prefix}-go{port}-{i}" for i in range(args.queries)}
        for side in ("client", "server"):
            got = [r for r in recs if r["side"] == side and r["query_id"] in ids]
            per_id = collections.Counter(r["query_id"] for r in got)
            print(f"Go client :{port} {side:6}: {len(got)} records for {len(ids)} queries, "
                  f"{sum(1 for r in got if r['tls'])} tls=true, "
                  f"{sum(1 for r in got if r['status'] == 'error')} errors")
            if set(per_id) != ids or any(n != 1 for n in per_id.values()):
                failures.append(f"Go client :{port} {side}: {len(per_id)} of {len(ids)} query ids, "
                                f"{sum(1 for n in per_id.values() if n != 1)} with more than one record")
            if not all(r["tls"] for r in got):
                failures.append(f"Go client :{port} {side}: a record says tls = false")
            if side == "client" and any(r["comm"] != GO_CLIENT_COMM for r in got):
                failures.append(f"Go client :{port}: client records of other processes: "
                                f"{collections.Counter(r['comm'] for r in got)}")


def plaintext_twin_resyncs(args):
    """Resyncs per connection of the early connections' traffic over the plaintext ports:
    connections opened before a capture (filtered to this process: its client side only),
    then the same queries."""
    clients = {port: Client("127.0.0.1", port=port) for port in PLAIN_PORTS}
    for port, client in clients.items():
        client.execute("SELECT 'before the capture'")
    capture = Capture(args.l7tap, f"{args.workdir}/twin",
                      ["--protocols", "clickhouse", "--pid", str(os.getpid()), "--port",
                       ",".join(map(str, PLAIN_PORTS))])
    for i in range(args.queries):
        for port, client in clients.items():
            run_query(client, sql_of(i, False), f"twin-{port}-{i}")
    time.sleep(1)
    capture.stop()
    for client in clients.values():
        client.disconnect()
    summary = json.load(open(capture.summary_path))
    return summary.get("parse.clickhouse.resyncs", 0) / len(clients)


def survive(args):
    """TLS clients query without pause while captures start and stop (SIGINT, SIGKILL)."""
    stop = threading.Event()
    results = collections.Counter()
    errors = []

    def loop(port, k):
        client = Client("127.0.0.1", port=port, secure=True, verify=False)
        i = 0
        while not stop.is_set():
            try:
                got = client.execute(f"SELECT {i} + 1, arrayStringConcat(arrayMap(x -> 'x', range({i % 5000})))")
                if got != [(i + 1, "x" * (i % 5000))]:
                    errors.append(f"{port}/{k}: query {i}: wrong answer")
                results[port] += 1
            except Exception as e:
                errors.append(f"{port}/{k}: query {i}: {e!r}"[:300])
                return
            i += 1

    def cli_loop():
        i = 0
        while not stop.is_set():
            p = subprocess.run(["clickhouse-client", "--port", "9440", "--secure", "--config-file",
                                CLIENT_CONFIG, "--query", f"SELECT {i} * 2"], capture_output=True, text=True)
            if p.returncode != 0 or p.stdout.strip() != str(i * 2):
                errors.append(f"clickhouse-client {i}: {p.returncode} {p.stdout.strip()!r} {p.stderr[-200:]}")
            results["clickhouse-client"] += 1
            i += 1

    threads = [threading.Thread(target=loop, args=(port, k)) for port in TLS_PORTS for k in range(2)]
    threads.append(threading.Thread(target=cli_loop))
    for t in threads:
        t.start()
    # The Go client checks every answer itself; it runs until its stdin closes.
    go = [subprocess.Popen([args.go_client, "--loop", "127.0.0.1", str(port)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for port in TLS_PORTS] if args.go_client else []
    time.sleep(1)  # connections open before the first capture
    for round_, sig in enumerate([signal.SIGINT, signal.SIGKILL, signal.SIGINT, signal.SIGKILL]):
        before = sum(results.values())
        capture = Capture(args.l7tap, f"{args.workdir}/round{round_}", ["--protocols", "clickhouse"])
        # Libraries a scan finds after the first are attached by the next one, once a second;
        # a scan over every executable of the host takes longer while other tests run.
        time.sleep(5)
        capture.process.send_signal(sig)
        code = capture.process.wait(timeout=120)
        time.sleep(1)
        print(f"round {round_}: capture stopped with {signal.Signals(sig).name} (exit {code}); "
              f"{sum(results.values()) - before} queries answered meanwhile")
        if sig == signal.SIGINT:
            if code != 0:
                errors.append(f"round {round_}: capture exited {code} on SIGINT: {capture.log()[-500:]}")
                continue
            # The capture was really attached and reading plaintext meanwhile.
            summary = json.load(open(capture.summary_path))
            seen = {k: summary.get(k, 0) for k in ("tls.symbols_attached", "kernel.tls_payloads")}
            print(f"round {round_}: {seen}")
            attached = [line for line in capture.log().splitlines() if "tls" in line.lower()]
            if seen["tls.symbols_attached"] < 4 or seen["kernel.tls_payloads"] == 0:
                errors.append(f"round {round_}: the capture read no TLS plaintext: {seen}; "
                              f"its TLS lines: {attached[-12:]}")
            go_bin = os.path.realpath(args.go_client) if args.go_client else None
            if go_bin and not any(go_bin in l and "Go binary built by" in l for l in attached):
                errors.append(f"round {round_}: the Go client was not attached: {attached[-12:]}")
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    for port, p in zip(TLS_PORTS, go):
        out, err = p.communicate(input="", timeout=60)
        if p.returncode != 0:
            errors.append(f"Go client on {port}: exit {p.returncode}: {err[-300:]}")
        else:
            results[f"go {port}"] = json.loads(out)["answered"]
    print(f"queries answered: {dict(results)}")
    failures = errors[:10]
    if min(results.get(k, 0) for k in list(TLS_PORTS) + [f"go {p}" for p in TLS_PORTS if go]) < 50:
        failures.append(f"too few queries answered: {dict(results)}")
    verdict(failures, "ok: every client kept working")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        python_client(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--l7tap", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--mode", choices=["records", "survive"], default="records")
    ap.add_argument("--queries", type=int, default=200, help="per Python connection")
    ap.add_argument("--python-clients", type=int, default=2, help="per server")
    ap.add_argument("--cli-queries", type=int, default=30, help="clickhouse-client runs per server")
    ap.add_argument("--record", help="also write the raw event stream here (for investigation)")
    ap.add_argument("--static-client", help="the statically linked OpenSSL client (ci/tls-static-client.sh)")
    ap.add_argument("--go-client", help="the Go crypto/tls client (ci/tls-go-client.sh)")
    args = ap.parse_args()
    (records if args.mode == "records" else survive)(args)


if __name__ == "__main__":
    main()
