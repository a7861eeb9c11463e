#!/usr/bin/env python3
"""ClickHouse-over-HTTP acceptance check against the real test bed: records equal query_log.

Captures with l7tap (`--clickhouse-http-ports 8123,8124`) while ci/load/ch_http_load.py
sends its workload to both servers' HTTP ports (urllib one-shot requests, http.client and
requests keep-alive sessions; GET and POST; INSERTs; unknown table 60, syntax error 62,
throwIf 395 after a 1 MiB result, a wrong password 193; a 200000-row result; a gzip result;
Basic and header auth with the `l7tap` user's password) and plain HTTP goes to the test
bed's nginx, then checks the Parquet `requests` table against each server's
`system.query_log` rows with `interface = 2`:

  1. per query_id of the run, the server-side records (side = 'server', protocol
     'clickhouse', interface 'http') equal the final query_log rows (QueryFinish -> ok;
     ExceptionBeforeStart, ExceptionWhileProcessing -> error with the `Code: N` of
     `exception`): one record per row, the same status and the same error code. A wrong
     password is refused before a query exists (18.16 logs no row): its record must say
     error 193, with no row to match. The load's set-up statements carry no query_id: they
     are counted (records without query_id per server);
  2. durations: a record spans from the read that brings the request's first byte to the
     write of the response's last byte. The server's own clock of that span is its log at
     level trace, which the check sets for its run (`ci/testbed.sh ch-log-level`, a config
     reload): "HTTP Request for HTTPHandler-factory" when the handler starts, once the
     request's head is read, to "Done processing query" once the response is written (or,
     for an error, the HTTPHandler's error line, after which only the exception's text is
     written), on the same thread. At least 99 % of the records must be within 2 ms of that
     span. Every record, without exception, must also hold query_duration_ms (a watch inside
     the span, truncated to whole ms by 18.16) and fit in the client's own round trip (the
     load times each request from before its send to after its response is read, on the
     same monotonic clock);
  3. plain HTTP to nginx gives no record and no classified connection;
  4. no event was lost (kernel, rings);
  5. the password appears in no output (Parquet, summary, capture log).

    ci/accept/clickhouse_http.py --l7tap target/release/l7tap --workdir /tmp/chh-accept
"""
import argparse, collections, json, os, subprocess, sys, time, urllib.request

import duckdb

from common import ROOT, Capture, clickhouse_log, secret_reached_output, verdict

PORTS = {8123: 9000, 8124: 9001}  # HTTP port -> native port of the same server
SERVER_NAMES = {8123: "ch1", 8124: "ch2"}
TESTBED = os.environ.get("L7TAP_TESTBED_DIR", "/tmp/l7tap-testbed")
NGINX = "http://127.0.0.1:8080"
PASSWORD = "l7tap-secret-pw"  # ch_http_load's user l7tap
TOLERANCE_MS = 2.0
CLIENT_ROUNDING_MS = 0.001  # the load rounds its round trips to µs
WITHIN_GOAL = 0.99
# 18.16 query_log `type`: 2 QueryFinish, 3 ExceptionBeforeStart, 4 ExceptionWhileProcessing.
STATUS_OF_TYPE = {2: "ok", 3: "error", 4: "error"}
REFUSED_BEFORE_A_QUERY = 193  # wrong password: no query_log row


def ch(port, sql):
    res = subprocess.run(["clickhouse-client", "--port", str(port), "--query", sql],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in res.splitlines() if line]


def server_spans_ms(path, offset, prefix):
    """Per query_id of the run: ms from its handler's start ("HTTP Request for
    HTTPHandler-factory", logged at trace) to the same thread's "Done processing query" or
    HTTPHandler error line."""
    out, started, current = {}, {}, {}
    for at_ms, thread, qid, level, source, message in clickhouse_log(path, offset):
        if source == "HTTPHandler-factory" and message.startswith("HTTP Request for"):
            started[thread] = at_ms
            current.pop(thread, None)
        elif qid.startswith(prefix + "-"):
            if thread in started:
                current[thread] = (qid, started.pop(thread))
        elif source == "HTTPHandler" and (message.startswith("Done processing query")
                                          or level == "Error"):
            if thread in current:
                qid, then = current.pop(thread)
                out.setdefault(qid, at_ms - then)
    return out


