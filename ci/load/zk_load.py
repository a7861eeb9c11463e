#!/usr/bin/env python3
"""ZooKeeper load driver (kazoo async API), for comparing against l7tap.

Prints on stdout one JSON summary:
  - "requests": what the workload asked for, per ZooKeeper op name (create, delete, exists,
    getData, setData, getChildren, getChildren2, create2, sync, multi, getACL, setACL, auth),
    and per reply error name as the server put it in the reply header;
  - "wire": every request frame kazoo actually wrote (connect, auth, ping, closeSession
    included), every reply header, every watch notification, counted inside kazoo's connection
    loop, and "extra" = wire - requests: what kazoo sent on its own.
Progress and warnings go to stderr.

    ci/load/zk_load.py --ops 6000 --inflight 600
    ci/load/zk_load.py --ops 500 --clients 2
    ci/load/zk_load.py --ops 600 --hosts 127.0.0.1:2281 --use-ssl
    ci/load/zk_load.py --persistent-idle --clients 4 --duration 60 --ready-file /tmp/ready
    ci/load/zk_load.py --persistent-idle --clients 2 --interval 0.01 --arrivals poisson --seed 7

One "group" of 30 pipelined requests per znode pair (ZooKeeper answers a session's requests in
order, so every outcome is known in advance):
  create n (ok), create n (NodeExists), create2 m, exists x+watch (NoNode on the wire; kazoo
  returns None), exists n+watch, getData m+watch, getChildren n+watch, getData missing (NoNode),
  setData n v7 (BadVersion), setData n v0 (fires NodeDataChanged), delete missing (NoNode),
  create n/c (fires NodeChildrenChanged), getChildren2 n, delete n (NotEmpty), sync n,
  getACL n, setACL n v0, setACL n v5 (BadVersion), multi ok [create, setData, check, delete],
  multi failing [create, check v99] (reply header Ok, sub-results Ok/rolled back + BadVersion),
  create x (fires NodeCreated), setData n v0 (BadVersion), getData secret (ok thanks to the
  digest auth), getData locked (NoAuth), delete n/c, delete n v99 (BadVersion), delete n,
  delete m (fires NodeDeleted), delete x, create ephemeral+sequential.
With --hold-server-pid, a burst of --inflight `exists` reads per session comes first, written
while the server is stopped, so that many are in flight at once on any machine.
Per group: 1 NodeExists, 3 NoNode, 5 BadVersion, 1 NotEmpty, 1 NoAuth; 4 notifications.
Setup per session: add_auth digest l7tap:zk-secret-auth, create of the session's base nodes;
teardown deletes everything it created (ephemerals explicitly too).
"""
import argparse
import collections
import datetime
import json
import logging
import os
import random
import signal
import struct
import sys
import threading
import time
import uuid

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, ZookeeperError
from kazoo.protocol import connection as kconn
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

AUTH_SCHEME, AUTH_USER, AUTH_SECRET = "digest", "l7tap", "zk-secret-auth"
ROOT = "/l7tap-load"

OP_NAMES = {
    None: "connect", 1: "create", 2: "delete", 3: "exists", 4: "getData", 5: "setData",
    6: "getACL", 7: "setACL", 8: "getChildren", 9: "sync", 11: "ping", 12: "getChildren2",
    13: "check", 14: "multi", 15: "create2", 16: "reconfig", 100: "auth", 101: "setWatches",
    102: "sasl", -11: "closeSession",
}
ERR_NAMES = {
    0: "Ok", -1: "SystemError", -2: "RuntimeInconsistency", -3: "DataInconsistency",
    -4: "ConnectionLoss", -5: "MarshallingError", -6: "Unimplemented", -7: "OperationTimeout",
    -8: "BadArguments", -12: "UnknownSession", -13: "NewConfigNoQuorum",
    -14: "ReconfigInProgress", -100: "APIError", -101: "NoNode", -102: "NoAuth",
    -103: "BadVersion", -108: "NoChildrenForEphemerals", -110: "NodeExists", -111: "NotEmpty",
    -112: "SessionExpired", -113: "InvalidCallback", -114: "InvalidACL", -115: "AuthFailed",
    -118: "SessionMoved", -119: "NotReadOnly", -120: "EphemeralOnLocalSession",
    -121: "NoWatcher", -122: "RequestTimeout", -123: "ReconfigDisabled",
    -124: "SessionClosedRequireSaslAuth", -125: "QuotaExceeded", -127: "ThrottledOp",
}
EVENT_NAMES = {1: "NodeCreated", 2: "NodeDeleted", 3: "NodeDataChanged",
               4: "NodeChildrenChanged", -1: "None"}


