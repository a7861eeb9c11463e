#!/usr/bin/env bash
# The benchmark suite: what l7tap costs, side by side, in one command.
#
#   bash ci/bench.sh            full run: 5 alternated rounds per workload (< 25 min after the build)
#   bash ci/bench.sh --smoke    1 pair per workload, short runs (~2-3 min); exits non-zero only
#                               if a row of the table could not be produced
#
# For each workload (real ClickHouse 18.16 and ZooKeeper 3.8 flat out, a loopback echo at
# saturation, and the fixture responder at 10 k, 50 k and flat-out req/s) it runs the load
# generator (tools/loadgen) without an agent and with `l7tap capture`, alternated A/B/B/A...,
# plus runs with `tcpdump -w` on the same ports and with the floor (`l7tap-floor`: a program
# that returns at once on every tracepoint the probes use, the cost no tracepoint-based agent
# can go under) in every round, and with `l7tap capture --transport perf` in two,
# and prints ONE table (also written to bench-results.md, or $BENCH_OUT):
#   throughput with / without; client latency p50 and p99 with / without; agent CPU per
#   captured request (process user+sys from /proc/<pid>/stat plus the eBPF programs' run_time_ns from
#   `bpftool prog show`, kernel.bpf_stats_enabled=1); events lost (kernel.events_failed) and
#   l7tap's records against the requests the load generator completed; the agent's VmHWM;
#   the same for the perf buffer transport and tcpdump's throughput ratio; the watched
#   server's own CPU per request (user+sys of its process, from /proc/<pid>/stat) with l7tap
#   and with the floor, divided by without: what the agent costs the server itself, a measure
#   less noisy than throughput.
# Timing goals are printed (✗ where missed), never asserted.
#
# Needs root (eBPF). Installs what it needs (ci/install-deps.sh, tcpdump, jq), builds the
# release binaries into ${CARGO_TARGET_DIR:-target}, starts the test bed (ci/testbed.sh
# start; servers already running are left as they are) and leaves it running.
# Environment: BENCH_OUT (table file), BENCH_SECONDS (seconds per run), BENCH_PAIRS,
# BENCH_WORKLOADS (comma-separated names: only those workloads).
#
# TLS: clickhouse-select1-tls is SELECT 1 flat out over ClickHouse's secure native port from
# the Go client (ci/tls-go-client.sh, crypto/tls: l7tap reads both ends' plaintext, the Go
# client's and the server's OpenSSL's); clickhouse-select1-go is the same client over the
# plaintext port, the row to compare its agent CPU per captured request with. A process of the
# Go client (--hold) runs through the whole suite, as a long-running Go service would: each
# capture then attaches the binary in its first scan, before it says it is attached (a new
# executable is otherwise found by the next scan, up to a second into the run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
case ${1:-} in
  --smoke) SMOKE=1 ;;
  "") ;;
  *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac
if [ "$SMOKE" = 1 ]; then
  PAIRS=${BENCH_PAIRS:-1} EXTRA_ROUNDS=1 SECONDS_PER_RUN=${BENCH_SECONDS:-1.5}
else
  PAIRS=${BENCH_PAIRS:-5} EXTRA_ROUNDS=2 SECONDS_PER_RUN=${BENCH_SECONDS:-3}
