"""Local-process backend (embedded default): runtime processes with the FL venv's python.

For development only: a workload runs as the gateway's user, on its host and network, and sees its
files. What rlimits can, they bound (a spec's ``limits``): memory (``RLIMIT_DATA``), processes
(``RLIMIT_NPROC``, counted per user), CPU time (CPUs x wall time), and the wall time (``timeout``).

Each workload gets a directory ``<root>/<run key>/<workload key>/`` (root: ``<state dir>/workloads``
unless given) holding its files (its secret files mode 0600), ``output.log``, ``exit_code`` once it ended,
and ``workload.json`` (pid, process start time, argv, public env; never the secret env or files), so a
teardown in another process, or after a worker crash, finds and stops it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import time
from pathlib import Path

from airflow_nevermined_fl import process
from airflow_nevermined_fl.gateway.launchers.base import (
    Labels,
    Launcher,
    Limits,
    Workload,
    WorkloadSpec,
    WorkloadStatus,
    run_key,
)
from airflow_nevermined_fl.paths import state_dir

LOG_CHUNK = 1 << 20
"""The most bytes of a log one :meth:`LocalLauncher.log_since` reads."""

# Variables a runtime process inherits from the worker; everything else (AIRFLOW_CONN_* ...) stays out.
# PYTHONPATH: where a provider installs the ``module:Class`` models its policy allows.
_INHERITED = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "NVFL_HOME", "PYTHONPATH")


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc; None when it does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], fields[19]


def _proc_start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _group_running(pgid: int) -> bool:
    """Whether a process of process group ``pgid`` still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _write_private(path: Path, content: str) -> None:
    """``content`` into ``path``, readable by its owner only (also when the file existed)."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(content)


def _bounded(argv: list[str], limits: Limits | None) -> str:
    """The shell command running ``argv`` within ``limits`` (dash's ``ulimit`` takes one limit a call)."""
    if limits is None:
        return shlex.join(argv)
    cpu = math.ceil(limits.cpus * limits.wall_time)
    bounds = f"ulimit -t {cpu}; ulimit -d {limits.memory_mb * 1024}; ulimit -p {limits.pids}"
    # --foreground: no process group of its own, so that stop() reaches the workload through the shell's.
    wall = ["timeout", "--foreground", "-k", "10", str(math.ceil(limits.wall_time))]
    return f"{bounds}; {shlex.join(wall + argv)}"


def _runtime_python() -> Path:
    from airflow_nevermined_fl.runtime_env import runtime_python

    return runtime_python()


class LocalLauncher(Launcher):
    """``root``: where workload directories go (default :meth:`root`, e.g. a gateway's own state dir)."""

    backend = "local"

    def __init__(self, conn_id: str | None = None, root: Path | None = None) -> None:
        super().__init__(conn_id)
        self.workloads = root

    @staticmethod
    def root() -> Path:
        """The default workloads directory, ``<state dir>/workloads``."""
        return state_dir() / "workloads"

    def _base(self) -> Path:
        return self.workloads or self.root()

    def _dir(self, labels: Labels) -> Path:
        return self._base() / labels.run_key() / labels.workload_key()

    def _load(self, directory: Path) -> Workload | None:
        record = directory / "workload.json"
        return Workload.from_dict(json.loads(record.read_text())) if record.exists() else None

    def start(self, spec: WorkloadSpec) -> Workload:
        directory = self._dir(spec.labels)
        existing = self._load(directory)
        if existing and self.status(existing).running:
            return existing
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "exit_code").unlink(missing_ok=True)
        for name, content in spec.files.items():
            (directory / name).write_text(content)
        for name, content in spec.secret_files.items():
            _write_private(directory / name, content)
        argv = [str(_runtime_python()), "-u", "-m", spec.module, *spec.argv(str(directory))]
        # The shell records the exit code, so status() knows it from any process.
        command = _bounded(argv, spec.limits)
        wrapper = ["/bin/sh", "-c", f'{command}; echo $? > "$0"', str(directory / "exit_code")]
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.update(spec.env)
        env.update(spec.secret_env)
        pid = process.start(wrapper, directory / "output.log", env=env, cwd=directory)
        workload = Workload(
            backend=self.backend,
            id=str(pid),
            labels=spec.labels,
            host="127.0.0.1",
            started=time.time(),
            endpoints={name: f"127.0.0.1:{port}" for name, port in spec.ports.items()},
            details={
                "pid": pid,
                "proc_start": _proc_start_time(pid),
                "dir": str(directory),
                "log": str(directory / "output.log"),
                "argv": argv,
                "env": spec.env,
            },
        )
        (directory / "workload.json").write_text(json.dumps(workload.to_dict(), indent=2))
        return workload

    def _alive(self, workload: Workload) -> bool:
        """Running: the pid exists, is not a zombie (its parent may be another process) and is ours."""
        stat = _proc_stat(int(workload.details["pid"]))
        start = workload.details.get("proc_start")
        return stat is not None and stat[0] != "Z" and (start is None or stat[1] == start)

    def status(self, workload: Workload) -> WorkloadStatus:
        if self._alive(workload):
            return WorkloadStatus(running=True)
        exit_file = Path(workload.details["dir"]) / "exit_code"
        code = exit_file.read_text().strip() if exit_file.exists() else ""
        return WorkloadStatus(running=False, exit_code=int(code) if code.lstrip("-").isdigit() else None)

    def stop(self, workload: Workload, timeout: float = 10.0) -> None:
        """SIGTERM the workload's process group, SIGKILL after ``timeout``; returns once none of the
        group runs (the runtime process may outlive the wrapper shell while it shuts down)."""
        pid = int(workload.details["pid"])
        if not self._alive(workload):
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + wait
            while (running := self._alive(workload) or _group_running(pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not running:
                return

    def logs(self, workload: Workload, tail: int = 100) -> str:
        log = Path(workload.details["log"])
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-tail:])

    def log_since(self, workload: Workload, offset: int, final: bool = False) -> tuple[str, int]:
        """At most :data:`LOG_CHUNK` bytes of ``output.log`` from byte ``offset``, cut after their last
        newline unless they end the log of a ``final`` workload (or hold a line longer than the chunk)."""
        try:
            with Path(workload.details["log"]).open("rb") as log:
                log.seek(offset)
                data = log.read(LOG_CHUNK)
        except FileNotFoundError:
            return "", offset
        whole = final and len(data) < LOG_CHUNK or len(data) == LOG_CHUNK and b"\n" not in data
        end = len(data) if whole else data.rfind(b"\n") + 1
        return data[:end].decode(errors="replace"), offset + end

    def find(self, dag_id: str, run_id: str) -> list[Workload]:
        base = self._base() / run_key(dag_id, run_id)
        if not base.is_dir():
            return []
        found = (self._load(d) for d in sorted(base.iterdir()) if d.is_dir())
        return [w for w in found if w and w.labels.dag_id == dag_id and w.labels.run_id == run_id]

    def free_port(self) -> int:
        return process.free_port()
