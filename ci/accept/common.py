"""What every acceptance script shares: `l7tap capture` in the background, started into a
fresh output directory and stopped with SIGINT; the credentials check; the verdict."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Capture:
    """`l7tap capture --out WORKDIR/out --summary-json ... ARGS`, running once the probes
    are attached. Only this run's tables are in `out_dir` (or `--out OUT`, e.g. an s3:// URL,
    which is left as it is)."""

    def __init__(self, l7tap, workdir, args, out=None):
        os.makedirs(workdir, exist_ok=True)
        self.out_dir = out or f"{workdir}/out"
        if out is None:
            shutil.rmtree(self.out_dir, ignore_errors=True)
        self.summary_path = f"{workdir}/summary.json"
        self.log_path = f"{workdir}/capture.log"
        ready = f"{workdir}/ready"
        if os.path.exists(ready):
            os.remove(ready)
        self.process = subprocess.Popen(
            [l7tap, "capture", "--out", self.out_dir, "--summary-json", self.summary_path,
             "--ready-file", ready, *args],
            stderr=open(self.log_path, "w"))
        started = time.time()
        while not os.path.exists(ready):
            if self.process.poll() is not None or time.time() - started > 60:
                sys.exit("capture did not start: " + self.log())
            time.sleep(0.05)

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        return open(self.log_path).read()

    def stop(self):
        """Stops the capture (it flushes and closes its files); exits if it failed."""
        self.process.send_signal(signal.SIGINT)
        if self.process.wait(timeout=120) != 0:
            sys.exit("capture failed: " + self.log())

    def abandon(self, why):
        """Stops the capture and exits with `why` (the workload failed)."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        sys.exit(why)


# `2026.12.07 08:57:05.825619 [ 7090 ] {query_id} <Information> executeQuery: Read 1 rows, ...`
CLICKHOUSE_LOG_LINE = re.compile(
    r"^\S+ (\d\d):(\d\d):(\d\d\.\d+) \[ (\d+) \] \{([^}]*)\} <(\w+)> ([\w-]+): (.*)$")


def clickhouse_log(path, offset):
    """The lines a ClickHouse server logged from byte `offset` of its log on (the whole file if
    it was rotated since), as (ms of the day, thread, query_id, level, source, message)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        if os.path.getsize(path) >= offset:
            f.seek(offset)
        for raw in f:
            m = CLICKHOUSE_LOG_LINE.match(raw.decode("utf-8", "replace"))
            if m:
                h, mi, s, thread, qid, level, source, message = m.groups()
                yield ((int(h) * 60 + int(mi)) * 60 + float(s)) * 1000, thread, qid, level, \
                    source, message


def secret_reached_output(secret, *paths):
    """Whether `secret` appears in any file under `paths` (ci/check-no-secrets.py)."""
    check = subprocess.run([sys.executable, f"{ROOT}/ci/check-no-secrets.py", paths[0], secret,
                            *(["--also", *paths[1:]] if len(paths) > 1 else [])])
    return check.returncode != 0


def verdict(failures, ok_message=None):
    """Prints one `FAIL:` line per failure (or `ok_message`) and exits 1 if any."""
    for f in failures:
        print("FAIL:", f)
    if ok_message and not failures:
        print(ok_message)
    sys.exit(1 if failures else 0)