fi
OUT=${BENCH_OUT:-$ROOT/bench-results.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
L7TAP=$TARGET_DIR/release/l7tap
LOADGEN=$TARGET_DIR/release/l7tap-loadgen
FLOOR=$TARGET_DIR/release/l7tap-floor
RESPONDER_CH=127.0.0.1:19900
RESPONDER_ZK=127.0.0.1:19981
ECHO_PORT=19977
CLK_TCK=$(getconf CLK_TCK)

log() { echo "bench: $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "bench: needs root (eBPF programs, bpf_stats, tcpdump)" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# install, build, servers

bash ci/install-deps.sh
need=()
for tool in tcpdump jq bpftool; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
log "building l7tap, l7tap-floor and l7tap-loadgen (release) into $TARGET_DIR"
cargo build --release -p l7tap -p l7tap-loadgen -p l7tap-probes --bins
GO_CLIENT=$(bash ci/tls-go-client.sh)
bash ci/testbed.sh start

WORK=$(mktemp -d /tmp/l7tap-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
RESPONDER_PID=
AGENT_PID=
HOLD_PID=
OLD_BPF_STATS=$(sysctl -n kernel.bpf_stats_enabled)

cleanup() {
  if [ -n "$AGENT_PID" ]; then kill -INT "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; fi
  if [ -n "$RESPONDER_PID" ]; then kill "$RESPONDER_PID" 2>/dev/null || true; wait "$RESPONDER_PID" 2>/dev/null || true; fi
  if [ -n "$HOLD_PID" ]; then kill "$HOLD_PID" 2>/dev/null || true; wait "$HOLD_PID" 2>/dev/null || true; fi
  sysctl -qw kernel.bpf_stats_enabled="$OLD_BPF_STATS" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

sysctl -qw kernel.bpf_stats_enabled=1
"$GO_CLIENT" --hold &
HOLD_PID=$!
"$LOADGEN" responder --clickhouse-listen $RESPONDER_CH --zookeeper-listen $RESPONDER_ZK \
  --ready-file "$WORK/responder.ready" 2>"$WORK/responder.log" &
RESPONDER_PID=$!
for _ in $(seq 100); do [ -e "$WORK/responder.ready" ] && break; sleep 0.1; done
[ -e "$WORK/responder.ready" ] || { cat "$WORK/responder.log" >&2; echo "bench: the responder did not start" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# workloads: NAME|PROTOCOL|THROUGHPUT GOAL|TCPDUMP PORTS|SERVER|LOADGEN ARGS
# SERVER: whose CPU per request is measured: a test bed server's name (ci/testbed.sh), or
# `responder`; empty for the echo loop (its server is the load generator).

D=$SECONDS_PER_RUN
WORKLOADS=(
  "clickhouse-select1|clickhouse|0.97|9000|ch1|clickhouse --profile select1 --connections 4 --duration ${D}s"
  "clickhouse-select1-go|clickhouse|0.97|9000|ch1|go --bench --plain --target 127.0.0.1:9000 --connections 4 --duration ${D}s"
  "clickhouse-select1-tls|clickhouse|0.97|9440|ch1|go --bench --target 127.0.0.1:9440 --connections 4 --duration ${D}s"
  "zookeeper-pipelined-get|zookeeper|0.97|2181|zk|zookeeper --profile pipelined-get --connections 2 --in-flight 200 --duration ${D}s"
  "zookeeper-mixed|zookeeper|0.97|2181|zk|zookeeper --profile mixed --connections 4 --duration ${D}s"
  "echo|none|0.95|$ECHO_PORT||echo --listen 127.0.0.1:$ECHO_PORT --connections 2 --duration ${D}s"
  "responder-clickhouse-10k|clickhouse||${RESPONDER_CH##*:}|responder|raw --protocol clickhouse --target $RESPONDER_CH --connections 4 --rate 10000 --duration ${D}s"
  "responder-clickhouse-50k|clickhouse||${RESPONDER_CH##*:}|responder|raw --protocol clickhouse --target $RESPONDER_CH --connections 4 --rate 50000 --duration ${D}s"
  "responder-clickhouse-max|clickhouse||${RESPONDER_CH##*:}|responder|raw --protocol clickhouse --target $RESPONDER_CH --connections 4 --duration ${D}s"
  "responder-zookeeper-10k|zookeeper||${RESPONDER_ZK##*:}|responder|raw --protocol zookeeper --target $RESPONDER_ZK --connections 4 --in-flight 32 --rate 10000 --duration ${D}s"
  "responder-zookeeper-50k|zookeeper||${RESPONDER_ZK##*:}|responder|raw --protocol zookeeper --target $RESPONDER_ZK --connections 4 --in-flight 32 --rate 50000 --duration ${D}s"
  "responder-zookeeper-max|zookeeper||${RESPONDER_ZK##*:}|responder|raw --protocol zookeeper --target $RESPONDER_ZK --connections 4 --in-flight 32 --duration ${D}s"
)

# ---------------------------------------------------------------------------------------------
# measuring one run

# cpu_ticks PID: user + system clock ticks of the process (all its threads), or nothing.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || true
}

# hwm_kb PID: VmHWM of the process in KiB, or nothing.
hwm_kb() {
  awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || true
}

# bpf_prog_ids: ids of the loaded programs named like l7tap's (enter_*, exit_*, sock_*, the TLS
# uprobes tls_* and go_tls_*) or the floor's (nothing).
bpf_prog_ids() {
  bpftool prog show --json | jq -r '.[] | select(.name | test("^(enter_|exit_|sock_|tls_|go_tls_|nothing$)")) | .id' | sort
}

# bpf_run_ns IDS_FILE: summed run_time_ns of the programs whose ids are listed in IDS_FILE.
bpf_run_ns() {
  bpftool prog show --json |
    jq --slurpfile ids <(jq -R 'tonumber' "$1" | jq -s .) \
      '[.[] | select(.id as $i | $ids[0] | index($i)) | (.run_time_ns // 0)] | add // 0'
}

# stop_and_watch PID: SIGINT, then poll until the process is gone; prints "CPU_TICKS HWM_KB"
# as last seen (VmHWM and CPU only grow, so the last sample is the closest to the end).
stop_and_watch() {
  local pid=$1 ticks hwm t h
  ticks=$(cpu_ticks "$pid") hwm=$(hwm_kb "$pid")
  kill -INT "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    t=$(cpu_ticks "$pid") h=$(hwm_kb "$pid")
    [ -n "$t" ] && ticks=$t
    [ -n "$h" ] && hwm=$h
    sleep 0.05
  done
  echo "${ticks:-0} ${hwm:-0}"
}

# wait_for TEST_CMD...: up to 30 s.
wait_for() {
  local i
  for i in $(seq 600); do "$@" && return 0; sleep 0.05; done
  return 1
}

# emit WORKLOAD MODE PROTOCOL GOAL LOAD_JSON AGENT_JSON ERROR: one line of results, with the
# watched server's CPU over the last load (server_measure).
emit() {
  jq -cn --arg workload "$1" --arg mode "$2" --arg protocol "$3" --arg goal "$4" \
    --argjson load "${5:-null}" --argjson agent "${6:-null}" --arg error "$7" \
    --argjson server "$(server_measure)" \
    '{workload: $workload, mode: $mode, protocol: $protocol,
      sides: (if $protocol == "none" then 1 else 2 end),
      throughput_goal: (if $goal == "" then null else ($goal | tonumber) end),
      load: $load, agent: $agent, server: $server,
      error: (if $error == "" then null else $error end)}' \
    >>"$RESULTS"
}

# server_pid SERVER: the pid of a workload's watched server (see WORKLOADS), or nothing.
server_pid() {
  case $1 in
    "") ;;
    responder) echo "$RESPONDER_PID" ;;
    *) head -n1 "${L7TAP_TESTBED_DIR:-/tmp/l7tap-testbed}/$1/$1.pid" 2>/dev/null | tr -dc 0-9 ;;
  esac
}

