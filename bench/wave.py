#!/usr/bin/env python3
"""The end-of-period wave: CLASSES timetable classes of STUDENTS students each, on as many
devices, all opening at the same minute and all ending at the same minute. Measures, from
outside, how long after the opening minute every session is open, and how long after the
ending minute every session is closed with every absentee marked, plus the server's peak
RSS; on PostgreSQL or SQLite, RUNS times, and prints the medians.

Nothing is scanned, so every student of every class is marked absent at the close:
CLASSES x STUDENTS absentee records (40,000 by default).

Usage: bench/wave.py --binary target/release/attendance [--backend postgres|sqlite]
                     [--runs 3] [--classes 1000] [--students 40]
                     [--pg-url postgres://postgres@127.0.0.1:5432]
Only ever targets 127.0.0.1; each run lasts about two minutes.
"""
import argparse, datetime, os, shutil, socket, sqlite3, statistics, subprocess, sys, tempfile, time

parser = argparse.ArgumentParser()
parser.add_argument("--binary", default="target/release/attendance")
parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
parser.add_argument("--runs", type=int, default=3)
parser.add_argument("--classes", type=int, default=1000)
parser.add_argument("--students", type=int, default=40)
parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
args = parser.parse_args()
N, S = args.classes, args.students
UTC = datetime.timezone.utc


def ts(t):
    # The text form sqlx writes on SQLite; PostgreSQL reads it too.
    return t.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Database:
    def __init__(self, work):
        if args.backend == "postgres":
            subprocess.run(["psql", args.pg_url + "/postgres", "-qc",
                            "DROP DATABASE IF EXISTS attendance_wave WITH (FORCE)",
                            "-c", "CREATE DATABASE attendance_wave"], check=True, capture_output=True)
            self.url = args.pg_url + "/attendance_wave"
        else:
            self.path = os.path.join(work, "wave.db")
            self.url = "sqlite:///%s?mode=rwc" % self.path

    def run_sql(self, sql):
        if args.backend == "postgres":
            subprocess.run(["psql", self.url, "-q", "-v", "ON_ERROR_STOP=1"], input=sql.encode(),
                           check=True, capture_output=True)
        else:
            db = sqlite3.connect(self.path)
            db.executescript(sql)
            db.commit()
            db.close()

    def counts(self):
        """(open timetable sessions, closed ones, absentee records)."""
        sql = ("SELECT (SELECT COUNT(*) FROM attendance_session WHERE slot_id IS NOT NULL AND is_active), "
               "(SELECT COUNT(*) FROM attendance_session WHERE slot_id IS NOT NULL AND NOT is_active), "
               "(SELECT COUNT(*) FROM attendance_record WHERE status = 'absent')")
        if args.backend == "postgres":
            out = subprocess.run(["psql", self.url, "-At", "-F", " ", "-c", sql], check=True,
                                 capture_output=True, text=True).stdout.split()
            return tuple(int(x) for x in out)
        db = sqlite3.connect("file:%s?mode=ro" % self.path, uri=True, timeout=10)
        try:
            return tuple(db.execute(sql).fetchone())
        finally:
            db.close()


def seed(db, opens, ends):
    day = opens.date()
    now = ts(datetime.datetime.now(UTC))
    past = ts(datetime.datetime.now(UTC) - datetime.timedelta(days=1))
    rows = lambda f: ",".join(f(i) for i in range(1, N + 1))
    students = ",".join("(%d,'W%d','F','L',%d,'%s','%s')" % (i * S + k, i * S + k, i, past, past)
                        for i in range(1, N + 1) for k in range(S))
    sql = f"""
INSERT INTO dep_batch (id, dep, batch) VALUES (1, 'Wave', '2027');
INSERT INTO section (id, name, dep_batch_id) VALUES {rows(lambda i: f"({i},'S{i}',1)")};
INSERT INTO teacher (id, teacher_code, first_name, last_name) VALUES {rows(lambda i: f"({i},'T{i}','T','T')")};
INSERT INTO course (id, name, code, teacher_id) VALUES {rows(lambda i: f"({i},'C{i}','C{i}',{i})")};
INSERT INTO course_section (course_id, section_id) VALUES {rows(lambda i: f"({i},{i})")};
INSERT INTO device (id, device_id, name, is_active, key_hash, created_at) VALUES {rows(lambda i: f"({i},'D{i}','d',true,'k{i}','{now}')")};
INSERT INTO student (id, student_code, first_name, last_name, section_id, created_at, enrolled_at) VALUES {students};
INSERT INTO term (id, name, starts_on, ends_on, created_at) VALUES (1, 'Wave', '{day - datetime.timedelta(days=1)}', '{day + datetime.timedelta(days=1)}', '{now}');
INSERT INTO schedule_slot (id, course_id, term_id, device_id, weekday, start_time, end_time, created_at) VALUES {rows(lambda i: f"({i},{i},1,{i},{opens.isoweekday()},'{opens.strftime('%H:%M:%S')}','{ends.strftime('%H:%M:%S')}','{now}')")};
"""
    if args.backend == "sqlite":
        sql = sql.replace("true", "1")
    db.run_sql(sql)


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def one_run(n):
    work = tempfile.mkdtemp(prefix="att-wave-")
    db = Database(work)
    env = dict(PATH=os.environ.get("PATH", ""), SECRET_KEY="wave-secret-key-0123456789abcdef",
               DEBUG="false", DATABASE_URL=db.url, TIME_ZONE="UTC", RUST_LOG="warn",
               SCHEDULE_OPEN_EARLY_MINUTES="0")
    subprocess.run([args.binary, "migrate"], env=env, check=True, capture_output=True)
    # Classes open at the next whole minute at least 50 s away, and last one minute.
    start = datetime.datetime.now(UTC) + datetime.timedelta(seconds=50)
    opens = start.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    ends = opens + datetime.timedelta(minutes=1)
    if ends.date() != opens.date():
        time.sleep((ends - datetime.datetime.now(UTC)).total_seconds() + 1)
        return one_run(n)
    seed(db, opens, ends)
    port = free_port()
    env["BIND"] = "127.0.0.1:%d" % port
    server = subprocess.Popen([args.binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(work, "server.log"), "w"))
    peak = 0
    opened_at = closed_at = None
    deadline = ends + datetime.timedelta(seconds=120)
    try:
        while datetime.datetime.now(UTC) < deadline:
            peak = max(peak, rss_kib(server.pid))
            active, closed, absent = db.counts()
            now = datetime.datetime.now(UTC)
            if opened_at is None and active + closed == N:
                opened_at = now
            if closed == N and absent == N * S:
                closed_at = now
                break
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    open_s = (opened_at - opens).total_seconds() if opened_at else float("nan")
    close_s = (closed_at - ends).total_seconds() if closed_at else float("nan")
    print("run %d: opened all %d classes %.1f s after the minute; closed all, %d absentees, "
          "%.1f s after the minute; peak RSS %.1f MiB" % (n, N, open_s, N * S, close_s, peak / 1024),
          flush=True)
    return open_s, close_s, peak / 1024


results = [one_run(n) for n in range(1, args.runs + 1)]
med = lambda i: statistics.median(r[i] for r in results)
print("%s, %d classes x %d students: median opening wave %.1f s, closing wave %.1f s, peak RSS %.1f MiB"
      % (args.backend, N, S, med(0), med(1), med(2)))
