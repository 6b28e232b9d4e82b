"""Dependencies that fail the way real ones do, for the bounded-call tests: a port nobody listens on, a
socket that takes connections and never answers, a tiny HTTP server with scripted answers, and a JSON-RPC
proxy in front of a real node that can hang or drop chosen methods (after forwarding them, or before)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from airflow_nevermined_fl import process

HANG_LIMIT = 60.0  # a stalled handler gives up after this (its client must have timed out long before)


def closed_url(scheme: str = "http") -> str:
    """A URL of 127.0.0.1 on a port nothing listens on: connection refused."""
    return f"{scheme}://127.0.0.1:{process.free_port()}"


class SilentServer:
    """Accepts TCP connections and never answers (reads and drops whatever is sent)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._conns.append(conn)  # kept open, never written to

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self.sock.close()


HANG, DROP = "hang", "drop"
FORWARD_THEN_HANG, FORWARD_THEN_DROP = "forward_then_hang", "forward_then_drop"
Route = Callable[[BaseHTTPRequestHandler, bytes], "tuple[int, str, bytes] | str"]


class ScriptedHttpServer:
    """An HTTP server whose ``route(handler, body)`` answers ``(status, content type, body)``, or ``HANG``
    (no answer until the server stops) or ``DROP`` (the connection closed without an answer)."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.released = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall between

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = server.route(self, body)
                if isinstance(answer, str):
                    if answer == HANG:
                        server.released.wait(HANG_LIMIT)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, content_type, data = answer
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_DELETE = do_PATCH = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> ScriptedHttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class RpcProxy(ScriptedHttpServer):
    """A JSON-RPC proxy to ``upstream``: ``rules[method]`` is ``HANG`` (never forwarded, no answer),
    ``DROP`` (never forwarded, connection closed), ``FORWARD_THEN_HANG``/``FORWARD_THEN_DROP`` (the node
    gets it, its answer is lost) or absent (forwarded). ``decide(request, handler)``, when set, picks a
    request's rule first (None: by ``rules``). ``requests`` lists the requests received."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rules: dict[str, str] = {}
        self.decide: Callable[[dict[str, Any], BaseHTTPRequestHandler], str | None] | None = None
        self.requests: list[dict[str, Any]] = []
        super().__init__(self._route)

    def _forward(self, body: bytes) -> bytes:
        request = urllib.request.Request(self.upstream, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def _route(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, bytes] | str:
        request = json.loads(body)
        self.requests.append(request)
        rule = (self.decide and self.decide(request, handler)) or self.rules.get(request.get("method", "?"))
        if rule in (HANG, DROP):
            return rule
        answer = self._forward(body)
        if rule in (FORWARD_THEN_HANG, FORWARD_THEN_DROP):
            return rule.removeprefix("forward_then_")
        return 200, "application/json", answer


def socket_owner(port: int) -> int:
    """The pid of the local process whose TCP socket has local port ``port`` (e.g. a proxy's client, from
    its ``client_address``)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return int(fd.parts[2])
    raise LookupError(f"no process has a socket on local port {port}")


def elapsed(since: float) -> float:
    return time.monotonic() - since


class OutageProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (host, port) that can go down and come back: while
    down it refuses connections and has cut the open ones, as a restarted or unreachable server does. It
    forwards bytes as they are (the Host header too, so presigned URLs made for the proxy stay valid)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = process.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # down
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