def nginx_traffic():
    """Plain HTTP that must give nothing: GETs on one keep-alive-less connection each and a
    POST echo."""
    for path in ["/ping", "/64k.txt", "/ping"]:
        urllib.request.urlopen(NGINX + path, timeout=5).read()
    urllib.request.urlopen(urllib.request.Request(NGINX + "/echo", data=b"SELECT 1",
                                                  method="POST"), timeout=5).read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--l7tap", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--queries", type=int, default=60, help="per session and server")
    args = ap.parse_args()
    testbed_log_level("trace")
    try:
        check(args)
    finally:
        testbed_log_level("information")


def testbed_log_level(level):
    subprocess.run(["bash", f"{ROOT}/ci/testbed.sh", "ch-log-level", level], check=True)


def check(args):
    capture = Capture(args.l7tap, args.workdir,
                      ["--protocols", "clickhouse_http", "--clickhouse-http-ports", "8123,8124"])
    out_dir = capture.out_dir
    time.sleep(0.5)

    logs = {port: f"{TESTBED}/{name}/log/clickhouse-server.log" for port, name in SERVER_NAMES.items()}
    offsets = {port: os.path.getsize(path) if os.path.exists(path) else 0
               for port, path in logs.items()}
    workloads = {}
    for i, port in enumerate(PORTS):
        nginx_traffic()
        load = subprocess.run(
            [sys.executable, f"{ROOT}/ci/load/ch_http_load.py", "--port", str(port),
             "--sessions", str(args.sessions), "--queries", str(args.queries),
             "--seed", str(i + 1)],
            stdout=subprocess.PIPE, text=True)
        if load.returncode != 0:
            capture.abandon(f"ch_http_load.py failed ({load.returncode}): {load.stdout[-2000:]}")
        workloads[port] = json.loads(load.stdout)
    nginx_traffic()
    for native in PORTS.values():
        ch(native, "SYSTEM FLUSH LOGS")
    time.sleep(1)  # the last answers reach the actors
    capture.stop()
    failures = []

    summary = json.load(open(capture.summary_path))
    counters = summary  # flat: counter name -> value
    recs = duckdb.sql(f"""
        SELECT side, server_addr, query_id, status, error_code, duration_ns, operation
        FROM read_parquet('{out_dir}/requests/*/*/*.parquet')
        WHERE protocol = 'clickhouse' AND interface = 'http'""").fetchall()
    print(f"records: {len(recs)} (clickhouse over http, both sides)")

    for port, workload in workloads.items():
        prefix = workload["query_id_prefix"]
        expected = workload["by_query_id"]
        kinds = collections.Counter(workload["by_kind"])
        if len(expected) < 100 or len(kinds) < 8:
            failures.append(f":{port}: the workload is too small ({len(expected)} queries, "
                            f"{len(kinds)} kinds)")
        server = [r for r in recs if r[0] == "server" and r[1].endswith(f":{port}")]
        by_qid = collections.defaultdict(list)
        for r in server:
            by_qid[r[2]].append(r)
        rows = ch(PORTS[port], f"""
            SELECT type, query_id, query_duration_ms, extract(exception, '^Code: ([0-9]+)')
            FROM system.query_log
            WHERE interface = 2 AND type IN (2, 3, 4) AND event_date >= yesterday()
              AND query_id LIKE '{prefix}-%'""")
        logged = collections.defaultdict(list)
        for t, qid, ms, code in rows:
            logged[qid].append((STATUS_OF_TYPE[int(t)], int(code) if code else None, int(ms)))

        spans = server_spans_ms(logs[port], offsets[port], prefix)
        client_ms = workload["client_latency_ms_by_query_id"]
        kind_of = workload["by_kind_of_query_id"]
        mismatched, within, timed, shorter, late, over_client = [], 0, 0, [], [], []
        gaps = []  # record minus the server's span, ms
        for qid, code in expected.items():
            got = sorted((r[3], r[4]) for r in by_qid.get(qid, []))
            if code == REFUSED_BEFORE_A_QUERY:
                want = [("error", code)]
                if logged.get(qid):
                    mismatched.append(f"{qid}: a refused login has query_log rows {logged[qid]}")
            else:
                want = sorted((status, c) for status, c, _ in logged.get(qid, []))
                if not want:
                    mismatched.append(f"{qid}: no query_log row (expected code {code})")
            if got != want:
                mismatched.append(f"{qid}: records {got} != query_log {want}")
            if len(got) == 1 and len(logged.get(qid, [])) == 1:
                record_ms = by_qid[qid][0][5] / 1e6
                log_ms = logged[qid][0][2]
                if record_ms > client_ms[qid] + CLIENT_ROUNDING_MS:
                    over_client.append(f"{qid} ({kind_of[qid]}): {record_ms:.3f} ms > the "
                                       f"client's round trip {client_ms[qid]:.3f} ms")
                if record_ms < log_ms:
                    shorter.append(f"{qid}: {record_ms:.3f} ms < query_duration_ms {log_ms}")
                if qid not in spans:
                    mismatched.append(f"{qid}: the server's log has no span for it")
                    continue
                timed += 1
                gaps.append(record_ms - spans[qid])
                if abs(record_ms - spans[qid]) <= TOLERANCE_MS:
                    within += 1
                else:
                    late.append(f"{qid} ({kind_of[qid]}): {record_ms:.3f} ms, the server's "
                                f"span {spans[qid]:.3f} ms, query_duration_ms {log_ms}, "
                                f"client's round trip {client_ms[qid]:.3f} ms")
        stray = [q for q in by_qid if q and q not in expected]
        if stray:
            mismatched.append(f"records of query_ids not sent: {stray[:5]}")
        without_id = len(by_qid.get(None, []))
        setup = workload["setup_exchanges_without_query_id"]
        if without_id != setup:
            mismatched.append(f"{without_id} records without query_id, {setup} set-up "
                              "statements were sent")
        print(f":{port}: {len(expected)} queries sent, {len(rows)} query_log rows, "
              f"{len(server)} server records; kinds {dict(kinds)}")
        print(f":{port}: durations: {within}/{timed} within {TOLERANCE_MS} ms of the "
              f"server's own span; {len(shorter)} shorter than query_duration_ms, "
              f"{len(over_client)} longer than the client's round trip")
        if gaps:
            gaps.sort()
            print(f":{port}: record minus the server's span, ms: min {gaps[0]:.3f}, median "
                  f"{gaps[len(gaps) // 2]:.3f}, max {gaps[-1]:.3f}")
        for line in late[:5]:
            print(f":{port}: outside: {line}")
        failures += [f":{port}: {m}" for m in mismatched[:20]]
        failures += [f":{port}: record shorter than the server's own time: {s}"
                     for s in shorter[:5]]
        failures += [f":{port}: record longer than the client's round trip: {s}"
                     for s in over_client[:5]]
        if timed == 0 or within < WITHIN_GOAL * timed:
            failures.append(f":{port}: only {within} of {timed} durations within "
                            f"{TOLERANCE_MS} ms")
        clients = [r for r in recs if r[0] == "client" and r[1].endswith(f":{port}")]
        print(f":{port}: {len(clients)} client-side records (reported, not checked)")

    nginx = [r for r in recs if r[1].endswith(":8080")]
    if nginx:
        failures.append(f"{len(nginx)} records of nginx traffic")
    opened_nginx = {k: v for k, v in counters.items() if "server_port.8080" in k and v}
    if opened_nginx:
        failures.append(f"nginx connections were classified: {opened_nginx}")
    lost = {k: v for k, v in counters.items()
            if k in ("kernel.events_failed", "ingest.ring_drops") and v}
    if lost:
        failures.append(f"events were lost: {lost}")
    if secret_reached_output(PASSWORD, out_dir, capture.summary_path, capture.log_path):
        failures.append("the password reached an output")
    verdict(failures, "clickhouse_http: records match query_log")


if __name__ == "__main__":
    main()
