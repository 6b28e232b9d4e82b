"""The launcher interface: start/stop/status/logs of a coordinator or participant workload.

Workloads are identified by labels (dag id, run id, task id, role, name) so that a teardown task in
another worker process can find and stop everything one run started.
"""

from __future__ import annotations

import abc
import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["coordinator", "participant"]


@dataclass(frozen=True)
class Labels:
    dag_id: str
    run_id: str
    task_id: str
    role: Role
    name: str

    def run_key(self) -> str:
        """Stable id of the run, safe in file names, container names and Kubernetes labels."""
        return run_key(self.dag_id, self.run_id)

    def workload_key(self) -> str:
        return f"{self.role}-{re.sub(r'[^a-z0-9-]', '-', self.name.lower())}"[:40]


def run_key(dag_id: str, run_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", dag_id.lower()).strip("-")[:24]
    return f"{slug}-{hashlib.sha256(f'{dag_id}/{run_id}'.encode()).hexdigest()[:12]}"


@dataclass
class WorkloadSpec:
    """What to run: ``python -m <module> <args>`` of the FL runtime.

    ``files`` are written into the workload's directory before start; ``{workdir}`` in ``args`` is
    replaced by that directory. ``ports`` names the ports the workload listens on (chosen with
    ``Launcher.free_port``); the started workload reports them as reachable ``endpoints``.
    ``secret_env`` reaches the process only; it is never recorded or logged. ``image`` (``name:tag``,
    from the workflow DDO's container) is what container backends run; the local backend ignores it.
    """

    labels: Labels
    module: str
    args: list[str]
    ports: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    image: str | None = None


@dataclass
class Workload:
    """A started workload; JSON-serializable (travels through XCom)."""

    backend: str
    id: str
    labels: Labels
    host: str
    started: float
    endpoints: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        return cls(**{**data, "labels": Labels(**data["labels"])})


@dataclass
class WorkloadStatus:
    running: bool
    exit_code: int | None = None


class Launcher(abc.ABC):
    """One execution backend. Implementations must make ``start`` idempotent per labels."""

    backend: str
    # Address a workload listens on (configs rendered for it use this); container backends: all interfaces.
    bind_host: str = "127.0.0.1"

    def __init__(self, conn_id: str | None = None) -> None:
        self.conn_id = conn_id

    @abc.abstractmethod
    def start(self, spec: WorkloadSpec) -> Workload:
        """Start without blocking; return the running workload if these labels already run."""

    @abc.abstractmethod
    def status(self, workload: Workload) -> WorkloadStatus: ...

    @abc.abstractmethod
    def stop(self, workload: Workload) -> None:
        """Stop the workload and everything it spawned; no error if already gone."""

    @abc.abstractmethod
    def logs(self, workload: Workload, tail: int = 100) -> str: ...

    @abc.abstractmethod
    def find(self, dag_id: str, run_id: str) -> list[Workload]:
        """Every workload this backend started for the run (running or not)."""

    @abc.abstractmethod
    def free_port(self) -> int:
        """A port a new workload of this backend can listen on."""

    def stop_run(self, dag_id: str, run_id: str) -> list[Workload]:
        """Stop everything started for the run; return what was found."""
        found = self.find(dag_id, run_id)
        for workload in found:
            self.stop(workload)
        return found
