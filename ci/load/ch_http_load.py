#!/usr/bin/env python3
"""ClickHouse HTTP-interface load driver, for comparing against l7tap's clickhouse_http records.

Sends queries over HTTP/1.1 to one port: one-shot GETs with `urllib` (a connection per
request), keep-alive sessions with `http.client` (several queries per connection) and, when
the `requests` module is installed, `requests` Sessions. Every query carries a unique
`query_id=<prefix>-s<session>-<n>`. Prints on stdout one JSON summary of exactly what was sent:
per query_id its kind, method, client, expected error code (0: none), observed HTTP status and
error code; totals per kind, status and code; connections opened and HTTP exchanges sent.
Progress and warnings go to stderr.

    ci/load/ch_http_load.py --port 8123 --sessions 4 --queries 20
    ci/load/ch_http_load.py --port 8124 --check-query-log     # also compares with query_log

Kinds: SELECTs by GET (`query=`) and POST (body), INSERTs with the query in the URL and the
data in the body, or both in the body, unknown table (60, HTTP 404), syntax error (62, 400),
`throwIf` after 1 MiB of result (395, appended to a 200 result), a 200000-row result, a gzip
result (`enable_http_compression=1`), the user `l7tap` with its password by Basic auth and by
`X-ClickHouse-User`/`-Key`, and a wrong password (193, 401: the server logs no query).

`--check-query-log` flushes the logs and reads `system.query_log` rows of this run
(`interface = 2`, query_id prefix), and reports per query_id the row types and exception code
it found next to what was expected.
"""
import argparse
import base64
import collections
import gzip
import http.client
import json
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

try:
    import requests
except ImportError:  # optional: the requests sessions are skipped without it
    requests = None

USER = "l7tap"
PASSWORD = "l7tap-secret-pw"
TABLE = "default.l7_http_load"
BIG_ROWS = 200_000


class Kind:
    def __init__(self, name, method, query=None, body=None, expect=0, params=None,
                 headers=None, weight=1.0, auth=None):
        self.name, self.method, self.query, self.body = name, method, query, body
        self.expect, self.params, self.headers = expect, params or {}, headers or {}
        self.weight, self.auth = weight, auth


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


KINDS = [
    Kind("get_select", "GET", query="SELECT 1", weight=4),
    Kind("post_select", "POST", body=b"SELECT number, toString(number) FROM numbers(10)",
         weight=3),
    Kind("get_database_format", "GET", query="SELECT count() FROM tables",
         params={"database": "system", "default_format": "TSVWithNames"}, weight=1),
    Kind("insert_param", "POST", query=f"INSERT INTO {TABLE} FORMAT TSV",
         body=b"1\tone\n2\ttwo\n3\tthree\n", weight=2),
    Kind("insert_body_values", "POST", body=f"INSERT INTO {TABLE} VALUES (4, 'four')".encode(),
         weight=1),
    Kind("insert_body_format", "POST", body=f"INSERT INTO {TABLE} FORMAT TSV\n5\tfive\n".encode(),
         weight=1),
    Kind("error_unknown_table", "GET", query="SELECT * FROM default.no_such_table", expect=60,
         weight=1),
    Kind("error_syntax", "POST", body=b"SELECT id FROM system.one WHERE (", expect=62, weight=1),
    Kind("error_midstream", "GET",
         query="SELECT number, throwIf(number = 300000) FROM system.numbers", expect=395,
         weight=0.2),
    Kind("big_result", "GET", query=f"SELECT number FROM system.numbers LIMIT {BIG_ROWS}",
         weight=0.3),
    Kind("gzip_result", "GET", query="SELECT number, toString(number) FROM numbers(20000)",
         params={"enable_http_compression": "1"}, headers={"Accept-Encoding": "gzip"},
         weight=0.5),
    Kind("auth_basic", "POST", body=b"SELECT 'basic'", auth="basic", weight=1),
    Kind("auth_headers", "POST", body=b"SELECT 'headers'", auth="headers", weight=1),
    Kind("error_wrong_password", "GET", query="SELECT 1", auth="wrong", expect=193, weight=0.3),
]


