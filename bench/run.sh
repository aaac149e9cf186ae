#!/usr/bin/env bash
# The scan-path benchmark: builds the release binary, then for PostgreSQL and SQLite starts
# a server on loopback, seeds 200,000 students in 10 sections of one course with one device
# and one open session, drives the shared harness (../shared/bench, wrk c=32), runs pgbench
# on the exact scan statement (PostgreSQL), times closeSession, and measures a teacher's
# 500-record session page under c=8.
#
# Usage: bench/run.sh            (env: BACKENDS="postgres sqlite", SCAN_S, DUP_S, WARM_S,
#                                 PORT, HARNESS, PG_URL, SKIP_BUILD=1, PAGE_S, WEBHOOK_BACKLOG)
#
# WEBHOOK_BACKLOG=N starts bench/slow_receiver.py (5 s per call) and gives the server a
# webhook to it with N pending deliveries, so that its worker posts to a slow receiver for
# the whole run: the scan figures side by side with a run without it show what deliveries
# cost the scan path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HARNESS=${HARNESS:-$ROOT/../shared/bench}
BACKENDS=${BACKENDS:-postgres sqlite}
PORT=${PORT:-18080}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PAGE_S=${PAGE_S:-10}
OUT=${OUT:-$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
STUDENTS=200000
KEY=attdev_bench000000000000000000000000000000000000000000000000000000000
KEY2=attdev_bench000000000000000000000000000000000000000000000000000000002
ADMIN_PASSWORD=bench-admin-password
mkdir -p "$OUT"
BASE=http://127.0.0.1:$PORT

for tool in wrk psql curl python3; do
  command -v $tool >/dev/null || { echo "$tool is needed (apt-get install -y wrk postgresql-client curl)" >&2; exit 2; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --bin attendance)
fi
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
KEY_HASH=$(sha "$KEY"); KEY2_HASH=$(sha "$KEY2")
TODAY=$(date -u +%F)

# The seed: SQL that both databases accept (timestamps in the text form sqlx writes on SQLite).
seed_sql() { # $1 = now literal, $2 = later literal, $3 = true literal, $4 = false literal
  local now=$1 later=$2 t=$3 f=$4
  cat <<SQL
INSERT INTO dep_batch (id, dep, batch) VALUES (1, 'Bench', '2026');
INSERT INTO section (id, name, dep_batch_id) VALUES (1,'S1',1),(2,'S2',1),(3,'S3',1),(4,'S4',1),(5,'S5',1),(6,'S6',1),(7,'S7',1),(8,'S8',1),(9,'S9',1),(10,'S10',1),(11,'PAGE',1);
INSERT INTO teacher (id, teacher_code, first_name, last_name) VALUES (1, 'TB', 'Bench', 'Teacher');
INSERT INTO course (id, name, code, teacher_id) VALUES (1, 'Bench course', 'BENCH', 1), (2, 'Page course', 'PAGE', 1);
INSERT INTO course_section (course_id, section_id) VALUES (1,1),(1,2),(1,3),(1,4),(1,5),(1,6),(1,7),(1,8),(1,9),(1,10),(2,11);
INSERT INTO device (id, device_id, name, is_active, key_hash, created_at) VALUES
  (1, 'BENCH-1', 'bench', $t, '$KEY_HASH', $now),
  (2, 'BENCH-2', 'pgbench', $t, '$KEY2_HASH', $now),
  (3, 'BENCH-3', 'close', $t, 'unused3', $now),
  (4, 'BENCH-4', 'page', $t, 'unused4', $now);
INSERT INTO attendance_session (id, course_id, date, created_by, created_at, device_id, is_active, starts_at, grace_minutes, closes_at) VALUES
  (1, 1, '$TODAY', 1, $now, 1, $t, $now, 10, $later),
  (2, 1, '$TODAY', 1, $now, 2, $t, $now, 10, $later),
  (3, 1, '$TODAY', 1, $now, 3, $t, $now, 10, $later),
  (4, 2, '$TODAY', 1, $now, 4, $t, $now, 10, $later);
SQL
}

RECEIVER_PID=""
SERVER_PID=""
if [ -n "${WEBHOOK_BACKLOG:-}" ]; then
  RECEIVER_PORT=$((PORT + 7))
  python3 "$ROOT/bench/slow_receiver.py" "$RECEIVER_PORT" 5 &
  RECEIVER_PID=$!
fi
# The slow receiver's webhook and its backlog, due at once ($1 = now literal).
backlog_sql() {
  cat <<SQL
INSERT INTO webhook (id, url, secret, events, created_at) VALUES (1, 'http://127.0.0.1:$RECEIVER_PORT/hook',
  'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', ',SESSION_CLOSED,RECORD_CHANGED,WARNING_RAISED,EXCUSE_CREATED,', $1);
WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < $WEBHOOK_BACKLOG)
INSERT INTO webhook_delivery (webhook_id, event_id, event_type, payload, status, attempts, created_at, next_attempt_at)
  SELECT 1, 'msg_backlog_' || g, 'SESSION_CLOSED', '{"type":"SESSION_CLOSED","data":{}}', 'pending', 0, $1, $1 FROM n;
SQL
}

