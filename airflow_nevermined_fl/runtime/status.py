"""The coordinator's HTTP status endpoint: ``GET /status`` (JSON snapshot) and ``GET /health``; and its
client, :func:`fetch` and :func:`wait` (standard library only: whoever started the coordinator uses it)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StatusServer:
    """Serves ``snapshot()`` on a daemon thread; ``port`` is the port actually bound (config 0 = free)."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] == "/status":
                    self._send(200, snapshot())
                elif self.path.split("?")[0] == "/health":
                    self._send(200, {"ok": True, "state": snapshot()["state"]})
                else:
                    self._send(404, {"error": "not found", "paths": ["/status", "/health"]})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet access log
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="status-http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fetch(status_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The ``/status`` snapshot of the coordinator at ``status_url`` (``http://host:port``); raises OSError
    while it does not answer."""
    with urllib.request.urlopen(f"{status_url}/status", timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def wait(
    status_url: str,
    until: Callable[[dict[str, Any]], bool],
    gone: Callable[[], Exception | None],
    timeout: float,
    what: str,
    poll: float = 0.1,
    request_timeout: float = 2.0,
) -> dict[str, Any]:
    """Poll the status until ``until(snapshot)``, and return that snapshot. While the coordinator does not
    answer, ``gone()`` says whether it is gone for good (the error to raise) or None (still starting);
    TimeoutError ``"<what> within <timeout>s"`` when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            snapshot = fetch(status_url, request_timeout)
        except OSError:
            error = gone()
            if error is not None:
                raise error from None
        else:
            if until(snapshot):
                return snapshot
        time.sleep(poll)
    raise TimeoutError(f"{what} within {timeout:.0f}s")
