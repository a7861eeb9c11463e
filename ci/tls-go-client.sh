#!/usr/bin/env bash
# Builds ci/tls-go-client (a ClickHouse native client over Go's crypto/tls, standard library
# only) with the system's Go (Debian 12: Go 1.19), offline: no module is downloaded. Rebuilt
# only when its sources are newer than the binary. Prints the binary's path.
#
#   ci/tls-go-client.sh [OUT_DIR]      (default: /tmp/l7tap-tls-go-client)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/l7tap-tls-go-client}
command -v go >/dev/null || { echo "tls-go-client: no go (run ci/install-deps.sh)" >&2; exit 1; }
mkdir -p "$out"
bin="$out/tls-go-client"
if [ ! -x "$bin" ] || [ -n "$(find "$here/tls-go-client" -newer "$bin" -type f)" ]; then
  # Position independent: the probes must find the itab at its load address.
  (cd "$here/tls-go-client" && GOFLAGS=-mod=mod GOPROXY=off GOCACHE="$out/cache" \
    go build -buildmode=pie -o "$bin.tmp" .) && mv "$bin.tmp" "$bin"
fi
# What the probes need: the hooked functions in its symbol table, and Go build info.
go tool nm "$bin" | grep -c ' T crypto/tls.(\*Conn).Write$' >/dev/null \
  || { echo "tls-go-client: crypto/tls.(*Conn).Write is not in its symbol table" >&2; exit 1; }
go version "$bin" >/dev/null || { echo "tls-go-client: no Go build info" >&2; exit 1; }
echo "$bin"
