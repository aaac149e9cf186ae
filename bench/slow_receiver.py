#!/usr/bin/env python3
"""A webhook receiver that takes SLEEP seconds (5 by default) over every call, then answers
200: the slow receiver of the scan benchmark's WEBHOOK_BACKLOG run (bench/run.sh).

Usage: bench/slow_receiver.py PORT [SLEEP]   (listens on 127.0.0.1 only)
"""
import http.server, sys, time

SLEEP = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0


class Slow(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(SLEEP)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Slow).serve_forever()
