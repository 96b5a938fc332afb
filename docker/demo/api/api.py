"""The demo API: counts visits in Redis.

GET /healthz       200 when the data store answers, 503 otherwise
GET /api/visits    the count; POST /api/visits adds one

Configuration (environment): REDIS_HOST (default "store"), REDIS_PORT (6379), CACHE_MB (a cache
warmed at start, 32 MB), PORT (8000), METRICS_PORT (a second listener serving /metrics; none when
unset). The settings file API_ENV_FILE (/srv/api.env: KEY=VALUE lines) is read at start after the
environment, and a later definition of a key wins over an earlier one. The data store's password is
read at start from REDIS_PASSWORD_FILE (/srv/secrets/redis-password) when that file exists. At start
the API waits up to 10 s for the data store and exits with an error when it cannot reach it, so a
wrong REDIS_HOST shows as a crash loop.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis


def load_settings(path):
    """KEY=VALUE lines into the environment; a later definition of a key wins."""
    try:
        with open(path) as settings:
            lines = settings.read().splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            os.environ[key.strip()] = value.strip()


def read_password(path):
    try:
        with open(path) as secret:
            return secret.read().strip() or None
    except FileNotFoundError:
        return None


load_settings(os.environ.get("API_ENV_FILE", "/srv/api.env"))
HOST = os.environ.get("REDIS_HOST", "store")
PORT = int(os.environ.get("REDIS_PORT", "6379"))
CACHE_MB = int(os.environ.get("CACHE_MB", "32"))

PASSWORD = read_password(os.environ.get("REDIS_PASSWORD_FILE", "/srv/secrets/redis-password"))
METRICS_PORT = os.environ.get("METRICS_PORT", "").strip()

db = redis.Redis(
    host=HOST, port=PORT, password=PASSWORD, socket_timeout=2, socket_connect_timeout=2
)


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


class Metrics(BaseHTTPRequestHandler):
    def do_GET(self):
        data = b"demo_api_up 1\n"
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    # A warmed cache: what makes the API need real memory.
    cache = bytearray(CACHE_MB * 1024 * 1024)
    for offset in range(0, len(cache), 4096):
        cache[offset] = 1
    wait_for_store()
    if METRICS_PORT:
        metrics = ThreadingHTTPServer(("0.0.0.0", int(METRICS_PORT)), Metrics)
        threading.Thread(target=metrics.serve_forever, daemon=True).start()
        print(f"metrics listening on :{METRICS_PORT}", file=sys.stderr)
    listen = int(os.environ.get("PORT", "8000"))
    print(f"api listening on :{listen}, data store {HOST}:{PORT}", file=sys.stderr)
    ThreadingHTTPServer(("0.0.0.0", listen), Handler).serve_forever()