start_server() { # $1 = name, $2 = DATABASE_URL
  cp "$TARGET/release/attendance" "$OUT/attendance-$1"
  SECRET_KEY=bench-secret-key-0123456789 DEBUG=false DATABASE_URL=$2 \
    "$OUT/attendance-$1" create-admin --username admin --password "$ADMIN_PASSWORD" > /dev/null
  SECRET_KEY=bench-secret-key-0123456789 DEBUG=false DATABASE_URL=$2 BIND=127.0.0.1:$PORT \
    AUTO_CLOSE_INTERVAL_SECONDS=3600 RUST_LOG=warn WEBHOOK_ALLOW_PRIVATE=true \
    "$OUT/attendance-$1" serve > "$OUT/server-$1.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fs "$BASE/ready" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not become ready" >&2; cat "$OUT/server-$1.log" >&2; exit 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}
trap 'stop_server; [ -n "$RECEIVER_PID" ] && kill "$RECEIVER_PID" 2>/dev/null || true' EXIT

gql() { # $1 = token, $2 = JSON body
  curl -fs "$BASE/graphql" -H 'content-type: application/json' -H "authorization: Bearer $1" -d "$2"
}

login() {
  curl -fs "$BASE/graphql" -H 'content-type: application/json' \
    -d "{\"query\":\"mutation { login(username: \\\"admin\\\", password: \\\"$ADMIN_PASSWORD\\\") { accessToken } }\"}" |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["data"]["login"]["accessToken"])'
}

rss_kib() { ps -o rss= -p "$SERVER_PID" | tr -d ' '; }

time_close() { # $1 = token, $2 = session id -> "seconds markedAbsent"
  python3 - "$BASE" "$1" "$2" <<'PY'
import json, sys, time, urllib.request
base, token, sid = sys.argv[1:4]
body = json.dumps({"query": "mutation($id: ID!) { closeSession(id: $id) { markedAbsent } }", "variables": {"id": sid}}).encode()
req = urllib.request.Request(base + "/graphql", body, {"content-type": "application/json", "authorization": "Bearer " + token})
t = time.perf_counter()
res = json.load(urllib.request.urlopen(req, timeout=120))
print("%.3f %s" % (time.perf_counter() - t, res["data"]["closeSession"]["markedAbsent"]))
PY
}

