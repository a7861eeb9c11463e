#!/usr/bin/env bash
# Prints ZooKeeper's `mntr` four-letter word as one JSON object (numbers as numbers).
#   ci/zk-mntr.sh [HOST [PORT]]        default 127.0.0.1 2181
# Needs 4lw.commands.whitelist to allow mntr (the test bed's zoo.cfg allows every word).
set -euo pipefail
exec python3 - "${1:-127.0.0.1}" "${2:-2181}" <<'EOF'
import json, socket, sys

host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=5)
except OSError as e:
    sys.exit(f"zk-mntr: cannot connect to {host}:{port}: {e}")
s.sendall(b"mntr")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
text = out.decode()
if "is not executed because it is not in the whitelist" in text:
    sys.exit("zk-mntr: " + text.strip())
result = {}
for line in text.splitlines():
    if "\t" not in line:
        continue
    key, value = line.split("\t", 1)
    try:
        result[key] = int(value)
    except ValueError:
        try:
            result[key] = float(value)
        except ValueError:
            result[key] = value
if not result:
    sys.exit(f"zk-mntr: unexpected answer: {text!r}")
json.dump(result, sys.stdout, indent=2, sort_keys=True)
sys.stdout.write("\n")
EOF