def err_name(code):
    return ERR_NAMES.get(code, f"error({code})")


# ---------------------------------------------------------------------------------------------
# Wire accounting inside kazoo's connection loop (one ConnectionHandler per KazooClient; the
# counters hang off the client object, so sessions do not share them).

def _wire(client):
    w = getattr(client, "_l7_wire", None)
    if w is None:
        w = client._l7_wire = {
            "requests": collections.Counter(), "replies": collections.defaultdict(collections.Counter),
            "notifications": collections.Counter(), "max_pending": 0}
    return w


_orig_submit = kconn.ConnectionHandler._submit
_orig_read_header = kconn.ConnectionHandler._read_header


def _submit(self, request, timeout, xid=None):
    w = _wire(self.client)
    w["requests"][OP_NAMES.get(request.type, f"op({request.type})")] += 1
    # Requests written and not yet answered (this one included).
    if request.type not in (None, 11):
        w["max_pending"] = max(w["max_pending"], len(self.client._pending) + 1)
    return _orig_submit(self, request, timeout, xid)


def _read_header(self, timeout):
    header, buf, offset = _orig_read_header(self, timeout)
    w = _wire(self.client)
    if header.xid == -1:
        etype = struct.unpack_from(">i", buf, offset)[0]
        w["notifications"][EVENT_NAMES.get(etype, str(etype))] += 1
    elif header.xid == -2:
        w["replies"]["ping"][err_name(header.err)] += 1
    elif header.xid == -4:
        w["replies"]["auth"][err_name(header.err)] += 1
    elif self.client._pending:
        req = self.client._pending[0][0]
        w["replies"][OP_NAMES.get(req.type, f"op({req.type})")][err_name(header.err)] += 1
    return header, buf, offset


kconn.ConnectionHandler._submit = _submit
kconn.ConnectionHandler._read_header = _read_header


# ---------------------------------------------------------------------------------------------

