#!/usr/bin/env bash
# Real-server test bed for l7tap: ZooKeeper 3.8, two ClickHouse 18.16 shards, and "other
# protocol" servers (redis, nginx, PostgreSQL) for negative tests, and an S3 API server (moto)
# for object-storage outputs. Loopback only, no systemd:
# every server is a background process with a pid file under the state dir.
#
#   ci/testbed.sh start|stop|restart|status       everything
#   ci/testbed.sh start-core|stop-core            ZooKeeper (plain and TLS) + ClickHouse only
#   ci/testbed.sh restart-ch                      both ClickHouse servers only (a config change)
#   ci/testbed.sh start-others|stop-others        redis, nginx, PostgreSQL, moto (S3) only
#   ci/testbed.sh start-s3|stop-s3                moto_server (S3 API, any credentials) only
#   ci/testbed.sh schema                          l7tap database and tables on both shards (+ checks)
#   ci/testbed.sh logs NAME                       tail of a server's log (zk, zktls, ch1, ch2, redis, nginx, pg, s3)
#   ci/testbed.sh ch-log-level LEVEL              both ClickHouse servers log at LEVEL (trace, debug,
#                                                 information), without a restart
#
# State dir: ${L7TAP_TESTBED_DIR:-/tmp/l7tap-testbed}. See ci/README.md.
set -euo pipefail

D=${L7TAP_TESTBED_DIR:-/tmp/l7tap-testbed}
HOST=127.0.0.1
ZK_PORT=2181
# A second ZooKeeper, for TLS: Netty serves a secure client port (kazoo use_ssl=True) and a
# plaintext port for its own health check. A server of its own, so that the plain one keeps
# the NIO connection factory whose packet counts the ZooKeeper checks compare with mntr.
ZKTLS_PORT=2281 ZKTLS_PLAIN_PORT=2282
CH1_TCP=9000 CH1_HTTP=8123 CH1_INTER=9009 CH1_TLS=9440
CH2_TCP=9001 CH2_HTTP=8124 CH2_INTER=9010 CH2_TLS=9441
REDIS_PORT=6379
NGINX_PORT=8080
PG_PORT=5432
S3_PORT=${L7TAP_TESTBED_S3_PORT:-9900}
CH_USER=l7tap
CH_PASSWORD=l7tap-secret-pw
CH_READER=l7tap_reader CH_READER_PASSWORD=l7tap-reader-pw
START_TIMEOUT=${L7TAP_TESTBED_START_TIMEOUT:-90}
STOP_TIMEOUT=${L7TAP_TESTBED_STOP_TIMEOUT:-30}

ZK_JARS=/usr/share/java/zookeeper.jar:/usr/share/java/log4j-1.2.jar:/usr/share/java/slf4j-log4j12.jar
# Netty, for the TLS ZooKeeper (Debian's libnetty-java; netty-all.jar there holds no classes).
ZK_NETTY_JARS=$(for j in buffer codec common handler resolver transport transport-native-unix-common; do
  printf ':/usr/share/java/netty-%s.jar' "$j"; done)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)

log() { echo "testbed: $*" >&2; }
die() { echo "testbed: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# process helpers

# pid_of NAME: the live pid recorded for NAME, or nothing.
pid_file() {
  case $1 in
    pg) echo "$D/pg/data/postmaster.pid" ;;
    *) echo "$D/$1/$1.pid" ;;
  esac
}