run_backend() { # $1 = postgres | sqlite
  local backend=$1 url count_cmd
  echo "=============== $backend ===============" | tee -a "$OUT/summary.txt"
  if [ "$backend" = postgres ]; then
    psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS attendance_bench WITH (FORCE)" -c "CREATE DATABASE attendance_bench" > /dev/null
    url="$PG_URL/attendance_bench"
    SECRET_KEY=x-bench-secret-key-0123 DEBUG=false DATABASE_URL=$url "$TARGET/release/attendance" migrate > /dev/null
    local t0=$(date +%s.%N)
    { seed_sql "now()" "now() + interval '1 day'" true false
      echo "INSERT INTO student (id, student_code, first_name, last_name, section_id, created_at, enrolled_at)
            SELECT g, 'B' || g, 'First' || g, 'Last' || g, 1 + (g - 1) % 10, now() - interval '1 day', now() - interval '1 day'
            FROM generate_series(1, $STUDENTS) g;
            INSERT INTO student (id, student_code, first_name, last_name, section_id, created_at, enrolled_at)
            SELECT g, 'P' || g, 'First' || g, 'Last' || g, 11, now() - interval '1 day', now() - interval '1 day'
            FROM generate_series($STUDENTS + 1, $STUDENTS + 500) g;
            SELECT setval(pg_get_serial_sequence('student', 'id'), $STUDENTS + 500);
            SELECT setval(pg_get_serial_sequence('attendance_session', 'id'), 4);
            SELECT setval(pg_get_serial_sequence('device', 'id'), 4);
            ANALYZE;"
      if [ -n "${WEBHOOK_BACKLOG:-}" ]; then backlog_sql "now()"; fi
    } | psql "$url" -q -v ON_ERROR_STOP=1 > /dev/null
    echo "seed         : $STUDENTS students in $(python3 -c "import time; print('%.1f' % (time.time() - $t0))") s (SQL)" | tee -a "$OUT/summary.txt"
    count_cmd="psql '$url' -Atc 'select count(*) from attendance_record where session_id = 1'"
  else
    rm -f "$OUT"/bench.db*
    url="sqlite:///$OUT/bench.db?mode=rwc"
    SECRET_KEY=x-bench-secret-key-0123 DEBUG=false DATABASE_URL=$url "$TARGET/release/attendance" migrate > /dev/null
    local t0=$(date +%s.%N)
    python3 - "$OUT/bench.db" "$STUDENTS" "$(seed_sql "'NOW'" "'LATER'" 1 0)" <<'PY'
import datetime, sqlite3, sys
path, n, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fmt = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+00:00")
now = datetime.datetime.now(datetime.timezone.utc)
seed = seed.replace("'NOW'", "'%s'" % fmt(now)).replace("'LATER'", "'%s'" % fmt(now + datetime.timedelta(days=1)))
past = fmt(now - datetime.timedelta(days=1))
db = sqlite3.connect(path)
db.executescript(seed)
db.executemany("INSERT INTO student (id, student_code, first_name, last_name, section_id, created_at, enrolled_at) VALUES (?,?,?,?,?,?,?)",
    ((g, "B%d" % g, "First%d" % g, "Last%d" % g, 1 + (g - 1) % 10, past, past) for g in range(1, n + 1)))
db.executemany("INSERT INTO student (id, student_code, first_name, last_name, section_id, created_at, enrolled_at) VALUES (?,?,?,?,?,?,?)",
    ((g, "P%d" % g, "First%d" % g, "Last%d" % g, 11, past, past) for g in range(n + 1, n + 501)))
db.commit()
db.execute("ANALYZE")
db.close()
PY
    if [ -n "${WEBHOOK_BACKLOG:-}" ]; then
      python3 -c "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.executescript(sys.argv[2]); db.commit()" \
        "$OUT/bench.db" "$(backlog_sql "strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')")"
    fi
    echo "seed         : $STUDENTS students in $(python3 -c "import time; print('%.1f' % (time.time() - $t0))") s (SQL)" | tee -a "$OUT/summary.txt"
    count_cmd="python3 -c \"import sqlite3; print(sqlite3.connect('$OUT/bench.db').execute('select count(*) from attendance_record where session_id = 1').fetchone()[0])\""
  fi

  start_server "$backend" "$url"
  sleep 2
  if [ -n "${WEBHOOK_BACKLOG:-}" ]; then
    echo "webhooks     : $WEBHOOK_BACKLOG deliveries pending to a receiver that takes 5 s per call" | tee -a "$OUT/summary.txt"
  fi
  echo "idle RSS     : $(( $(rss_kib) / 1024 )) MiB (after start-up and /ready)" | tee -a "$OUT/summary.txt"

  curl -fs "$BASE/metrics" > "$OUT/metrics-before.txt"
  OUT_DIR="$OUT/harness-$backend" DB_COUNT_CMD="$count_cmd" RSS_PATTERN="$OUT/attendance-$backend" \
    bash "$HARNESS/run.sh" "$BASE" "$KEY" 1 "$STUDENTS" > "$OUT/harness-$backend.txt" 2>&1 || true
  curl -fs "$BASE/metrics" > "$OUT/metrics-after.txt"
  sed -n '/== summary/,$p' "$OUT/harness-$backend.txt" | tee -a "$OUT/summary.txt"
  grep -i "warn" "$OUT/harness-$backend.txt" | head -5 | tee -a "$OUT/summary.txt" || true
  echo "RSS after load: $(( $(rss_kib) / 1024 )) MiB" | tee -a "$OUT/summary.txt"

  if [ "$backend" = postgres ]; then
    # Group commit: how many scans the server put in each statement under this load.
    local rows batches
    rows=$(grep '^attendance_scan_batch_rows_total' "$OUT/metrics-after.txt" | awk '{print $2}')
    batches=$(grep '^attendance_scan_batches_total' "$OUT/metrics-after.txt" | awk '{print $2}')
    local per_batch
    # The mean itself, not rounded: pgbench mixes the two neighbouring sizes to match it.
    per_batch=$(python3 -c "print('%.2f' % max(1, $rows / max(1, $batches)))")
    echo "batches      : $batches statements carried $rows scans (mean $(python3 -c "print('%.1f' % ($rows / max(1, $batches)))") per statement)" | tee -a "$OUT/summary.txt"
    # The database's own ceiling for this design: the statements the server issues, from
    # `attendance scan-sql`, run by pgbench (c=32, prepared) against a second device's
    # session: one scan per statement, and the mean batch the server formed.
    python3 - "$TARGET/release/attendance" "$OUT" "$TODAY" "$KEY2_HASH" "$STUDENTS" "$per_batch" <<'PY'
import subprocess, sys
binary, out, today, key, students, n = sys.argv[1:7]
single = subprocess.run([binary, "scan-sql"], capture_output=True, text=True, check=True).stdout.strip()
for a, b in [("$1", "2"), ("$2", ":sid"),
             ("$3", f"'{today}T08:00:00+00:00'::timestamptz"), ("$4", f"'{key}'"),
             ("$5", f"'{today}'::date"), ("$6", "now()")]:
    single = single.replace(a, b)
open(f"{out}/pgbench-single.sql", "w").write(f"\\set sid random(1, {students})\n" + single + ";\n")
batch = subprocess.run([binary, "scan-sql", "--batch"], capture_output=True, text=True, check=True).stdout.strip()
n_ = "(:n)::int"
for a, b in [("$1::int4[]", f"array_fill(2, ARRAY[{n_}])"),
             ("$2::int4[]", f"ARRAY(SELECT (1 + floor(random() * {students}))::int FROM generate_series(1, {n_}))"),
             ("$3::timestamptz[]", f"array_fill('{today}T08:00:00+00:00'::timestamptz, ARRAY[{n_}])"),
             ("$4::text[]", f"array_fill('{key}'::text, ARRAY[{n_}])"),
             ("$5::date[]", f"array_fill('{today}'::date, ARRAY[{n_}])"),
             ("$6::timestamptz[]", f"array_fill(now(), ARRAY[{n_}])")]:
    batch = batch.replace(a, b)
low = int(float(n)); pct = round((float(n) - low) * 100)
# n is low + 1 in pct % of the statements, so the mean rows per statement is the server's mean.
open(f"{out}/pgbench-batch.sql", "w").write(
    f"\\set n {low} + case when random(0, 99) < {pct} then 1 else 0 end\n" + batch + ";\n")
PY
    pgbench -n -M prepared -c 32 -j 2 -T "${SCAN_S:-15}" -f "$OUT/pgbench-single.sql" "$url" > "$OUT/pgbench-single.txt" 2>&1 || true
    echo "pgbench      : $(grep -E '^tps' "$OUT/pgbench-single.txt" | head -1 | cut -d' ' -f1-3) statements/s = scans/s, one scan per statement (c=32, prepared, ${SCAN_S:-15}s)" | tee -a "$OUT/summary.txt"
    pgbench -n -M prepared -c 32 -j 2 -T "${SCAN_S:-15}" -f "$OUT/pgbench-batch.sql" "$url" > "$OUT/pgbench-batch.txt" 2>&1 || true
    local tps
    tps=$(grep -E '^tps' "$OUT/pgbench-batch.txt" | head -1 | awk '{print $3}')
    echo "pgbench      : tps = $tps statements/s x $per_batch = $(python3 -c "print(round(${tps:-0} * $per_batch))") scans/s with the server's mean batch (c=32, prepared; random ids, so some repeats insert nothing)" | tee -a "$OUT/summary.txt"
  fi

  local token; token=$(login)
  # The session page: 500 absent records after closing the page course's session.
  time_close "$token" 4 > /dev/null
  TOKEN=$token SESSION_ID=4 wrk -t2 -c8 -d"${PAGE_S}s" --latency -s "$ROOT/bench/session_page.lua" "$BASE/graphql" > "$OUT/page-$backend.txt" 2>&1
  echo "session page : $(grep RESULT "$OUT/page-$backend.txt" | sed 's/^RESULT //') (500 records with students, c=8)" | tee -a "$OUT/summary.txt"

  local closed
  closed=$(time_close "$token" 1)
  echo "close        : ${closed% *} s for ${closed#* } absentees (the benchmark session, after the load)" | tee -a "$OUT/summary.txt"
  # Session 3: 50,000 students already scanned, so closing it marks 150,000 absent.
  local present_sql="INSERT INTO attendance_record (session_id, student_id, status, timestamp, scanned_at, late_minutes, source)
    SELECT 3, id, 'present', '${TODAY}T08:00:00+00:00', '${TODAY}T08:00:00+00:00', 0, 'scan' FROM student WHERE id <= 50000"
  if [ "$backend" = postgres ]; then
    psql "$url" -qc "$present_sql" > /dev/null
  else
    python3 -c "import sqlite3, sys; db = sqlite3.connect('$OUT/bench.db'); db.execute(sys.argv[1]); db.commit()" "$present_sql"
  fi
  closed=$(time_close "$token" 3)
  echo "close        : ${closed% *} s for ${closed#* } absentees (50,000 scanned, the rest marked absent)" | tee -a "$OUT/summary.txt"
  if [ -n "${WEBHOOK_BACKLOG:-}" ]; then
    echo "webhooks     : $(curl -fs "$BASE/metrics" | grep '^attendance_webhook_deliveries_total' | tr '\n' ' ')" | tee -a "$OUT/summary.txt"
  fi
  stop_server
}

for backend in $BACKENDS; do
  run_backend "$backend"
done
echo
echo "summary in $OUT/summary.txt"
