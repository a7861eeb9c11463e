#!/usr/bin/env python3
"""Client identity acceptance check against the real test bed (issue 16: clients as
applications, both ends of a local connection joined).

Captures with l7tap while these clients run on this host:
  - `batch-loader`: Python renamed with prctl(PR_SET_NAME), inside a cgroup this script
    creates under the v2 mount, /sys/fs/cgroup/unified/l7tap-accept-<pid>.service (removed
    after): its application is that unit;
  - `dashboard`: Python renamed the same way; it also asks each server for a table on the
    other (`remote()`), so each clickhouse-server queries the other as a client;
  - `clickhouse-client`, run once per query (each exits right after its answer);
  - `quick-exit`: Python that sends one query and exits at once (os._exit), three times;
  - `zk-watcher`: a kazoo session with a known number of each operation, and a NoNode;
  - the ClickHouse servers' own ZooKeeper sessions and Distributed queries.
Every ClickHouse query has a query id `<prefix>-<client>-<n>`. Then it checks:
  1. `report --format json`: each client is its own row per server, named by its
     application (`clickhouse-server :PORT` for a server acting as a client);
  2. each of our clients: what it sent equals system.query_log by query id and the
     server-side records under its application name; its report row equals what it sent
     and system.query_log by the client ports of the row's connections (18.16's `port`
     identifies a connection; for clickhouse-client, which others may run too, only the
     latter);
  3. each clickhouse-server row: requests and errors equal system.query_log's rows on the
     connections of that row (by port) during the run, and include the secondary queries
     of our `remote()` queries;
  4. `requests` joins both ends: server-side rows of a local client carry its pid and
     process name; client-side rows carry the server's application;
  5. zk-watcher's server-side records per operation and outcome equal what it sent, and
     its report row counts its records;
  6. capture_stats counts the identities resolved; nothing was lost.

    ci/accept/identity.py --l7tap target/release/l7tap --workdir /tmp/identity-accept
"""
import argparse, collections, json, os, subprocess, sys, time, uuid

import duckdb

from common import Capture, verdict

SERVERS = {9000: "127.0.0.1:9000", 9001: "127.0.0.1:9001"}
CGROUP_ROOT = "/sys/fs/cgroup/unified"

# Runs as `python3 -c CLIENT name cgroup_dir query_prefix plan_json`: renames itself,
# joins the cgroup (if any), then sends the plan: [[port, sql, expect_error], ...] on one
# connection per port. Prints what it sent.
CLIENT = r"""
import ctypes, json, os, sys
from clickhouse_driver import Client
name, cgroup, prefix, plan = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)
if cgroup:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
clients = {}
sent = {}
for n, (port, sql, failing) in enumerate(plan):
    c = clients.setdefault(port, Client("127.0.0.1", port=port))
    try:
        c.execute(sql, query_id=f"{prefix}-{n}")
        ok = True
    except Exception:
        ok = False
    if ok == failing:
        sys.exit(f"{sql!r} on {port}: ok={ok}")
    s = sent.setdefault(str(port), [0, 0])
    s[0] += 1
    s[1] += 0 if ok else 1
print(json.dumps({"pid": os.getpid(), "sent": sent}), flush=True)
if name == "quick-exit":
    os._exit(0)
for c in clients.values():
    c.disconnect()
"""

ZK_CLIENT = r"""
import ctypes, json, sys
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
ctypes.CDLL(None).prctl(15, b"zk-watcher", 0, 0, 0)
root = sys.argv[1]
zk = KazooClient(hosts="127.0.0.1:2181")
zk.start()
sent = {"create": 0, "getData": 0, "exists": 0, "delete": 0}
zk.create(root); sent["create"] += 1
for i in range(20):
    zk.create(f"{root}/n{i}", b"x"); sent["create"] += 1
    zk.get(f"{root}/n{i}"); sent["getData"] += 1
    zk.exists(f"{root}/n{i}"); sent["exists"] += 1
try:
    zk.get(f"{root}/missing")
except NoNodeError:
    sent["getData.error"] = 1
for i in range(20):
    zk.delete(f"{root}/n{i}"); sent["delete"] += 1
zk.delete(root); sent["delete"] += 1
zk.stop()
zk.close()
print(json.dumps(sent), flush=True)
"""


