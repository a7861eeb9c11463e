#!/usr/bin/env python3
"""Acceptance of object-storage outputs (`--out s3://BUCKET/PREFIX`) against the test bed's S3
server (moto_server, ci/testbed.sh start-s3), run by tools/tests/accept.rs:

    python3 ci/accept/object_storage.py --l7tap BIN --workdir DIR --recording REC \\
        --requests N

* same rows: a replay of REC to s3:// and to a local directory hold the same `requests`,
  `intervals` and `capture_stats` rows, read back with pyarrow (S3FileSystem) and with
  ClickHouse (chdb's s3() table function); `report` of the two agrees;
* two hosts: replays with --host h1 and --host h2 into one prefix: both `host=` levels are
  there, each with every row;
* fail fast: an unreachable endpoint and a missing bucket are one line and exit status 1,
  before anything is written; bad credentials and a read-only user likewise, against a moto
  of this script's own with authentication on; no probe object is left behind; no credential
  reaches stderr;
* fault: moto is frozen with SIGSTOP for 30 s in the middle of a live capture (ClickHouse
  queries run throughout), then resumed: the bucket holds every `requests` row of a replay of
  the capture's recording exactly once;
* crash: a capture killed with SIGKILL while moto is frozen leaves published files in its
  spool; the next run with that --out uploads them, byte for byte;
* bound: a capture with a 1-byte spool bound drops every `requests` and `intervals` file,
  says so on stderr, and the `upload.dropped_rows` counters of its `capture_stats` rows in the
  bucket add up to the rows it dropped.
"""
import argparse
import collections
import glob
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

from common import Capture, verdict

ENDPOINT = "http://127.0.0.1:{port}"
KEY, SECRET = "l7tap-accept-key", "l7tap-accept-secret-9f2c"
failures = []


def fail(message):
    print("FAIL:", message, flush=True)
    failures.append(message)


def s3_env(endpoint, key=KEY, secret=SECRET):
    env = dict(os.environ)
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_REGION="us-east-1")
    return env


def boto(endpoint, service="s3", key=KEY, secret=SECRET):
    import boto3
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret)


def run_l7tap(args, env, timeout=600):
    """Runs l7tap; returns (exit status, stderr)."""
    done = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, text=True)
    return done.returncode, done.stdout, done.stderr


def run_id_of(stderr):
    match = re.search(r"\(run (\w+)\)", stderr)
    return match.group(1) if match else None


def keys(s3, bucket, prefix):
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


def rows_of(table):
    """Rows of a pyarrow table as a multiset of their repr."""
    return collections.Counter(repr(sorted(r.items())) for r in table.to_pylist())


def read_local(out, table):
    import pyarrow.parquet as pq
    files = sorted(glob.glob(f"{out}/{table}/*/*/*.parquet"))
    if not files:
        return None
    import pyarrow as pa
    return pa.concat_tables([pq.read_table(f) for f in files])