alive() { # alive PID: exists and is not a zombie
  [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

pid_of() {
  local f pid
  f=$(pid_file "$1")
  [ -s "$f" ] || return 0
  pid=$(head -n1 "$f" | tr -dc 0-9)
  [ -n "$pid" ] || return 0
  # Alive, not a zombie, and really ours: its command line mentions the state dir, or it runs
  # in it (redis rewrites its command line).
  if alive "$pid"; then
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$D" \
       || [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)/" == "$D"/* ]]; then
      echo "$pid"
    fi
  fi
}

log_file() {
  case $1 in
    zk) echo "$D/zk/zk.log" ;;
    zktls) echo "$D/zktls/stdout.log" ;;
    ch1 | ch2) echo "$D/$1/log/clickhouse-server.log" ;;
    redis) echo "$D/redis/redis.log" ;;
    nginx) echo "$D/nginx/error.log" ;;
    pg) echo "$D/pg/pg.log" ;;
    s3) echo "$D/s3/stdout.log" ;;
  esac
}

show_log_tail() {
  local name=$1 f seen=" "
  for f in "$(log_file "$name")" "$D/$name/stdout.log" "$D/$name/log/clickhouse-server.err.log"; do
    [ -e "$f" ] || continue
    f=$(realpath "$f")
    case $seen in *" $f "*) continue ;; esac
    seen="$seen$f "
    if [ -s "$f" ]; then
      echo "---- tail of $f ----" >&2
      tail -n 25 "$f" >&2
    fi
  done
}

# port_busy PORT: some process listens on 127.0.0.1:PORT or *:PORT.
port_busy() {
  ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .
}

check_port_free() {
  local name=$1 port
  shift
  for port in "$@"; do
    if port_busy "$port"; then
      ss -Hltnp "( sport = :$port )" >&2 || true
      die "$name: port $port is already in use by a process that is not this test bed ($D)"
    fi
  done
}

# Pids started by this run's spawn, by name: until the child has exec'd the server its command
# line is this script's (pid_of does not know it yet), and a server may truncate its pid file
# before writing it; neither is an exit.
declare -A SPAWNED=()

# spawn NAME CMD...: runs CMD in its own session, stdin closed, output in $D/NAME/stdout.log;
# records its pid in the pid file unless the server writes its own.
spawn() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$D/$name/stdout.log" 2>&1 &
  local pid=$!
  if [ "$name" != pg ]; then echo "$pid" >"$(pid_file "$name")"; fi
  SPAWNED[$name]=$pid
  disown "$pid" 2>/dev/null || true
}

# wait_ready NAME CHECK...: polls CHECK until it succeeds; fails with the log tail on timeout
# or when the process dies.
wait_ready() {
  local name=$1
  shift
  local deadline=$((SECONDS + START_TIMEOUT))
  while true; do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [ -z "$(pid_of "$name")" ] && [ "$name" != pg ] \
       && ! { [ -n "${SPAWNED[$name]:-}" ] && alive "${SPAWNED[$name]}"; }; then
      show_log_tail "$name"
      die "$name: process exited during start-up"
    fi
    if [ $SECONDS -ge $deadline ]; then
      show_log_tail "$name"
      die "$name: not answering after ${START_TIMEOUT}s"
    fi
    sleep 0.3
  done
}

# stop_pid NAME [SIGNAL]: signal, wait until gone, SIGKILL after STOP_TIMEOUT.
stop_pid() {
  local name=$1 sig=${2:-TERM} pid
  pid=$(pid_of "$name")
  if [ -z "$pid" ]; then
    rm -f "$(pid_file "$name")"
    return 0
  fi
  log "stopping $name (pid $pid, SIG$sig)"
  kill "-$sig" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "$pid"; do
    if [ $SECONDS -ge $deadline ]; then
      log "$name (pid $pid) still there after ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      # Children of the process group too (nginx workers, postgres backends).
      kill -KILL -- "-$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  rm -f "$(pid_file "$name")"
}

# ---------------------------------------------------------------------------------------------
# ZooKeeper 3.8 (Debian's package: /usr/share/java/zookeeper.jar, log4j 1.2 binding)

zk4lw() { # zk4lw WORD [PORT]: the answer of a four-letter word
  python3 - "$1" "$HOST" "${2:-$ZK_PORT}" <<'EOF'
import socket, sys
s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3)
s.sendall(sys.argv[1].encode())
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
sys.stdout.write(out.decode())
EOF
}

zk_ok() { [ "$(zk4lw ruok)" = imok ] && zk4lw srvr | grep -q '^Mode: standalone'; }

start_zk() {
  if [ -n "$(pid_of zk)" ]; then
    log "zk already running (pid $(pid_of zk))"
    wait_ready zk zk_ok
    return 0
  fi
  check_port_free zk "$ZK_PORT"
  mkdir -p "$D/zk/data"
  cat >"$D/zk/zoo.cfg" <<EOF
# l7tap test bed: standalone ZooKeeper on loopback
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$D/zk/data
clientPort=$ZK_PORT
clientPortAddress=$HOST
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
  sed -e 's/^log4j.appender.CONSOLE.Threshold=.*/log4j.appender.CONSOLE.Threshold=INFO/' \
    /etc/zookeeper/conf_example/log4j.properties >"$D/zk/log4j.properties"
  log "starting zk on $HOST:$ZK_PORT"
  : >"$D/zk/stdout.log"
  # ZOO_LOG4J_PROP=INFO,CONSOLE with stdout to zk.log: what zkServer.sh does, without its
  # /etc/zookeeper/conf and /var/log assumptions.
  spawn zk java -Xms64m -Xmx512m -XX:+UseG1GC \
    -Dzookeeper.log.dir="$D/zk" -Dzookeeper.root.logger=INFO,CONSOLE \
    -Dlog4j.configuration="file:$D/zk/log4j.properties" \
    -Dzookeeper.admin.enableServer=false \
    -cp "$D/zk:$ZK_JARS" org.apache.zookeeper.server.quorum.QuorumPeerMain "$D/zk/zoo.cfg"
  ln -sf stdout.log "$D/zk/zk.log"
  wait_ready zk zk_ok
  log "zk ready"
}

# The TLS ZooKeeper: ruok on its plaintext port, and a TLS handshake on its secure one.
zktls_ok() {
  [ "$(zk4lw ruok "$ZKTLS_PLAIN_PORT")" = imok ] \
    && openssl s_client -connect "$HOST:$ZKTLS_PORT" </dev/null >/dev/null 2>&1
}

start_zktls() {
  if [ -n "$(pid_of zktls)" ]; then
    log "zktls already running (pid $(pid_of zktls))"
    return 0
  fi
  check_port_free zktls "$ZKTLS_PORT" "$ZKTLS_PLAIN_PORT"
  local dir="$D/zktls"
  mkdir -p "$dir/data"
  openssl req -subj "/CN=localhost" -new -newkey rsa:2048 -days 3650 -nodes -x509 \
    -keyout "$dir/server.key" -out "$dir/server.crt" >"$dir/cert.log" 2>&1 \
    || { cat "$dir/cert.log" >&2; die "zktls: openssl req failed"; }
  cat "$dir/server.key" "$dir/server.crt" >"$dir/keystore.pem"
  chmod 600 "$dir/server.key" "$dir/keystore.pem"
  cat >"$dir/zoo.cfg" <<EOF
# l7tap test bed: standalone ZooKeeper with a secure client port (self-signed, made at start)
tickTime=2000
dataDir=$dir/data
clientPort=$ZKTLS_PLAIN_PORT
clientPortAddress=$HOST
secureClientPort=$ZKTLS_PORT
secureClientPortAddress=$HOST
serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
ssl.keyStore.location=$dir/keystore.pem
ssl.keyStore.type=PEM
ssl.trustStore.location=$dir/server.crt
ssl.trustStore.type=PEM
ssl.clientAuth=none
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
EOF
  sed -e 's/^log4j.appender.CONSOLE.Threshold=.*/log4j.appender.CONSOLE.Threshold=INFO/' \
    /etc/zookeeper/conf_example/log4j.properties >"$dir/log4j.properties"
  log "starting zktls on $HOST:$ZKTLS_PORT (TLS) and $HOST:$ZKTLS_PLAIN_PORT"
  : >"$dir/stdout.log"
  spawn zktls java -Xms32m -Xmx256m -XX:+UseSerialGC \
    -Dzookeeper.log.dir="$dir" -Dzookeeper.root.logger=INFO,CONSOLE \
    -Dlog4j.configuration="file:$dir/log4j.properties" \
    -Dzookeeper.admin.enableServer=false \
    -cp "$dir:$ZK_JARS$ZK_NETTY_JARS" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg"
}

# ---------------------------------------------------------------------------------------------
# ClickHouse 18.16 (config.xml and users.xml written from the package's, trimmed to what the
# test bed needs; 18.16 keeps remote_servers, zookeeper and macros in config.xml)

ch_config() { # ch_config NAME TCP HTTP INTER SHARD TLS
  local name=$1 tcp=$2 http=$3 inter=$4 shard=$5 tls=$6 dir="$D/$1"
  cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<!-- l7tap test bed: $name (generated by ci/testbed.sh from /etc/clickhouse-server/config.xml) -->
<yandex>
    <logger>
        <level>information</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <!-- no rotation within a test bed's life: after config reloads (ch-log-level), an
             18.16 server that rotates its log goes on writing into the rotated, deleted file,
             and the checks that read the log see nothing -->
        <size>4000M</size>
        <count>3</count>
    </logger>
    <display_name>$name</display_name>
    <http_port>$http</http_port>
    <tcp_port>$tcp</tcp_port>
    <!-- The secure native port (Debian's config has this element only inside a comment). -->
    <tcp_port_secure>$tls</tcp_port_secure>
    <interserver_http_port>$inter</interserver_http_port>
    <interserver_http_host>$HOST</interserver_http_host>
    <listen_host>$HOST</listen_host>
    <listen_try>0</listen_try>

    <max_connections>4096</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>200</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>

    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <umask>022</umask>
    <mlock_executable>false</mlock_executable>
    <!-- No include file: everything is inline below. -->
    <include_from>$dir/no-metrika.xml</include_from>

    <remote_servers>
        <l7tap_cluster>
            <shard>
                <internal_replication>true</internal_replication>
                <replica>
                    <host>$HOST</host>
                    <port>$CH1_TCP</port>
                </replica>
            </shard>
            <shard>
                <internal_replication>true</internal_replication>
                <replica>
                    <host>$HOST</host>
                    <port>$CH2_TCP</port>
                </replica>
            </shard>
        </l7tap_cluster>
    </remote_servers>

    <zookeeper>
        <node index="1">
            <host>$HOST</host>
            <port>$ZK_PORT</port>
        </node>
        <session_timeout_ms>10000</session_timeout_ms>
    </zookeeper>

    <macros>
        <shard>$shard</shard>
        <replica>$name</replica>
        <cluster>l7tap_cluster</cluster>
    </macros>

    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>

    <!-- Written only for queries run with log_queries=1 (set in the default profile). -->
    <query_log>
        <database>system</database>
        <table>query_log</table>
        <partition_by>toYYYYMM(event_date)</partition_by>
        <flush_interval_milliseconds>7500</flush_interval_milliseconds>
    </query_log>

    <dictionaries_config>$dir/*_dictionary.xml</dictionaries_config>

    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>

    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>

    <!-- The secure native port's certificate: self-signed, made at start (ch_cert); no
         dhParamsFile (none is needed). -->
    <openSSL>
        <server>
            <certificateFile>$dir/server.crt</certificateFile>
            <privateKeyFile>$dir/server.key</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>true</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>sslv2,sslv3</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>
</yandex>
EOF
  echo '<?xml version="1.0"?><yandex></yandex>' >"$dir/no-metrika.xml"
  cat >"$dir/users.xml" <<EOF
<?xml version="1.0"?>
<!-- l7tap test bed: $name (generated by ci/testbed.sh from /etc/clickhouse-server/users.xml) -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
            <!-- 18.16 writes system.query_log only for queries with log_queries=1. -->
            <log_queries>1</log_queries>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks replace="replace">
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <$CH_USER>
            <password>$CH_PASSWORD</password>
            <networks replace="replace">
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </$CH_USER>
        <!-- A read-only user: the ClickHouse output's fail-fast check (ci/accept/clickhouse_sink.py). -->
        <$CH_READER>
            <password>$CH_READER_PASSWORD</password>
            <networks replace="replace">
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>readonly</profile>
            <quota>default</quota>
        </$CH_READER>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

# The client config that accepts the test bed's self-signed certificate (what
# `clickhouse-client --secure --config-file` needs; see ci/README.md).
ch_client_tls_config() {
  mkdir -p "$D"
  cat >"$D/client-tls.xml" <<'EOF'
<config><openSSL><client><verificationMode>none</verificationMode><invalidCertificateHandler><name>AcceptCertificateHandler</name></invalidCertificateHandler></client></openSSL></config>
EOF
}

ch_ok() { # ch_ok HTTP TCP TLS
  [ "$(curl -sf --max-time 3 "http://$HOST:$1/ping")" = "Ok." ] \
    && clickhouse-client --host "$HOST" --port "$2" --query 'SELECT 1' >/dev/null \
    && clickhouse-client --host "$HOST" --port "$3" --secure --config-file "$D/client-tls.xml" \
      --query 'SELECT 1' >/dev/null
}

# ch_cert NAME: a fresh self-signed certificate for the secure native port.
ch_cert() {
  local dir="$D/$1"
  openssl req -subj "/CN=localhost" -new -newkey rsa:2048 -days 3650 -nodes -x509 \
    -keyout "$dir/server.key" -out "$dir/server.crt" >"$dir/cert.log" 2>&1 \
    || { cat "$dir/cert.log" >&2; die "$1: openssl req failed"; }
  chmod 600 "$dir/server.key"
}

start_ch() { # start_ch NAME TCP HTTP INTER SHARD TLS
  local name=$1 tcp=$2 http=$3 inter=$4 shard=$5 tls=$6
  if [ -n "$(pid_of "$name")" ]; then
    log "$name already running (pid $(pid_of "$name"))"
    return 0
  fi
  check_port_free "$name" "$tcp" "$http" "$inter" "$tls"
  mkdir -p "$D/$name"/{data,tmp,log,user_files,format_schemas}
  ch_config "$@"
  ch_cert "$name"
  log "starting $name on $HOST native $tcp http $http interserver $inter secure native $tls"
  : >"$D/$name/stdout.log"
  # Foreground mode in the background (no --daemon: its double fork would lose the pid).
  # 18.16 has no "effective user does not own the data" check: root is fine.
  spawn "$name" clickhouse-server --config-file="$D/$name/config.xml"
}

# ---------------------------------------------------------------------------------------------
# other protocols: redis, nginx, PostgreSQL

redis_ok() { [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
nginx_ok() { curl -sf --max-time 3 "http://$HOST:$NGINX_PORT/ping" >/dev/null; }

start_redis() {
  if [ -n "$(pid_of redis)" ]; then
    log "redis already running (pid $(pid_of redis))"
    wait_ready redis redis_ok
    return 0
  fi
  check_port_free redis "$REDIS_PORT"
  mkdir -p "$D/redis"
  cat >"$D/redis/redis.conf" <<EOF
bind $HOST
port $REDIS_PORT
protected-mode yes
daemonize no
pidfile $D/redis/redis-self.pid
logfile $D/redis/redis.log
dir $D/redis
save ""
appendonly no
EOF
  log "starting redis on $HOST:$REDIS_PORT"
  : >"$D/redis/stdout.log"
  spawn redis redis-server "$D/redis/redis.conf"
  wait_ready redis redis_ok
}

start_nginx() {
  if [ -n "$(pid_of nginx)" ]; then
    log "nginx already running (pid $(pid_of nginx))"
    wait_ready nginx nginx_ok
    return 0
  fi
  check_port_free nginx "$NGINX_PORT"
  mkdir -p "$D/nginx/html" "$D/nginx/tmp"
  chmod 755 "$D" "$D/nginx" "$D/nginx/html"
  echo "l7tap test bed" >"$D/nginx/html/index.html"
  head -c 65536 /dev/zero | tr '\0' x >"$D/nginx/html/64k.txt"
  cat >"$D/nginx/nginx.conf" <<EOF
# l7tap test bed nginx (generated by ci/testbed.sh)
daemon off;
master_process on;
worker_processes 1;
pid $D/nginx/nginx.pid;
error_log $D/nginx/error.log warn;
events { worker_connections 512; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $D/nginx/tmp/body;
    proxy_temp_path $D/nginx/tmp/proxy;
    fastcgi_temp_path $D/nginx/tmp/fastcgi;
    uwsgi_temp_path $D/nginx/tmp/uwsgi;
    scgi_temp_path $D/nginx/tmp/scgi;
    keepalive_requests 100000;
    server {
        listen $HOST:$NGINX_PORT;
        root $D/nginx/html;
        location = /ping { return 200 "pong\n"; }
        location = /echo { client_max_body_size 1m; return 200 "ok\n"; }
        location / { }
    }
}
EOF
  log "starting nginx on $HOST:$NGINX_PORT"
  : >"$D/nginx/stdout.log"
  # nginx writes its own pid file (the master's pid, which is also the one spawn records).
  spawn nginx nginx -p "$D/nginx" -e "$D/nginx/error.log" -c "$D/nginx/nginx.conf"
  wait_ready nginx nginx_ok
}

# moto_server: a real S3 API on loopback, state in memory (a restart empties it; tests freeze
# it with SIGSTOP/SIGCONT to make an outage). It takes any credentials.
s3_ok() { curl -sf --max-time 3 -o /dev/null "http://$HOST:$S3_PORT/"; }

start_s3() {
  command -v moto_server >/dev/null || die "s3: no moto_server (run ci/install-deps.sh)"
  if [ -n "$(pid_of s3)" ]; then
    log "s3 already running (pid $(pid_of s3))"
    wait_ready s3 s3_ok
    return 0
  fi
  check_port_free s3 "$S3_PORT"
  mkdir -p "$D/s3"
  log "starting s3 (moto_server) on $HOST:$S3_PORT"
  : >"$D/s3/stdout.log"
  # Run in the state dir, which lets pid_of recognise the process as this test bed's.
  spawn s3 bash -c 'cd "$1" && exec moto_server -H "$2" -p "$3"' s3 "$D/s3" "$HOST" "$S3_PORT"
  wait_ready s3 s3_ok
}

pg_ok() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT"; }

start_pg() {
  [ -n "$PG_BIN" ] || die "pg: no /usr/lib/postgresql/*/bin (run ci/install-deps.sh)"
  if [ -n "$(pid_of pg)" ]; then
    log "pg already running (pid $(pid_of pg))"
    wait_ready pg pg_ok
    return 0
  fi
  check_port_free pg "$PG_PORT"
  mkdir -p "$D/pg"
  chmod 755 "$D"
  chown postgres:postgres "$D/pg"
  if [ ! -s "$D/pg/data/PG_VERSION" ]; then
    log "pg: initdb into $D/pg/data"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$D/pg/data" --auth=trust -U postgres -E UTF8 \
      --locale=C.UTF-8 >"$D/pg/initdb.log" 2>&1 || { tail -n 20 "$D/pg/initdb.log" >&2; die "pg: initdb failed"; }
  fi
  rm -f "$D/pg/data/postmaster.pid"
  log "starting pg on $HOST:$PG_PORT"
  # pg_ctl forks the postmaster into its own session; the postmaster writes postmaster.pid.
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$D/pg/data" -l "$D/pg/pg.log" -w -t "$START_TIMEOUT" \
    -o "-c listen_addresses=$HOST -p $PG_PORT -c unix_socket_directories=$D/pg -c fsync=off" \
    start >"$D/pg/stdout.log" 2>&1 || { show_log_tail pg; die "pg: pg_ctl start failed"; }
  wait_ready pg pg_ok
}

stop_pg() {
  # SIGINT = "fast" shutdown (SIGTERM would wait for every client to disconnect).
  stop_pid pg INT
}

# ---------------------------------------------------------------------------------------------
# schema

chq() { # chq PORT QUERY
  clickhouse-client --host "$HOST" --port "$1" --multiline --query "$2"
}

schema() {
  local port shard
  for port in $CH1_TCP $CH2_TCP; do
    chq "$port" 'CREATE DATABASE IF NOT EXISTS l7tap'
    chq "$port" "CREATE TABLE IF NOT EXISTS l7tap.events_local (
        ts DateTime, id UInt64, kind String, value Float64, payload String)
      ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/l7tap/events_local', '{replica}')
      PARTITION BY toYYYYMM(ts) ORDER BY (kind, id)"
    chq "$port" "CREATE TABLE IF NOT EXISTS l7tap.events AS l7tap.events_local
      ENGINE = Distributed(l7tap_cluster, l7tap, events_local, rand())"
    chq "$port" "CREATE TABLE IF NOT EXISTS l7tap.plain (
        ts DateTime, id UInt64, kind String, value Float64, payload String)
      ENGINE = MergeTree PARTITION BY toYYYYMM(ts) ORDER BY (kind, id)"
  done
  log "schema created on ch1 ($CH1_TCP) and ch2 ($CH2_TCP)"

  # ReplicatedMergeTree registered itself in ZooKeeper under the {shard} macro path.
  for shard in 01:ch1:$CH1_TCP 02:ch2:$CH2_TCP; do
    IFS=: read -r s r port <<<"$shard"
    local replicas state deadline=$((SECONDS + START_TIMEOUT))
    replicas=$(chq "$port" "SELECT groupArray(name) FROM system.zookeeper
      WHERE path = '/clickhouse/tables/$s/l7tap/events_local/replicas'")
    [ "$replicas" = "['$r']" ] || die "schema: ZooKeeper path /clickhouse/tables/$s/l7tap/events_local/replicas has $replicas, expected ['$r']"
    # After a restart that followed a crash (of the server or of ZooKeeper) the old session's
    # is_active znode lives until that session times out (session_timeout_ms, counted anew
    # when ZooKeeper restarts); until then the replica cannot activate. 18.16 still accepts
    # inserts (is_readonly stays 0) but elects no leader, so nothing merges and a minute of
    # workload inserts ends in "Too many parts" (252). Ready means leader (active_replicas
    # is no sign: it counts the stale is_active znode too).
    while :; do
      state=$(chq "$port" "SELECT concat('readonly=', toString(is_readonly), ' leader=', toString(is_leader))
        FROM system.replicas WHERE database = 'l7tap' AND table = 'events_local'" 2>&1) || true
      [ "$state" != "readonly=0 leader=1" ] || break
      [ $SECONDS -lt $deadline ] || { show_log_tail "$r"; die "schema: $r's l7tap.events_local is not an active leader after ${START_TIMEOUT}s ($state)"; }
      [ -n "${said_waiting:-}" ] || { log "schema: $r's l7tap.events_local is not active yet ($state), waiting for the old ZooKeeper session to expire"; said_waiting=1; }
      sleep 1
    done
  done

  # A synchronous insert into the Distributed table must land on both shards. Rows are
  # counted by this run's marker (other runs may insert at the same time), and for a few
  # seconds: 18.16 can acknowledge the insert before the remote shard's part is visible.
  local marker on1 on2 total deadline
  marker="testbed-verify-$(date +%s%N)"
  chq $CH1_TCP "INSERT INTO l7tap.events SELECT now(), number, 'testbed-verify', rand() / 1e9, '$marker'
    FROM system.numbers LIMIT 200 SETTINGS insert_distributed_sync = 1"
  deadline=$((SECONDS + 15))
  while :; do
    on1=$(chq $CH1_TCP "SELECT count() FROM l7tap.events_local WHERE payload = '$marker'")
    on2=$(chq $CH2_TCP "SELECT count() FROM l7tap.events_local WHERE payload = '$marker'")
    total=$(chq $CH2_TCP "SELECT count() FROM l7tap.events WHERE payload = '$marker'")
    if [ "$on1" -gt 0 ] && [ "$on2" -gt 0 ] && [ $((on1 + on2)) = 200 ] && [ "$total" = 200 ]; then
      break
    fi
    [ $SECONDS -lt $deadline ] \
      || die "schema: 200 rows inserted into l7tap.events: shard 1 +$on1, shard 2 +$on2, read back $total"
    sleep 0.5
  done
  log "schema ok: Distributed insert of 200 rows -> ch1 +$on1, ch2 +$on2; replicas registered in ZooKeeper"
}

# ---------------------------------------------------------------------------------------------

start_core() {
  mkdir -p "$D"
  start_zk
  start_zktls
  ch_client_tls_config
  start_ch ch1 $CH1_TCP $CH1_HTTP $CH1_INTER 01 $CH1_TLS
  start_ch ch2 $CH2_TCP $CH2_HTTP $CH2_INTER 02 $CH2_TLS
  wait_ready ch1 ch_ok $CH1_HTTP $CH1_TCP $CH1_TLS
  wait_ready ch2 ch_ok $CH2_HTTP $CH2_TCP $CH2_TLS
  log "ch1 and ch2 ready"
  wait_ready zktls zktls_ok
  log "zktls ready"
}

start_others() {
  mkdir -p "$D"
  start_redis
  start_nginx
  start_pg
  start_s3
  log "redis, nginx, pg and s3 ready"
}

stop_core() {
  # Both ClickHouse servers at once (each may take seconds to finish merges), then ZooKeeper,
  # so that they close their sessions cleanly.
  stop_pid ch1 &
  stop_pid ch2 &
  wait
  stop_pid zk
  stop_pid zktls
}

stop_others() {
  stop_pid nginx QUIT
  stop_pid redis
  stop_pg
  stop_pid s3
}

status_line() { # status_line NAME CHECK...
  local name=$1 pid answer
  shift
  pid=$(pid_of "$name")
  if "$@" >/dev/null 2>&1; then answer=answering; else answer="not answering"; fi
  printf '%-6s %-8s %-14s %s\n' "$name" "${pid:-stopped}" "$answer" "$(log_file "$name")"
}

# The servers reload config.xml by themselves (18.16 checks it every few seconds) and apply
# the logger's level then: a check that needs the server's own trace lines raises the level
# for its run, and puts it back, without restarting servers other tests are using.
ch_log_level() { # ch_log_level LEVEL
  local level=$1 pair name http qid n=0 log
  case $level in trace|debug|information) ;; *) die "ch-log-level: $level is not trace, debug or information" ;; esac
  for name in ch1 ch2; do
    [ -n "$(pid_of "$name")" ] || die "ch-log-level: $name is not running"
    sed -i "/<logger>/,/<\/logger>/ s|<level>[a-z]*</level>|<level>$level</level>|" "$D/$name/config.xml"
  done
  for pair in ch1:$CH1_HTTP ch2:$CH2_HTTP; do
    name=${pair%%:*} http=${pair#*:} log=$(log_file "$name")
    while :; do
      n=$((n + 1)) qid="testbed-log-level-$$-$n"
      curl -sf --max-time 3 "http://$HOST:$http/?query_id=$qid&query=SELECT+1" >/dev/null || true
      sleep 0.2
      case $level in
        trace) grep -q "Request URI: /?query_id=$qid&" "$log" && break ;;
        debug) grep -q "{$qid} <Debug>" "$log" && ! grep -q "Request URI: /?query_id=$qid&" "$log" && break ;;
        information) grep -q "{$qid} <Debug>" "$log" || break ;;
      esac
      [ "$n" -lt 150 ] || die "ch-log-level: $name did not take level $level within 30 s"
      sleep 0.8
    done
    log "$name logs at level $level"
  done
}

