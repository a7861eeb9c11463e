#!/usr/bin/env python3
"""Reads an l7tap output directory with four independent Parquet readers and checks it
against what the synthetic recording held (run by tools/tests/sinks_accept.rs):

    python3 tools/tests/read_back_readers.py OUT --clickhouse N --zookeeper M

* pyarrow and DuckDB: the schema, type and layout checks of sinks/tests/read_back.py;
* ClickHouse (the chdb wheel): `file('OUT/requests/*/*/*.parquet', Parquet)`;
* Spark (pyspark, local mode): `spark.read.parquet` of each table directory;
* every reader: `requests` rows per protocol equal to the requests in the recording, and
  `intervals` counts summing to the same;
* `intervals` p50/p99 (and count, min, max, sum) per window and key against the exact
  quantiles of the `requests` rows of that window and key, within HDR precision.

Exits non-zero on the first mismatch; prints 'N passed, 0 failed' at the end.
"""
import argparse
import math
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "sinks", "tests"))
import read_back  # noqa: E402  (sinks/tests/read_back.py: expected schemas, pyarrow, DuckDB)

import pyarrow.dataset as ds  # noqa: E402

passed = 0


def check(condition, message):
    global passed
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1


def glob(out, table):
    return os.path.join(out, table, "*", "*", "*.parquet")


def check_pyarrow_duckdb(out, expected_rows):
    for table, expected in read_back.EXPECTED.items():
        rows = read_back.check_pyarrow(out, table, expected)
        read_back.check_duckdb(out, table, expected, rows)
        if table == "requests":
            check(rows == expected_rows, f"pyarrow requests: {rows} rows, expected {expected_rows}")
    print(f"pyarrow + duckdb: {read_back.passed} checks passed")


def check_chdb(out, by_protocol):
    import chdb

    def query(sql):
        return [line.split("\t") for line in str(chdb.query(sql, "TSV")).splitlines() if line]

    described = {row[0]: row[1] for row in query(
        f"DESCRIBE TABLE file('{glob(out, 'requests')}', Parquet)")}
    check(described.get("ts", "").startswith("Nullable(DateTime64(6") or
          described.get("ts", "").startswith("DateTime64(6"),
          f"chdb requests.ts type {described.get('ts')}")
    check("Int64" in described.get("duration_ns", ""), f"chdb duration_ns {described}")
    check("String" in described.get("query", ""), f"chdb query {described.get('query')}")
    counts = {p: int(n) for p, n in query(
        f"SELECT protocol, count() FROM file('{glob(out, 'requests')}', Parquet) GROUP BY protocol")}
    check(counts == by_protocol, f"chdb requests per protocol {counts}, expected {by_protocol}")
    total = int(query(f"SELECT sum(count) FROM file('{glob(out, 'intervals')}', Parquet)")[0][0])
    check(total == sum(by_protocol.values()), f"chdb sum(intervals.count) {total}")
    heatmap = int(query(
        f"SELECT sum(arraySum(arrayMap(x -> ifNull(x, 0), arrayFlatten(heatmap_counts)))) "
        f"FROM file('{glob(out, 'intervals')}', Parquet)")[0][0])
    check(heatmap == total, f"chdb heatmap sums to {heatmap}, count {total}")
    first = query(f"SELECT toString(min(ts)) FROM file('{glob(out, 'requests')}', Parquet)")[0][0]
    check(first.startswith("2024-06-01 10:00:"), f"chdb min(ts) {first} (UTC)")
    stats = int(query(f"SELECT count() FROM file('{glob(out, 'capture_stats')}', Parquet)")[0][0])
    check(stats > 0, "chdb capture_stats rows")
    print(f"chdb {chdb.__version__}: requests {counts}, intervals sum {total}")


