"""`Recording`: runs `ci/fixture-proxy.py` for one fixture scenario, so that the scenario's
connections land in `<prefix>-<n>.chunks` (or `<prefix>.chunks` when there is one). Used by
the fixture recording scripts under tests/fixtures/."""
import glob
import os
import socket
import subprocess
import sys
import time

CI = os.path.dirname(os.path.abspath(__file__))


class Recording:
    def __init__(self, prefix, listen, upstream):
        self.prefix = prefix
        self.listen = listen
        self.upstream = upstream

    def __enter__(self):
        for f in glob.glob(self.prefix + "-*.chunks") + glob.glob(self.prefix + ".chunks"):
            os.remove(f)
        self.proc = subprocess.Popen([
            sys.executable, os.path.join(CI, "fixture-proxy.py"),
            "--listen", "%s:%d" % self.listen, "--upstream", "%s:%d" % self.upstream,
            "--out", self.prefix])
        for _ in range(100):
            try:
                socket.create_connection(self.listen).close()
                break
            except OSError:
                time.sleep(0.05)
        # The probe connection above carries no bytes: dropped on exit.
        return self

    def __exit__(self, *exc):
        time.sleep(0.5)
        self.proc.terminate()
        self.proc.wait()
        files = sorted(glob.glob(self.prefix + "-*.chunks"),
                       key=lambda f: int(f.rsplit("-", 1)[1].split(".")[0]))
        kept = [f for f in files if any(not l.startswith("#") for l in open(f))]
        for f in files:
            if f not in kept:
                os.remove(f)
        if len(kept) == 1:
            os.rename(kept[0], self.prefix + ".chunks")
        else:
            for i, f in enumerate(kept, 1):
                os.rename(f, "%s-%d.chunks" % (self.prefix, i))
