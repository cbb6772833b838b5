"""A back-office's webhook endpoint for the tests, independent of our code:
it checks every Standard Webhooks signature with Python's hmac module.

    webhook_receiver.py PORT SECRET OUT [--fail N]

Appends one JSON line per request to OUT: {"id", "timestamp", "verified",
"type", "data"}. Answers 204 to a verified event, 401 to a bad signature or
a stale timestamp, and 503 to the first N verified events (--fail), so that
the sender has to retry. Prints "listening" once it is.
"""
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, secret, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
fail = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--fail" else 0
key = base64.b64decode(secret.removeprefix("whsec_"))
lock = threading.Lock()


def verified(msg_id, ts, body, header):
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for sig in header.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global fail
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        msg_id = self.headers.get("webhook-id", "")
        ts = self.headers.get("webhook-timestamp", "0")
        ok = verified(msg_id, ts, body, self.headers.get("webhook-signature", ""))
        fresh = ts.isdigit() and abs(time.time() - int(ts)) < 300
        entry = {"id": msg_id, "timestamp": ts, "verified": ok and fresh}
        if ok and fresh:
            event = json.loads(body)
            entry.update(type=event["type"], data=event["data"])
        with lock:
            if ok and fresh and fail > 0:
                fail -= 1
                status = 503
            else:
                status = 204 if ok and fresh else 401
                with open(out, "a") as f:
                    f.write(json.dumps(entry) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print("listening", flush=True)
server.serve_forever()