def check_spark(out, by_protocol):
    from pyspark.sql import SparkSession
    from pyspark.sql import types as T

    spark = (SparkSession.builder.master("local[1]").appName("l7tap-read-back")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.driver.memory", "512m")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        requests = spark.read.parquet(os.path.join(out, "requests"))
        fields = {f.name: f.dataType for f in requests.schema.fields}
        check(isinstance(fields["ts"], T.TimestampType), f"spark ts {fields['ts']}")
        check(isinstance(fields["duration_ns"], T.LongType), "spark duration_ns is bigint")
        check(isinstance(fields["pid"], T.IntegerType), "spark pid is int")
        check(fields["zk_multi_ops"] == T.ArrayType(T.StringType(), True),
              f"spark zk_multi_ops {fields['zk_multi_ops']}")
        check("date" in fields and "hour" in fields, "spark sees the Hive partition columns")
        counts = {r["protocol"]: r["count"] for r in requests.groupBy("protocol").count().collect()}
        check(counts == by_protocol, f"spark requests per protocol {counts}, expected {by_protocol}")
        first = requests.selectExpr("min(ts) AS t").collect()[0]["t"]
        check(first.year == 2024 and first.hour == 10, f"spark min(ts) {first}")
        intervals = spark.read.parquet(os.path.join(out, "intervals"))
        fields = {f.name: f.dataType for f in intervals.schema.fields}
        check(fields["heatmap_counts"] == T.ArrayType(T.ArrayType(T.LongType(), True), True),
              f"spark heatmap_counts {fields['heatmap_counts']}")
        check(isinstance(fields["hdr"], T.BinaryType), "spark hdr is binary")
        total = intervals.selectExpr("sum(count) AS n").collect()[0]["n"]
        check(total == sum(by_protocol.values()), f"spark sum(intervals.count) {total}")
        stats = spark.read.parquet(os.path.join(out, "capture_stats")).count()
        check(stats > 0, "spark capture_stats rows")
        print(f"spark {spark.version}: requests {counts}, intervals sum {total}")
    finally:
        spark.stop()


def exact_quantile(sorted_values, quantile):
    """sorted[ceil(q n) - 1]: the quantile as HdrHistogram defines it."""
    rank = max(1, math.ceil(quantile * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def client_ip(addr):
    return addr[1:addr.index("]")] if addr.startswith("[") else addr.rsplit(":", 1)[0]


def check_quantiles(out):
    requests = ds.dataset(os.path.join(out, "requests"), format="parquet").to_table(
        columns=["ts", "duration_ns", "protocol", "side", "client_addr", "comm", "server_addr",
                 "operation", "status"]).to_pylist()
    intervals = ds.dataset(os.path.join(out, "intervals"), format="parquet").to_table(
        columns=["window_start", "window_ns", "protocol", "side", "client_addr", "comm",
                 "server_addr", "operation", "status", "count", "min_ns", "max_ns", "sum_ns",
                 "p50_ns", "p99_ns"]).to_pylist()
    window_ns = intervals[0]["window_ns"]
    exact = defaultdict(list)
    for r in requests:
        start_ns = int(r["ts"].timestamp()) * 1_000_000_000 + r["ts"].microsecond * 1_000
        end_ns = start_ns + r["duration_ns"]
        key = (end_ns - end_ns % window_ns, r["protocol"], r["side"], client_ip(r["client_addr"]),
               r["comm"], r["server_addr"], r["operation"], r["status"])
        exact[key].append(r["duration_ns"])
    checked = 0
    for row in intervals:
        ws = row["window_start"]
        start_ns = int(ws.timestamp()) * 1_000_000_000 + ws.microsecond * 1_000
        key = (start_ns, row["protocol"], row["side"], row["client_addr"], row["comm"],
               row["server_addr"], row["operation"], row["status"])
        values = sorted(exact.pop(key, []))
        check(len(values) == row["count"], f"{key}: intervals count {row['count']}, "
              f"requests rows {len(values)}")
        check((row["min_ns"], row["max_ns"], row["sum_ns"]) == (values[0], values[-1], sum(values)),
              f"{key}: exact min/max/sum")
        for column, quantile in (("p50_ns", 0.5), ("p99_ns", 0.99)):
            want = exact_quantile(values, quantile)
            # 3 significant digits, lowest discernible 1 µs (HDR unit 512 ns): within 1/1024
            # of the value or 512 ns, whichever is larger.
            tolerance = max(want // 1024, 512) + 1
            check(abs(row[column] - want) <= tolerance,
                  f"{key} {column}: intervals {row[column]}, exact {want} (n = {len(values)})")
        checked += 1
    check(not exact, f"requests rows with no intervals row: {list(exact)[:3]}")
    print(f"quantiles: p50/p99 of {checked} interval rows within HDR precision of "
          f"{len(requests)} requests")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--clickhouse", type=int, required=True)
    parser.add_argument("--zookeeper", type=int, required=True)
    args = parser.parse_args()
    by_protocol = {p: n for p, n in (("clickhouse", args.clickhouse),
                                     ("zookeeper", args.zookeeper)) if n}
    check_pyarrow_duckdb(args.out, sum(by_protocol.values()))
    check_quantiles(args.out)
    check_chdb(args.out, by_protocol)
    check_spark(args.out, by_protocol)
    print(f"read_back_readers: {passed + read_back.passed} passed, 0 failed")


if __name__ == "__main__":
    main()
