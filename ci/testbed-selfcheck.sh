#!/usr/bin/env bash
# Quick end-to-end check of the test bed and the load drivers, without l7tap:
# starts everything, creates the schema, runs ch_load (mixed) and zk_load, and compares what
# ch_load says it sent with ClickHouse's own system.query_log; prints per-status tables.
# Leaves the servers running unless --stop.
#
#   ci/testbed-selfcheck.sh [--stop] [--queries 200] [--clients 4] [--zk-ops 500]
#
# Exit status: 0 when every count matches, 1 otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
STOP=0 QUERIES=200 CLIENTS=4 ZK_OPS=500
while [ $# -gt 0 ]; do
  case $1 in
    --stop) STOP=1; shift ;;
    --queries) QUERIES=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --zk-ops) ZK_OPS=$2; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "selfcheck: unknown argument $1" >&2; exit 2 ;;
  esac
done

out=$(mktemp -d /tmp/l7tap-selfcheck.XXXXXX)
echo "selfcheck: outputs in $out" >&2

ci/testbed.sh start
ci/testbed.sh schema

ci/zk-mntr.sh >"$out/mntr-before.json"
sleep 1.1 # keep the schema check's own distributed INSERT out of ch_load's time window
echo "selfcheck: ch_load --queries $QUERIES --clients $CLIENTS --mix mixed --compression mixed" >&2
ch_rc=0
python3 ci/load/ch_load.py --queries "$QUERIES" --clients "$CLIENTS" --mix mixed \
  --compression mixed >"$out/ch_load.json" || ch_rc=$?
echo "selfcheck: zk_load --ops $ZK_OPS" >&2
zk_rc=0
python3 ci/load/zk_load.py --ops "$ZK_OPS" --inflight 500 >"$out/zk_load.json" || zk_rc=$?
ci/zk-mntr.sh >"$out/mntr-after.json"

for port in 9000 9001; do
  clickhouse-client --port $port --query 'SYSTEM FLUSH LOGS'
done

rc=0
python3 - "$out" "$ch_rc" "$zk_rc" <<'EOF' || rc=1
import collections, json, subprocess, sys

out, ch_rc, zk_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ch = json.load(open(f"{out}/ch_load.json"))
zk = json.load(open(f"{out}/zk_load.json"))
m0 = json.load(open(f"{out}/mntr-before.json"))
m1 = json.load(open(f"{out}/mntr-after.json"))
prefix = ch["query_id_prefix"]
ok = True


def q(port, sql):
    res = subprocess.run(["clickhouse-client", "--port", str(port), "--query", sql],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in res.splitlines() if line]


# 18.16: type 1 QueryStart, 2 QueryFinish, 3 ExceptionBeforeStart, 4 ExceptionWhileProcessing;
# no exception_code column: the code is the number after "Code: " in `exception`.
log = collections.Counter()
users = collections.Counter()
secondary = collections.Counter()
for port in (9000, 9001):
    for typ, initial, code, user, n in q(port, f"""
        SELECT type, is_initial_query, extract(exception, '^Code: ([0-9]+)') AS code, user, count()
        FROM system.query_log
        WHERE query_id LIKE '{prefix}-%' OR initial_query_id LIKE '{prefix}-%'
        GROUP BY type, is_initial_query, code, user"""):
        n = int(n)
        if initial == "1":
            log[(typ, code)] += n
            if typ != "1":
                users[user] += n
        else:
            secondary[(port, typ)] += n

sent_ok = ch["by_status"].get("ok", 0)
rows = [("ok (QueryFinish, type 2)", sent_ok, log[("2", "")])]
for code, n in sorted(ch["by_error_code"].items()):
    logged = log[("3", code)] + log[("4", code)]
    rows.append((f"error {code} (type 3: {log[('3', code)]}, type 4: {log[('4', code)]})", n, logged))
logged_codes = {c for (t, c) in log if t in ("3", "4")}
for code in sorted(logged_codes - set(ch["by_error_code"])):
    rows.append((f"error {code} (not sent by ch_load!)", 0, log[("3", code)] + log[("4", code)]))