class Session:
    """One KazooClient with explicit request accounting and an in-flight window."""

    def __init__(self, idx, args, base):
        self.idx, self.args, self.base = idx, args, base
        # --use-ssl: Python's ssl module (the system's libssl), the test bed's self-signed
        # certificate accepted as it is.
        tls = {"use_ssl": True, "verify_certs": False} if args.use_ssl else {}
        self.zk = KazooClient(hosts=args.hosts, timeout=args.session_timeout,
                              connection_retry={"max_tries": 3, "delay": 0.2}, **tls)
        self.window = threading.BoundedSemaphore(args.inflight)
        self.lock = threading.Lock()
        self.outstanding = 0
        self.idle = threading.Condition(self.lock)
        self.requests = collections.defaultdict(collections.Counter)   # op -> outcome
        self.phases = collections.defaultdict(collections.Counter)     # phase -> op
        self.multi_sub = collections.Counter()
        self.unexpected = []
        self.watch_fired = collections.Counter()
        self.watch_expected = collections.Counter()
        self.ephemerals = []
        self.groups = 0
        self.phase = "setup"

    # -- issuing ------------------------------------------------------------------------------

    def issue(self, op, fn, expect="Ok", on_result=None):
        """Sends one request through kazoo's async API. `fn()` returns the IAsyncResult."""
        self.window.acquire()
        with self.lock:
            self.outstanding += 1
        self.phases[self.phase][op] += 1
        try:
            ar = fn()
        except Exception:
            self._done()
            raise

        def done(res):
            try:
                value = res.get(block=False)
                outcome = "Ok"
                if op == "exists" and value is None:
                    outcome = "NoNode"  # the server said NoNode; kazoo returns None
                if op == "multi":
                    failed = [r for r in value if isinstance(r, Exception)]
                    for r in value:
                        if isinstance(r, Exception):
                            name = "Ok(rolled back)" if r.code == 0 else err_name(r.code)
                            self.multi_sub[name] += 1
                        else:
                            self.multi_sub["Ok"] += 1
                    if failed:
                        outcome = "Ok(multi failed)"
                if on_result:
                    on_result(value)
            except ZookeeperError as e:
                outcome = err_name(getattr(e, "code", None))
            except Exception as e:  # connection loss etc.: kazoo-side, maybe never on the wire
                outcome = "client:" + type(e).__name__
            with self.lock:
                self.requests[op][outcome] += 1
                if outcome != expect:
                    self.unexpected.append({"session": self.idx, "op": op, "expected": expect,
                                            "got": outcome})
            self._done()

        ar.rawlink(done)

    def _done(self):
        with self.lock:
            self.outstanding -= 1
            if self.outstanding == 0:
                self.idle.notify_all()
        self.window.release()

    def drain(self, timeout=60):
        with self.lock:
            end = time.monotonic() + timeout
            while self.outstanding:
                if not self.idle.wait(max(0.01, end - time.monotonic())):
                    if time.monotonic() >= end:
                        raise RuntimeError(f"session {self.idx}: {self.outstanding} requests "
                                           f"unanswered after {timeout}s")

    def watcher(self, expected_type):
        self.watch_expected[expected_type] += 1

        def cb(event):
            with self.lock:
                self.watch_fired[event.type] += 1
        return cb

    # -- phases -------------------------------------------------------------------------------

    def start(self):
        self.zk.start(timeout=15)

    def setup(self, auth=True):
        z, b = self.zk, self.base
        if auth:
            self.issue("auth", lambda: z.add_auth_async(AUTH_SCHEME, f"{AUTH_USER}:{AUTH_SECRET}"))
        self.issue("create", lambda: z.create_async(b, b"session"))
        self.issue("create", lambda: z.create_async(b + "/eph", b""))
        secret_acl = [make_digest_acl(AUTH_USER, AUTH_SECRET, all=True)]
        other_acl = [make_digest_acl("somebody-else", "not-our-secret", all=True)]
        self.issue("create", lambda: z.create_async(b + "/secret", b"s3cret", acl=secret_acl))
        self.issue("create", lambda: z.create_async(b + "/locked", b"locked", acl=other_acl))
        self.drain()
        self.phase = "load"

    def group(self, g):
        z, b = self.zk, self.base
        n, m, x, miss = f"{b}/n{g}", f"{b}/m{g}", f"{b}/x{g}", f"{b}/missing{g}"
        I = self.issue
        I("create", lambda: z.create_async(n, b"v0"))
        I("create", lambda: z.create_async(n, b"again"), expect="NodeExists")
        I("create2", lambda: z.create_async(m, b"m", include_data=True))
        I("exists", lambda: z.exists_async(x, watch=self.watcher("CREATED")), expect="NoNode")
        I("exists", lambda: z.exists_async(n, watch=self.watcher("CHANGED")))
        I("getData", lambda: z.get_async(m, watch=self.watcher("DELETED")))
        I("getChildren", lambda: z.get_children_async(n, watch=self.watcher("CHILD")))
        I("getData", lambda: z.get_async(miss), expect="NoNode")
        I("setData", lambda: z.set_async(n, b"v-bad", version=7), expect="BadVersion")
        I("setData", lambda: z.set_async(n, b"v1", version=0))
        I("delete", lambda: z.delete_async(miss), expect="NoNode")
        I("create", lambda: z.create_async(n + "/c", b""))
        I("getChildren2", lambda: z.get_children_async(n, include_data=True))
        I("delete", lambda: z.delete_async(n), expect="NotEmpty")
        I("sync", lambda: z.sync_async(n))
        I("getACL", lambda: z.get_acls_async(n))
        I("setACL", lambda: z.set_acls_async(n, OPEN_ACL_UNSAFE, version=0))
        I("setACL", lambda: z.set_acls_async(n, OPEN_ACL_UNSAFE, version=5), expect="BadVersion")

        def multi_ok():
            t = z.transaction()
            t.create(n + "/d", b"d")
            t.set_data(n, b"v2", version=1)
            t.check(n, 2)
            t.delete(n + "/d")
            return t.commit_async()

        def multi_bad():
            t = z.transaction()
            t.create(n + "/e", b"e")
            t.check(n, 99)
            return t.commit_async()

        I("multi", multi_ok)
        I("multi", multi_bad, expect="Ok(multi failed)")
        I("create", lambda: z.create_async(x, b"x"))
        I("setData", lambda: z.set_async(n, b"v-bad", version=0), expect="BadVersion")
        I("getData", lambda: z.get_async(b + "/secret"))
        I("getData", lambda: z.get_async(b + "/locked"), expect="NoAuth")
        I("delete", lambda: z.delete_async(n + "/c"))
        I("delete", lambda: z.delete_async(n, version=99), expect="BadVersion")
        I("delete", lambda: z.delete_async(n))
        I("delete", lambda: z.delete_async(m))
        I("delete", lambda: z.delete_async(x))
        I("create", lambda: z.create_async(b + "/eph/e-", b"", ephemeral=True, sequence=True),
          on_result=self.ephemerals.append)
        self.groups += 1

    GROUP_OPS = 30

    def burst(self, n, server_pid, settle_s=5.0):
        """Issues `n` reads while the server process is stopped (SIGSTOP), so all `n` are on the
        wire unanswered at once, however fast this machine is; then lets the server go on.
        Without the hold, the depth reached depends on how fast the server answers."""
        z, b = self.zk, self.base
        self.phase = "burst"
        os.kill(server_pid, signal.SIGSTOP)
        try:
            for _ in range(n):
                self.issue("exists", lambda: z.exists_async(b))
            end = time.monotonic() + settle_s
            while _wire(z)["max_pending"] < n and time.monotonic() < end:
                time.sleep(0.01)
        finally:
            os.kill(server_pid, signal.SIGCONT)
        self.drain()
        self.phase = "load"

    def teardown(self):
        self.drain()
        self.phase = "teardown"
        z, b = self.zk, self.base
        for p in list(self.ephemerals):
            self.issue("delete", lambda p=p: z.delete_async(p))
        for p in (b + "/eph", b + "/secret", b + "/locked", b):
            self.issue("delete", lambda p=p: z.delete_async(p))
        self.drain()

    def wait_watches(self, timeout=10):
        end = time.monotonic() + timeout
        want = sum(self.watch_expected.values())
        while time.monotonic() < end:
            with self.lock:
                if sum(self.watch_fired.values()) >= want:
                    return
            time.sleep(0.05)

    def stop(self):
        try:
            self.zk.stop()   # sends closeSession
        finally:
            self.zk.close()


