"""Fixtures of the tests of the fleet watching itself (worker/health.py, heartbeat.py, metrics.py): a
loopback receiver of the heartbeat's pings. test_health.py's `sink` (keys with restricted rights) and
test_metrics.py's seeded database are each one module's."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Receiver:
    """Records each ping: (monotonic time, path, body)."""

    def __init__(self) -> None:
        self.pings: list[tuple[float, str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: ANN002
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                receiver.pings.append((time.monotonic(), self.path, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/3f1c"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
