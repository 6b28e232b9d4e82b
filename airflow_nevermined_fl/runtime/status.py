"""The coordinator's status endpoint: ``GET /status`` (JSON snapshot) and ``GET /health``; and its client,
:func:`fetch` and :func:`wait` (standard library only: whoever started the coordinator uses it).

A secure session's coordinator serves it over TLS with the session's key pair (``https://``); its client
pins the session certificate: a server without that exact certificate is not believed (its gateway settles
on what the status says). A ``stock_sdk`` coordinator serves plain HTTP.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MAX_STATUS = 16 * 1024 * 1024
"""Bytes of a status answer read at most."""
REQUEST_SECONDS = 10
"""How long the server waits for a client's handshake and request (a silent client costs one thread)."""


class _QuietServer(ThreadingHTTPServer):
    """No traceback per failed request (a client that is not TLS, a dropped connection): anyone may try."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


class StatusServer:
    """Serves ``snapshot()`` on a daemon thread, over TLS with ``tls`` (a server context) if given; ``port``
    is the port actually bound (config 0 = free)."""

    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], dict[str, Any]],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_SECONDS

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

        self.server = _QuietServer((host, port), Handler)
        if tls is not None:  # the handshake happens in the request's thread, not in the accept loop
            self.server.socket = tls.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "https" if tls is not None else "http"
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="status-http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pinned_context(cert: str) -> ssl.SSLContext:
    """A client context trusting the PEM certificate ``cert`` alone (any host name: the pin is the name)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.load_verify_locations(cadata=cert)
    return context


def fetch(status_url: str, timeout: float = 5.0, cert: str | None = None) -> dict[str, Any]:
    """The ``/status`` snapshot of the coordinator at ``status_url`` (``http(s)://host:port``); ``https``
    needs ``cert``, the session certificate (PEM) the server must present. Raises OSError while it does not
    answer, ``ssl.SSLError`` (an OSError) when the server is not the one pinned."""
    parts = urlsplit(status_url)
    if parts.scheme == "https":
        if not cert:
            raise ValueError("cert: the coordinator's certificate is needed to read an https status")
        expected = _fingerprint(ssl.PEM_cert_to_DER_cert(cert))
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=pinned_context(cert)
        )
    elif parts.scheme == "http":
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    else:
        raise ValueError(f"status_url: an http(s)://host:port URL, got {status_url!r}")
    try:
        connection.connect()
        if isinstance(connection.sock, ssl.SSLSocket):
            presented = connection.sock.getpeercert(binary_form=True) or b""
            if _fingerprint(presented) != expected:
                raise ssl.SSLError("the status server's certificate is not the session's")
        connection.request("GET", "/status")
        response = connection.getresponse()
        if response.status != 200:
            raise OSError(f"status answered HTTP {response.status}")
        return json.loads(response.read(MAX_STATUS))
    finally:
        connection.close()


def wait(
    status_url: str,
    until: Callable[[dict[str, Any]], bool],
    gone: Callable[[], Exception | None],
    timeout: float,
    what: str,
    poll: float = 0.1,
    request_timeout: float = 2.0,
    cert: str | None = None,
) -> dict[str, Any]:
    """Poll the status (:func:`fetch`, pinned to ``cert``) until ``until(snapshot)``, and return that
    snapshot. While the coordinator does not answer, ``gone()`` says whether it is gone for good (the error
    to raise) or None (still starting); TimeoutError ``"<what> within <timeout>s"`` when ``timeout`` passes
    first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            snapshot = fetch(status_url, request_timeout, cert)
        except OSError:
            error = gone()
            if error is not None:
                raise error from None
        else:
            if until(snapshot):
                return snapshot
        time.sleep(poll)
    raise TimeoutError(f"{what} within {timeout:.0f}s")