# server_measure: {"cpu_ns": ...} of the watched server ($SERVER_PID) over the last load
# (run_load leaves its ticks in $WORK/server.ticks), or null.
server_measure() {
  local t0='' t1=''
  [ -s "$WORK/server.ticks" ] && read -r t0 t1 <"$WORK/server.ticks"
  if [ -n "$t0" ] && [ -n "$t1" ]; then
    echo "{\"cpu_ns\": $(((t1 - t0) * 1000000000 / CLK_TCK))}"
  else
    echo null
  fi
}

# run_load ARGS: the load generator's JSON line, or nothing on failure. ARGS starting with
# `go ` run the Go client's bench mode instead (the same JSON line). The watched server's CPU
# ticks before and after go to $WORK/server.ticks (run_one clears it before each run).
run_load() {
  local t0=''
  [ -z "$SERVER_PID" ] || t0=$(cpu_ticks "$SERVER_PID")
  # shellcheck disable=SC2086  # ARGS is a word list on purpose
  case $1 in
    go\ *) "$GO_CLIENT" ${1#go } 2>>"$WORK/loadgen.log" | tail -n1 || true ;;
    *) "$LOADGEN" $1 2>>"$WORK/loadgen.log" | tail -n1 || true ;;
  esac
  if [ -n "$t0" ]; then echo "$t0 $(cpu_ticks "$SERVER_PID")" >"$WORK/server.ticks"; fi
}