def merge_counters(dst, src):
    for k, v in src.items():
        dst.setdefault(k, collections.Counter()).update(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=6000,
                    help="load requests in total (rounded up to whole groups of 30)")
    ap.add_argument("--inflight", type=int, default=600,
                    help="requests issued and not yet answered, per session")
    ap.add_argument("--clients", type=int, default=1, help="sessions, each its own thread")
    ap.add_argument("--hosts", default="127.0.0.1:2181")
    ap.add_argument("--use-ssl", action="store_true",
                    help="TLS to the server's secure client port (ci/testbed.sh's zktls: 2281)")
    ap.add_argument("--session-timeout", type=float, default=10.0)
    ap.add_argument("--hold-server-pid", type=int,
                    help="before the load, stop this server process (SIGSTOP) while one window "
                         "of --inflight reads is written, then continue it (SIGCONT): the "
                         "in-flight depth then does not depend on the machine's speed")
    ap.add_argument("--persistent-idle", action="store_true",
                    help="open the sessions, one getData each, then one getData per --interval "
                         "per session until --duration (default: until SIGTERM)")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--arrivals", default="fixed", choices=["fixed", "poisson"],
                    help="--persistent-idle: every session's getData every --interval exactly, "
                         "or each session's at random (exponential gaps of mean --interval, "
                         "from --seed and the session)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--ready-file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="zk_load: %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run = uuid.uuid4().hex[:10]
    run_path = f"{ROOT}/{run}"
    started = time.time()
    t0 = time.monotonic()

    sessions = [Session(i, args, f"{run_path}/s{i}") for i in range(args.clients)]
    for s in sessions:
        s.start()

    if args.persistent_idle:
        for s in sessions:
            s.phase = "idle"
            s.issue("getData", lambda s=s: s.zk.get_async("/zookeeper"))
            s.drain()
        if args.ready_file:
            open(args.ready_file, "w").close()
        print(f"zk_load: {len(sessions)} sessions open, getData every {args.interval}s",
              file=sys.stderr)
        deadline = t0 + args.duration if args.duration else None
        # Poisson: each session its own stream of exponential gaps. Two copies of this load
        # started at once with fixed periods keep one phase for the whole run, one copy always
        # meeting the other's work.
        rngs = [random.Random(f"arrivals-{args.seed}-{s.idx}") for s in sessions]

        def gap(i):
            if args.arrivals == "poisson":
                return rngs[i].expovariate(1.0 / args.interval)
            return args.interval

        now = time.monotonic()
        due = [now + gap(i) for i in range(len(sessions))]
        while not stop.is_set():
            nxt = min(due)
            if deadline and nxt >= deadline:
                break
            if stop.wait(max(0.0, nxt - time.monotonic())):
                break
            for i, s in enumerate(sessions):
                if due[i] == nxt:  # fixed: every session on the same tick
                    s.issue("getData", lambda s=s: s.zk.get_async("/zookeeper"))
                    due[i] += gap(i)
        for s in sessions:
            s.drain()
    else:
        # Shared parents, on session 0 (NodeExists for the root when an earlier run left it).
        s0 = sessions[0]
        root_outcome = {}
        s0.issue("create", lambda: s0.zk.create_async(ROOT, b""),
                 expect="*", on_result=lambda v: root_outcome.setdefault("created", True))
        s0.issue("create", lambda: s0.zk.create_async(run_path, b""))
        s0.drain()
        for s in sessions:
            s.setup()
        if args.hold_server_pid:
            for s in sessions:
                s.burst(args.inflight, args.hold_server_pid)
        if args.ready_file:
            open(args.ready_file, "w").close()
        groups_total = max(1, -(-args.ops // Session.GROUP_OPS))

        def worker(s):
            try:
                for g in range(s.idx, groups_total, len(sessions)):
                    if stop.is_set():
                        break
                    s.group(g)
                s.drain(timeout=120)
                s.wait_watches()
                s.teardown()
            except Exception as e:
                print(f"zk_load: session {s.idx}: {e!r}", file=sys.stderr)
                stop.set()

        workers = [threading.Thread(target=worker, args=(s,), daemon=True) for s in sessions]
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(timeout=0.2)
        s0.issue("delete", lambda: s0.zk.delete_async(run_path))
        s0.drain()
    load_elapsed = time.monotonic() - t0
    for s in sessions:
        s.stop()
    elapsed = time.monotonic() - t0

    # ---- summary ----------------------------------------------------------------------------
    requests, phases, wire_req, wire_rep, notif = {}, {}, collections.Counter(), {}, collections.Counter()
    multi_sub, watch_fired, watch_expected = collections.Counter(), collections.Counter(), collections.Counter()
    unexpected, max_pending = [], 0
    for s in sessions:
        merge_counters(requests, s.requests)
        merge_counters(phases, s.phases)
        multi_sub.update(s.multi_sub)
        watch_fired.update(s.watch_fired)
        watch_expected.update(s.watch_expected)
        unexpected.extend(u for u in s.unexpected if u["expected"] != "*")
        w = _wire(s.zk)
        wire_req.update(w["requests"])
        merge_counters(wire_rep, w["replies"])
        notif.update(w["notifications"])
        max_pending = max(max_pending, w["max_pending"])

    req_counts = collections.Counter({op: sum(c.values()) for op, c in requests.items()})
    by_error = collections.Counter()
    for op, c in requests.items():
        for outcome, n in c.items():
            if outcome == "Ok(multi failed)":
                outcome = "Ok"
            by_error[outcome] += n
    wire_by_error = collections.Counter()
    for op, c in wire_rep.items():
        if op not in ("ping",):
            wire_by_error.update(c)
    extra = collections.Counter(wire_req)
    extra.subtract(req_counts)
    extra = {k: v for k, v in sorted(extra.items()) if v}

    summary = {
        "tool": "zk_load",
        "mode": "persistent-idle" if args.persistent_idle else "ops",
        "hosts": args.hosts,
        "sessions": len(sessions),
        "inflight_window": args.inflight,
        "max_in_flight_on_wire": max_pending,
        "run_path": run_path,
        "groups": sum(s.groups for s in sessions),
        "started_at": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 3),
        "load_elapsed_s": round(load_elapsed, 3),
        "interrupted": stop.is_set(),
        "requests": {
            "total": sum(req_counts.values()),
            "by_op": dict(sorted(req_counts.items())),
            "by_error": dict(sorted(by_error.items())),
            "by_op_and_error": {op: dict(sorted(c.items())) for op, c in sorted(requests.items())},
            "by_phase": {p: dict(sorted(c.items())) for p, c in phases.items()},
            "multi_subresults": dict(sorted(multi_sub.items())),
        },
        "watches": {
            "registered": sum(watch_expected.values()),
            "callbacks_fired": dict(sorted(watch_fired.items())),
            "notifications_on_wire": dict(sorted(notif.items())),
        },
        "wire": {
            "requests_total": sum(wire_req.values()),
            "requests_by_op": dict(sorted(wire_req.items())),
            "replies_by_op_and_error": {op: dict(sorted(c.items())) for op, c in sorted(wire_rep.items())},
            "replies_by_error": dict(sorted(wire_by_error.items())),
            "extra_requests_beyond_workload": extra,
            "note": "kazoo sends per session: one ConnectRequest (no header, op 'connect'), "
                    "closeSession on stop, ping (xid -2) only after read_timeout/2 without "
                    "sending anything (read_timeout = 2/3 of the negotiated session timeout), "
                    "and auth again on every reconnect. The workload never calls ensure_path, "
                    "makepath or recursive delete, which would add exists/create/getChildren. "
                    "kazoo 2.10 has no setWatches: watches are not re-registered on reconnect.",
        },
        "unexpected_outcomes": len(unexpected),
        "unexpected_examples": unexpected[:10],
    }
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if not unexpected else 3


if __name__ == "__main__":
    sys.exit(main())
