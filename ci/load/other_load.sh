#!/usr/bin/env bash
# Traffic of protocols l7tap must NOT record, all at the same time, against the test bed's
# "other" servers (ci/testbed.sh start-others): HTTP to nginx 127.0.0.1:8080 (curl, keep-alive
# batches plus fresh connections), Redis 127.0.0.1:6379 (redis-benchmark + redis-cli),
# PostgreSQL 127.0.0.1:5432 (pgbench, initialised on first use).
#
#   ci/load/other_load.sh --duration 30
#
# Prints a JSON summary of what was sent on stdout.
set -euo pipefail

DURATION=10
HOST=127.0.0.1
HTTP_PORT=8080 REDIS_PORT=6379 PG_PORT=5432
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "other_load: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $DURATION =~ ^[0-9]+$ ]] || { echo "other_load: --duration takes whole seconds" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
end=$((SECONDS + DURATION))

http_load() {
  local batches=0 fresh=0 codes="$tmp/http.codes" args i
  : >"$codes"
  head -c 16384 /dev/urandom | base64 >"$tmp/body"
  while [ $SECONDS -lt $end ]; do
    # 20 GETs over one keep-alive connection.
    args=()
    for i in $(seq 1 20); do args+=(-o /dev/null "http://$HOST:$HTTP_PORT/ping?i=$i"); done
    curl -s -w '%{http_code}\n' "${args[@]}" >>"$codes" || true
    batches=$((batches + 1))
    # A body in each direction and a 404, each on a fresh connection.
    curl -s -w '%{http_code}\n' -o /dev/null "http://$HOST:$HTTP_PORT/64k.txt" >>"$codes" || true
    curl -s -w '%{http_code}\n' -o /dev/null --data-binary @"$tmp/body" "http://$HOST:$HTTP_PORT/echo" >>"$codes" || true
    curl -s -w '%{http_code}\n' -o /dev/null "http://$HOST:$HTTP_PORT/no-such-page" >>"$codes" || true
    fresh=$((fresh + 4))
  done
  python3 - "$codes" "$fresh" >"$tmp/http.json" <<'EOF'
import collections, json, sys
codes = collections.Counter(l.strip() for l in open(sys.argv[1]) if l.strip())
print(json.dumps({"requests": sum(codes.values()), "by_status": dict(codes),
                  "connections": int(sys.argv[2])}))
EOF
}

redis_load() {
  local runs=0 cli=0 n=2000 tests=set,get,incr,lpush,lrange_100,mset
  while [ $SECONDS -lt $end ]; do
    redis-benchmark -h $HOST -p $REDIS_PORT -c 4 -n $n -t $tests -q >/dev/null 2>&1 || true
    runs=$((runs + 1))
    for i in $(seq 1 10); do
      redis-cli -h $HOST -p $REDIS_PORT SET "l7tap:other:$i" "v$i" >/dev/null
      redis-cli -h $HOST -p $REDIS_PORT GET "l7tap:other:$i" >/dev/null
      cli=$((cli + 2))
    done
  done
  printf '{"benchmark_runs": %d, "benchmark_commands": %d, "benchmark_tests": "%s", "cli_commands": %d}\n' \
    "$runs" $((runs * n * 6)) "$tests" "$cli" >"$tmp/redis.json"
}

pg_load() {
  export PGHOST=$HOST PGPORT=$PG_PORT PGUSER=postgres PGDATABASE=postgres
  if [ -z "$(psql -tAc "SELECT to_regclass('pgbench_accounts')" 2>/dev/null)" ]; then
    pgbench -i -s 1 -q >"$tmp/pgbench-init.log" 2>&1 || { cat "$tmp/pgbench-init.log" >&2; return 1; }
  fi
  local left=$((end - SECONDS))
  [ $left -ge 1 ] || left=1
  pgbench -c 2 -j 1 -T "$left" -n >"$tmp/pgbench.log" 2>&1 || true
  local tx errors
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$tmp/pgbench.log")
  errors=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$tmp/pgbench.log")
  psql -tAc 'SELECT 1' >/dev/null
  psql -tAc 'SELECT * FROM no_such_table' >/dev/null 2>&1 || true
  printf '{"pgbench_transactions": %d, "pgbench_failed": %d, "psql_queries": 2}\n' \
    "${tx:-0}" "${errors:-0}" >"$tmp/pg.json"
}

http_load &
p1=$!
redis_load &
p2=$!
pg_load &
p3=$!
rc=0
wait $p1 || rc=1
wait $p2 || rc=1
wait $p3 || rc=1

printf '{"tool": "other_load", "duration_s": %s, "http": %s, "redis": %s, "postgres": %s}\n' \
  "$DURATION" "$(cat "$tmp/http.json" 2>/dev/null || echo null)" \
  "$(cat "$tmp/redis.json" 2>/dev/null || echo null)" "$(cat "$tmp/pg.json" 2>/dev/null || echo null)" \
  | python3 -m json.tool
exit $rc
