"""Execution records: one JSON file per agreement, ``<state_dir>/executions/<agreement_id>.json``.

A record holds the agreement and the workload record (never a secret), so a restarted gateway finds its
executions again; the consumer sees only its :meth:`Execution.status`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from airflow_nevermined_fl.gateway.checks import Refusal
from airflow_nevermined_fl.gateway.publish import write_json
from airflow_nevermined_fl.runtime.workload import ExecutionState

AGREEMENT_ID = re.compile(r"0x[0-9a-f]{64}")
STATUS_FIELDS = (
    "agreement_id",
    "service",
    "role",
    "did",
    "workflow_did",
    "consumer",
    "session_id",
    "state",
    "exit_code",
    "started",
    "coordinator_url",
    "coordinator",
    "announcement",
    "settlement",
)


def _unsettled() -> dict[str, Any]:
    return {"compute_tx": None, "release_tx": None, "settled": False, "error": None}


@dataclass
class Execution:
    """One agreement's workload and its outcome; ``state``: running, finished, failed or stopped."""

    agreement_id: str
    service: str
    role: str
    did: str
    workflow_did: str
    consumer: str
    session_id: str
    started: float
    agreement: dict[str, Any]
    workload: dict[str, Any]
    state: str = ExecutionState.RUNNING
    exit_code: int | None = None
    coordinator_url: str | None = None
    coordinator: dict[str, Any] | None = None
    tls_cert: str | None = None
    announcement: dict[str, str] | None = None
    settlement: dict[str, Any] = field(default_factory=_unsettled)
    stopped: bool = False
    last_round: int | None = None
    """A participant's: its session's last round (once the coordinator acknowledged its upload of that
    round, its work is done)."""

    def status(self) -> dict[str, Any]:
        """What the consumer sees (never the workload record: it names the provider's data)."""
        return {name: getattr(self, name) for name in STATUS_FIELDS}

    @property
    def idle(self) -> bool:
        """Nothing left to watch: ended, and settled if finished."""
        ended = self.state != ExecutionState.RUNNING
        return ended and (self.state != ExecutionState.FINISHED or self.settlement["settled"])


class Records:
    """The execution records in ``directory``, and one lock per agreement for whoever changes one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def lock(self, agreement_id: str) -> Iterator[None]:
        """Hold the agreement's lock (a valid agreement id only). The table holds only the locks in use
        (held or awaited), so it is bounded by the concurrent requests, whatever ids callers send."""
        self.path(agreement_id)
        with self._guard:
            lock, users = self._locks.get(agreement_id, (threading.Lock(), 0))
            self._locks[agreement_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users = self._locks[agreement_id][1] - 1
                if users:
                    self._locks[agreement_id] = (lock, users)
                else:
                    del self._locks[agreement_id]

    def locks_in_use(self) -> int:
        return len(self._locks)

    def path(self, agreement_id: str) -> Path:
        if not AGREEMENT_ID.fullmatch(agreement_id):
            raise Refusal(400, f"agreement id: expected 0x + 64 lowercase hex, got {agreement_id!r}")
        return self.directory / f"{agreement_id}.json"

    def get(self, agreement_id: str) -> Execution | None:
        """The recorded execution; a record an older gateway wrote loads too (fields it no longer has are
        dropped, new ones take their defaults)."""
        path = self.path(agreement_id)
        if not path.exists():
            return None
        known = {f.name for f in fields(Execution)}
        return Execution(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})

    def save(self, execution: Execution) -> None:
        write_json(self.path(execution.agreement_id), asdict(execution))

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("0x*.json")) if self.directory.is_dir() else []
