#!/usr/bin/env python3
"""Reads a directory produced by l7tap's Parquet sink with pyarrow and DuckDB and checks the
schemas and types readers see (independently of the Rust code's own definitions).

    python3 sinks/tests/read_back.py [OUT_DIR]

Without OUT_DIR it makes one with `cargo run -p l7tap-sinks --example write_sample`. Exits
non-zero on the first mismatch; prints 'N passed, 0 failed' at the end.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

TS = pa.timestamp("us", tz="UTC")
S = pa.string()
I32 = pa.int32()
I64 = pa.int64()
B = pa.bool_()
COUNTERS = pa.map_(S, I64)

EXPECTED = {
    "requests": [
        ("ts", TS), ("duration_ns", I64), ("protocol", S), ("side", S), ("pid", I32),
        ("comm", S), ("client_addr", S), ("server_addr", S), ("operation", S), ("status", S),
        ("error_code", I32), ("error_name", S), ("query", S), ("query_id", S),
        ("query_kind", S), ("initial_query_id", S), ("user", S), ("client_name", S),
        ("rows_read", I64), ("bytes_read", I64), ("zk_xid", I32), ("zk_zxid", I64),
        ("zk_session_id", I64), ("bytes_sent", I64), ("bytes_received", I64),
        ("error_message", S), ("query_truncated", B), ("cgroup_id", I64),
        ("client_version", S), ("rows_written", I64), ("bytes_written", I64),
        ("result_rows", I64), ("zk_watch", B), ("zk_multi_ops", pa.list_(S)),
        ("zk_event_type", I32), ("zk_keeper_state", I32), ("interface", S),
        ("database", S), ("format", S), ("http_status", I32),
        ("client_app", S), ("client_pid", I32), ("client_process", S), ("server_app", S),
        ("server_pid", I32), ("server_process", S), ("exe", S), ("cgroup", S), ("tls", B),
        ("fingerprint", I64),
    ],
    "intervals": [
        ("window_start", TS), ("window_ns", I64), ("protocol", S), ("side", S),
        ("client_addr", S), ("comm", S), ("server_addr", S), ("operation", S), ("status", S),
        ("count", I64), ("errors", I64), ("sum_ns", I64), ("min_ns", I64), ("max_ns", I64),
        ("p50_ns", I64), ("p90_ns", I64), ("p99_ns", I64), ("p999_ns", I64),
        ("hdr", pa.binary()), ("heatmap_counts", pa.list_(pa.list_(I64))),
        ("heatmap_sub_window_ns", I64), ("interface", S), ("client_app", S),
        ("client_process", S), ("fingerprint", I64),
    ],
    "capture_stats": [
        ("window_start", TS), ("cpu", I32), ("events", I64), ("bytes", I64),
        ("lost_samples", I64), ("ring_drops", I64), ("parse_errors", I64), ("resyncs", I64),
        ("connections", I64), ("window_ns", I64), ("counters", COUNTERS),
    ],
}

DUCKDB_TYPES = {
    TS: "TIMESTAMP WITH TIME ZONE", S: "VARCHAR", I32: "INTEGER", I64: "BIGINT", B: "BOOLEAN",
    pa.binary(): "BLOB", pa.list_(S): "VARCHAR[]", pa.list_(pa.list_(I64)): "BIGINT[][]",
    COUNTERS: "MAP(VARCHAR, BIGINT)",
}

passed = 0


def check(condition, message):
    global passed
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1


def make_sample(out_dir):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run(
        ["cargo", "run", "-q", "-p", "l7tap-sinks", "--example", "write_sample", "--", out_dir],
        cwd=repo, check=True, stdout=subprocess.DEVNULL,
    )


def check_pyarrow(out_dir, table, expected):
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(out_dir, table))
        for name in names if name.endswith(".parquet") and not name.startswith(".")
    )
    check(files, f"{table}: has files")
    for path in files:
        rel = os.path.relpath(path, out_dir).split(os.sep)
        check(rel[0] == table and rel[1].startswith("date=") and rel[2].startswith("hour="),
              f"{path}: Hive layout table/date=/hour=/")
        parquet_file = pq.ParquetFile(path)
        schema = parquet_file.schema_arrow
        got = [(f.name, f.type) for f in schema]
        check(got == expected, f"{path}: pyarrow schema\n got      {got}\n expected {expected}")
        first = parquet_file.schema.column(0)
        logical = str(first.logical_type)
        check("isAdjustedToUTC=true" in logical and "microseconds" in logical,
              f"{path}: first column is TIMESTAMP(MICROS, UTC) in Parquet, got {logical}")
        check(first.physical_type == "INT64", f"{path}: timestamp is INT64")
        metadata = {k.decode(): v.decode() for k, v in (parquet_file.metadata.metadata or {}).items()}
        check(metadata.get("l7tap.table") == table, f"{path}: l7tap.table metadata")
        check(metadata.get("l7tap.schema_version") == "1", f"{path}: schema version metadata")
        run_id = metadata.get("l7tap.run_id", "")
        check(re.fullmatch(r"\d{8}T\d{6}Z_[0-9a-f]{6}", run_id) is not None,
              f"{path}: l7tap.run_id metadata {run_id!r}")
        check(re.fullmatch(rf"{re.escape(metadata.get('l7tap.host', ''))}-{run_id}-\d{{8}}T\d{{6}}Z-\d{{6}}\.parquet",
                           os.path.basename(path)) is not None,
              f"{path}: file name <host>-<run_id>-<start>-<seq>.parquet")
        for field in schema:
            check(field.metadata and field.metadata.get(b"description"),
                  f"{path}: column {field.name} has a description")
        compression = {parquet_file.metadata.row_group(0).column(i).compression
                       for i in range(parquet_file.metadata.num_columns)}
        check(compression == {"ZSTD"}, f"{path}: zstd, got {compression}")
        if table == "intervals":
            bounds = json.loads(metadata["l7tap.heatmap.bucket_upper_bounds_ns"])
            check(bounds[0] == 1000 and bounds[-1] == 3_600_000_000_000 and len(bounds) == 30,
                  f"{path}: heatmap bounds metadata {bounds}")
            first_row = parquet_file.read().slice(0, 1).to_pylist()[0]
            heatmap = first_row["heatmap_counts"]
            check(len(heatmap) == 10 and all(len(s) == len(bounds) + 1 for s in heatmap),
                  f"{path}: heatmap is 10 sub-windows x {len(bounds) + 1} buckets")
            check(sum(map(sum, heatmap)) == first_row["count"], f"{path}: heatmap sums to count")
    dataset = ds.dataset(os.path.join(out_dir, table), format="parquet", partitioning="hive")
    data = dataset.to_table()
    check(data.num_rows > 0, f"{table}: dataset rows")
    check(data.schema.field("date") is not None and data.schema.field("hour") is not None,
          f"{table}: hive partition columns")
    return data.num_rows


def check_duckdb(out_dir, table, expected, rows):
    glob = os.path.join(out_dir, table, "**", "*.parquet")
    con = duckdb.connect()
    described = con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()
    types = {name: column_type for name, column_type, *_ in described}
    for name, arrow_type in expected:
        check(types.get(name) == DUCKDB_TYPES[arrow_type],
              f"duckdb {table}.{name}: {types.get(name)} != {DUCKDB_TYPES[arrow_type]}")
    count = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]
    check(count == rows, f"duckdb {table}: {count} rows, pyarrow {rows}")
    if table == "requests":
        first = con.execute(
            f"SELECT min(ts) FROM read_parquet('{glob}')").fetchone()[0]
        check(first.utcoffset().total_seconds() == 0 and first.year >= 2000,
              f"duckdb requests.ts is a UTC timestamp: {first!r}")
        by_status = dict(con.execute(
            f"SELECT status, count(*) FROM read_parquet('{glob}') GROUP BY status").fetchall())
        check(set(by_status) <= {"ok", "error", "cancelled", "incomplete"}, f"statuses {by_status}")
    if table == "intervals":
        # The per-second heatmap query from sinks/README.md.
        heatmap = con.execute(f"""
            SELECT window_start + to_microseconds(((s.i - 1) * heatmap_sub_window_ns // 1000)::BIGINT) AS second,
                   b.k - 1 AS bucket, sum(heatmap_counts[s.i][b.k]) AS requests
            FROM read_parquet('{glob}'),
                 range(1, 1 + len(heatmap_counts)) s(i), range(1, 32) b(k)
            GROUP BY ALL""").fetchall()
        total = con.execute(f"SELECT sum(count) FROM read_parquet('{glob}')").fetchone()[0]
        check(sum(r[2] for r in heatmap) == total, "heatmap query sums to the request count")
        check(all(r[1] in range(31) for r in heatmap), "heatmap buckets 0..30")


def main():
    if len(sys.argv) > 1:
        out_dir = sys.argv[1]
        temporary = None
    else:
        temporary = tempfile.TemporaryDirectory(prefix="l7tap-read-back-")
        out_dir = temporary.name
        make_sample(out_dir)
    # A file still being written (or left by a killed process) must be invisible to readers.
    partition = next(root for root, _, names in os.walk(os.path.join(out_dir, "requests"))
                     if any(n.endswith(".parquet") for n in names))
    stale = os.path.join(partition, ".sample-host-20240601T000000Z-999999.parquet.tmp")
    with open(stale, "wb") as garbage:
        garbage.write(b"PAR1 partial")
    try:
        for table, expected in EXPECTED.items():
            rows = check_pyarrow(out_dir, table, expected)
            check_duckdb(out_dir, table, expected, rows)
    finally:
        os.remove(stale)
        if temporary:
            temporary.cleanup()
    print(f"read_back: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
