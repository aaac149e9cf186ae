#!/usr/bin/env bash
# The read benchmark: a teacher's pages under wrk -t2 -c8, on PostgreSQL and SQLite, for one
# or more server binaries run in turn on the same data (so an old and a new build are
# compared side by side, interleaved, in one run).
#
# Pages (each a GraphQL POST with the teacher's token, through ../shared/bench/page.lua or
# bench/page.lua):
#   session  the 500-record session page: session(id){records{... student{...}}}
#   records  a 100-item attendanceRecords page with each record's student
#   report   courseReport over the term: 40 sessions x 500 students
#
# Usage: bench/reads.sh BINARY [BINARY...]
#   env: DBS ("postgres sqlite"), ROUNDS (3), PAGE_S (10), PG_URL
#   (postgres://postgres@127.0.0.1:5432), PORT (18095), OUT (bench/out/reads-<time>)
# Prints one line per page, database and binary: median req/s, p50 and p99 of the ROUNDS
# runs, and the server's CPU (100 % = one core) and RSS during the run; raw wrk output in OUT.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
BINS=()
for b in "$@"; do BINS+=("$(realpath "$b")"); done
DBS=${DBS:-postgres sqlite}
ROUNDS=${ROUNDS:-3}
PAGE_S=${PAGE_S:-10}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18095}
OUT=${OUT:-$ROOT/bench/out/reads-$(date -u +%Y%m%dT%H%M%SZ)}
BASE=http://127.0.0.1:$PORT
LUA=$ROOT/bench/page.lua
[ -f "$LUA" ] || LUA=$ROOT/../shared/bench/page.lua
mkdir -p "$OUT"
for tool in wrk curl python3 psql; do
  command -v $tool > /dev/null || { echo "$tool is needed" >&2; exit 2; }
done
export SECRET_KEY=reads-bench-secret-key-0123456789 DEBUG=false RUST_LOG=warn
export AUTO_CLOSE_INTERVAL_SECONDS=3600 BIND=127.0.0.1:$PORT

SERVER_PID=""
start() { # $1 binary
  "$1" serve >> "$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    curl -fs "$BASE/ready" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not become ready" >&2; exit 1
}
stop() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2> /dev/null || true
  wait "$SERVER_PID" 2> /dev/null || true
  SERVER_PID=""
}
trap stop EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Runs one page against the running server; appends "rps p50 p99 cpu% rss_mib" to $2.
measure() { # $1 body, $2 result file, $3 raw output
  local t0 t1 rss_file=$OUT/rss.tmp
  : > "$rss_file"
  (while kill -0 "$SERVER_PID" 2> /dev/null; do
     awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status" >> "$rss_file" 2> /dev/null || true
     sleep 1
   done) &
  local sampler=$!
  t0=$(cpu_ticks "$SERVER_PID")
  BODY=$1 TOKEN=$TOKEN wrk -t2 -c8 -d"${PAGE_S}s" --latency -s "$LUA" "$BASE/graphql" > "$3" 2>&1
  t1=$(cpu_ticks "$SERVER_PID")
  kill "$sampler" 2> /dev/null || true
  wait "$sampler" 2> /dev/null || true
  local hz rss
  hz=$(getconf CLK_TCK)
  rss=$(sort -n "$rss_file" | tail -1)
  python3 - "$3" "$t0" "$t1" "$hz" "$PAGE_S" "${rss:-0}" >> "$2" <<'PY'
import re, sys
raw, t0, t1, hz, secs, rss = sys.argv[1], *map(float, sys.argv[2:])
line = next(l for l in open(raw) if l.startswith("RESULT"))
f = dict(kv.split("=") for kv in line.split()[1:])
if int(f["bad"]) or int(f["non2xx"]):
    sys.exit(f"{raw}: {f['bad']} bad answers")
print(f["rps"], f["p50_ms"], f["p99_ms"], round(100 * (t1 - t0) / hz / secs, 1), round(rss / 1024, 1))
PY
}

summary() { # $1 label, $2 result file
  python3 - "$1" "$2" <<'PY'
import statistics, sys
label, path = sys.argv[1:]
rows = [list(map(float, l.split())) for l in open(path) if l.strip()]
med = lambda i: statistics.median(r[i] for r in rows)
print(f"{label:<60} {med(0):8.1f} req/s  p50 {med(1):6.2f} ms  p99 {med(2):6.2f} ms  "
      f"cpu {med(3):5.1f} %  rss {max(r[4] for r in rows):5.1f} MiB  (median of {len(rows)}: "
      + ", ".join(f"{r[0]:.0f}" for r in rows) + " req/s)")
PY
}

for db in $DBS; do
  case $db in
    postgres)
      psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS attendance_reads WITH (FORCE)" \
        -c "CREATE DATABASE attendance_reads" > /dev/null
      export DATABASE_URL=$PG_URL/attendance_reads ;;
    sqlite)
      rm -f "$OUT"/reads.sqlite3*
      export DATABASE_URL=sqlite:///$OUT/reads.sqlite3 ;;
  esac
  "${BINS[0]}" migrate > /dev/null
  "${BINS[0]}" create-admin --username admin --password reads-admin-password > /dev/null
  start "${BINS[0]}"
  eval "$(python3 "$ROOT/bench/seed_reads.py" "$BASE" admin reads-admin-password)"
  stop
  # What autovacuum would do a minute later (the Django peer's seed ends the same way);
  # without statistics PostgreSQL plans the 20,000 fresh rows as if there were 70.
  [ "$db" = postgres ] && psql "$DATABASE_URL" -qc "VACUUM ANALYZE" > /dev/null
  SESSION_PAGE='{"query":"query($id: ID!) { session(id: $id) { id records { id status timestamp student { id studentCode firstName lastName } } } }","variables":{"id":"'$SESSION_ID'"}}'
  RECORDS_PAGE='{"query":"{ attendanceRecords(first: 100) { totalCount pageInfo { hasNextPage endCursor } edges { node { id status timestamp lateMinutes sessionId student { id studentCode firstName lastName } } } } }"}'
  REPORT_PAGE='{"query":"query($id: ID!) { courseReport(courseId: $id) { sessions students { student { id studentCode firstName lastName } present absent permission rate } } }","variables":{"id":"'$COURSE_ID'"}}'
  for round in $(seq 1 "$ROUNDS"); do
    for i in "${!BINS[@]}"; do
      start "${BINS[$i]}"
      BODY=$SESSION_PAGE TOKEN=$TOKEN wrk -t2 -c8 -d2s -s "$LUA" "$BASE/graphql" > /dev/null 2>&1
      measure "$SESSION_PAGE" "$OUT/$db-session-$i.txt" "$OUT/$db-session-$i-$round.raw"
      measure "$RECORDS_PAGE" "$OUT/$db-records-$i.txt" "$OUT/$db-records-$i-$round.raw"
      measure "$REPORT_PAGE" "$OUT/$db-report-$i.txt" "$OUT/$db-report-$i-$round.raw"
      stop
    done
  done
  for page in session records report; do
    for i in "${!BINS[@]}"; do
      summary "$db $page ${BINS[$i]}" "$OUT/$db-$page-$i.txt"
    done
  done | tee -a "$OUT/summary.txt"
done
echo "raw output: $OUT"
