"""A minimal OTLP/HTTP collector for the overhead benchmark: answers every POST with 200 and an empty protobuf
body, counts requests and bytes per path (GET /stats), GET /health. Not a validator (the tests use real receivers).

    python Benchmarks/otlp_sink.py PORT
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

stats: dict[str, list[int]] = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        with lock:
            s = stats.setdefault(self.path, [0, 0])
            s[0] += 1
            s[1] += n
        self._send(200, b"", "application/x-protobuf")

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                body = json.dumps({k: {"requests": v[0], "bytes": v[1]} for k, v in stats.items()}).encode()
            self._send(200, body, "application/json")
        else:
            self._send(200, b'{"status":"ok"}', "application/json")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