def ch(port, sql):
    res = subprocess.run(["clickhouse-client", "--port", str(port), "--query", sql],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in res.splitlines() if line]


def run_client(name, cgroup, prefix, plan):
    out = subprocess.run([sys.executable, "-c", CLIENT, name, cgroup, prefix, json.dumps(plan)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name}: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def plan(queries_9000, errors_9000, queries_9001, errors_9001, remote=0):
    """SELECTs, failing SELECTs and remote() SELECTs (each server asks the other)."""
    p = []
    for port, n, e in ((9000, queries_9000, errors_9000), (9001, queries_9001, errors_9001)):
        p += [[port, f"SELECT {i}", False] for i in range(n)]
        p += [[port, "SELECT * FROM l7tap_no_such_table", True] for _ in range(e)]
        other = 9001 if port == 9000 else 9000
        p += [[port, f"SELECT count() FROM remote('127.0.0.1:{other}', system.one)", False]
              for _ in range(remote)]
    return p


def query_log(port, t0, t1):
    """Final rows (types 2-4) of [t0, t1] on one server: (query_id, initial_query_id, port,
    failed)."""
    rows = ch(port, f"""
        SELECT query_id, initial_query_id, port, type != 2
        FROM system.query_log
        WHERE type IN (2, 3, 4) AND event_date >= yesterday()
          AND query_start_time >= toDateTime({t0}) AND event_time <= toDateTime({t1})""")
    return [(r[0], r[1], int(r[2]), r[3] == "1") for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--l7tap", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    run = uuid.uuid4().hex[:8]
    cgroup = f"{CGROUP_ROOT}/l7tap-accept-{os.getpid()}.service"
    os.makedirs(cgroup, exist_ok=True)
    capture = Capture(args.l7tap, args.workdir,
                      ["--protocols", "clickhouse,zookeeper", "--clickhouse-http-ports", "8123,8124"])
    out_dir = capture.out_dir
    time.sleep(1.1)
    t0 = int(time.time())
    sent = {}  # (server, app) -> [requests, errors]
    pids = {}
    try:
        def add(app, port, requests, errors):
            s = sent.setdefault((SERVERS[port], app), [0, 0])
            s[0] += requests
            s[1] += errors

        batch = run_client("batch-loader", cgroup, f"{run}-batch", plan(30, 5, 20, 3))
        pids["batch"] = batch["pid"]
        dashboard = run_client("dashboard", "", f"{run}-dashboard", plan(25, 2, 15, 4, remote=4))
        pids["dashboard"] = dashboard["pid"]
        for (app, result) in ((os.path.basename(cgroup), batch), ("dashboard", dashboard)):
            for port, (n, e) in result["sent"].items():
                add(app, int(port), n, e)
        for i in range(3):
            quick = run_client("quick-exit", "", f"{run}-quick{i}", [[9000, "SELECT 1", False]])
            add("quick-exit", 9000, 1, 0)
        for i, (port, sql, failing) in enumerate([(9001, "SELECT 1", False), (9001, "SELECT 2", False),
                                                  (9001, "SELECT * FROM l7tap_no_such_table", True),
                                                  (9000, "SELECT 3", False)]):
            r = subprocess.run(["clickhouse-client", "--port", str(port), "--query_id",
                                f"{run}-cli-{i}", "--query", sql], capture_output=True, text=True)
            if (r.returncode != 0) != failing:
                raise RuntimeError(f"clickhouse-client {sql!r}: {r.stderr[-500:]}")
            add("clickhouse-client", port, 1, 1 if failing else 0)
        zk = subprocess.run([sys.executable, "-c", ZK_CLIENT, f"/l7tap-identity-{run}"],
                            capture_output=True, text=True)
        if zk.returncode != 0:
            raise RuntimeError(f"zk-watcher: {zk.stderr[-2000:]}")
        zk_sent = json.loads(zk.stdout)
    except Exception as e:  # the workload failed: stop the capture, report why
        os.rmdir(cgroup)
        capture.abandon(f"workload failed: {e}")
    os.rmdir(cgroup)
    t1 = int(time.time()) + 1
    time.sleep(1.5)  # the last answers reach the actors
    capture.stop()
    for port in SERVERS:
        ch(port, "SYSTEM FLUSH LOGS")
    failures = []
    batch_app = os.path.basename(cgroup)

    # 1. The report: one row per client application per server.
    report = json.loads(subprocess.run([args.l7tap, "report", out_dir, "--format", "json"],
                                       check=True, capture_output=True, text=True).stdout)
    rows = {}
    for server in report["servers"]:
        for client in server["clients"]:
            key = (server["protocol"], server["server"], client["client"])
            if key in rows:
                failures.append(f"two report rows for {key}")
            rows[key] = client

    # Connections (client ports) of each application, from the server side of `requests`.
    recs = duckdb.sql(f"""
        SELECT protocol, side, server_addr, client_addr, client_app, client_pid, client_process,
               server_app, operation, status, query_id
        FROM read_parquet('{out_dir}/requests/*/*/*.parquet')""").fetchall()
    ports_of = collections.defaultdict(set)
    for r in recs:
        if r[0] == "clickhouse" and r[1] == "server" and r[4]:
            ports_of[(r[2], r[4])].add(int(r[3].rsplit(":", 1)[1]))

    logged = {port: query_log(port, t0, t1) for port in SERVERS}
    print(f"{'server':<16} {'client':<36} {'sent':>9} {'log by id':>9} {'recorded':>9} "
          f"{'log by port':>11} {'report':>9}")
    prefixes = {batch_app: f"{run}-batch-", "dashboard": f"{run}-dashboard-",
                "quick-exit": f"{run}-quick", "clickhouse-client": f"{run}-cli-"}
    for (server, app), (n, e) in sorted(sent.items()):
        port = int(server.rsplit(":", 1)[1])
        by_id = [q for q in logged[port] if q[0].startswith(prefixes[app])]
        by_port = [q for q in logged[port] if q[2] in ports_of[(server, app)]]
        recorded = [r for r in recs if r[0] == "clickhouse" and r[1] == "server" and r[2] == server
                    and r[4] == app and (r[10] or "").startswith(prefixes[app])]
        row = rows.get(("clickhouse", server, app))
        got = (row["requests"], row["errors"]) if row else None
        fig = lambda qs: (len(qs), sum(q[3] for q in qs))
        ours = (len(recorded), sum(r[9] == "error" for r in recorded))
        print(f"{server:<16} {app:<36} {str((n, e)):>9} {str(fig(by_id)):>9} {str(ours):>9} "
              f"{str(fig(by_port)):>11} {str(got):>9}")
        # What the client sent, as the server logged it and as l7tap named it.
        if fig(by_id) != (n, e) or ours != (n, e):
            failures.append(f"{app} on {server}: sent {(n, e)}, query_log by id {fig(by_id)}, "
                            f"recorded under its name {ours}")
        # The report's row: every request of the application's connections (another user of
        # the same program, e.g. clickhouse-client, counts too, on both sides).
        if got != fig(by_port) or (app != "clickhouse-client" and got != (n, e)):
            failures.append(f"{app} on {server}: report {got}, query_log by port {fig(by_port)}, sent {(n, e)}")

    # 3. Each server as a client of the other.
    for port, other in ((9000, 9001), (9001, 9000)):
        server = SERVERS[other]
        names = [k[2] for k in rows if k[0] == "clickhouse" and k[1] == server
                 and k[2].startswith("clickhouse-server :")]
        want = f"clickhouse-server :{port}"
        if names != [want]:
            failures.append(f"rows of clickhouse-server as a client of {server}: {names}, want [{want!r}]")
            continue
        row = rows[("clickhouse", server, want)]
        by_port = [q for q in logged[other] if q[2] in ports_of[(server, want)]]
        ours = {q[1] for q in by_port if q[1].startswith(f"{run}-dashboard-")}
        fig = (len(by_port), sum(q[3] for q in by_port))
        print(f"{server:<16} {want:<36} {'':>9} {'':>9} {'':>9} {str(fig):>11} "
              f"{str((row['requests'], row['errors'])):>9}  (secondary queries of {len(ours)} of ours)")
        if (row["requests"], row["errors"]) != fig:
            failures.append(f"{want} on {server}: report {(row['requests'], row['errors'])}, query_log by port {fig}")
        if len(ours) != 4:
            failures.append(f"{want} on {server}: secondary queries of {len(ours)} of our 4 remote() queries")

    # 4. Both ends joined.
    joined = [r for r in recs if r[0] == "clickhouse" and r[1] == "server" and r[4] == batch_app]
    if not joined or any(r[5] != pids["batch"] or r[6] != "batch-loader" for r in joined):
        failures.append(f"server-side rows of batch-loader lack its pid/process: {joined[:3]}")
    client_side = [r for r in recs if r[0] == "clickhouse" and r[1] == "client" and r[4] == "dashboard"]
    servers_seen = {(r[2], r[7]) for r in client_side}
    want_servers = {(SERVERS[9000], "clickhouse-server :9000"), (SERVERS[9001], "clickhouse-server :9001")}
    if servers_seen != want_servers:
        failures.append(f"client-side rows of dashboard name their servers {servers_seen}, want {want_servers}")

    # 5. ZooKeeper: zk-watcher's records per operation, and its report row.
    zk_records = collections.Counter()
    zk_total = 0
    for r in recs:
        if r[0] == "zookeeper" and r[1] == "server" and r[4] == "zk-watcher":
            zk_total += 1
            zk_records[r[8] + (".error" if r[9] == "error" else "")] += 1
    zk_mismatch = {op: (n, zk_records.get(op, 0)) for op, n in zk_sent.items() if zk_records.get(op, 0) != n}
    print(f"zk-watcher: sent {zk_sent}; server-side records {dict(zk_records)}")
    if zk_mismatch:
        failures.append(f"zk-watcher records differ from what it sent (sent, recorded): {zk_mismatch}")
    zk_row = rows.get(("zookeeper", "127.0.0.1:2181", "zk-watcher"))
    if not zk_row or zk_row["requests"] != zk_total:
        failures.append(f"zk-watcher report row {zk_row and zk_row['requests']} != its {zk_total} records")
    zk_servers = sorted(k[2] for k in rows if k[0] == "zookeeper" and k[2].startswith("clickhouse-server :"))
    print(f"ZooKeeper clients that are ClickHouse servers: {zk_servers}")
    if zk_servers and not set(zk_servers) <= {"clickhouse-server :9000", "clickhouse-server :9001"}:
        failures.append(f"ClickHouse servers' ZooKeeper sessions named {zk_servers}")

    # 6. Identities counted, nothing lost.
    summary = json.load(open(capture.summary_path))
    print(f"identities resolved {summary.get('identity.resolved', 0)}, unresolved "
          f"{summary.get('identity.unresolved', 0)}, peers joined {summary.get('identity.peers_joined', 0)}")
    if summary.get("identity.resolved", 0) == 0:
        failures.append("no identity resolved")
    stats = duckdb.sql(f"""
        SELECT sum(element_at(counters, 'identity.resolved')[1])
        FROM read_parquet('{out_dir}/capture_stats/*/*/*.parquet')""").fetchall()[0][0]
    if stats != summary.get("identity.resolved"):
        failures.append(f"capture_stats identity.resolved {stats} != summary {summary.get('identity.resolved')}")
    lost = {k: summary.get(k, 0) for k in ("kernel.events_failed", "ingest.ring_drops")}
    if any(lost.values()):
        failures.append(f"events were lost: {lost}")
    verdict(failures, "OK: every client is its own row per server, counts equal what each sent and query_log")


if __name__ == "__main__":
    main()
