#!/usr/bin/env python3
"""Acceptance check of `l7tap report` and `l7tap heatmap` against the real test bed (issue 6).

Captures ClickHouse with l7tap while three client processes run a known mix: fast SELECTs,
`SELECT sleep(0.2)` and failing queries (unknown table, code 60; syntax error, code 62). Each
client process names itself (`l7acc-c0`..`c2`, its kernel comm) and the capture keeps only
connections of those names (`--comm`): other people's load on the shared test bed stays out
of the tables, so every row is the run's own. Two clients query ch1 (9000), one ch2 (9001).
Then checks:

  1. `l7tap report --format json`: per server and client, requests and errors equal
     system.query_log's rows of that client (by query_id; QueryFinish = ok, the two
     Exception types = errors) and what the client sent; the error names match the codes;
  2. `l7tap heatmap --out x.png`: 1280x720 as its layout says, and the latency row holding
     200 ms+ (the (200 ms, 500 ms] bucket) and the errors row have coloured cells;
  3. `l7tap heatmap --out x.html` in headless Chromium, driven over the DevTools protocol
     (`--remote-debugging-pipe`, so no port and no client library): the page loads with no
     console error, exception or error log entry; a real mouse drag across the whole 200 ms+
     row lists exactly the sleep queries, and a drag across the errors row exactly the
     failing ones (per server and query text).

The capture sees the clients' side of the connections (the servers' side is filtered out
with everyone else's traffic), so the report shows the clients' view.

    ci/accept/report.py --l7tap target/release/l7tap --workdir /tmp/report-accept
"""
import argparse
import collections
import ctypes
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib

from common import Capture, verdict

SLEEP_SQL = "SELECT sleep(0.2)"
FAST_SQL = ["SELECT 1", "SELECT number FROM system.numbers LIMIT 100"]
ERROR_SQL = {60: "SELECT * FROM l7tap.no_such_table", 62: "SELECT id FROM l7tap.events WHERE ("}
ERROR_NAMES = {60: "UNKNOWN_TABLE", 62: "SYNTAX_ERROR"}
SLEEP_NS = 200_000_000

# (process name, server port, fast, sleep, code 60, code 62): distinct counts per client so
# that a swapped or merged client shows.
CLIENTS = [
    ("l7acc-c0", 9000, 120, 6, 5, 3),
    ("l7acc-c1", 9000, 60, 10, 0, 6),
    ("l7acc-c2", 9001, 90, 4, 4, 2),
]


# ---------------------------------------------------------------------------------------------
# One client process (`--client`): runs its plan and prints what it sent as JSON.

def run_client(name, port, fast, sleeps, unknown, syntax, prefix, seed):
    from clickhouse_driver import Client, errors

    # The kernel comm of this (main, querying) thread: what l7tap records and filters on.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(15, name.encode(), 0, 0, 0) != 0:  # PR_SET_NAME
        sys.exit(f"prctl(PR_SET_NAME): errno {ctypes.get_errno()}")
    plan = ([FAST_SQL[i % 2] for i in range(fast)] + [SLEEP_SQL] * sleeps
            + [ERROR_SQL[60]] * unknown + [ERROR_SQL[62]] * syntax)
    random.Random(seed).shuffle(plan)
    client = Client("127.0.0.1", port=port, connect_timeout=10, send_receive_timeout=60,
                    client_name="l7tap-accept-report")
    sent = []
    for n, sql in enumerate(plan):
        code = None
        started = time.monotonic_ns()
        try:
            client.execute(sql, query_id=f"{prefix}-{n}")
        except errors.ServerException as e:
            code = e.code
        # The client's own round trip bounds the server-side record from above: a fast query
        # that really sat in a slow row on a loaded machine took at least that long here too.
        sent.append({"query_id": f"{prefix}-{n}", "sql": sql, "code": code,
                     "client_ns": time.monotonic_ns() - started})
    client.disconnect()
    json.dump({"name": name, "port": port, "sent": sent}, sys.stdout)


# ---------------------------------------------------------------------------------------------
# PNG reading (8-bit RGB/RGBA, not interlaced: what the heatmap writes), standard library only.

def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {colour_type})")
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def coloured_pixels(png, x0, x1, y0, y1):
    """Pixels in [x0, x1) x [y0, y1) that are neither white nor grey (axes, labels)."""
    _, _, bpp, rows = png
    n = 0
    for y in range(y0, y1):
        row = rows[y]
        for x in range(x0, x1):
            r, g, b = row[x * bpp:x * bpp + 3]
            if not (r == g == b):
                n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Headless Chromium over the DevTools protocol on a pipe (fd 3 in, fd 4 out, NUL-separated JSON).

