#!/usr/bin/env bash
# The opt-in fault tests: a PostgreSQL outage under load (it stops and restarts the machine's
# cluster, so nothing else may use it meanwhile), plus SIGTERM and kill -9. Under two minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
cargo test --test api faults -- --include-ignored --test-threads=1 --nocapture
