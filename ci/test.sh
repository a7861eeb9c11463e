#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh Debian 12 machine,
# builds everything, and runs the unit tests plus the live tests against real servers
# (ZooKeeper 3.8, two ClickHouse 18.16, Redis, nginx, PostgreSQL, started by ci/testbed.sh).
# Needs root: the live tests load eBPF programs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/install-deps.sh
# Habits, enforced: formatting, and clippy's warnings (the workspace's [lints] included, e.g.
# a `// SAFETY:` line on every unsafe block) as errors.
cargo fmt --all --check
(cd fuzz && cargo fmt --check)  # the fuzz targets are a workspace of their own
cargo clippy --workspace --all-targets --features l7tap/live-tests -- -D warnings  # the live tests too
cargo build --release --workspace --bins
# Unit tests, parser fixture tests and the live tests (feature live-tests of the binary).
cargo test --release --workspace --no-fail-fast --features l7tap/live-tests
# Benches compile (running them is ci/bench.sh's job, not a test's).
cargo bench --workspace --no-run
# The benchmark suite's smoke mode: every row of the overhead table is produced (the
# goals are printed, not asserted: timing is never a test here).
BENCH_OUT=$(mktemp -d)/bench-smoke.md bash ci/bench.sh --smoke