status() {
  local bad=0
  echo "state dir: $D"
  printf '%-6s %-8s %-14s %s\n' NAME PID STATE LOG
  status_line zk zk_ok || true
  status_line zktls zktls_ok
  ch_client_tls_config
  status_line ch1 ch_ok $CH1_HTTP $CH1_TCP $CH1_TLS
  status_line ch2 ch_ok $CH2_HTTP $CH2_TCP $CH2_TLS
  status_line redis redis_ok
  status_line nginx nginx_ok
  status_line pg pg_ok
  status_line s3 s3_ok
  for n in zk zktls ch1 ch2 redis nginx pg s3; do [ -n "$(pid_of "$n")" ] || bad=1; done
  return $bad
}

case ${1:-} in
  start) start_core; start_others ;;
  stop) stop_others; stop_core ;;
  restart) stop_others; stop_core; start_core; start_others ;;
  start-core) start_core ;;
  restart-ch)
    stop_pid ch1 &
    stop_pid ch2 &
    wait
    start_core
    ;;
  stop-core) stop_core ;;
  start-others) start_others ;;
  stop-others) stop_others ;;
  start-s3) mkdir -p "$D"; start_s3 ;;
  stop-s3) stop_pid s3 ;;
  status) status ;;
  schema) schema ;;
  logs) show_log_tail "${2:?logs NAME}" 2>&1 ;;
  ch-log-level) ch_log_level "${2:?ch-log-level LEVEL}" ;;
  *)
#   ci/testbed.sh restart-ch                      both ClickHouse servers only (a config change)
#   ci/testbed.sh start-others|stop-others        redis, nginx, PostgreSQL, moto (S3) only
#   ci/testbed.sh start-s3|stop-s3                moto_server (S3 API, any credentials) only
    exit 2
    ;;
esac
