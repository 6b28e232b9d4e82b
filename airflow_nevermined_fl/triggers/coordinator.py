"""Triggers polling the coordinator's status endpoint (``GET /health``, ``GET /status``)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_nevermined_fl.launchers import Launcher


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    """The JSON answer of ``url``, or None when unreachable / not a 200 JSON object."""
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@functools.lru_cache(maxsize=32)
def _launcher(backend: str, conn_id: str | None) -> Launcher:
    from airflow_nevermined_fl.launchers import get_launcher

    return get_launcher(backend, conn_id)


async def workload_exit(workload: dict[str, Any] | None, backend_conn_id: str | None) -> str | None:
    """Why the coordinator workload is gone ("exited with code N"), or None while it runs (or unknown)."""
    if not workload:
        return None
    from airflow_nevermined_fl.launchers import Workload

    # Launchers may read an Airflow connection when built: never on the triggerer's event loop.
    launcher = await asyncio.to_thread(_launcher, workload["backend"], backend_conn_id)
    status = await asyncio.to_thread(launcher.status, Workload.from_dict(workload))
    return None if status.running else f"coordinator process exited with code {status.exit_code}"


def format_round(metrics: dict[str, Any]) -> str:
    parts = [f"round {metrics.get('round')} finished"]
    for key in ("loss", "accuracy", "n_samples", "duration"):
        if metrics.get(key) is not None:
            value = metrics[key]
            parts.append(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


class _CoordinatorTrigger(BaseTrigger):
    """Polls the coordinator at ``status_url``; ``workload`` (a launcher ``Workload`` dict) tells when its
    process is gone. Subclasses list their own constructor arguments in ``_fields``."""

    _fields: tuple[str, ...] = ()

    def __init__(
        self,
        status_url: str,
        poll_interval: float,
        workload: dict[str, Any] | None,
        backend_conn_id: str | None,
    ) -> None:
        super().__init__()
        self.status_url = status_url.rstrip("/")
        self.poll_interval = poll_interval
        self.workload = workload
        self.backend_conn_id = backend_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        fields = ("status_url", *self._fields, "poll_interval", "workload", "backend_conn_id")
        return f"{type(self).__module__}.{type(self).__qualname__}", {f: getattr(self, f) for f in fields}

    async def _gone(self) -> str | None:
        return await workload_exit(self.workload, self.backend_conn_id)


class CoordinatorUrlTrigger(_CoordinatorTrigger):
    """Fire once ``<status_url>/health`` answers 200 and the coordinator has not failed.

    ``workload`` (a launcher ``Workload`` dict): fail at once when that process is gone.
    """

    _fields = ("timeout",)

    def __init__(
        self,
        status_url: str,
        timeout: float,
        poll_interval: float = 0.5,
        workload: dict[str, Any] | None = None,
        backend_conn_id: str | None = None,
    ) -> None:
        super().__init__(status_url, poll_interval, workload, backend_conn_id)
        self.timeout = timeout

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = time.monotonic() + self.timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                health = await _get_json(client, f"{self.status_url}/health")
                if health is not None:
                    status = await _get_json(client, f"{self.status_url}/status") or {}
                    if status.get("state") == "FAILED":
                        yield TriggerEvent(
                            {"status": "error", "message": f"coordinator failed: {status.get('reason')}"}
                        )
                        return
                    self.log.info("coordinator healthy at %s (%s)", self.status_url, status.get("state"))
                    yield TriggerEvent({"status": "success", "status_url": self.status_url})
                    return
                gone = await self._gone()
                if gone:
                    yield TriggerEvent({"status": "error", "message": f"{gone} before serving"})
                    return
                await asyncio.sleep(self.poll_interval)
        message = f"coordinator at {self.status_url} not healthy within {self.timeout}s"
        yield TriggerEvent({"status": "error", "message": message, "reason": "timeout"})


class SessionRoundsTrigger(_CoordinatorTrigger):
    """Follow the session round by round until FINISHED; fail fast on crash, stall or timeout.

    Logs each finished round with its metrics. ``deadline`` is the session's absolute end (epoch s);
    ``unreachable_timeout``: how long the status endpoint may not answer before the coordinator counts
    as crashed; ``stall_timeout``: how long without progress (a round finishing, a state change).
    """

    _fields = ("deadline", "stall_timeout", "unreachable_timeout")

    def __init__(
        self,
        status_url: str,
        deadline: float,
        stall_timeout: float,
        unreachable_timeout: float,
        poll_interval: float = 1.0,
        workload: dict[str, Any] | None = None,
        backend_conn_id: str | None = None,
    ) -> None:
        super().__init__(status_url, poll_interval, workload, backend_conn_id)
        self.deadline = deadline
        self.stall_timeout = stall_timeout
        self.unreachable_timeout = unreachable_timeout

    def _error(self, message: str, status: dict[str, Any] | None) -> TriggerEvent:
        self.log.error(message)
        return TriggerEvent({"status": "error", "message": message, "coordinator": status})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        logged: set[Any] = set()
        last_seen = last_progress = time.monotonic()
        progress_mark: tuple[Any, ...] | None = None
        status: dict[str, Any] | None = None
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                now = time.monotonic()
                if time.time() > self.deadline:
                    yield self._error("session timeout: the session did not finish in time", status)
                    return
                current = await _get_json(client, f"{self.status_url}/status")
                if current is None:
                    gone = await self._gone()
                    if gone:
                        yield self._error(f"{gone} during the session (crashed or killed)", status)
                        return
                    if now - last_seen > self.unreachable_timeout:
                        yield self._error(
                            f"coordinator unreachable at {self.status_url} for {now - last_seen:.1f}s "
                            "(crashed or killed)",
                            status,
                        )
                        return
                else:
                    status, last_seen = current, now
                    for metrics in status.get("rounds_metrics") or []:
                        if metrics.get("round") not in logged:
                            logged.add(metrics.get("round"))
                            self.log.info(format_round(metrics))
                    mark = (status.get("state"), status.get("round"), len(logged))
                    if mark != progress_mark:
                        progress_mark, last_progress = mark, now
                    if status.get("state") == "FINISHED":
                        yield TriggerEvent({"status": "success", "coordinator": status})
                        return
                    if status.get("state") == "FAILED":
                        yield self._error(f"coordinator failed: {status.get('reason')}", status)
                        return
                if now - last_progress > self.stall_timeout:
                    yield self._error(f"session stalled: no progress for {self.stall_timeout}s", status)
                    return
                await asyncio.sleep(self.poll_interval)
