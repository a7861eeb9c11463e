#!/usr/bin/env bash
#! Instructions per event and per captured request of `l7tap replay` on a recording of real
#! ClickHouse `SELECT 1` traffic, counted by callgrind: a figure that does not depend on how
#! loaded the machine is, for comparing two builds of the user-space pipeline.
#
# Usage: ci/replay-cost.sh [--record] RECORDING L7TAP_BIN [L7TAP_BIN...]
#
#   --record   first capture RECORDING (as root, test bed's ch1 on 9000 running): `l7tap
#              capture --record` with the first binary while `l7tap-loadgen clickhouse
#              --profile select1 --connections 4` runs for $RECORD_SECONDS (default 2) s.
#              The recording is a private file (0600) with the connections' bytes: keep it
#              out of git (put it under /tmp).
#
# For each binary: a plain replay (its summary), then the same replay under
# `valgrind --tool=callgrind`; prints instructions in total, per stage (inclusive cost of the
# replay's reading and routing, of the actor threads, of the output thread), per event and
# per captured request, and the top functions by their own instructions ($TOP, default 25).
# Environment: LOADGEN (default: l7tap-loadgen next to the first binary), KEEP=1 keeps the
# work directory (callgrind files for callgrind_annotate).
#
# What a replay leaves out of a live capture: the reactor's reads of the kernel buffer
# (`ring.next()` per event, one clock read per sweep), its wakeups, `/proc` reads at open
# (identities are recorded frames), and the probes' own cost. It runs everything else the
# live capture runs per event: routing into the actors' rings, the actors (reorder, decode,
# parse, records, aggregation) and the output thread (Arrow, Parquet, zstd).
set -euo pipefail

RECORD=0
if [ "${1:-}" = "--record" ]; then RECORD=1; shift; fi
[ $# -ge 2 ] || { sed -n '5,12p' "$0" >&2; exit 2; }
REC=$1; shift
BINS=("$@")
TOP=${TOP:-25}
LOADGEN=${LOADGEN:-$(dirname "${BINS[0]}")/l7tap-loadgen}

WORK=$(mktemp -d /tmp/replay-cost.XXXXXX)
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [ $RECORD = 1 ]; then
  (umask 077; : > "$REC")
  "${BINS[0]}" capture --record "$REC" --out "$WORK/live" --ready-file "$WORK/ready" \
    --summary-json "$WORK/live.json" 2>"$WORK/capture.log" &
  CAPTURE=$!
  for _ in $(seq 300); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
  [ -e "$WORK/ready" ] || { tail "$WORK/capture.log" >&2; echo "replay-cost: capture did not start" >&2; exit 1; }
  "$LOADGEN" clickhouse --profile select1 --connections 4 --duration "${RECORD_SECONDS:-2}s" \
    2>/dev/null | tail -1 > "$WORK/load.json"
  kill -INT $CAPTURE; wait $CAPTURE
  chmod 600 "$REC"
  echo "recorded $REC: load $(cat "$WORK/load.json")"
fi

# summary_value FILE KEY: a counter of a summary JSON (0 when absent).
summary_value() {
  jq -r --arg k "$2" '.[$k] // 0' "$1"
}

# captured_requests FILE: records of every protocol and status.
captured_requests() {
  jq '[to_entries[] | select(.key | test("^records\\.[a-z_]+\\.(ok|error|cancelled|incomplete)$")) | .value] | add // 0' "$1"
}

for BIN in "${BINS[@]}"; do
  N=$(( ${N:-0} + 1 ))
  D="$WORK/$N"
  mkdir -p "$D"
  # One actor, as on the 2-core machine the bench runs on (one core per actor but one).
  "$BIN" replay "$REC" --actors 1 --out "$D/plain" --summary-json "$D/plain.json" >/dev/null 2>&1
  valgrind --tool=callgrind --callgrind-out-file="$D/callgrind.out" \
    "$BIN" replay "$REC" --actors 1 --out "$D/cg" --summary-json "$D/cg.json" \
    >/dev/null 2>"$D/valgrind.log"
  if ! diff <(jq -S 'del(."replay.seconds")' "$D/plain.json") <(jq -S 'del(."replay.seconds")' "$D/cg.json") >/dev/null; then
    echo "replay-cost: the summary under callgrind differs from the plain replay's" >&2
  fi
  EVENTS=$(summary_value "$D/plain.json" ingest.events)
  REQUESTS=$(captured_requests "$D/plain.json")
  callgrind_annotate --inclusive=yes --threshold=100 "$D/callgrind.out" > "$D/inclusive.txt" 2>/dev/null
  callgrind_annotate --threshold=100 "$D/callgrind.out" > "$D/self.txt" 2>/dev/null
  python3 - "$D" "$BIN" "$EVENTS" "$REQUESTS" "$TOP" <<'EOF'
import re, sys
d, binary, events, requests, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def rows(path):
    out = []
    for line in open(path):
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(?:[^\s:]+:)?(.*?)\s*(?:\[[^\]]*\])?$", line)
        if m:
            out.append((int(m.group(1).replace(",", "")), m.group(2)))
    return out

total = 0
for line in open(f"{d}/self.txt"):
    m = re.match(r"\s*([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", line)
    if m:
        total = int(m.group(1).replace(",", ""))
inclusive = rows(f"{d}/inclusive.txt")

def stage(pattern):
    hits = [c for c, name in inclusive if re.search(pattern, name)]
    return max(hits) if hits else 0

stages = [
    ("main thread: read the recording, route", r"^l7tap::pipeline::replay$"),
    ("actor threads", r"^l7tap_actors::actor::Actor::run$"),
    ("  reorder: hold (copy in)", r"^l7tap_actors::reorder::Reorder::hold$"),
    ("  reorder: release (with what it calls)", r"^l7tap_actors::reorder::Reorder::release$"),
    ("    decode, parse, records (ActorState::process)", r"^l7tap_actors::actor::ActorState::process$"),
    ("output thread", r"^l7tap::output::run$"),
]
print(f"== {binary}")
print(f"events {events}, captured requests {requests}, events per request {events / max(requests, 1):.2f}")
print(f"instructions: total {total:,}  per event {total / max(events, 1):,.0f}  per captured request {total / max(requests, 1):,.0f}")
for label, pattern in stages:
    c = stage(pattern)
    print(f"  {label:48} {c:>16,}  per event {c / max(events, 1):>8,.0f}  per request {c / max(requests, 1):>8,.0f}")
print(f"top {top} functions by own instructions (per captured request):")
for c, name in rows(f"{d}/self.txt")[1:top + 1]:
    print(f"  {c / max(requests, 1):>8,.0f}  {c / max(total, 1) * 100:5.1f} %  {name[:110]}")
EOF
done
