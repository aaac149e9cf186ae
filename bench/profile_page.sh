#!/usr/bin/env bash
# Profiles a teacher's session page (a closed session of 500 records, each with its student)
# under wrk -t2 -c8 with perf call graphs, on PostgreSQL. It seeds its own database, starts
# the given release binary on loopback, closes the session through GraphQL (500 absences),
# then records the server while bench/session_page.lua loads it for PROFILE_S seconds.
#
# Usage: bench/profile_page.sh [BINARY]
#   BINARY defaults to target/release/attendance; build it with line tables for readable
#   stacks:  CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release
#   env: PG_URL (postgres://postgres@127.0.0.1:5432), PORT (18090), PROFILE_S (15), OUT
# Writes OUT/page.txt (wrk), OUT/perf.data, OUT/report-self.txt and OUT/report-children.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${1:-$ROOT/target/release/attendance}")
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18090}
PROFILE_S=${PROFILE_S:-15}
OUT=${OUT:-$ROOT/bench/out/profile-$(date -u +%Y%m%dT%H%M%SZ)}
DB=attendance_profile
URL=$PG_URL/$DB
BASE=http://127.0.0.1:$PORT
PASSWORD=profile-admin-password
mkdir -p "$OUT"
for tool in perf wrk psql curl python3; do
  command -v $tool >/dev/null || { echo "$tool is needed (apt-get install -y linux-perf wrk postgresql-client curl)" >&2; exit 2; }
done
export SECRET_KEY=profile-secret-key-0123456789 DEBUG=false DATABASE_URL=$URL

psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" > /dev/null
"$BIN" migrate > /dev/null
"$BIN" create-admin --username admin --password "$PASSWORD" > /dev/null
psql "$URL" -q -v ON_ERROR_STOP=1 > /dev/null <<SQL
INSERT INTO dep_batch (id, dep, batch) VALUES (1, 'Profile', '2026');
INSERT INTO section (id, name, dep_batch_id) VALUES (1, 'PAGE', 1);
INSERT INTO teacher (id, teacher_code, first_name, last_name) VALUES (1, 'TP', 'Profile', 'Teacher');
INSERT INTO course (id, name, code, teacher_id) VALUES (1, 'Page course', 'PAGE', 1);
INSERT INTO course_section (course_id, section_id) VALUES (1, 1);
INSERT INTO device (id, device_id, name, is_active, key_hash, created_at) VALUES (1, 'PAGE-1', 'page', true, 'unused', now());
INSERT INTO student (id, student_code, first_name, last_name, section_id, created_at, enrolled_at)
  SELECT g, 'P' || g, 'First' || g, 'Last' || g, 1, now() - interval '1 day', now() - interval '1 day'
  FROM generate_series(1, 500) g;
INSERT INTO attendance_session (id, course_id, date, created_by, created_at, device_id, is_active, starts_at, grace_minutes, closes_at)
  VALUES (1, 1, CURRENT_DATE, 1, now(), 1, true, now(), 10, now() + interval '1 day');
SELECT setval(pg_get_serial_sequence('student', 'id'), 500);
SELECT setval(pg_get_serial_sequence('attendance_session', 'id'), 1);
SELECT setval(pg_get_serial_sequence('device', 'id'), 1);
ANALYZE;
SQL

BIND=127.0.0.1:$PORT AUTO_CLOSE_INTERVAL_SECONDS=3600 RUST_LOG=warn "$BIN" serve > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "$BASE/ready" > /dev/null 2>&1 && break
  sleep 0.1
done
gql() { # $1 = JSON body, $2 = token (optional)
  curl -fs "$BASE/graphql" -H 'content-type: application/json' ${2:+-H "authorization: Bearer $2"} -d "$1"
}
TOKEN=$(gql "{\"query\":\"mutation { login(username: \\\"admin\\\", password: \\\"$PASSWORD\\\") { accessToken } }\"}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["login"]["accessToken"])')
gql '{"query":"mutation { closeSession(id: \"1\") { markedAbsent } }"}' "$TOKEN" > "$OUT/close.json"

# Warm up, then record only the measured phase.
TOKEN=$TOKEN SESSION_ID=1 wrk -t2 -c8 -d3s -s "$ROOT/bench/session_page.lua" "$BASE/graphql" > /dev/null
perf record -F 499 --call-graph dwarf,16384 -p "$SERVER_PID" -o "$OUT/perf.data" -- sleep "$PROFILE_S" 2> "$OUT/perf-record.log" &
PERF_PID=$!
TOKEN=$TOKEN SESSION_ID=1 wrk -t2 -c8 -d"${PROFILE_S}s" --latency -s "$ROOT/bench/session_page.lua" "$BASE/graphql" > "$OUT/page.txt" 2>&1
wait $PERF_PID || true
perf report -i "$OUT/perf.data" --no-children --stdio --percent-limit 0.5 --sort symbol \
  --call-graph none > "$OUT/report-self.txt" 2> /dev/null || true
perf report -i "$OUT/perf.data" --children --stdio --percent-limit 2 --sort symbol \
  --call-graph none > "$OUT/report-children.txt" 2> /dev/null || true
echo "session page : $(grep RESULT "$OUT/page.txt" | sed 's/^RESULT //') (500 records with students, c=8, under perf)"
echo "profile      : $OUT/report-self.txt, $OUT/report-children.txt"
