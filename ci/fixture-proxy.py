#!/usr/bin/env python3
"""Records real protocol conversations as `.chunks` fixtures.

Listens on --listen, forwards every connection to --upstream, and writes each connection's
chunks (one line per recv(), with a CLOCK_MONOTONIC ns timestamp) to OUT_PREFIX-<n>.chunks.
Stop it with SIGTERM/SIGINT; files are flushed per chunk.

    ci/fixture-proxy.py --listen 127.0.0.1:19000 --upstream 127.0.0.1:9000 --out /tmp/ch
"""
import argparse, selectors, signal, socket, sys, time


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, type=addr)
    ap.add_argument("--upstream", required=True, type=addr)
    ap.add_argument("--out", required=True, help="output prefix")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(args.listen)
    srv.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, None)
    n = 0
    while True:
        for key, _ in sel.select():
            if key.data is None:
                client, _ = srv.accept()
                up = socket.create_connection(args.upstream)
                n += 1
                out = open(f"{args.out}-{n}.chunks", "w")
                out.write(f"# {args.listen} -> {args.upstream}, connection {n}\n")
                sel.register(client, selectors.EVENT_READ, (up, "c", out))
                sel.register(up, selectors.EVENT_READ, (client, "s", out))
                continue
            peer, tag, out = key.data
            try:
                data = key.fileobj.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                for s in (key.fileobj, peer):
                    try:
                        sel.unregister(s)
                    except (KeyError, ValueError):
                        pass
                    s.close()
                if not out.closed:
                    out.close()
                continue
            out.write(f"{tag} {time.monotonic_ns()} {data.hex()}\n")
            out.flush()
            peer.sendall(data)


if __name__ == "__main__":
    main()
