#!/usr/bin/env python3
"""ZooKeeper acceptance check against the real test bed (issue: exact xid pairing).

Captures with l7tap while zk_load.py runs a kazoo workload (>= 5000 ops, >= 500 requests in
flight, every op kind, watches, NoNode/NodeExists/BadVersion failures), then checks, from the
Parquet `requests` table:
  1. the kazoo session's records, on the client side (python3) and on the server side
     (java, the same client address), count per op and per outcome exactly what the
     workload sent;
  2. every server-side record between the two `mntr` four-letter words (all sessions,
     ClickHouse's included; connects and pings too), notifications and four-letter words
     aside, plus the closing mntr (which the server counts before answering it), equals the
     server's own packets_received delta between them;
  3. no auth secret appears in the output.

    ci/accept/zookeeper.py --l7tap target/release/l7tap --workdir /tmp/zk-accept
"""
import argparse, collections, json, os, subprocess, sys, time

import duckdb

from common import ROOT, Capture, secret_reached_output, verdict


def mntr():
    out = subprocess.run(["bash", f"{ROOT}/ci/zk-mntr.sh"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def zookeeper_server_pid():
    """The test bed's ZooKeeper JVM (ci/testbed.sh writes its pid file)."""
    path = f"{os.environ.get('L7TAP_TESTBED_DIR', '/tmp/l7tap-testbed')}/zk/zk.pid"
    with open(path) as f:
        pid = int(f.read().split()[0])
    with open(f"/proc/{pid}/comm") as f:
        comm = f.read().strip()
    if comm != "java":
        sys.exit(f"{path} names pid {pid} ({comm}), not the ZooKeeper JVM")
    return pid


def outcome(op, status, error):
    """A record's outcome, named as zk_load.py counts it."""
    if status == "ok":
        return "Ok"
    if op == "multi" and status == "error":
        return "Ok(multi failed)"  # kazoo: header ok, the failure is in the sub-results
    return error or status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--l7tap", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--ops", type=int, default=6000)
    ap.add_argument("--inflight", type=int, default=600)
    args = ap.parse_args()
    capture = Capture(args.l7tap, args.workdir, ["--protocols", "zookeeper"])
    out_dir = capture.out_dir

    before = mntr()
    load = subprocess.Popen([sys.executable, f"{ROOT}/ci/load/zk_load.py", "--ops", str(args.ops),
                             "--inflight", str(args.inflight),
                             "--hold-server-pid", str(zookeeper_server_pid())],
                            stdout=subprocess.PIPE, text=True)
    load_stdout, _ = load.communicate()
    if load.returncode != 0:
        capture.abandon(f"zk_load.py failed ({load.returncode})")
    after = mntr()
    time.sleep(1)
    capture.stop()
    workload = json.loads(load_stdout)
    failures = []

    sent = workload["requests"]
    print(f"in flight at once: {workload.get('max_in_flight_on_wire')} requests "
          f"(window {workload.get('inflight_window')})")
    if workload.get("max_in_flight_on_wire", 0) < 500:
        failures.append(f"only {workload.get('max_in_flight_on_wire')} requests were in flight at once")
    if sent["total"] < 5000:
        failures.append(f"only {sent['total']} requests were sent")

    rows = duckdb.sql(f"""
        select side, comm, client_addr, operation, status, error_name, ts, pid
        from read_parquet('{out_dir}/requests/*/*/*.parquet') where protocol = 'zookeeper'
    """).fetchall()

    # 1. The workload's sessions: client side by its pid, server side by client address.
    kazoo_addrs = {r[2] for r in rows if r[0] == "client" and r[7] == load.pid}

    expected = {(op, o): n for op, by in sent["by_op_and_error"].items() for o, n in by.items()}
    for side in ("client", "server"):
        got = collections.Counter(
            (r[3], outcome(r[3], r[4], r[5])) for r in rows
            if r[0] == side and r[2] in kazoo_addrs and r[3] in sent["by_op"]
        )
        for key in sorted(set(expected) | set(got)):
            if expected.get(key, 0) != got.get(key, 0):
                failures.append(f"{side} side: {key[0]} {key[1]}: l7tap {got.get(key, 0)}, workload {expected.get(key, 0)}")
        print(f"{side} side: {sum(got.values())} kazoo requests recorded, workload sent {sum(expected.values())}")

    # 2. Server side against mntr, between the two mntr four-letter words (exact only when
    #    nothing else loses events meanwhile: the summary's kernel.events_failed must be 0).
    summary = json.load(open(capture.summary_path))
    if summary.get("kernel.events_failed", 0) or summary.get("ingest.ring_drops", 0):
        failures.append(f"events were lost: {summary.get('kernel.events_failed', 0)} in the kernel, "
                        f"{summary.get('ingest.ring_drops', 0)} on rings")
    marks = sorted(r[6] for r in rows if r[0] == "server" and r[3] == "4lw:mntr")
    if len(marks) < 2:
        failures.append(f"expected 2 mntr records on the server side, found {len(marks)}")
    else:
        first, last = marks[0], marks[-1]
        between = [r for r in rows if r[0] == "server" and first < r[6] < last
                   and r[3] != "notification" and not r[3].startswith("4lw:")]
        # The server counts every request packet (connects and pings included) and, before
        # running it, a four-letter word itself (NIOServerCnxn.checkFourLetterWord calls
        # packetReceived(4)): the closing mntr is inside its own delta.
        delta = after["zk_packets_received"] - before["zk_packets_received"]
        expected_delta = len(between) + 1
        print(f"server side between the mntr calls: {len(between)} requests + the closing mntr; "
              f"mntr packets_received delta {delta}")
        if expected_delta != delta:
            by_op = collections.Counter(r[3] for r in between)
            failures.append(f"server-side requests {len(between)} + 1 != mntr delta {delta} ({dict(by_op)})")

    # 3. Credentials.
    if secret_reached_output("zk-secret-auth", out_dir):
        failures.append("the auth secret reached the output")

    verdict(failures)


if __name__ == "__main__":
    main()
