"""The gateway's claimed request nonces, in SQLite under its ``state_dir``: a restarted gateway still
refuses a replay within the signature's validity window. Bounded: expired nonces are pruned, and past
``capacity`` live ones new signed requests are refused (503) until some expire."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from airflow_nevermined_fl.gateway.checks import Refusal

CAPACITY = 200_000
"""Live nonces kept at most (a few tens of MB on disk at worst)."""
PRUNE_EVERY = 1.0


class NonceStore:
    """A :class:`~airflow_nevermined_fl.protocol.auth.NonceGuard` persisted in ``path``."""

    def __init__(self, path: Path, capacity: int = CAPACITY) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires)")
        self._lock = threading.Lock()
        self._pruned = 0.0
        self._live = self._count()

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    def claim(self, nonce: str, expires: float) -> bool:
        """True the first time ``nonce`` is claimed; False for a replay."""
        now = time.time()
        with self._lock:
            if now - self._pruned > PRUNE_EVERY or self._live >= self.capacity:
                self._db.execute("DELETE FROM nonces WHERE expires <= ?", (now,))
                self._pruned, self._live = now, self._count()
            if self._live >= self.capacity:
                raise Refusal(503, "too many signed requests in flight; retry later")
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO nonces (nonce, expires) VALUES (?, ?)", (nonce, expires)
            ).rowcount
            self._live += inserted
            return inserted == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()