def read_s3(fs, bucket, prefix, table, host):
    """pyarrow over S3: the table's files of one host."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs
    selector = pafs.FileSelector(f"{bucket}/{prefix}/{table}", recursive=True)
    files = sorted(i.path for i in fs.get_file_info(selector)
                   if i.path.endswith(".parquet") and f"/host={host}/" in i.path)
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, filesystem=fs) for f in files])


def chdb_count(endpoint, bucket, prefix, table, host=None):
    import chdb
    where = f" WHERE _path LIKE '%/host={host}/%'" if host else ""
    sql = (f"SELECT count() FROM s3('{endpoint}/{bucket}/{prefix}/{table}/**/*.parquet', "
           f"'{KEY}', '{SECRET}', 'Parquet'){where}")
    return int(str(chdb.query(sql, "TSV")).strip())


def check_same_rows(what, local, remote):
    if local is None or remote is None:
        fail(f"{what}: no rows (local {local is not None}, s3 {remote is not None})")
        return
    a, b = rows_of(local), rows_of(remote)
    if a != b:
        fail(f"{what}: {sum((a - b).values())} rows only in the directory, "
             f"{sum((b - a).values())} only in the bucket ({local.num_rows} vs {remote.num_rows})")
    else:
        print(f"{what}: {local.num_rows} rows, identical", flush=True)


def same_rows_and_two_hosts(args, endpoint, bucket, env):
    local = f"{args.workdir}/local"
    spool = f"{args.workdir}/spool"
    status, _, err = run_l7tap([args.l7tap, "replay", args.recording, "--out", local,
                                "--host", "h1"], env)
    if status != 0:
        fail(f"replay to a directory failed: {err}")
        return
    runs = {}
    for host in ["h1", "h2"]:
        status, _, err = run_l7tap([args.l7tap, "replay", args.recording, "--out",
                                    f"s3://{bucket}/fleet", "--host", host, "--spool", spool], env)
        if status != 0:
            fail(f"replay to s3 (--host {host}) failed: {err}")
            return
        runs[host] = run_id_of(err)
        if SECRET in err or KEY in err:
            fail("a credential reached stderr")
    from pyarrow import fs as pafs
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key=KEY,
                           secret_key=SECRET, region="us-east-1")
    for table in ["requests", "intervals", "capture_stats"]:
        expected = read_local(local, table)
        for host in ["h1", "h2"]:
            check_same_rows(f"{table} host={host} (pyarrow)", expected,
                            read_s3(fs, bucket, "fleet", table, host))
        for host in ["h1", "h2"]:
            count = chdb_count(endpoint, bucket, "fleet", table, host)
            if expected is None or count != expected.num_rows:
                fail(f"chdb s3() {table} host={host}: {count} rows, directory has "
                     f"{None if expected is None else expected.num_rows}")
        total = chdb_count(endpoint, bucket, "fleet", table)
        print(f"chdb s3() {table}: {total} rows for 2 hosts", flush=True)
    requests = read_local(local, "requests")
    if requests is None or requests.num_rows != args.requests:
        fail(f"the directory holds {None if requests is None else requests.num_rows} requests, "
             f"the recording {args.requests}")
    leftover = [f for f in glob.glob(f"{spool}/**/*.parquet", recursive=True)]
    if leftover:
        fail(f"{len(leftover)} files left in the spool after clean runs")
    objects = keys(boto(endpoint), bucket, "fleet/")
    hosts = sorted({m.group(1) for k in objects for m in [re.search(r"/host=([^/]+)/", k)] if m})
    if hosts != ["h1", "h2"]:
        fail(f"host levels in the bucket: {hosts}")
    if any("_l7tap_probe" in k for k in objects):
        fail("a probe object was left in the bucket")
    # report reads s3:// as it reads the directory.
    reports = []
    for out, extra in [(local, []), (f"s3://{bucket}/fleet", ["--run", runs["h1"]])]:
        status, text, err = run_l7tap([args.l7tap, "report", out, "--format", "json", *extra], env)
        if status != 0:
            fail(f"report {out} failed: {err}")
            return
        doc = json.loads(text)
        doc.pop("dir", None)
        doc.pop("runs", None)
        reports.append(doc)
    if reports[0] != reports[1]:
        fail("report of the s3 output differs from the directory's")
    else:
        print("report of s3:// (--run of host h1) equals the directory's", flush=True)


def fail_fast(args, endpoint, bucket):
    spool = f"{args.workdir}/spool-bad"
    cases = [
        ("unreachable endpoint", s3_env("http://127.0.0.1:9"), f"s3://{bucket}/x", "unreachable"),
        ("missing bucket", s3_env(endpoint), "s3://l7tap-no-such-bucket/x", "does not exist"),
    ]
    auth = start_auth_moto(args)
    if auth:
        auth_endpoint, admin, reader, process = auth
        cases += [
            ("bad credentials", s3_env(auth_endpoint, admin[0], "wrong-secret"),
             "s3://authb/x", "credentials were refused"),
            ("unknown access key", s3_env(auth_endpoint, "AKIAUNKNOWNUNKNOWN00", admin[1]),
             "s3://authb/x", "credentials were refused"),
            ("read-only user", s3_env(auth_endpoint, *reader), "s3://authb/x", "read-only"),
        ]
    try:
        for name, env, out, expected in cases:
            started = time.time()
            status, _, err = run_l7tap([args.l7tap, "replay", args.recording, "--out", out,
                                        "--spool", spool], env, timeout=120)
            lines = [line for line in err.splitlines() if line.strip()]
            if status == 0 or len(lines) != 1 or expected not in lines[0]:
                fail(f"{name}: exit {status}, stderr {err!r}")
            else:
                print(f"{name}: exit {status} in {time.time() - started:.1f}s: {lines[0]}",
                      flush=True)
            if env["AWS_SECRET_ACCESS_KEY"] in err:
                fail(f"{name}: the secret key reached stderr")
            if glob.glob(f"{spool}/**/*.parquet", recursive=True):
                fail(f"{name}: files were written before the check")
        if auth:
            left = keys(boto(auth_endpoint, key=admin[0], secret=admin[1]), "authb", "")
            if left:
                fail(f"objects left by the probes: {sorted(left)}")
    finally:
        if auth:
            process.terminate()
            process.wait(timeout=30)


def start_auth_moto(args):
    """A moto of this script's own with authentication on (the first 5 requests are free:
    they create an admin, its key and policy); returns (endpoint, admin, reader, process)."""
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    endpoint = ENDPOINT.format(port=port)
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="5")
    os.makedirs(f"{args.workdir}/moto-auth", exist_ok=True)
    process = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                               cwd=f"{args.workdir}/moto-auth", stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    import urllib.request
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except Exception as e:  # not listening yet, or 403 once it is
            if getattr(e, "code", None):
                break
            time.sleep(0.2)
    iam = boto(endpoint, "iam", "x", "x")
    allow_all = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    read_only = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"],
                                "Resource": "*"}]}
    iam.create_user(UserName="admin")
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    admin = (key["AccessKeyId"], key["SecretAccessKey"])
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(allow_all))
    iam = boto(endpoint, "iam", *admin)
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    reader = (key["AccessKeyId"], key["SecretAccessKey"])
    iam.put_user_policy(UserName="reader", PolicyName="ro", PolicyDocument=json.dumps(read_only))
    boto(endpoint, "s3", *admin).create_bucket(Bucket="authb")
    return endpoint, admin, reader, process


def clickhouse_load(seconds, tag):
    """Distinct queries on ch1 for `seconds`; returns how many."""
    from clickhouse_driver import Client
    client = Client("127.0.0.1", port=9000, connect_timeout=10, send_receive_timeout=60)
    n = 0
    end = time.time() + seconds
    while time.time() < end:
        client.execute(f"SELECT {n} AS {tag}")
        n += 1
        time.sleep(0.01)
    client.disconnect()
    return n


def moto_pid():
    state = os.environ.get("L7TAP_TESTBED_DIR", "/tmp/l7tap-testbed")
    return int(open(f"{state}/s3/s3.pid").read().split()[0])


def fault(args, endpoint, bucket, env):
    spool = f"{args.workdir}/spool-fault"
    record = f"{args.workdir}/fault.rec"
    capture = Capture(args.l7tap, f"{args.workdir}/fault", [
        "--record", record, "--host", "fault", "--spool", spool, "--port", "9000",
        "--protocols", "clickhouse"], out=f"s3://{bucket}/fault")
    pid = moto_pid()
    queries = clickhouse_load(8, "before")
    os.kill(pid, signal.SIGSTOP)
    try:
        queries += clickhouse_load(30, "frozen")
    finally:
        os.kill(pid, signal.SIGCONT)
    queries += clickhouse_load(8, "after")
    capture.stop()
    log = capture.log()
    summary = json.load(open(capture.summary_path))
    print(f"fault: {queries} queries; uploader: {summary.get('upload.files', 0)} files, "
          f"{summary.get('upload.files_left_in_spool', 0)} left in the spool", flush=True)
    if "retrying" not in log:
        fail("fault: the capture never said it was retrying an upload")
    if summary.get("upload.files_left_in_spool", 0) != 0:
        fail(f"fault: files left in the spool: {summary}")
    local = f"{args.workdir}/fault-local"
    # The capture's filters, so that the replay gives the rows the capture wrote.
    status, _, err = run_l7tap([args.l7tap, "replay", record, "--out", local, "--port", "9000",
                                "--protocols", "clickhouse"], env)
    if status != 0:
        fail(f"fault: replay of the recording failed: {err}")
        return
    from pyarrow import fs as pafs
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key=KEY,
                           secret_key=SECRET, region="us-east-1")
    expected = read_local(local, "requests")
    remote = read_s3(fs, bucket, "fault", "requests", "fault")
    check_same_rows("fault: requests in the bucket vs a replay of the recording", expected, remote)
    if remote is not None:
        twice = sum(1 for n in rows_of(remote).values() if n > 1)
        if twice:
            fail(f"fault: {twice} rows are in the bucket more than once")
        pattern = re.compile(r"SELECT \d+ AS (before|frozen|after)$")
        for side in ["client", "server"]:
            seen = sum(1 for q, s in zip(remote.column("query").to_pylist(),
                                         remote.column("side").to_pylist())
                       if s == side and q and pattern.match(q))
            print(f"fault: {seen} {side}-side records of the {queries} workload queries in the "
                  "bucket", flush=True)
            if seen != queries:
                fail(f"fault: {seen} {side}-side records of the workload in the bucket, "
                     f"{queries} queries sent")


def crash(args, endpoint, bucket, env):
    spool = f"{args.workdir}/spool-crash"
    capture = Capture(args.l7tap, f"{args.workdir}/crash", [
        "--host", "crash", "--spool", spool, "--roll-age", "2s", "--port", "9000",
        "--protocols", "clickhouse"], out=f"s3://{bucket}/crash")
    pid = moto_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.time() + 60
        spooled = []
        while time.time() < deadline:
            clickhouse_load(1, "crash")
            spooled = [p for p in glob.glob(f"{spool}/**/*.parquet", recursive=True)
                       if not os.path.basename(p).startswith(".")]
            if len({p.split("/s3_")[1].split("/")[1] for p in spooled}) >= 3:
                break
        capture.process.send_signal(signal.SIGKILL)
        capture.process.wait(timeout=30)
    finally:
        os.kill(pid, signal.SIGCONT)
    left = {}
    for path in glob.glob(f"{spool}/**/*.parquet", recursive=True):
        if not os.path.basename(path).startswith("."):
            relative = path.split("/s3_", 1)[1].split("/", 1)[1]
            left[relative] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    print(f"crash: SIGKILL left {len(left)} published files in the spool", flush=True)
    if not left:
        fail("crash: no published file was left in the spool")
        return
    status, _, err = run_l7tap([args.l7tap, "replay", args.recording, "--out",
                                f"s3://{bucket}/crash", "--host", "crash-next", "--spool", spool],
                               env)
    if status != 0 or "left in the spool" not in err:
        fail(f"crash: the next run did not say it uploads the spool: exit {status}: {err}")
    s3 = boto(endpoint)
    for relative, digest in left.items():
        try:
            body = s3.get_object(Bucket=bucket, Key=f"crash/{relative}")["Body"].read()
        except Exception as e:
            fail(f"crash: {relative} is not in the bucket: {e}")
            continue
        if hashlib.sha256(body).hexdigest() != digest:
            fail(f"crash: {relative} differs from the spooled file")
    still = [p for p in glob.glob(f"{spool}/**/*.parquet", recursive=True)
             if not os.path.basename(p).startswith(".")]
    if still:
        fail(f"crash: {len(still)} files still in the spool after the next run")
    print(f"crash: the next run uploaded the {len(left)} files, byte for byte", flush=True)


def bound(args, endpoint, bucket, env):
    capture = Capture(args.l7tap, f"{args.workdir}/bound", [
        "--host", "bound", "--spool", f"{args.workdir}/spool-bound", "--spool-max-bytes", "1",
        "--roll-age", "2s", "--port", "9000", "--protocols", "clickhouse"],
        out=f"s3://{bucket}/bound")
    queries = clickhouse_load(12, "bound")
    capture.stop()
    summary = json.load(open(capture.summary_path))
    dropped = summary.get("upload.dropped_rows", 0)
    if "over its bound" not in capture.log():
        fail("bound: the capture did not say it dropped files")
    objects = keys(boto(endpoint), bucket, "bound/")
    tables = collections.Counter(k.split("/")[1] for k in objects)
    if tables["requests"] or tables["intervals"] or not tables["capture_stats"]:
        fail(f"bound: objects per table {dict(tables)}")
    from pyarrow import fs as pafs
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key=KEY,
                           secret_key=SECRET, region="us-east-1")
    stats = read_s3(fs, bucket, "bound", "capture_stats", "bound")
    counted = 0
    for counters in (stats.column("counters").to_pylist() if stats is not None else []):
        counted += sum(v for k, v in counters if k == "upload.dropped_rows")
    print(f"bound: {queries} queries, {dropped} rows dropped, {counted} counted in capture_stats, "
          f"objects {dict(tables)}", flush=True)
    if dropped < 2 * queries or counted != dropped:
        fail(f"bound: {dropped} rows dropped (>= {2 * queries} expected), {counted} in capture_stats")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--l7tap", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--recording", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--s3-port", type=int,
                        default=int(os.environ.get("L7TAP_TESTBED_S3_PORT", "9900")))
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    endpoint = ENDPOINT.format(port=args.s3_port)
    bucket = f"l7tap-accept-{os.getpid()}"
    boto(endpoint).create_bucket(Bucket=bucket)
    env = s3_env(endpoint)
    # Captures inherit this environment.
    os.environ.update(env)
    for step in [same_rows_and_two_hosts, fail_fast, fault, crash, bound]:
        started = time.time()
        if step is fail_fast:
            step(args, endpoint, bucket)
        else:
            step(args, endpoint, bucket, env)
        print(f"-- {step.__name__}: {time.time() - started:.0f}s", flush=True)
    verdict(failures, "object storage: every check passed")


if __name__ == "__main__":
    main()
