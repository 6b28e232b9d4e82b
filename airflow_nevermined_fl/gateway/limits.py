"""What bounds a gateway's work per request and per caller, before and after authentication.

:class:`BoundedRequests` is a pure ASGI middleware that runs before any body is read: a signed endpoint
without the signature headers is 401, an unauthenticated endpoint past its caller IP's rate is 429, a
``Content-Length`` over the cap is 413 at once, and a streamed (chunked) body is counted as it arrives
(413 past the cap, 408 past :data:`BODY_SECONDS`). :class:`RateLimit` (token buckets, a bounded table)
and :class:`Slots` (concurrent log follows per consumer) are used by the app once the caller is known,
:class:`Cached` keeps a public answer (``info``) for a short time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers

from airflow_nevermined_fl.gateway.checks import Refusal
from airflow_nevermined_fl.protocol import API, auth

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
"""Largest request body (bytes): every endpoint takes small JSON or nothing."""
BODY_SECONDS = 10.0
"""Longest a request's body may take to arrive (a slow-drip body holds no connection past it)."""
SIGNED = f"{API}/compute/"
"""The prefix of the signed endpoints."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RateLimit:
    """Token buckets per key (``rate`` per second, up to ``burst``), at most ``max_keys`` of them: past
    that, full buckets are forgotten first, then everything (a flood of keys cannot grow the table)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Take one token from ``key``'s bucket; False when it is empty."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if key not in self._buckets and len(self._buckets) >= self.max_keys:
                self._forget(now)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            return allowed

    def _forget(self, now: float) -> None:
        full = [k for k, (t, then) in self._buckets.items() if t + (now - then) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()


class Slots:
    """At most ``limit`` concurrent holders per key (e.g. log follows per consumer); 429 past it."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what = limit, what
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        with self._lock:
            if self._held.get(key, 0) >= self.limit:
                raise Refusal(429, f"too many {self.what} for {key} (at most {self.limit} at once)")
            self._held[key] = self._held.get(key, 0) + 1

    def give(self, key: str) -> None:
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)


FLOOD_STATUSES = frozenset({401, 408, 413, 429})
"""Refusals anyone can cause in bulk: counted and summed up in the log, not logged one by one."""


class Cached:
    """One value, recomputed at most every ``seconds`` or when its ``key`` changes (concurrent callers
    wait for one computation)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self._lock = seconds, threading.Lock()
        self._value: Any = None
        self._key: Any = None
        self._at = -float("inf")

    def get(self, compute: Callable[[], Any], key: Any = None) -> Any:
        with self._lock:
            if time.monotonic() - self._at > self.seconds or key != self._key:
                self._value, self._key, self._at = compute(), key, time.monotonic()
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._at = -float("inf")


async def released(lines: AsyncIterator[str], release: Callable[[], None]) -> AsyncIterator[str]:
    """``lines``, then ``release()`` however the stream ends (finished, failed, client gone)."""
    try:
        async for line in lines:
            yield line
    finally:
        release()


class RefusalLog:
    """Refusals counted by status, logged at most once per ``period`` (a flood does not flood the log)."""

    def __init__(self, period: float = 10.0) -> None:
        self.period, self._logged = period, time.monotonic()
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def note(self, status: int, detail: str) -> None:
        with self._lock:
            self._counts[status] = self._counts.get(status, 0) + 1
            now = time.monotonic()
            if now - self._logged < self.period:
                return
            counts, since, self._counts, self._logged = self._counts, now - self._logged, {}, now
        log.warning("refused in the last %.0fs (HTTP status: count): %s; last: %s", since, counts, detail)


class BoundedRequests:
    """Headers and size first: the ASGI middleware in front of the gateway's app (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body: int = MAX_BODY,
        body_seconds: float = BODY_SECONDS,
        per_ip: RateLimit | None = None,
    ) -> None:
        self.app, self.max_body, self.body_seconds = app, max_body, body_seconds
        self.per_ip = per_ip or RateLimit(rate=20.0, burst=100.0)
        self._refusals = RefusalLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            try:
                body = await asyncio.wait_for(self._body(receive), self.body_seconds)
            except TimeoutError:
                refusal = Refusal(408, f"request body not received within {self.body_seconds:g}s")
            except Refusal as exc:
                refusal = exc
        if refusal is not None:
            await self._refuse(send, refusal)
            return
        if body is None:  # the client went away
            return
        await self.app(scope, _replay(body, receive), send)

    def _refusal(self, scope: Scope) -> Refusal | None:
        """What the headers alone refuse."""
        headers, path = Headers(scope=scope), str(scope["path"])
        if path.startswith(SIGNED):
            missing = auth.missing_headers(headers)
            if missing:
                return Refusal(401, f"unsigned request: missing header(s) {', '.join(missing)}")
        else:  # one bucket per client IP and endpoint: an info flood leaves the DDOs served
            client = (scope.get("client") or ("unknown", 0))[0]
            if not self.per_ip.allow(f"{client} {path.removeprefix(API).split('/')[1]}"):
                return Refusal(429, f"too many requests from {client}; slow down")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return Refusal(413, f"request body: larger than {self.max_body} bytes")
        return None

    async def _body(self, receive: Receive) -> bytes | None:
        """The whole body (at most ``max_body`` bytes, else 413); None when the client disconnected."""
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                raise Refusal(413, f"request body: larger than {self.max_body} bytes")
        return bytes(body)

    async def _refuse(self, send: Send, refusal: Refusal) -> None:
        self._refusals.note(refusal.status, refusal.detail)
        content = json.dumps({"detail": refusal.detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body first, then whatever the client sends (disconnects)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
