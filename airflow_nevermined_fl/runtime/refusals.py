"""Refused calls on the coordinator, kept cheap under a flood.

Each peer host has a token bucket of refusals: once it is empty, that host's calls with an unverified
credential are refused at once (RESOURCE_EXHAUSTED) without a signature recovery. The log writes a burst of
``Refused call`` lines, then at most one ``Refused calls`` summary line per interval with the counts of the
lines it left out.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from structlog import get_logger

logger = get_logger(__name__)


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = burst, now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def empty(self, now: float) -> bool:
        self._refill(now)
        return self.tokens < 1

    def take(self, now: float) -> bool:
        """Take one token; False when there is none."""
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def peer_host(peer: str) -> str:
    """A gRPC peer (``ipv4:127.0.0.1:5555``, ``ipv6:[::1]:5555``) without its port."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class Refusals:
    """The coordinator's refused calls: their count, each peer host's bucket, the bounded log."""

    def __init__(
        self,
        peer_rate: float = 2.0,
        peer_burst: float = 30.0,
        log_rate: float = 1.0,
        log_burst: float = 30.0,
        interval: float = 10.0,
        max_peers: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.peer_rate, self.peer_burst, self.max_peers = peer_rate, peer_burst, max_peers
        self.interval, self.clock = interval, clock
        self.total = 0
        self._peers: dict[str, TokenBucket] = {}
        self._log = TokenBucket(log_rate, log_burst, clock())
        self._unlogged: Counter[str] = Counter()  # calls refused but not logged, by peer host
        self._summarized = clock()
        self._lock = threading.Lock()

    def throttled(self, peer: str) -> bool:
        """Whether ``peer``'s host has used up its refusals for now."""
        with self._lock:
            bucket = self._peers.get(peer_host(peer))
            return bucket is not None and bucket.empty(self.clock())

    def refuse(self, call: str, peer: str, reason: str) -> None:
        """Count a refused call against its peer host; log it, or leave it to the next summary."""
        host, now = peer_host(peer), self.clock()
        with self._lock:
            self.total += 1
            bucket = self._peers.get(host)
            if bucket is None:
                if len(self._peers) >= self.max_peers:  # bounded: start over (each host gets a new burst)
                    self._peers.clear()
                bucket = self._peers[host] = TokenBucket(self.peer_rate, self.peer_burst, now)
            bucket.take(now)
            logged = self._log.take(now)
            if not logged:
                self._unlogged[host] += 1
        if logged:
            logger.warning("Refused call", call=call, peer=peer, reason=reason)
        self.flush()

    def flush(self, force: bool = False) -> None:
        """The summary line of the refusals not logged, at most once per interval (``force``: now)."""
        now = self.clock()
        with self._lock:
            if not self._unlogged or (not force and now - self._summarized < self.interval):
                return
            unlogged, self._unlogged, self._summarized = self._unlogged, Counter(), now
        logger.warning(
            "Refused calls",
            not_logged=sum(unlogged.values()),
            peers=dict(unlogged.most_common(5)),
            total=self.total,
        )
