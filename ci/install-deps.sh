#!/usr/bin/env bash
# Installs everything the build, the tests and the test bed need on a fresh Debian 12 machine.
# Idempotent: a second run only checks what is already there.
set -euo pipefail

need_apt=()
# tcpdump: the live test that compares a pcap replay with a capture (tools/tests/live.rs);
# chromium: the heatmap page checks (ci/heatmap-check.py, ci/accept/report.py);
# fonts-dejavu-core: the labels of heatmap PNGs. openssl: the test bed's self-signed
# certificate (ClickHouse's secure native port); libssl-dev and gcc: the statically linked
# OpenSSL client of the TLS checks (libssl.a, libcrypto.a); golang-go (Go 1.19): the Go
# crypto/tls client of the TLS checks (ci/tls-go-client.sh; standard library only).
# libnetty-java: the TLS ZooKeeper's connection factory (a dependency of zookeeper's, named
# for what uses it).
for pkg in clang llvm libbpf-dev bpftool zookeeper clickhouse-server clickhouse-client \
           redis-server redis-tools nginx-light postgresql curl procps iproute2 \
           chromium fonts-dejavu-core openssl libssl-dev gcc golang-go tcpdump libnetty-java; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Package maintainer scripts must not start services (no systemd here).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

python3 -c 'import clickhouse_driver, kazoo, clickhouse_cityhash, lz4, zstd, pyarrow, duckdb' 2>/dev/null \
  || python3 -m pip install -q 'clickhouse-driver==0.2.9' 'kazoo==2.10.0' 'pyarrow' 'duckdb' 'clickhouse-cityhash' 'lz4' 'zstd'
# requests: one of the HTTP clients of ci/load/ch_http_load.py (ClickHouse over HTTP).
python3 -c 'import requests' 2>/dev/null || python3 -m pip install -q 'requests'
# An S3 API server for the object-storage outputs (ci/testbed.sh start-s3) and its client.
python3 -c 'import moto, boto3' 2>/dev/null && command -v moto_server >/dev/null \
  || python3 -m pip install -q 'moto[server]' 'boto3'

# ci/test.sh checks formatting and clippy's warnings before it builds.
{ cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1 \
  || rustup component add rustfmt clippy

# Parquet read-back test (tools/tests/sinks_accept.rs): ClickHouse's reader embedded in the
# chdb wheel, and Spark in local mode (pyspark runs on the JVM the zookeeper package brings).
python3 -c 'import chdb, pyspark' 2>/dev/null \
  || python3 -m pip install -q 'chdb' 'pyspark'
java -version >/dev/null 2>&1 || { echo "install-deps: no java for pyspark" >&2; exit 1; }
