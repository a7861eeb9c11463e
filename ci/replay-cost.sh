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
# `valgrind --tool=callgrind --separate-threads=yes`; prints instructions in total and per
# thread kind (the main thread's reading and routing, the actor threads with the reorder's
# share, the output thread), per event and per captured request, and each thread kind's top
# functions by their own instructions ($TOP, default 25).
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

# valgrind (callgrind, callgrind_annotate) and jq, from Debian's packages, if missing.
need=()
for tool in valgrind jq; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

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
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$D/callgrind.out" \
    "$BIN" replay "$REC" --actors 1 --out "$D/cg" --summary-json "$D/cg.json" \
    >/dev/null 2>"$D/valgrind.log"
  if ! diff <(jq -S 'del(."replay.seconds")' "$D/plain.json") <(jq -S 'del(."replay.seconds")' "$D/cg.json") >/dev/null; then
    echo "replay-cost: the summary under callgrind differs from the plain replay's" >&2
  fi
  EVENTS=$(summary_value "$D/plain.json" ingest.events)
  REQUESTS=$(captured_requests "$D/plain.json")
  for f in "$D"/callgrind.out-*; do
    callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$f" > "$f.inclusive" 2>/dev/null
    callgrind_annotate --auto=no --threshold=100 "$f" > "$f.self" 2>/dev/null
  done
  python3 - "$D" "$BIN" "$EVENTS" "$REQUESTS" "$TOP" <<'EOF'
import glob, re, sys
d, binary, events, requests, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
per_event = lambda c: c / max(events, 1)
per_request = lambda c: c / max(requests, 1)

def rows(path):
    out = []
    for line in open(path):
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(?:[^\s:]+:)?(.*?)\s*(?:\[[^\]]*\])?$", line)
        if m:
            out.append((int(m.group(1).replace(",", "")), m.group(2)))
    return out

# One file per thread: the first is the main thread (reads the recording and routes); the
# others are told apart by the functions they ran.
MAIN, ACTOR, OUTPUT, OTHER = "main thread: read the recording, route", "actor threads", "output thread", "other threads"
files, totals = {}, {}
for path in sorted(glob.glob(f"{d}/callgrind.out-*[0-9]")):
    text = open(path).read()
    if path.endswith("-01"):
        kind = MAIN
    elif "l7tap_actors::actor::Actor::run" in text:
        kind = ACTOR
    elif "l7tap::output::handle" in text:
        kind = OUTPUT
    else:
        kind = OTHER
    files.setdefault(kind, []).append(path)
    totals[kind] = totals.get(kind, 0) + int(re.search(r"^totals: (\d+)", text, re.M).group(1))
total = sum(totals.values())

def line(label, c, indent):
    print(f"{' ' * indent}{label:{50 - indent}} {c:>14,}  per event {per_event(c):>7,.0f}  per request {per_request(c):>7,.0f}")

print(f"== {binary}")
print(f"events {events}, captured requests {requests}, events per request {events / max(requests, 1):.2f}")
line("instructions, all threads", total, 0)
actor_stages = [
    ("reorder: hold (copy in)", r"^l7tap_actors::reorder::Reorder::hold$"),
    ("reorder: release (with what it calls)", r"^l7tap_actors::reorder::Reorder::release$"),
    ("  decode, parse, records (ActorState::process)", r"^l7tap_actors::actor::ActorState::process$"),
]
for kind in [MAIN, ACTOR, OUTPUT, OTHER]:
    if kind not in totals:
        continue
    line(kind, totals[kind], 2)
    if kind == ACTOR:
        for label, pattern in actor_stages:
            c = sum(max([n for n, name in rows(p + ".inclusive") if re.search(pattern, name)] or [0]) for p in files[kind])
            line(label, c, 4)
for kind in [MAIN, ACTOR, OUTPUT]:
    if kind not in files:
        continue
    print(f"top {top} functions of the {kind.split(':')[0]} by own instructions (per captured request, % of all):")
    merged = {}
    for path in files[kind]:
        for c, name in rows(path + ".self")[1:]:
            merged[name] = merged.get(name, 0) + c
    for name, c in sorted(merged.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {per_request(c):>8,.0f}  {c / max(total, 1) * 100:5.1f} %  {name[:110]}")
EOF
done
