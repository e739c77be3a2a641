"""A local HTTP server that answers every request after DELAY seconds.

Prints its port, then ``ready``; serves until killed. Run untraced, beside
the traced programs of tests/integration/test_findings.py."""

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAY = float(sys.argv[1]) if len(sys.argv) > 1 else 0.2


class Slow(BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(DELAY)
        body = b"ok\n" * 10
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


srv = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
print("ready", flush=True)
srv.serve_forever()
