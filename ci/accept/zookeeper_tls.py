#!/usr/bin/env python3
"""ZooKeeper over TLS acceptance check against the real test bed.

The test bed's `zktls` server (ci/testbed.sh) serves a secure client port (2281, Netty, a
self-signed certificate). kazoo with use_ssl=True talks to it through Python's ssl module,
that is the system's libssl, which l7tap hooks. The server side is the JVM's own TLS (JSSE),
which no uprobe reaches: l7tap sees only its ciphertext and must build nothing from it.

Captures with l7tap while zk_load.py runs its kazoo workload over TLS, then checks, from the
Parquet `requests` table:
  1. the kazoo session's client-side records (by its pid) count per op and per outcome exactly
     what the workload sent, and per op exactly the frames kazoo wrote (connect, auth and
     closeSession included) and the watch notifications it read;
  2. every record of the secure port says tls = true, and there is no server-side record of
     it (ciphertext never reaches a parser);
  3. no event was lost, and the auth secret appears in no output.

    ci/accept/zookeeper_tls.py --l7tap target/release/l7tap --workdir /tmp/zk-tls-accept
"""
import argparse, collections, json, subprocess, sys, time

import duckdb

from common import ROOT, Capture, secret_reached_output, verdict
from zookeeper import outcome

TLS_PORT = 2281


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--l7tap", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--ops", type=int, default=1200)
    ap.add_argument("--inflight", type=int, default=100)
    args = ap.parse_args()
    capture = Capture(args.l7tap, args.workdir, ["--protocols", "zookeeper"])

    load = subprocess.Popen([sys.executable, f"{ROOT}/ci/load/zk_load.py", "--ops", str(args.ops),
                             "--inflight", str(args.inflight), "--use-ssl",
                             "--hosts", f"127.0.0.1:{TLS_PORT}"],
                            stdout=subprocess.PIPE, text=True)
    load_stdout, _ = load.communicate()
    if load.returncode != 0:
        capture.abandon(f"zk_load.py --use-ssl failed ({load.returncode})")
    time.sleep(1)
    capture.stop()
    workload = json.loads(load_stdout)
    failures = []

    rows = duckdb.sql(f"""
        select side, pid, server_addr, operation, status, error_name, tls
        from read_parquet('{capture.out_dir}/requests/*/*/*.parquet') where protocol = 'zookeeper'
    """).fetchall()
    secure = [r for r in rows if r[2].endswith(f":{TLS_PORT}")]
    client = [r for r in secure if r[0] == "client" and r[1] == load.pid]

    # 1. The workload's requests, per op and outcome; kazoo's frames, per op.
    sent = workload["requests"]
    expected = {(op, o): n for op, by in sent["by_op_and_error"].items() for o, n in by.items()}
    got = collections.Counter((r[3], outcome(r[3], r[4], r[5])) for r in client
                              if r[3] in sent["by_op"])
    for key in sorted(set(expected) | set(got)):
        if expected.get(key, 0) != got.get(key, 0):
            failures.append(f"{key[0]} {key[1]}: l7tap {got.get(key, 0)}, workload {expected.get(key, 0)}")
    wire = dict(workload["wire"]["requests_by_op"])
    # Watch notifications: server frames, one record each.
    wire["notification"] = sum(workload["watches"]["notifications_on_wire"].values())
    got_ops = collections.Counter(r[3] for r in client)
    for op in sorted(set(wire) | set(got_ops)):
        if wire.get(op, 0) != got_ops.get(op, 0):
            failures.append(f"{op}: l7tap {got_ops.get(op, 0)} records, kazoo wrote {wire.get(op, 0)} frames")
    print(f"client side over TLS: {len(client)} records; kazoo wrote {sum(wire.values())} frames "
          f"({sent['total']} workload requests)")
    if sent["total"] < 1000:
        failures.append(f"only {sent['total']} requests were sent")

    # 2. tls on every record of the secure port; nothing from the server's ciphertext.
    plain = [r for r in secure if not r[6]]
    if plain:
        failures.append(f"{len(plain)} records of port {TLS_PORT} say tls = false")
    server = [r for r in secure if r[0] == "server"]
    if server:
        failures.append(f"{len(server)} server-side records of port {TLS_PORT}: built from "
                        f"ciphertext (the JVM's TLS is not hooked)")

    # 3. Loss and credentials.
    summary = json.load(open(capture.summary_path))
    if summary.get("kernel.events_failed", 0) or summary.get("ingest.ring_drops", 0):
        failures.append(f"events were lost: {summary.get('kernel.events_failed', 0)} in the kernel, "
                        f"{summary.get('ingest.ring_drops', 0)} on rings")
    if secret_reached_output("zk-secret-auth", capture.out_dir):
        failures.append("the auth secret reached the output")

    verdict(failures, f"ZooKeeper over TLS: {len(client)} client-side records, all tls = true, "
                      f"equal to what kazoo sent; no server-side record from ciphertext")


if __name__ == "__main__":
    main()
