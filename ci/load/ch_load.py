#!/usr/bin/env python3
"""ClickHouse native-protocol load driver (clickhouse-driver), for comparing against l7tap.

Prints on stdout one JSON summary of exactly what it sent: queries per kind, per status, per
expected and observed error code, per user, per compression, plus the wire-level extras the
driver adds on its own (one Hello per connection it opens, one Ping before every query on an
already open connection). Progress and warnings go to stderr.

Every query carries a query_id `<prefix>-c<client>-<n>` (prefix printed in the summary), so
the server's system.query_log rows of one run can be selected exactly.

    ci/load/ch_load.py --queries 2000 --clients 4 --mix mixed --compression mixed
    ci/load/ch_load.py --duration 30 --clients 8 --mix select1 --port 9000,9001
    ci/load/ch_load.py --persistent-idle --clients 4 --duration 60 --ready-file /tmp/ready
    ci/load/ch_load.py --persistent-idle --clients 2 --interval 0.02 --arrivals poisson --seed 7

Mix `mixed` (the acceptance workload; needs `ci/testbed.sh schema`): SELECTs, INSERTs into the
ReplicatedMergeTree l7tap.events_local and the plain MergeTree l7tap.plain, SELECTs and
synchronous INSERTs on the Distributed table l7tap.events (each makes the server send one
secondary query to the other shard), `SELECT sleep(0.2)`, failing queries (unknown table ->
60, syntax error -> 62, throwIf after some data blocks -> 395), a few 10^6-row results.
Client 0 logs in as user l7tap with its password; the others as default. Compression `mixed`
cycles lz4, none, zstd, none over the clients.
"""
import argparse
import collections
import datetime
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
import uuid

from clickhouse_driver import Client, errors
from clickhouse_driver import connection as ch_connection

# ---------------------------------------------------------------------------------------------
# Wire-level extras: count what the driver sends besides our queries.

_wire_lock = threading.Lock()
WIRE = collections.Counter()

_orig_connect = ch_connection.Connection.connect
_orig_ping = ch_connection.Connection.ping


def _counting_connect(self, *a, **kw):
    with _wire_lock:
        WIRE["connections_opened"] += 1  # TCP connect + Hello
    return _orig_connect(self, *a, **kw)


def _counting_ping(self, *a, **kw):
    with _wire_lock:
        WIRE["pings"] += 1
    return _orig_ping(self, *a, **kw)


ch_connection.Connection.connect = _counting_connect
ch_connection.Connection.ping = _counting_ping

# ---------------------------------------------------------------------------------------------
# Query kinds

BIG_ROWS = 1_000_000
INSERT_ROWS = 100


class Kind:
    def __init__(self, name, sql, operation, expect=None, settings=None, insert_rows=0,
                 big=False, weight=0.0):
        self.name, self.sql, self.operation, self.expect = name, sql, operation, expect
        self.settings, self.insert_rows, self.big, self.weight = settings, insert_rows, big, weight


MIXED = [
    Kind("select_simple", "SELECT 1", "SELECT", weight=0.28),
    Kind("select_table", "SELECT kind, count(), sum(value) FROM l7tap.events_local GROUP BY kind",
         "SELECT", weight=0.07),
    Kind("select_plain", "SELECT count(), max(id) FROM l7tap.plain", "SELECT", weight=0.03),
    Kind("insert_replicated", "INSERT INTO l7tap.events_local (ts, id, kind, value, payload) VALUES",
         "INSERT", insert_rows=INSERT_ROWS, weight=0.14),
    Kind("insert_plain", "INSERT INTO l7tap.plain (ts, id, kind, value, payload) VALUES",
         "INSERT", insert_rows=INSERT_ROWS, weight=0.05),
    Kind("select_distributed", "SELECT count(), max(id) FROM l7tap.events", "SELECT", weight=0.10),
    Kind("insert_distributed", "INSERT INTO l7tap.events (ts, id, kind, value, payload) VALUES",
         "INSERT", insert_rows=50, settings={"insert_distributed_sync": 1}, weight=0.03),
    Kind("sleep_200ms", "SELECT sleep(0.2)", "SELECT", weight=0.05),
    Kind("error_unknown_table", "SELECT * FROM l7tap.no_such_table", "SELECT", expect=60,
         weight=0.0575),
    Kind("error_syntax", "SELECT id FROM l7tap.events WHERE (", "SELECT", expect=62, weight=0.0575),
    Kind("error_midstream",
         "SELECT throwIf(number = 50000) FROM system.numbers LIMIT 100000", "SELECT",
         expect=395, settings={"max_block_size": 10000}, weight=0.01),
    Kind("big_result", f"SELECT number FROM system.numbers LIMIT {BIG_ROWS}", "SELECT",
         big=True, weight=0.0025),
]
SELECT1 = [Kind("select1", "SELECT 1", "SELECT", weight=1.0)]
MIXES = {"mixed": MIXED, "select1": SELECT1}
IDLE_KIND = Kind("idle_select1", "SELECT 1", "SELECT")