class Chromium:
    def __init__(self, width=1600, height=1200):
        self.tmp = tempfile.mkdtemp(prefix="l7tap-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        binary = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
        if not binary:
            raise RuntimeError("no chromium found (ci/install-deps.sh installs it)")
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                   "--no-first-run", f"--user-data-dir={self.tmp}/profile",
                   f"--window-size={width},{height}", "about:blank"]
        self.stderr = open(f"{self.tmp}/stderr", "w")
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", *command],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL, stderr=self.stderr,
            start_new_session=True)  # its own process group: its helpers end with it
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer, self.next_id, self.events = b"", 0, []

    def _read(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method, timeout=30):
        deadline = time.time() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.time() > deadline:
                raise RuntimeError(f"no {method} within {timeout} s")
            self.events.append(self._read())

    def close(self):
        # A clean shutdown ends the helper processes too; then nothing writes to the profile
        # while it is removed.
        try:
            os.write(self.to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for fd in (self.to_browser, self.from_browser):
            os.close(fd)
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def page_problems(events):
    """Console errors, uncaught exceptions and error log entries among DevTools events."""
    problems = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                       for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            problems.append("exception: " + d.get("text", "") + " "
                            + str(d.get("exception", {}).get("description", "")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            problems.append("log: " + params["entry"].get("text", ""))
    return problems


GEOMETRY_JS = """JSON.stringify({box: canvas.getBoundingClientRect().toJSON(), L: L, T: T, cw: cw,
  ch: ch, rows: rows, cols: cols, errorsTop: errorsTop, EH: EH, labels: D.bucket_labels,
  embedded: D.requests_embedded, matched: D.requests_matched})"""

SELECTION_JS = """JSON.stringify({heading: (document.querySelector('#sel div') || {}).textContent || '',
  rows: Array.from(document.querySelectorAll('#sel tr')).slice(1)
    .map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent))})"""


def label_bound_ns(label):
    """Upper bound of a heatmap row label (`≤500ms`); None for the overflow row (`>1h`)."""
    if not label.startswith("≤"):
        return None
    text = label[1:]
    for unit, scale in (("ns", 1), ("µs", 1e3), ("ms", 1e6), ("s", 1e9)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale
    raise ValueError(f"bad bucket label {label!r}")


def drag(browser, session, x0, y0, x1, y1):
    """A left-button drag with real input events: press, two moves, release."""
    def mouse(kind, x, y, buttons):
        browser.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                  "buttons": buttons, "clickCount": 1}, session)
    mouse("mouseMoved", x0, y0, 0)
    mouse("mousePressed", x0, y0, 1)
    mouse("mouseMoved", (x0 + x1) / 2, (y0 + y1) / 2, 1)
    mouse("mouseMoved", x1, y1, 1)
    mouse("mouseReleased", x1, y1, 0)
    result = browser.send("Runtime.evaluate", {"expression": SELECTION_JS, "returnByValue": True},
                          session)
    return json.loads(result["result"]["value"])


def check_html(page, expected_sleep, expected_errors, client_ns, failures):
    browser = Chromium()
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})
        session = browser.send("Target.attachToTarget",
                               {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            browser.send(method, session=session)
        browser.send("Page.navigate", {"url": "file://" + os.path.abspath(page)}, session)
        browser.wait_event("Page.loadEventFired")
        geometry = json.loads(browser.send("Runtime.evaluate", {"expression": GEOMETRY_JS,
                                                                "returnByValue": True},
                                           session)["result"]["value"])
        g = geometry
        print(f"html: {g['cols']} columns x {g['rows']} latency rows, "
              f"{g['embedded']} of {g['matched']} requests embedded")
        if g["embedded"] < g["matched"]:
            failures.append(f"the page embeds {g['embedded']} of {g['matched']} requests: "
                            "a drag cannot list them all")
        bounds = [label_bound_ns(label) for label in g["labels"]]
        band = next((r for r, b in enumerate(bounds) if b is None or b > SLEEP_NS), None)
        if band is None:
            failures.append(f"no heatmap row above 200 ms (rows {g['labels']})")
            return
        left = g["box"]["left"] + g["L"] + 1
        right = g["box"]["left"] + g["L"] + g["cols"] * g["cw"] - 1
        band_top = g["box"]["top"] + g["T"] + (g["rows"] - 1 - band) * g["ch"]
        errors_top = g["box"]["top"] + g["errorsTop"]
        selections = {
            "200 ms band (" + g["labels"][band] + ")": (
                drag(browser, session, left, band_top + 2, right, band_top + g["ch"] - 2),
                expected_sleep),
            "errors row": (
                drag(browser, session, left, errors_top + 2, right, errors_top + g["EH"] - 2),
                expected_errors),
        }
        # A query stalled by a loaded machine can leave or enter the band: allowed only when
        # the client's own clock (an upper bound of the record) says it took that long.
        lower_ns = bounds[band - 1] if band > 0 else 0
        upper_ns = bounds[band]
        for name, (selection, expected) in selections.items():
            # Columns: start, duration, client, server, status, query.
            listed = collections.Counter((row[3], row[5]) for row in selection["rows"])
            print(f"html drag over the {name}: {selection['heading']!r}")
            for key in sorted(set(listed) | set(expected)):
                got, want = listed.get(key, 0), expected.get(key, 0)
                if name.startswith("200 ms band") and got != want:
                    times = client_ns.get(key, [])
                    if key not in expected_sleep:
                        # Fast queries in the band: no more than took that long at the client.
                        explained = got <= sum(1 for t in times if t > lower_ns)
                    else:
                        # Sleeps missing from the band: no more than went past it at the client.
                        beyond = sum(1 for t in times if upper_ns is not None and t > upper_ns)
                        explained = want - beyond <= got <= want
                    if explained:
                        print(f"html drag over the {name}: {key[0]} {key[1]!r}: listed {got}, "
                              f"sent {want}, explained by the client's own round trips "
                              f"(band {lower_ns / 1e6:g} ms .. {upper_ns and upper_ns / 1e6} ms)")
                        continue
                if got != want:
                    # The durations tell a misplaced row from a query that really took that
                    # long (a fast query stalled by a loaded machine).
                    durations = [row[1] for row in selection["rows"] if (row[3], row[5]) == key]
                    failures.append(f"drag over the {name}: {key[0]} {key[1]!r}: listed "
                                    f"{listed.get(key, 0)} (durations {durations[:10]}), "
                                    f"sent {expected.get(key, 0)}")
        problems = page_problems(browser.events)
        for p in problems:
            failures.append("page: " + p)
        print(f"html: {len(problems)} console errors / exceptions")
    finally:
        browser.close()


# ---------------------------------------------------------------------------------------------

def query_log(port, prefix):
    """Per client (the `cN` of query_id `<prefix>-cN-<n>`): (queries, errors) of the run in
    the server's system.query_log. 18.16 has no exception_code: the type tells errors."""
    from clickhouse_driver import Client
    client = Client("127.0.0.1", port=port)
    client.execute("SYSTEM FLUSH LOGS")
    rows = client.execute(
        f"SELECT extract(query_id, '^{prefix}-(c[0-9]+)-') AS client, count(), countIf(type != 2) "
        f"FROM system.query_log WHERE query_id LIKE '{prefix}-c%' AND type IN (2, 3, 4) "
        "GROUP BY client")  # 18.16: no GROUP BY position
    client.disconnect()
    return {f"l7acc-{c}": (n, e) for c, n, e in rows}


def l7tap(binary, *args):
    out = subprocess.run([binary, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"l7tap {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--l7tap", required=False)
    ap.add_argument("--workdir", required=False)
    ap.add_argument("--client", nargs=8, metavar=("NAME", "PORT", "FAST", "SLEEP", "E60", "E62",
                                                   "PREFIX", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        c = args.client
        run_client(c[0], int(c[1]), *map(int, c[2:6]), c[6], int(c[7]))
        return
    if not args.l7tap or not args.workdir:
        ap.error("--l7tap and --workdir are required")

    capture = Capture(args.l7tap, args.workdir,
                      ["--protocols", "clickhouse", "--comm", ",".join(c[0] for c in CLIENTS)])
    out_dir = capture.out_dir

    run = f"l7accept-{uuid.uuid4().hex[:10]}"
    clients = []
    for i, (name, port, fast, sleeps, e60, e62) in enumerate(CLIENTS):
        command = [sys.executable, os.path.abspath(__file__), "--client", name, str(port), str(fast),
                   str(sleeps), str(e60), str(e62), f"{run}-c{i}", str(i + 1)]
        assert name == f"l7acc-c{i}"  # query_log() maps query ids back to names this way
        clients.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    sent = []
    for p in clients:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            capture.abandon(f"a client failed ({p.returncode})")
        sent.append(json.loads(stdout))
    time.sleep(1)
    capture.stop()
    failures = []

    # What the clients sent, per (server, client name).
    expected = {}
    expected_sleep, expected_errors = collections.Counter(), collections.Counter()
    client_ns = collections.defaultdict(list)  # (server, sql) -> client round trips
    for c in sent:
        codes = collections.Counter(q["code"] for q in c["sent"])
        for q in c["sent"]:
            planned = next((k for k, sql in ERROR_SQL.items() if sql == q["sql"]), None)
            if q["code"] != planned:
                failures.append(f"{c['name']} {q['query_id']}: error code {q['code']}, planned {planned}")
            client_ns[(f"127.0.0.1:{c['port']}", q["sql"])].append(q["client_ns"])
            if q["sql"] == SLEEP_SQL:
                expected_sleep[(f"127.0.0.1:{c['port']}", q["sql"])] += 1
            if q["code"] is not None:
                expected_errors[(f"127.0.0.1:{c['port']}", q["sql"])] += 1
        expected[(f"127.0.0.1:{c['port']}", c["name"])] = {
            "requests": len(c["sent"]),
            "errors": sum(n for code, n in codes.items() if code is not None),
            "error_names": {ERROR_NAMES[code]: n for code, n in codes.items() if code is not None},
        }

    summary = json.load(open(capture.summary_path))
    lost = {k: summary.get(k, 0) for k in ("kernel.events_failed", "ingest.ring_drops")}
    if any(lost.values()):
        failures.append(f"events were lost: {lost}")

    # 1. The report against system.query_log and the clients.
    report = json.loads(l7tap(args.l7tap, "report", out_dir, "--format", "json", "--protocol", "clickhouse"))
    got = {}
    for server in report["servers"]:
        for client in server["clients"]:
            g = got.setdefault((server["server"], client["comm"]), {"requests": 0, "errors": 0, "error_names": {}})
            g["requests"] += client["requests"]
            g["errors"] += client["errors"]
            for e in client["top_errors"]:
                g["error_names"][e["name"]] = g["error_names"].get(e["name"], 0) + e["count"]
    logged = {}
    for port in sorted({c["port"] for c in sent}):
        for name, (n, e) in query_log(port, run).items():
            logged[(f"127.0.0.1:{port}", name)] = {"requests": n, "errors": e}
    print(f"{'server':<16} {'client':<12} {'sent':>5} {'query_log':>9} {'report':>6}   "
          f"{'errors: sent':>12} {'query_log':>9} {'report':>6}  report error names")
    for key in sorted(set(expected) | set(got) | set(logged)):
        e = expected.get(key, {"requests": 0, "errors": 0, "error_names": {}})
        g = got.get(key, {"requests": 0, "errors": 0, "error_names": {}})
        q = logged.get(key, {"requests": 0, "errors": 0})
        print(f"{key[0]:<16} {key[1]:<12} {e['requests']:>5} {q['requests']:>9} {g['requests']:>6}   "
              f"{e['errors']:>12} {q['errors']:>9} {g['errors']:>6}  {g['error_names']}")
        for what in ("requests", "errors"):
            if not e[what] == q[what] == g[what]:
                failures.append(f"{key[0]} client {key[1]}: {what}: report {g[what]}, "
                                f"system.query_log {q[what]}, sent {e[what]}")
        if g["error_names"] != e["error_names"]:
            failures.append(f"{key[0]} client {key[1]}: error names {g['error_names']}, "
                            f"sent {e['error_names']}")

    # 2. The PNG.
    png_path = f"{args.workdir}/heatmap.png"
    layout = json.loads(l7tap(args.l7tap, "heatmap", out_dir, "--protocol", "clickhouse", "--out", png_path))
    png = read_png(png_path)
    if (png[0], png[1]) != (layout["width"], layout["height"]) or (png[0], png[1]) != (1280, 720):
        failures.append(f"PNG is {png[0]}x{png[1]}, layout says {layout['width']}x{layout['height']}")
    band = next((r for r in layout["latency_rows"]
                 if r["upper_bound_ns"] < 0 or r["upper_bound_ns"] > SLEEP_NS), None)
    x0, x1 = layout["plot_left"] + 1, layout["plot_right"] - 1
    if band is None:
        failures.append("PNG: no latency row above 200 ms")
    else:
        n = coloured_pixels(png, x0, x1, band["top"] + 1, band["bottom"] - 1)
        print(f"png: {png[0]}x{png[1]}, {len(layout['latency_rows'])} latency rows; "
              f"{n} coloured pixels in the row up to {band['upper_bound_ns'] / 1e6:g} ms")
        if n == 0:
            failures.append("PNG: the row holding 200 ms+ is empty")
    e = layout["errors_row"]
    n = coloured_pixels(png, x0, x1, e["top"] + 1, e["bottom"] - 1)
    print(f"png: {n} coloured pixels in the errors row")
    if n == 0:
        failures.append("PNG: the errors row is empty")

    # 3. The HTML page in headless Chromium.
    html_path = f"{args.workdir}/heatmap.html"
    l7tap(args.l7tap, "heatmap", out_dir, "--protocol", "clickhouse", "--out", html_path)
    check_html(html_path, expected_sleep, expected_errors, client_ns, failures)

    verdict(failures, "OK: report counts equal system.query_log; sleep queries in the 200 ms band "
                      "and failures in the errors row of both heatmaps")


if __name__ == "__main__":
    main()
