#!/usr/bin/env bash
# Builds ci/tls-static-client.c, a ClickHouse native client over TLS with OpenSSL linked in
# statically (libssl.a and libcrypto.a from libssl-dev; libc stays dynamic): its SSL_read
# and SSL_write are in its own symbol table, not in a libssl.so. Prints the binary's path.
#
#   ci/tls-static-client.sh [OUT_DIR]      (default: /tmp/l7tap-tls-static-client)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/l7tap-tls-static-client}
lib=/usr/lib/x86_64-linux-gnu
[ -f "$lib/libssl.a" ] && [ -f "$lib/libcrypto.a" ] \
  || { echo "tls-static-client: no $lib/libssl.a or libcrypto.a (run ci/install-deps.sh)" >&2; exit 1; }
mkdir -p "$out"
gcc -O2 -Wall -Werror -o "$out/tls-static-client" "$here/tls-static-client.c" \
  "$lib/libssl.a" "$lib/libcrypto.a" -lpthread -ldl
# Statically linked: no libssl.so among its libraries, SSL_read in its own symbols.
if ldd "$out/tls-static-client" | grep -c libssl >/dev/null; then
  echo "tls-static-client: linked against a shared libssl" >&2
  exit 1
fi
nm "$out/tls-static-client" | grep -cw 'T SSL_read' >/dev/null \
  || { echo "tls-static-client: SSL_read is not in its symbol table" >&2; exit 1; }
echo "$out/tls-static-client"
