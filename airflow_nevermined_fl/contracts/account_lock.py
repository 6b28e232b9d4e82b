"""One account's transactions, one at a time across processes: a re-entrant file lock per (chain, account).

Two processes sending from one account would read the same pending nonce, and two check-approve-spend
sequences would race on the ERC20 allowance. Every process of one host that holds the lock of
``(chain id, address)`` (``<state dir>/locks/``) runs its section alone; inside a process the lock is
re-entrant, so a section may span several transactions that each take the lock too.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airflow_nevermined_fl.paths import state_dir

_guard = threading.Lock()
_locks: dict[str, threading.RLock] = {}
_depth: dict[str, int] = {}


def lock_path(chain_id: int, address: str) -> Path:
    directory = state_dir() / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"chain-{chain_id}-{address.lower()}.lock"


@contextmanager
def account_lock(chain_id: int, address: str) -> Iterator[None]:
    """Hold the lock of ``address`` on chain ``chain_id`` (blocks while another process holds it)."""
    key = str(lock_path(chain_id, address))
    with _guard:
        local = _locks.setdefault(key, threading.RLock())
    with local:
        if _depth.get(key):
            _depth[key] += 1
            try:
                yield
            finally:
                _depth[key] -= 1
            return
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _depth[key] = 1
            try:
                yield
            finally:
                _depth[key] = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
