"""The launcher interface: start/stop/status/logs of a coordinator or participant workload.

Workloads are identified by labels (dag id, run id, task id, role, name) so that a teardown task in
another worker process can find and stop everything one run started.
"""

from __future__ import annotations

import abc
import hashlib
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from airflow_nevermined_fl.runtime.config import SessionConfig
from airflow_nevermined_fl.runtime.workload import Role, coordinator_args, participant_args

__all__ = ["Labels", "Launcher", "Limits", "Role", "Workload", "WorkloadSpec", "WorkloadStatus", "run_key"]

WORKDIR, DATASET = "{workdir}", "{dataset}"
CONFIG_FILE = "session.json"
FOLLOW_LINES = 1_000_000
"""The most lines :meth:`Launcher.log_since` re-reads on a backend without a seekable log."""
PEER_CERT_FILE, SEAT_FILE, DATA_URL_FILE = "coordinator.crt", "seat", "data-url"


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


@dataclass(frozen=True)
class Limits:
    """What one workload may use (the service's policy): CPUs, memory (MiB), processes, wall time (s)."""

    cpus: float
    memory_mb: int
    pids: int
    wall_time: float


@dataclass
class WorkloadSpec:
    """What to run: ``python -m <module> <args>`` of the FL runtime.

    ``files`` are written into the workload's directory before start; ``{workdir}`` in ``args`` is
    replaced by that directory. ``ports`` names the ports the workload listens on (chosen with
    ``Launcher.free_port``); the started workload reports them as reachable ``endpoints``.
    ``secret_env`` reaches the process only; it is never recorded or logged. ``secret_files`` are written
    next to ``files``, readable by the workload only, never recorded, logged or put in a public object.
    ``dataset`` is the data the workload reads (a participant's): an ``s3://`` URL, or a local path as the
    backend's workloads see it, which the backend makes visible (Kubernetes: the connection's dataset
    volume; Docker: one of the connection's mounts); ``{dataset}`` in ``args`` is replaced by it.
    ``image`` (``name:tag``, from the workflow DDO's container) is what container backends run; the local
    backend ignores it. ``limits``: the resources it may use, applied by each backend's sandbox.
    """

    labels: Labels
    module: str
    args: list[str]
    ports: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    image: str | None = None
    dataset: str | None = field(default=None, repr=False)
    secret_files: dict[str, str] = field(default_factory=dict, repr=False)
    limits: Limits | None = None

    def argv(self, workdir: str) -> list[str]:
        """``args`` with ``{workdir}`` (the directory as the workload sees it) and ``{dataset}`` filled in."""
        args = [a.replace(WORKDIR, workdir) for a in self.args]
        if any(DATASET in a for a in args):
            if self.dataset is None:
                raise ValueError(f"WorkloadSpec.args: {DATASET} without a dataset")
            args = [a.replace(DATASET, self.dataset) for a in args]
        return args

    @property
    def local_dataset(self) -> str | None:
        """The dataset when it is a path the workload reads from its own file system (not ``s3://``)."""
        return self.dataset if self.dataset and "://" not in self.dataset else None

    @classmethod
    def coordinator(
        cls,
        launcher: Launcher,
        labels: Labels,
        config: SessionConfig,
        module: str,
        files: dict[str, str] | None = None,
        **fields: Any,
    ) -> WorkloadSpec:
        """A coordinator of ``config`` on two ports of ``launcher`` (its ``session.json`` rendered with
        them, next to ``files``); ``fields``: the other fields (image, secret_files)."""
        ports = {"grpc": launcher.free_port(), "status": launcher.free_port()}
        host = launcher.bind_host
        config = replace(
            config, grpc_host=host, grpc_port=ports["grpc"], status_host=host, status_port=ports["status"]
        )
        return cls(
            labels=labels,
            module=module,
            args=coordinator_args(f"{WORKDIR}/{CONFIG_FILE}", f"{WORKDIR}/status-port"),
            ports=ports,
            files={**(files or {}), CONFIG_FILE: config.to_json()},
            **fields,
        )

    @classmethod
    def participant(
        cls,
        labels: Labels,
        module: str,
        coordinator: str,
        cert_pem: str,
        ticket: str,
        dataset: str,
        options: dict[str, Any] | None = None,
        extra_args: list[str] | None = None,
        **fields: Any,
    ) -> WorkloadSpec:
        """A participant joining ``coordinator`` (gRPC host:port, serving the certificate ``cert_pem``)
        with the seat ``ticket``, on ``dataset``: a local path, or a granted ``http(s)://`` URL (handed
        over as a secret file); ``options``: :func:`~..runtime.workload.participant_args`'s,
        ``extra_args`` appended as given; ``fields``: the other fields (image)."""
        secret_files = {SEAT_FILE: ticket}
        if "://" in dataset:
            secret_files[DATA_URL_FILE] = dataset
            data = {"data_url_file": f"{WORKDIR}/{DATA_URL_FILE}"}
        else:
            data = {"data": DATASET}
        args = participant_args(
            coordinator, f"{WORKDIR}/{PEER_CERT_FILE}", f"{WORKDIR}/{SEAT_FILE}", **data, **(options or {})
        )
        return cls(
            labels=labels,
            module=module,
            args=args + (extra_args or []),
            files={PEER_CERT_FILE: cert_pem},
            secret_files=secret_files,
            dataset=None if "://" in dataset else dataset,
            **fields,
        )


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

    def log_since(self, workload: Workload, offset: int, final: bool = False) -> tuple[str, int]:
        """The log written after position ``offset`` (0: the start; then what the last call returned, opaque
        to the caller), in whole lines unless ``final`` (the workload ended), and the next position. This
        default counts lines of the backend's tail of :data:`FOLLOW_LINES`; local reads on from a byte
        offset, Docker from the engine's timestamps."""
        lines = self.logs(workload, FOLLOW_LINES).splitlines()
        return "".join(line + "\n" for line in lines[offset:]), max(offset, len(lines))

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