def plan(n, rng):
    """n kinds: each once when n allows, the rest in proportion to the weights (largest
    remainder), shuffled."""
    counts = {k.name: (1 if n >= len(KINDS) else 0) for k in KINDS}
    rest = n - sum(counts.values())
    total = sum(k.weight for k in KINDS)
    quotas = {k.name: rest * k.weight / total for k in KINDS}
    for name, q in quotas.items():
        counts[name] += int(q)
    for name in sorted(quotas, key=lambda m: quotas[m] - int(quotas[m]), reverse=True):
        if sum(counts.values()) >= n:
            break
        counts[name] += 1
    by_name = {k.name: k for k in KINDS}
    kinds = [by_name[name] for name, c in counts.items() for _ in range(c)]
    rng.shuffle(kinds)
    return kinds


def request_parts(kind, query_id):
    params = dict(kind.params)
    if kind.query is not None:
        params["query"] = kind.query
    params["query_id"] = query_id
    headers = dict(kind.headers)
    if kind.auth == "basic":
        headers["Authorization"] = basic(USER, PASSWORD)
    elif kind.auth == "headers":
        headers["X-ClickHouse-User"] = USER
        headers["X-ClickHouse-Key"] = PASSWORD
    elif kind.auth == "wrong":
        params["user"] = USER
        params["password"] = "wrong-password"
    return "/?" + urllib.parse.urlencode(params), headers


def observed_code(status, body):
    """The ClickHouse error code of a response: from an error body, or appended to a 200."""
    if status == 200:
        tail = body[-1024:]
        at = tail.rfind(b"\nCode: ")
        text = tail[at + 1:] if at >= 0 else (body if body.startswith(b"Code: ") else b"")
    else:
        text = body
    if text.startswith(b"Code: "):
        digits = text[6:].split(b",")[0].split(b".")[0]
        if digits.isdigit():
            return int(digits)
    return 0 if status == 200 else -1


