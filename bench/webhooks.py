#!/usr/bin/env python3
"""Webhook deliveries per second: EVENTS pending deliveries (10,000 by default) written to the
outbox in one transaction while the server runs, posted to one fast local receiver that
verifies nothing and answers 200 at once. Measures from outside how long after the insert
every delivery is recorded delivered, checks that the receiver got each webhook-id exactly
once, and reports the server's CPU and peak RSS; on PostgreSQL or SQLite, RUNS times, with
medians.

Usage: bench/webhooks.py --binary target/release/attendance [--backend postgres|sqlite]
                         [--runs 3] [--events 10000]
                         [--pg-url postgres://postgres@127.0.0.1:5432]
Only ever targets 127.0.0.1; each run lasts well under a minute.
"""
import argparse, collections, http.server, os, shutil, socket, sqlite3, statistics, subprocess
import sys, tempfile, threading, time

parser = argparse.ArgumentParser()
parser.add_argument("--binary", default="target/release/attendance")
parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
parser.add_argument("--runs", type=int, default=3)
parser.add_argument("--events", type=int, default=10000)
parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
args = parser.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(http.server.BaseHTTPRequestHandler):
    """Answers 200 at once and counts each webhook-id."""
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would
    seen = collections.Counter()
    lock = threading.Lock()

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        with Receiver.lock:
            Receiver.seen[self.headers.get("webhook-id")] += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def sql_of(backend, url, sql, path=None):
    if backend == "postgres":
        out = subprocess.run(["psql", url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             check=True, capture_output=True, text=True).stdout
        return out.strip()
    db = sqlite3.connect(path, timeout=30)
    try:
        cur = db.execute(sql)
        row = cur.fetchone()
        db.commit()
        return "" if row is None else str(row[0])
    finally:
        db.close()


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_once(work, receiver_url):
    if args.backend == "postgres":
        subprocess.run(["psql", args.pg_url + "/postgres", "-qc",
                        "DROP DATABASE IF EXISTS attendance_hooks WITH (FORCE)",
                        "-c", "CREATE DATABASE attendance_hooks"], check=True, capture_output=True)
        url, path = args.pg_url + "/attendance_hooks", None
    else:
        path = os.path.join(work, "hooks.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        url = "sqlite:///%s?mode=rwc" % path
    env = dict(os.environ, DATABASE_URL=url, SECRET_KEY="hooks-bench-secret-key-0123456789",
               DEBUG="false", RUST_LOG="warn", WEBHOOK_ALLOW_PRIVATE="true",
               BIND="127.0.0.1:%d" % free_port(), AUTO_CLOSE_INTERVAL_SECONDS="3600")
    subprocess.run([args.binary, "migrate"], env=env, check=True, capture_output=True)
    server = subprocess.Popen([args.binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(work, "server.log"), "a"))
    try:
        time.sleep(1.5)
        Receiver.seen.clear()
        now = "now()" if args.backend == "postgres" else "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
        series = ("generate_series(1, %d) g" % args.events if args.backend == "postgres" else
                  "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < %d) "
                  "SELECT g FROM s) t" % args.events)
        sql_of(args.backend, url,
               "INSERT INTO webhook (url, secret, events, created_at) VALUES ('%s', "
               "'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', ',SESSION_CLOSED,', %s)"
               % (receiver_url, now), path)
        ticks0, t0 = cpu_ticks(server.pid), time.time()
        sql_of(args.backend, url,
               "INSERT INTO webhook_delivery (webhook_id, event_id, event_type, payload, status, "
               "attempts, created_at, next_attempt_at) SELECT 1, 'msg_bench_' || g, "
               "'SESSION_CLOSED', '{\"type\":\"SESSION_CLOSED\",\"timestamp\":\"2026-11-30T00:00:00Z\","
               "\"data\":{\"sessionId\":\"' || g || '\"}}', 'pending', 0, %s, %s FROM %s"
               % (now, now, series), path)
        peak = 0
        while True:
            done = int(sql_of(args.backend, url,
                              "SELECT COUNT(*) FROM webhook_delivery WHERE status = 'delivered'", path))
            peak = max(peak, rss_kib(server.pid))
            if done >= args.events:
                break
            if time.time() - t0 > 600:
                sys.exit("deliveries did not finish within 10 minutes (%d of %d)" % (done, args.events))
            time.sleep(0.05)
        elapsed = time.time() - t0
        cpu = (cpu_ticks(server.pid) - ticks0) / os.sysconf("SC_CLK_TCK") / elapsed * 100
        with Receiver.lock:
            once = sum(1 for n in Receiver.seen.values() if n == 1)
            twice = sum(1 for n in Receiver.seen.values() if n > 1)
        return args.events / elapsed, elapsed, cpu, peak / 1024, once, twice
    finally:
        server.terminate()
        server.wait()


def main():
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    receiver_url = "http://127.0.0.1:%d/hook" % receiver.server_address[1]
    work = tempfile.mkdtemp(prefix="hooks-bench-")
    rates = []
    try:
        for n in range(args.runs):
            rate, elapsed, cpu, rss, once, twice = run_once(work, receiver_url)
            rates.append(rate)
            print("run %d: %d deliveries in %.2f s = %.0f/s, server CPU %.0f %%, peak RSS %.1f MiB, "
                  "ids received once %d, more than once %d"
                  % (n + 1, args.events, elapsed, rate, cpu, rss, once, twice), flush=True)
    finally:
        receiver.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print("%s: median %.0f deliveries/s over %d runs %s"
          % (args.backend, statistics.median(rates), len(rates), [round(r) for r in rates]))


main()
