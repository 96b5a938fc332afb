"""The demo API: counts visits in Redis.

GET /healthz       200 when the data store answers, 503 otherwise
GET /api/visits    the count; POST /api/visits adds one

Configuration (environment): REDIS_HOST (default "store"), REDIS_PORT (6379), CACHE_MB (a cache
warmed at start, 32 MB), PORT (8000). At start the API waits up to 10 s for the data store and exits
with an error when it cannot reach it, so a wrong REDIS_HOST shows as a crash loop.
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

HOST = os.environ.get("REDIS_HOST", "store")
PORT = int(os.environ.get("REDIS_PORT", "6379"))
CACHE_MB = int(os.environ.get("CACHE_MB", "32"))

db = redis.Redis(host=HOST, port=PORT, socket_timeout=2, socket_connect_timeout=2)


def wait_for_store():
    deadline = time.monotonic() + 10
    while True:
        try:
            db.ping()
            return
        except redis.RedisError as error:
            if time.monotonic() > deadline:
                print(f"fatal: cannot reach the data store at {HOST}:{PORT}: {error}", file=sys.stderr)
                sys.exit(1)
            time.sleep(0.5)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            if self.path == "/healthz":
                db.ping()
                self.reply(200, {"status": "ok"})
            elif self.path == "/api/visits":
                self.reply(200, {"visits": int(db.get("visits") or 0)})
            else:
                self.reply(404, {"error": "not found"})
        except redis.RedisError as error:
            print(f"error: data store at {HOST}:{PORT}: {error}", file=sys.stderr)
            self.reply(503, {"error": f"data store: {error}"})

    def do_POST(self):
        try:
            if self.path == "/api/visits":
                self.reply(200, {"visits": db.incr("visits")})
            else:
                self.reply(404, {"error": "not found"})
        except redis.RedisError as error:
            print(f"error: data store at {HOST}:{PORT}: {error}", file=sys.stderr)
            self.reply(503, {"error": f"data store: {error}"})

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    # A warmed cache: what makes the API need real memory.
    cache = bytearray(CACHE_MB * 1024 * 1024)
    for offset in range(0, len(cache), 4096):
        cache[offset] = 1
    wait_for_store()
    print(f"api listening on :{os.environ.get('PORT', '8000')}, data store {HOST}:{PORT}", file=sys.stderr)
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