def plan_exact(kinds, n, seed):
    """Exactly n kinds in proportion to the weights (largest remainder), shuffled."""
    total = sum(k.weight for k in kinds)
    quotas = [(k, n * k.weight / total) for k in kinds]
    counts = {k.name: int(q) for k, q in quotas}
    # Every kind at least once when there is room (a small run still exercises everything).
    rest = n - sum(counts.values())
    for k, q in sorted(quotas, key=lambda kq: kq[1] - int(kq[1]), reverse=True):
        if rest <= 0:
            break
        counts[k.name] += 1
        rest -= 1
    if n >= 2 * len(kinds):
        for k in kinds:
            if counts[k.name] == 0:
                donor = max(counts, key=counts.get)
                counts[donor] -= 1
                counts[k.name] += 1
    by_name = {k.name: k for k in kinds}
    plan = [by_name[name] for name, c in counts.items() for _ in range(c)]
    random.Random(seed).shuffle(plan)
    return plan


# ---------------------------------------------------------------------------------------------
# Statistics

class Stats:
    def __init__(self):
        self.kinds = collections.defaultdict(lambda: {
            "sent": 0, "ok": 0, "error": 0, "error_codes": collections.Counter(),
            "rows_received": 0, "rows_inserted": 0, "latencies": []})
        self.users = collections.Counter()
        self.compression = collections.Counter()
        self.ports = collections.Counter()
        self.unexpected = []

    def merge(self, other):
        for name, o in other.kinds.items():
            s = self.kinds[name]
            for key in ("sent", "ok", "error", "rows_received", "rows_inserted"):
                s[key] += o[key]
            s["error_codes"].update(o["error_codes"])
            s["latencies"].extend(o["latencies"])
        self.users.update(other.users)
        self.compression.update(other.compression)
        self.ports.update(other.ports)
        self.unexpected.extend(other.unexpected)


