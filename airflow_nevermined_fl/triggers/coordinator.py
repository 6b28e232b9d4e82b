"""Triggers polling the coordinator provider's gateway (``GET status/{agreement_id}``, signed as the
consumer): the coordinator's URL once it serves, then the rounds until the session FINISHED.

The trigger holds no secret: it reads the consumer's key from its Airflow connection when it runs (in
the triggerer), and signs each poll with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_nevermined_fl.gateway.client import GatewayClient, GatewayError


def format_round(metrics: dict[str, Any]) -> str:
    parts = [f"round {metrics.get('round')} finished"]
    for key in ("loss", "accuracy", "n_samples", "duration"):
        if metrics.get(key) is not None:
            value = metrics[key]
            parts.append(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def ended(status: dict[str, Any]) -> str | None:
    """Why the coordinator's execution is over without success, or None while it runs (or finished)."""
    coordinator = status.get("coordinator") or {}
    if coordinator.get("state") == "FAILED":
        return f"coordinator failed: {coordinator.get('reason')}"
    if status.get("state") in ("failed", "stopped"):
        code = status.get("exit_code")
        return (
            f"coordinator process exited with code {code}"
            if code is not None
            else f"coordinator {status['state']}"
        )
    return None


class _GatewayTrigger(BaseTrigger):
    """Polls the execution of ``agreement_id`` at the gateway ``endpoint`` (provider address
    ``audience``), signing as the consumer of ``consumer_conn_id``. Subclasses list their own
    constructor arguments in ``_fields``."""

    _fields: tuple[str, ...] = ()

    def __init__(
        self, endpoint: str, audience: str, agreement_id: str, consumer_conn_id: str, poll_interval: float
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.audience = audience
        self.agreement_id = agreement_id
        self.consumer_conn_id = consumer_conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        fields = ("endpoint", "audience", "agreement_id", "consumer_conn_id", *self._fields, "poll_interval")
        return f"{type(self).__module__}.{type(self).__qualname__}", {f: getattr(self, f) for f in fields}

    async def _client(self) -> GatewayClient:
        from asgiref.sync import sync_to_async

        from airflow_nevermined_fl.hooks.nevermined import NeverminedHook

        hook = NeverminedHook(self.consumer_conn_id)
        # Reading the connection may block: never on the triggerer's event loop.
        account = await sync_to_async(hook.account)()
        ca_file = await sync_to_async(lambda: hook.gateway_ca_file)()
        return GatewayClient(
            self.endpoint, self.audience, address=account.address, sign=hook.sign_message, ca_file=ca_file
        )

    async def _status(self, client: GatewayClient) -> dict[str, Any] | None:
        """The execution's status, or None while the gateway does not answer (a refusal is final)."""
        try:
            return await client.astatus(self.agreement_id)
        except GatewayError as err:
            if err.status_code is not None:
                raise
            return None


class CoordinatorUrlTrigger(_GatewayTrigger):
    """Fire once the gateway reports the coordinator's URL (it answers its health check); fail at once
    when the coordinator's execution ended."""

    _fields = ("timeout",)

    def __init__(
        self,
        endpoint: str,
        audience: str,
        agreement_id: str,
        consumer_conn_id: str,
        timeout: float,
        poll_interval: float = 0.5,
    ) -> None:
        super().__init__(endpoint, audience, agreement_id, consumer_conn_id, poll_interval)
        self.timeout = timeout

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = time.monotonic() + self.timeout
        client = await self._client()
        while time.monotonic() < deadline:
            try:
                status = await self._status(client)
            except GatewayError as err:
                yield TriggerEvent({"status": "error", "message": str(err)})
                return
            if status is not None:
                gone = ended(status)
                if gone:
                    yield TriggerEvent({"status": "error", "message": f"{gone} before serving"})
                    return
                if status.get("coordinator_url"):
                    self.log.info("coordinator serving at %s", status["coordinator_url"])
                    yield TriggerEvent({"status": "success", "execution": status})
                    return
            await asyncio.sleep(self.poll_interval)
        message = f"coordinator of agreement {self.agreement_id} not serving within {self.timeout}s"
        yield TriggerEvent({"status": "error", "message": message, "reason": "timeout"})


class SessionRoundsTrigger(_GatewayTrigger):
    """Follow the session round by round until FINISHED; fail fast on crash, stall or timeout.

    Logs each finished round with its metrics. ``deadline`` is the session's absolute end (epoch s);
    ``unreachable_timeout``: how long the gateway or the coordinator may not answer before the
    coordinator counts as crashed; ``stall_timeout``: how long without progress (a round finishing, a
    state change).
    """

    _fields = ("deadline", "stall_timeout", "unreachable_timeout")

    def __init__(
        self,
        endpoint: str,
        audience: str,
        agreement_id: str,
        consumer_conn_id: str,
        deadline: float,
        stall_timeout: float,
        unreachable_timeout: float,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(endpoint, audience, agreement_id, consumer_conn_id, poll_interval)
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
        client = await self._client()
        while True:
            now = time.monotonic()
            if time.time() > self.deadline:
                yield self._error("session timeout: the session did not finish in time", status)
                return
            try:
                execution = await self._status(client)
            except GatewayError as err:
                yield self._error(str(err), status)
                return
            gone = ended(execution) if execution else None
            if gone:
                yield self._error(f"{gone} during the session (crashed or killed)", status)
                return
            current = (execution or {}).get("coordinator")
            if current is None:
                if now - last_seen > self.unreachable_timeout:
                    yield self._error(
                        f"coordinator unreachable through {self.endpoint} for {now - last_seen:.1f}s "
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
            if now - last_progress > self.stall_timeout:
                yield self._error(f"session stalled: no progress for {self.stall_timeout}s", status)
                return
            await asyncio.sleep(self.poll_interval)