starts_expected = sent_ok + sum(n for (t, c), n in log.items() if t == "4")
rows.append(("QueryStart (type 1) = ok + type 4", starts_expected, log[("1", "")]))
total_logged = sum(n for (t, c), n in log.items() if t != "1")
rows.append(("total queries (types 2-4)", ch["queries"], total_logged))
for user, n in sorted(ch["by_user"].items()):
    rows.append((f"user {user}", n, users[user]))
sec_finished = sum(n for (p, t), n in secondary.items() if t == "2")
s2s = ch["server_to_server_expected"]
rows.append(("secondary SELECTs finished (other shard)", s2s["secondary_selects"], sec_finished))
# 18.16 forwards a synchronous Distributed INSERT as an initial query with its own random
# query_id from client "ClickHouse server": matched by time window only.
fwd = 0
for port in (9000, 9001):
    fwd += int(q(port, f"""
        SELECT count() FROM system.query_log
        WHERE type = 2 AND client_name = 'ClickHouse server'
          AND query LIKE 'INSERT INTO l7tap.events_local%'
          AND event_time BETWEEN toDateTime({int(ch['started_unix'])})
                             AND toDateTime({int(ch['ended_unix']) + 1})""")[0][0])
rows.append(("forwarded INSERTs finished (other shard, by time)", s2s["forwarded_inserts"], fwd))

print(f"\nClickHouse: ch_load ({prefix}) vs system.query_log")
print(f"{'status':58} {'ch_load':>8} {'query_log':>10}")
for name, a, b in rows:
    mark = "" if a == b else "   <-- MISMATCH"
    ok &= a == b
    print(f"{name:58} {a:>8} {b:>10}{mark}")
print(f"ch_load: {ch['unexpected_outcomes']} unexpected outcomes; wire: "
      f"{ch['wire']['hello_and_connections']} connections (Hello), {ch['wire']['pings']} pings, "
      f"{ch['elapsed_s']}s")
ok &= ch["unexpected_outcomes"] == 0 and ch_rc == 0

print("\nZooKeeper: zk_load requests (client side) vs replies read on the wire")
req = zk["requests"]["by_op_and_error"]
rep = zk["wire"]["replies_by_op_and_error"]
errors = sorted({e for d in list(req.values()) + list(rep.values()) for e in d} - {"Ok", "Ok(multi failed)"})
print(f"{'op':14} {'sent':>6} {'wire':>6} {'ok':>6} " + " ".join(f"{e:>11}" for e in errors))
for op in sorted(set(zk["wire"]["requests_by_op"]) | set(req)):
    sent = sum(req.get(op, {}).values())
    wire = zk["wire"]["requests_by_op"].get(op, 0)
    r = rep.get(op, {})
    print(f"{op:14} {sent:>6} {wire:>6} {r.get('Ok', 0):>6} " + " ".join(f"{r.get(e, 0):>11}" for e in errors))
print(f"errors (client side): {zk['requests']['by_error']}")
print(f"notifications on the wire: {zk['watches']['notifications_on_wire']}; "
      f"watch callbacks: {zk['watches']['callbacks_fired']}")
print(f"kazoo extras beyond the workload: {zk['wire']['extra_requests_beyond_workload']}; "
      f"max in flight on the wire: {zk['max_in_flight_on_wire']}")
# The server saw at least what zk_load wrote (ClickHouse's own ZooKeeper traffic comes on top).
d_recv = m1["zk_packets_received"] - m0["zk_packets_received"]
print(f"mntr zk_packets_received delta: {d_recv} (zk_load wrote {zk['wire']['requests_total']} "
      f"requests; the rest is ClickHouse's replication traffic and 4lw)")
zk_match = all(sum(req.get(op, {}).values()) == sum(rep.get(op, {}).values())
               for op in req if op != "auth") and zk["unexpected_outcomes"] == 0 and zk_rc == 0
if not zk_match:
    print("ZooKeeper: MISMATCH between requests and replies, or unexpected outcomes")
ok &= zk_match and d_recv >= zk["wire"]["requests_total"] - 1
for name in ("NoNode", "NodeExists", "BadVersion"):
    print(f"  {name}: {zk['requests']['by_error'].get(name, 0)}")

print("\nselfcheck:", "OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
EOF

if [ $STOP = 1 ]; then
  ci/testbed.sh stop
fi
exit $rc
