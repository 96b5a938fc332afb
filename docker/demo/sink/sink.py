"""The demo's webhook sink: what a chat channel or an event bus would receive from opslab.

POST /slack        a Slack-compatible incoming webhook's message: its `text` is printed
POST /cloudevents  a CloudEvent (structured JSON): its type, subject and phase are printed
GET  /messages     every message received so far, as a JSON list of {path, body}

Each message is printed as one line starting `received`, so `docker compose logs sink` shows them.
Bodies are kept in memory (the last 100) and must be JSON of at most 1 MiB.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIMIT = 1024 * 1024
KEEP = 100
messages = []
lock = threading.Lock()


def one_line(path, body):
    if path == "/slack":
        return "slack: " + " ".join(str(body.get("text", "")).split())
    data = body.get("data") or {}
    return "cloudevent: {} subject={} phase={}".format(
        body.get("type"), body.get("subject"), data.get("phase")
    )


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if self.path not in ("/slack", "/cloudevents"):
            return self.reply(404, {"error": "POST /slack or /cloudevents"})
        length = int(self.headers.get("content-length") or 0)
        if length > LIMIT:
            return self.reply(413, {"error": f"at most {LIMIT} bytes"})
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError as error:
            return self.reply(400, {"error": f"not JSON: {error}"})
        with lock:
            messages.append({"path": self.path, "body": body})
            del messages[:-KEEP]
        print("received " + one_line(self.path, body), flush=True)
        self.reply(200, {"ok": True})

    def do_GET(self):
        if self.path != "/messages":
            return self.reply(404, {"error": "GET /messages"})
        with lock:
            self.reply(200, list(messages))

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    print("sink listening on :9000 (POST /slack, POST /cloudevents, GET /messages)", file=sys.stderr)
    ThreadingHTTPServer(("0.0.0.0", 9000), Handler).serve_forever()