# measure_bpf_agent WHAT CMD...: one run of the load under CMD, an agent that loads BPF
# programs and takes --ready-file: started in the background, the load run once it is attached,
# stopped with SIGINT. Sets run_one's load, cpu_ns (the agent process's CPU), bpf_ns (its
# programs' run time), hwm and error; returns 1, having emitted the row, if CMD did not attach.
measure_bpf_agent() {
  local what=$1 cpu0 cpu_end bpf0 bpf1
  shift
  rm -f "$WORK/agent.ready"
  bpf_prog_ids >"$WORK/ids.before"
  "$@" --ready-file "$WORK/agent.ready" 2>"$WORK/agent.log" &
  AGENT_PID=$!
  pid=$AGENT_PID
  if ! wait_for test -e "$WORK/agent.ready"; then
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    AGENT_PID=
    emit "$name" "$mode" "$protocol" "$goal" "" "" "$what did not attach: $(tail -n1 "$WORK/agent.log")"
    return 1
  fi
  bpf_prog_ids | comm -13 "$WORK/ids.before" - >"$WORK/ids.agent"
  cpu0=$(cpu_ticks "$pid")
  bpf0=$(bpf_run_ns "$WORK/ids.agent")
  load=$(run_load "$args")
  bpf1=$(bpf_run_ns "$WORK/ids.agent")
  read -r cpu_end hwm < <(stop_and_watch "$pid")
  wait "$pid" 2>/dev/null || error="$what exited with an error: $(tail -n1 "$WORK/agent.log")"
  AGENT_PID=
  cpu_ns=$(((${cpu_end:-0} - ${cpu0:-0}) * 1000000000 / CLK_TCK))
  bpf_ns=$((${bpf1:-0} - ${bpf0:-0}))
}

