#!/usr/bin/env bash
# The main job (README): on a fresh Debian 12 machine, as root, installs everything, starts
# the test bed (ZooKeeper, two ClickHouse servers in a cluster, Redis, nginx, PostgreSQL),
# puts ClickHouse, ZooKeeper and unrelated load on it, and captures it with l7tap for
# ${CAPTURE_SECONDS:-10} seconds into ${OUT:-l7tap-out}, recording the raw events too.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-l7tap-out}
seconds=${CAPTURE_SECONDS:-10}

# l7tap refuses to add a run to a directory holding an earlier one (their counts would add
# up); say so before installing and starting anything.
if [ -n "$(find "$out" -name '*.parquet' ! -name '.*' -print -quit 2>/dev/null)" ]; then
  echo "$out holds an earlier capture: remove it, or set OUT to another directory" >&2
  exit 1
fi

bash ci/install-deps.sh
cargo build --release -p l7tap
bash ci/testbed.sh start
bash ci/testbed.sh schema

mkdir -p "$out"
# Long-lived connections opened before the capture (they are classified mid-stream).
python3 ci/load/ch_load.py --persistent-idle --clients 2 --duration $((seconds + 30)) >/dev/null &
idle_ch=$!
python3 ci/load/zk_load.py --persistent-idle --clients 2 --duration $((seconds + 30)) >/dev/null &
idle_zk=$!
trap 'kill $idle_ch $idle_zk 2>/dev/null || true' EXIT
sleep 3

ready="$out/.capture-ready"
rm -f "$ready"
"${CARGO_TARGET_DIR:-target}/release/l7tap" capture --duration "${seconds}s" --out "$out" \
  --record "$out/capture.rec" --summary-json "$out/summary.json" --ready-file "$ready" &
capture=$!
while [ ! -e "$ready" ]; do
  kill -0 $capture 2>/dev/null || { wait $capture; exit 1; }
  sleep 0.1
done
rm -f "$ready"

load_seconds=$((seconds > 4 ? seconds - 2 : 2))
bash ci/load/other_load.sh --duration "$load_seconds" >"$out/other_load.json" &
python3 ci/load/zk_load.py --ops 3000 --inflight 500 >"$out/zk_load.json" &
python3 ci/load/ch_load.py --duration "$load_seconds" --clients 4 --mix mixed \
  --compression mixed >"$out/ch_load.json" &
wait $capture
wait
echo "capture written to $out (summary: $out/summary.json, recording: $out/capture.rec)"
