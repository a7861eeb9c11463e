#!/usr/bin/env python3
"""Fails if any SECRET appears in the decompressed contents of the Parquet files under DIR
(every column of every row, and the files' metadata) or in the other files given.

    ci/check-no-secrets.py DIR [--also FILE ...] SECRET [SECRET ...]
"""
import argparse, glob, sys

import pyarrow.parquet as pq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("secrets", nargs="+")
    ap.add_argument("--also", nargs="*", default=[])
    args = ap.parse_args()
    files = glob.glob(f"{args.dir}/**/*.parquet", recursive=True)
    if not files:
        sys.exit(f"no Parquet files under {args.dir}")
    found = []
    for f in files:
        pf = pq.ParquetFile(f)
        text = str(pf.metadata.metadata) + str(pf.read().to_pylist())
        found += [(f, s) for s in args.secrets if s in text]
    for f in args.also:
        data = open(f, "rb").read()
        found += [(f, s) for s in args.secrets if s.encode() in data]
    for f, s in found:
        print(f"{s!r} found in {f}")
    print(f"checked {len(files)} Parquet files and {len(args.also)} other files")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