# run_one WORKLOAD MODE: one run of the workload in MODE (none, l7tap, l7tap-perf, tcpdump,
# floor).
run_one() {
  local spec=$1 mode=$2 name protocol goal ports server args
  IFS='|' read -r name protocol goal ports server args <<<"$spec"
  local load='' agent='' error='' pid cpu0 cpu_end hwm cpu_ns bpf_ns end
  rm -f "$WORK/server.ticks"
  case $mode in
    none)
      load=$(run_load "$args")
      ;;
    l7tap | l7tap-perf)
      local transport=ringbuf
      [ "$mode" = l7tap-perf ] && transport=perf
      rm -f "$WORK/summary.json"
      rm -rf "$WORK/l7tap-out"  # l7tap refuses an output directory holding an earlier run
      measure_bpf_agent l7tap "$L7TAP" capture --transport "$transport" \
        --summary-json "$WORK/summary.json" --out "$WORK/l7tap-out" || return 0
      local summary='{}'
      [ -s "$WORK/summary.json" ] && summary=$(jq -c . "$WORK/summary.json")
      agent=$(jq -cn --argjson cpu "$cpu_ns" --argjson bpf "$bpf_ns" --argjson hwm "$hwm" \
        --argjson summary "$summary" '{cpu_ns: $cpu, bpf_ns: $bpf, hwm_kb: $hwm, summary: $summary}')
      rm -rf "$WORK/l7tap-out"
      ;;
    floor)
      measure_bpf_agent l7tap-floor "$FLOOR" || return 0
      agent=$(jq -cn --argjson cpu "$cpu_ns" --argjson bpf "$bpf_ns" --argjson hwm "$hwm" \
        '{cpu_ns: $cpu, bpf_ns: $bpf, hwm_kb: $hwm}')
      ;;
    tcpdump)
      local filter
      filter=$(echo "$ports" | sed 's/,/ or tcp port /g; s/^/tcp port /')
      tcpdump -i lo -n -w "$WORK/capture.pcap" -B 65536 "$filter" 2>"$WORK/tcpdump.log" &
      AGENT_PID=$!
      pid=$AGENT_PID
      if ! wait_for grep -q "listening on" "$WORK/tcpdump.log"; then
        kill -INT "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        AGENT_PID=
        emit "$name" "$mode" "$protocol" "$goal" "" "" "tcpdump did not start: $(tail -n1 "$WORK/tcpdump.log")"
        return
      fi
      cpu0=$(cpu_ticks "$pid")
      load=$(run_load "$args")
      read -r cpu_end hwm < <(stop_and_watch "$pid")
      wait "$pid" 2>/dev/null || true
      AGENT_PID=
      local dropped
      dropped=$(awk '/packets dropped by kernel/ {print $1}' "$WORK/tcpdump.log")
      agent=$(jq -cn --argjson cpu "$(((${cpu_end:-0} - ${cpu0:-0}) * 1000000000 / CLK_TCK))" \
        --argjson hwm "$hwm" --argjson dropped "${dropped:-0}" \
        '{cpu_ns: $cpu, hwm_kb: $hwm, dropped: $dropped}')
      rm -f "$WORK/capture.pcap"
      ;;
  esac
  if [ -z "$load" ]; then
    error=${error:-"the load generator failed: $(tail -n1 "$WORK/loadgen.log" 2>/dev/null)"}
    load=''
  fi
  emit "$name" "$mode" "$protocol" "$goal" "$load" "$agent" "$error"
  end=$(echo "$load" | jq -r 'if . == null then "no load" else "\(.throughput | floor) req/s p50 \(.p50_us | floor) µs" end' 2>/dev/null || echo "no load")
  log "$(printf '%-26s %-14s %s' "$name" "$mode" "$end")"
}

# ---------------------------------------------------------------------------------------------
# the alternated runs

# Other work on the machine (builds, tests) skews every ratio: wait a while for it to calm
# down, and print the load average with the table either way.
quiet_limit=${BENCH_QUIET_LOAD:-1.5}
for _ in $(seq "${BENCH_QUIET_WAIT:-60}"); do
  awk -v limit="$quiet_limit" '{exit !($1 < limit)}' /proc/loadavg && break
  sleep 1
done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before the runs: $load_before"

started=$SECONDS
names=()
for spec in "${WORKLOADS[@]}"; do
  IFS='|' read -r name _ _ _ server args <<<"$spec"
  if [ -n "${BENCH_WORKLOADS:-}" ] && [[ ",$BENCH_WORKLOADS," != *",$name,"* ]]; then
    continue
  fi
  names+=("$name")
  SERVER_PID=$(server_pid "$server")
  # Warm-up (connections, caches, JIT of the JVM): not measured.
  run_load "$(sed 's/--duration [^ ]*/--duration 1s/' <<<"$args")" >/dev/null
  for ((round = 0; round < PAIRS; round++)); do
    modes=(none l7tap tcpdump floor)
    if [ $round -lt $EXTRA_ROUNDS ]; then modes+=(l7tap-perf); fi
    # Rotate the order each round so drift (page cache, JIT, other load) cancels.
    n=${#modes[@]}
    for ((k = 0; k < n; k++)); do
      run_one "$spec" "${modes[$(((k + round) % n))]}"
    done
  done
done
log "runs took $((SECONDS - started)) s"

title="# l7tap benchmark ($(date -u '+%F %H:%M UTC'), $(nproc) cores, $(uname -r), $([ $SMOKE = 1 ] && echo smoke || echo full): $PAIRS pair(s) of ${SECONDS_PER_RUN} s per workload; load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg); runs took $((SECONDS - started)) s)"
echo
echo "$title"
echo
cp "$RESULTS" "${OUT%.md}.jsonl"
"$LOADGEN" report "$RESULTS" --expect "$(IFS=,; echo "${names[*]}")" --out "$OUT" --title "$title"
log "table written to $OUT (runs: ${OUT%.md}.jsonl)"
