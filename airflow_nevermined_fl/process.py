"""Detached service processes: start with a pid file and log, stop by pid, wait for a port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float, pid: int | None = None, what: str = "service") -> None:
    """Block until ``host:port`` accepts connections; fail early if ``pid`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if pid is not None and not pid_alive(pid):
            raise RuntimeError(f"{what} (pid {pid}) exited before listening on {host}:{port}")
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


def _exists(kill: Callable[[int, int], None], target: int) -> bool:
    """Whether signal 0 reaches ``target`` by ``kill`` (``os.kill``: a process; ``os.killpg``: a group)."""
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int) -> bool:
    if not _exists(os.kill, pid):
        return False
    # A zombie child of ours counts as gone.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def start(
    argv: Sequence[str],
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in its own session (survives the caller), output appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def stop(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL after ``timeout``; no error if already gone.
    Returns once every process of the group is gone, not only its leader (an api-server's workers)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid) and not group_alive(pid):  # the leader first: reaps it if our zombie
                return
            time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` exists."""
    return _exists(os.killpg, pgid)


@contextmanager
def stopped_on_error(pid: int) -> Iterator[None]:
    """Stop ``pid`` when the block raises: a service that failed to come up is not left running."""
    try:
        yield
    except BaseException:
        stop(pid)
        raise


def service_alive(state: Mapping[str, Any], host: str) -> bool:
    """Whether the service of a devstack component state (``pid``, ``port``) runs and listens."""
    return pid_alive(int(state["pid"])) and port_open(host, int(state["port"]))


def stop_service(state: Mapping[str, Any]) -> None:
    stop(int(state["pid"]))


def running_service(previous: dict[str, Any] | None, host: str) -> dict[str, Any] | None:
    """``previous`` (a component state) when its service still runs; a dead one is stopped, then None."""
    if previous is None:
        return None
    if service_alive(previous, host):
        return previous
    stop_service(previous)
    return None
