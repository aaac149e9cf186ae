#!/usr/bin/env bash
# The teacher's 500-record session page, this server against the original Django design,
# side by side on one PostgreSQL, interleaved: each round loads the Django peer, then each
# given binary in turn, for PAGE_S seconds each under wrk -t2 -c8 (../shared/bench/page.lua).
#
# Usage: bench/page_vs_django.sh BINARY [BINARY...]
#   env: PEER (../shared/peer-django, set up as its README says: .venv, the `attendance`
#   role and database), ROUNDS (3), PAGE_S (10), PG_URL (postgres://postgres@127.0.0.1:5432),
#   PORT (18096), OUT (bench/out/page-vs-django-<time>)
# Prints, per server, the median req/s, p50 and p99 of the rounds, its CPU (100 % = one core)
# and the ratio of its median req/s to Django's.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
BINS=()
for b in "$@"; do BINS+=("$(realpath "$b")"); done
PEER=$(realpath "${PEER:-$ROOT/../shared/peer-django}")
ROUNDS=${ROUNDS:-3}
PAGE_S=${PAGE_S:-10}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18096}
OUT=${OUT:-$ROOT/bench/out/page-vs-django-$(date -u +%Y%m%dT%H%M%SZ)}
LUA=$ROOT/../shared/bench/page.lua
BASE=http://127.0.0.1:$PORT
DJANGO=http://127.0.0.1:8000
mkdir -p "$OUT"
[ -x "$PEER/.venv/bin/gunicorn" ] || { echo "set up $PEER first (see its README)" >&2; exit 2; }

# The Django peer: its own seed, then the page's closed session of 500 present records.
export PGHOST=127.0.0.1 PGPORT=5432 PGUSER=attendance PGPASSWORD=attendance PGDATABASE=attendance
(cd "$PEER" && .venv/bin/python manage.py migrate -v0 \
  && .venv/bin/python manage.py seed_bench --students 1000 --sections 2 > "$OUT/django-seed.env" \
  && .venv/bin/python manage.py seed_page --students 500 >> "$OUT/django-seed.env")
# shellcheck disable=SC1091
. "$OUT/django-seed.env"
(cd "$PEER" && exec .venv/bin/gunicorn -c gunicorn.conf.py attendance.wsgi:application) \
  > "$OUT/gunicorn.log" 2>&1 &
GUNICORN=$!
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2> /dev/null || true
  kill "$GUNICORN" 2> /dev/null || true
  wait 2> /dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null "$DJANGO/api/auth/login" && break
  sleep 0.2
done
DJANGO_TOKEN=$(curl -fs "$DJANGO/api/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"$SEED_TEACHER_USERNAME\",\"password\":\"$SEED_TEACHER_PASSWORD\"}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access"])')

# This server: for each binary a fresh database of its own (its own schema version), with
# one closed session of 500 records.
unset PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE
export SECRET_KEY=page-bench-secret-key-0123456789 DEBUG=false RUST_LOG=warn
export AUTO_CLOSE_INTERVAL_SECONDS=3600 BIND=127.0.0.1:$PORT
start() {
  "$1" serve >> "$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    curl -fs "$BASE/ready" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not become ready" >&2; exit 1
}
stop() { kill "$SERVER_PID" 2> /dev/null || true; wait "$SERVER_PID" 2> /dev/null || true; SERVER_PID=""; }
URLS=(); SESSIONS=(); TOKENS=()
for i in "${!BINS[@]}"; do
  export DATABASE_URL=$PG_URL/attendance_page_$i
  psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS attendance_page_$i WITH (FORCE)" \
    -c "CREATE DATABASE attendance_page_$i" > /dev/null
  "${BINS[$i]}" migrate > /dev/null
  "${BINS[$i]}" create-admin --username admin --password page-admin-password > /dev/null
  start "${BINS[$i]}"
  eval "$(python3 "$ROOT/bench/seed_reads.py" "$BASE" admin page-admin-password 500 1)"
  stop
  psql "$DATABASE_URL" -qc "VACUUM ANALYZE" > /dev/null # as the peer's seed does
  URLS[$i]=$DATABASE_URL; SESSIONS[$i]=$SESSION_ID; TOKENS[$i]=$TOKEN
done
body() { # $1 = session id
  echo '{"query":"query($id: ID!) { session(id: $id) { records { id status timestamp student { id studentCode firstName lastName } } } }","variables":{"id":"'"$1"'"}}'
}

ticks() { # total utime+stime of the given pids
  local sum=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] && sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo $sum
}
run() { # $1 label, $2 url, $3 token, $4 body ("" for GET), $5.. pids
  local label=$1 url=$2 token=$3 body=$4 t0 t1
  shift 4
  t0=$(ticks "$@")
  TOKEN=$token BODY=$body wrk -t2 -c8 -d"${PAGE_S}s" --latency -s "$LUA" "$url" > "$OUT/$label-$round.raw" 2>&1
  t1=$(ticks "$@")
  local line
  line=$(grep '^RESULT' "$OUT/$label-$round.raw")
  echo "$line cpu=$(( (t1 - t0) * 100 / $(getconf CLK_TCK) / PAGE_S ))" >> "$OUT/$label.txt"
  echo "round $round $label: $line"
}

gunicorn_pids() { echo "$GUNICORN" $(pgrep -P "$GUNICORN" || true); }
for round in $(seq 1 "$ROUNDS"); do
  # shellcheck disable=SC2046
  run django "$DJANGO/api/attendance/session/$PAGE_SESSION_ID" "$DJANGO_TOKEN" "" $(gunicorn_pids)
  for i in "${!BINS[@]}"; do
    DATABASE_URL=${URLS[$i]} start "${BINS[$i]}"
    BODY=$(body "${SESSIONS[$i]}")
    TOKEN=${TOKENS[$i]} BODY=$BODY wrk -t2 -c8 -d2s -s "$LUA" "$BASE/graphql" > /dev/null 2>&1
    run "rust-$i" "$BASE/graphql" "${TOKENS[$i]}" "$BODY" "$SERVER_PID"
    stop
  done
done

python3 - "$OUT" "${BINS[@]}" <<'PY' | tee "$OUT/summary.txt"
import statistics, sys
out, bins = sys.argv[1], sys.argv[2:]
def load(label):
    rows = []
    for line in open(f"{out}/{label}.txt"):
        f = dict(kv.split("=") for kv in line.split()[1:])
        if int(f["bad"]) or int(f["non2xx"]):
            sys.exit(f"{label}: {f['bad']} bad answers")
        rows.append(f)
    med = lambda k: statistics.median(float(r[k]) for r in rows)
    return med("rps"), med("p50_ms"), med("p99_ms"), med("cpu"), [float(r["rps"]) for r in rows]
django = load("django")
print(f"{'django (DRF, gunicorn sync workers)':<40} {django[0]:7.1f} req/s  p50 {django[1]:7.2f} ms  p99 {django[2]:7.2f} ms  cpu {django[3]:4.0f} %  runs {django[4]}")
for i, b in enumerate(bins):
    r = load(f"rust-{i}")
    print(f"{b:<40} {r[0]:7.1f} req/s  p50 {r[1]:7.2f} ms  p99 {r[2]:7.2f} ms  cpu {r[3]:4.0f} %  runs {r[4]}  = {r[0] / django[0]:.1f}x django")
PY