def ms_summary(values):
    if not values:
        return None
    v = sorted(values)
    return {"min": round(v[0], 2), "p50": round(statistics.median(v), 2),
            "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))], 2), "max": round(v[-1], 2)}


# ---------------------------------------------------------------------------------------------
# Clients

class LoadClient:
    def __init__(self, idx, args, compression, user, password, port, prefix):
        self.idx, self.args = idx, args
        self.user, self.compression, self.port = user, compression, port
        self.prefix = prefix
        self.n = 0
        self.stats = Stats()
        self.client = Client(args.host, port=port, user=user, password=password,
                             compression=compression if compression != "none" else False,
                             connect_timeout=10, send_receive_timeout=300,
                             client_name="l7tap-ch_load")
        self.rng = random.Random(args.seed * 1000 + idx)

    def rows(self, count):
        now = datetime.datetime.now().replace(microsecond=0)
        base = self.idx * 10**12 + self.n * 1000
        return [(now, base + i, "ch_load", self.rng.random(), f"{self.prefix}-c{self.idx}-{self.n}-r{i}")
                for i in range(count)]

    def run_one(self, kind):
        self.n += 1
        qid = f"{self.prefix}-c{self.idx}-{self.n}"
        st = self.stats.kinds[kind.name]
        st["sent"] += 1
        self.stats.users[self.user] += 1
        self.stats.compression[self.compression] += 1
        self.stats.ports[self.port] += 1
        t0 = time.monotonic()
        code = None
        try:
            if kind.insert_rows:
                data = self.rows(kind.insert_rows)
                self.client.execute(kind.sql, data, query_id=qid, settings=kind.settings)
                st["rows_inserted"] += len(data)
            elif kind.big:
                n = 0
                for _ in self.client.execute_iter(kind.sql, query_id=qid, settings=kind.settings):
                    n += 1
                st["rows_received"] += n
            else:
                st["rows_received"] += len(self.client.execute(kind.sql, query_id=qid,
                                                               settings=kind.settings))
            st["ok"] += 1
        except errors.ServerException as e:
            code = e.code
            st["error"] += 1
            st["error_codes"][str(code)] += 1
        except Exception as e:  # network trouble: counted as an error without a code
            code = "client:" + type(e).__name__
            st["error"] += 1
            st["error_codes"][code] += 1
            print(f"ch_load: client {self.idx} {qid}: {e!r}", file=sys.stderr)
            try:
                self.client.disconnect()
            except Exception:
                pass
        st["latencies"].append((time.monotonic() - t0) * 1000)
        if code != kind.expect:
            self.stats.unexpected.append({"query_id": qid, "kind": kind.name,
                                          "expected": kind.expect, "got": code})

    def close(self):
        try:
            self.client.disconnect()
        except Exception:
            pass


def client_setup(args, prefix):
    ports = [int(p) for p in str(args.port).split(",")]
    comps = {"on": ["lz4"], "off": ["none"], "lz4": ["lz4"], "zstd": ["zstd"],
             "lz4hc": ["lz4hc"], "mixed": ["lz4", "none", "zstd", "none"]}[args.compression]
    clients = []
    for i in range(args.clients):
        if args.mix == "mixed" and i == 0 and not args.no_l7tap_user:
            user, password = "l7tap", args.l7tap_password
        else:
            user, password = args.user, args.password
        clients.append(LoadClient(i, args, comps[i % len(comps)], user, password,
                                  ports[i % len(ports)], prefix))
    return clients


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--queries", type=int, help="total queries over all clients (exact plan)")
    g.add_argument("--duration", type=float, help="seconds to run (weighted random kinds)")
    ap.add_argument("--clients", type=int, default=4, help="threads, each its own connection")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", default="9000", help="native port, or a comma list spread over clients")
    ap.add_argument("--compression", default="mixed",
                    choices=["on", "off", "mixed", "lz4", "lz4hc", "zstd"])
    ap.add_argument("--mix", default="mixed", choices=sorted(MIXES))
    ap.add_argument("--user", default="default")
    ap.add_argument("--password", default="")
    ap.add_argument("--l7tap-password", default="l7tap-secret-pw")
    ap.add_argument("--no-l7tap-user", action="store_true", help="client 0 logs in as --user too")
    ap.add_argument("--persistent-idle", action="store_true",
                    help="open the connections, one query each, then one query per --interval "
                         "on every connection until --duration (default: until SIGTERM)")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--arrivals", default="fixed", choices=["fixed", "poisson"],
                    help="--persistent-idle: one query every --interval exactly, or at random "
                         "(exponential gaps of mean --interval, from --seed and the connection)")
    ap.add_argument("--ready-file", help="touched once every connection has run its first query")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--query-id-prefix", help="default: l7load-<random>")
    args = ap.parse_args()
    if args.queries is None and args.duration is None and not args.persistent_idle:
        args.queries = 2000

    prefix = args.query_id_prefix or f"l7load-{uuid.uuid4().hex[:10]}"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    clients = client_setup(args, prefix)
    kinds = MIXES[args.mix]
    started = time.time()
    t0 = time.monotonic()
    deadline = t0 + args.duration if args.duration else None

    if args.persistent_idle:
        for c in clients:  # connect and first query, sequentially, before the ready file
            c.run_one(IDLE_KIND)
        if args.ready_file:
            open(args.ready_file, "w").close()
        print(f"ch_load: {len(clients)} connections open, querying every {args.interval}s",
              file=sys.stderr)

        def idle_worker(c):
            # Poisson: exponential gaps, a stream per connection. Two copies of this load
            # started at once with fixed periods keep one phase for the whole run, one copy
            # always meeting the other's work.
            arrivals = random.Random(f"arrivals-{args.seed}-{c.idx}")
            nxt = time.monotonic()
            while not stop.is_set():
                if args.arrivals == "poisson":
                    nxt += arrivals.expovariate(1.0 / args.interval)
                else:
                    nxt += args.interval
                if deadline and nxt >= deadline:
                    break
                if stop.wait(max(0.0, nxt - time.monotonic())):
                    break
                c.run_one(IDLE_KIND)

        workers = [threading.Thread(target=idle_worker, args=(c,), daemon=True) for c in clients]
    elif args.queries is not None:
        plan = plan_exact(kinds, args.queries, args.seed)

        def plan_worker(c):
            for kind in plan[c.idx::len(clients)]:
                if stop.is_set():
                    break
                c.run_one(kind)

        workers = [threading.Thread(target=plan_worker, args=(c,), daemon=True) for c in clients]
    else:
        weights = [k.weight for k in kinds]

        def duration_worker(c):
            while not stop.is_set() and time.monotonic() < deadline:
                c.run_one(c.rng.choices(kinds, weights)[0])

        workers = [threading.Thread(target=duration_worker, args=(c,), daemon=True)
                   for c in clients]

    if args.ready_file and not args.persistent_idle:
        open(args.ready_file, "w").close()
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(timeout=0.2)
    for c in clients:
        c.close()
    elapsed = time.monotonic() - t0

    total = Stats()
    for c in clients:
        total.merge(c.stats)
    by_kind, by_op, by_code, expected_codes = {}, {}, collections.Counter(), collections.Counter()
    by_status = collections.Counter()
    all_kinds = {k.name: k for k in kinds + [IDLE_KIND]}
    for name, s in sorted(total.kinds.items()):
        k = all_kinds[name]
        by_kind[name] = {
            "sent": s["sent"], "ok": s["ok"], "error": s["error"], "operation": k.operation,
            "sql": k.sql, "expected_error_code": k.expect,
            "error_codes": dict(s["error_codes"]), "rows_received": s["rows_received"],
            "rows_inserted": s["rows_inserted"], "latency_ms": ms_summary(s["latencies"]),
        }
        op = by_op.setdefault(k.operation, {"sent": 0, "ok": 0, "error": 0})
        for key in ("sent", "ok", "error"):
            op[key] += s[key]
        by_status["ok"] += s["ok"]
        by_status["error"] += s["error"]
        by_code.update(s["error_codes"])
        if k.expect is not None:
            expected_codes[str(k.expect)] += s["sent"]
    queries = sum(s["sent"] for s in total.kinds.values())
    dist_select = total.kinds["select_distributed"]["ok"] if "select_distributed" in total.kinds else 0
    dist_insert = total.kinds["insert_distributed"]["ok"] if "insert_distributed" in total.kinds else 0
    summary = {
        "tool": "ch_load",
        "mode": "persistent-idle" if args.persistent_idle else
                ("queries" if args.queries is not None else "duration"),
        "mix": "idle" if args.persistent_idle else args.mix,
        "host": args.host,
        "ports": dict(sorted((str(p), n) for p, n in total.ports.items())),
        "clients": [{"client": c.idx, "user": c.user, "compression": c.compression,
                     "port": c.port, "queries": c.n} for c in clients],
        "query_id_prefix": prefix,
        "started_at": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "started_unix": round(started, 3),
        "ended_unix": round(started + elapsed, 3),
        "elapsed_s": round(elapsed, 3),
        "interrupted": stop.is_set(),
        "queries": queries,
        "by_status": dict(by_status),
        "by_operation": by_op,
        "by_error_code": dict(sorted(by_code.items())),
        "expected_error_codes": dict(sorted(expected_codes.items())),
        "by_user": dict(total.users),
        "by_compression": dict(total.compression),
        "by_kind": by_kind,
        "unexpected_outcomes": len(total.unexpected),
        "unexpected_examples": total.unexpected[:10],
        # Queries on the Distributed table each make the server send one query to the other
        # shard (the local shard runs in process). 18.16 sends a SELECT as a secondary query
        # (initial_query_id = ours); a synchronous INSERT goes out as an *initial* query with a
        # fresh random query_id from client "ClickHouse server" (no link to ours).
        "server_to_server_expected": {"secondary_selects": dist_select,
                                      "forwarded_inserts": dist_insert},
        "wire": {
            "hello_and_connections": WIRE["connections_opened"],
            "pings": WIRE["pings"],
            "query_packets": queries,
            "note": "clickhouse-driver opens a connection (Hello) lazily and again after every "
                    "server exception (it disconnects on error); before each query on an "
                    "already open connection it sends Ping and waits for Pong",
        },
    }
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if not total.unexpected else 3


if __name__ == "__main__":
    sys.exit(main())
