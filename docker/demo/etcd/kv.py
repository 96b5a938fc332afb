"""The demo's key-value service: reads and writes keys in the etcd cluster.

GET /healthz          200 when the cluster answers a quorum read, 503 otherwise
PUT /api/keys/NAME    stores the request's body under NAME
GET /api/keys/NAME    the value stored under NAME (404 when there is none)

It speaks etcd's JSON gateway (/v3/kv/...) with the standard library, trying each member of
ETCD_ENDPOINTS in turn (default the three members), and answers 503 when none can serve the
request, as happens when the cluster has lost its quorum. PORT (8000) is where it listens.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENDPOINTS = os.environ.get(
    "ETCD_ENDPOINTS", "http://etcd1:2379,http://etcd2:2379,http://etcd3:2379"
).split(",")
# A member without a quorum holds a request for its own timeout (5 s) before failing it.
TIMEOUT = float(os.environ.get("ETCD_TIMEOUT_SECONDS", "3"))
PREFIX = "/kv/"


def b64(text):
    return base64.b64encode(text.encode()).decode()


class Unavailable(Exception):
    pass


def call(path, body):
    """POSTs `body` to the first member that answers; raises Unavailable when none does."""
    errors = []
    for endpoint in ENDPOINTS:
        request = urllib.request.Request(
            endpoint.rstrip("/") + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            errors.append(f"{endpoint}: {error.code} {error.read().decode(errors='replace')[:200]}")
        except (OSError, ValueError) as error:
            errors.append(f"{endpoint}: {error}")
    raise Unavailable("; ".join(errors))


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def key(self):
        if not self.path.startswith("/api/keys/") or len(self.path) <= len("/api/keys/"):
            return None
        return self.path[len("/api/keys/"):]

    def do_GET(self):
        try:
            if self.path == "/healthz":
                # A linearizable read goes through the leader: it needs a quorum.
                call("/v3/kv/range", {"key": b64(PREFIX + "health")})
                self.reply(200, {"status": "ok"})
                return
            key = self.key()
            if key is None:
                self.reply(404, {"error": "not found"})
                return
            found = call("/v3/kv/range", {"key": b64(PREFIX + key)}).get("kvs") or []
            if not found:
                self.reply(404, {"error": f"no key {key}"})
                return
            value = base64.b64decode(found[0].get("value", "")).decode(errors="replace")
            self.reply(200, {"key": key, "value": value})
        except Unavailable as error:
            print(f"error: the etcd cluster did not answer: {error}", file=sys.stderr)
            self.reply(503, {"error": f"etcd: {error}"})

    def do_PUT(self):
        key = self.key()
        if key is None:
            self.reply(404, {"error": "not found"})
            return
        length = int(self.headers.get("content-length") or 0)
        value = self.rfile.read(length).decode(errors="replace")
        try:
            answer = call("/v3/kv/put", {"key": b64(PREFIX + key), "value": b64(value)})
            revision = answer.get("header", {}).get("revision")
            self.reply(200, {"key": key, "value": value, "revision": revision})
        except Unavailable as error:
            print(f"error: the etcd cluster did not answer: {error}", file=sys.stderr)
            self.reply(503, {"error": f"etcd: {error}"})

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    listen = int(os.environ.get("PORT", "8000"))
    print(f"kv listening on :{listen}, etcd at {','.join(ENDPOINTS)}", file=sys.stderr)
    ThreadingHTTPServer(("0.0.0.0", listen), Handler).serve_forever()