class Session:
    """One client connection style: `urllib` (one-shot), `http.client` or `requests`."""

    def __init__(self, idx, style, host, port):
        self.idx, self.style, self.host, self.port = idx, style, host, port
        self.conn = None
        self.connections = 0

    def send(self, kind, query_id):
        path, headers = request_parts(kind, query_id)
        body = kind.body if kind.method == "POST" else None
        if self.style == "urllib":
            self.connections += 1
            req = urllib.request.Request(f"http://{self.host}:{self.port}{path}", data=body,
                                         headers=headers, method=kind.method)
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()
        if self.style == "requests":
            if self.conn is None:
                self.conn = requests.Session()
                # One pooled keep-alive connection while the server keeps it open.
                self.connections += 1
            r = self.conn.request(kind.method, f"http://{self.host}:{self.port}{path}",
                                  data=body, headers=headers, timeout=60)
            # requests inflates gzip itself; the connection count comes from its pool.
            return r.status_code, r.content
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.connections += 1
        self.conn.request(kind.method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.getheader("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        if r.getheader("Connection", "").lower() == "close":
            self.close()
        return r.status, data

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def direct(host, port, query):
    req = urllib.request.Request(f"http://{host}:{port}/", data=query.encode())
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def check_query_log(host, port, prefix, sent):
    """query_log rows of this run, per query_id, next to what was expected."""
    direct(host, port, "SYSTEM FLUSH LOGS")
    rows = direct(host, port,
                  "SELECT query_id, type, exception FROM system.query_log WHERE interface = 2"
                  f" AND query_id LIKE '{prefix}-%' FORMAT JSONEachRow").decode()
    log = collections.defaultdict(list)
    for line in rows.splitlines():
        row = json.loads(line)
        code = 0
        if row["exception"].startswith("Code: "):
            code = int(row["exception"][6:].split(",")[0].split(".")[0])
        log[row["query_id"]].append((int(row["type"]), code))
    report = {"rows": sum(len(v) for v in log.values()), "by_row_types": collections.Counter(),
              "mismatches": []}
    for qid, q in sent.items():
        types = sorted(t for t, _ in log.get(qid, []))
        report["by_row_types"][f"{q['kind']}:{types}"] += 1
        codes = {c for _, c in log.get(qid, []) if c}
        logged_code = codes.pop() if codes else 0
        no_row_expected = q["expected_error"] == 193
        if (logged_code != q["expected_error"] and not no_row_expected) or \
                (no_row_expected and types):
            report["mismatches"].append({"query_id": qid, "kind": q["kind"], "types": types,
                                         "logged_code": logged_code,
                                         "expected": q["expected_error"]})
    report["by_row_types"] = dict(sorted(report["by_row_types"].items()))
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--sessions", type=int, default=4,
                    help="keep-alive sessions (plus one urllib one-shot client)")
    ap.add_argument("--queries", type=int, default=12, help="queries per session")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prefix", default=None, help="query_id prefix (default: random)")
    ap.add_argument("--check-query-log", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    prefix = args.prefix or "chh-" + uuid.uuid4().hex[:8]

    # Setup without a query_id (its two exchanges are counted apart in the summary).
    setup = [f"DROP TABLE IF EXISTS {TABLE}",
             f"CREATE TABLE {TABLE} (k UInt64, v String) ENGINE = Memory"]
    for q in setup:
        direct(args.host, args.port, q)

    styles = ["urllib"] + ["http.client"] * args.sessions
    if requests is not None:
        styles[-1] = "requests"
    sessions = [Session(i, style, args.host, args.port) for i, style in enumerate(styles)]
    sent = {}
    started = time.time()
    for s in sessions:
        for n, kind in enumerate(plan(args.queries, rng)):
            qid = f"{prefix}-s{s.idx}-{n}"
            t0 = time.monotonic()
            try:
                status, body = s.send(kind, qid)
            except (OSError, http.client.HTTPException) as e:
                print(f"ch_http_load: {qid}: {e!r}", file=sys.stderr)
                s.close()
                status, body = 0, b""
            code = observed_code(status, body)
            sent[qid] = {"kind": kind.name, "method": kind.method, "client": s.style,
                         "session": s.idx, "expected_error": kind.expect,
                         "http_status": status, "observed_error": code,
                         "latency_ms": round((time.monotonic() - t0) * 1000, 3)}
            if code != kind.expect:
                print(f"ch_http_load: {qid} {kind.name}: expected {kind.expect}, got {code} "
                      f"(HTTP {status})", file=sys.stderr)
        s.close()
    elapsed = time.time() - started

    by_kind = collections.Counter(q["kind"] for q in sent.values())
    expected_codes = collections.Counter(str(q["expected_error"]) for q in sent.values())
    by_status = collections.Counter(str(q["http_status"]) for q in sent.values())
    unexpected = [qid for qid, q in sent.items() if q["observed_error"] != q["expected_error"]]
    summary = {
        "tool": "ch_http_load",
        "host": args.host,
        "port": args.port,
        "query_id_prefix": prefix,
        "started_unix": round(started, 3),
        "elapsed_s": round(elapsed, 3),
        "queries": len(sent),
        "http_exchanges": len(sent),
        "setup_exchanges_without_query_id": len(setup),
        "connections_opened": sum(s.connections for s in sessions),
        "sessions": [{"session": s.idx, "client": s.style} for s in sessions],
        "by_kind": dict(sorted(by_kind.items())),
        "by_http_status": dict(sorted(by_status.items())),
        "expected_error_codes": dict(sorted(expected_codes.items())),
        "unexpected_outcomes": len(unexpected),
        "unexpected_examples": unexpected[:10],
        "by_query_id": {qid: q["expected_error"] for qid, q in sent.items()},
        # from before the request is sent to after the response is read (CLOCK_MONOTONIC)
        "client_latency_ms_by_query_id": {qid: q["latency_ms"] for qid, q in sent.items()},
        "by_kind_of_query_id": {qid: q["kind"] for qid, q in sent.items()},
        "details": sent,
    }
    if args.check_query_log:
        summary["query_log"] = check_query_log(args.host, args.port, prefix, sent)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if not unexpected else 3


if __name__ == "__main__":
    sys.exit(main())
