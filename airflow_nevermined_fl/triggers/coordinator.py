"""Waiting on the coordinator through its provider's gateway (``GET status/{agreement_id}``, signed as the
consumer): the coordinator's URL once it serves, then the rounds until the session FINISHED.

The decisions are made once, here, one poll's answer at a time: ``serving_event`` (the URL) and
``RoundsWatch`` (the rounds) turn an answer into the event that ends the wait, or None while it goes on.
The triggers below loop over them in the triggerer; the sensors (``sensors/coordinator.py``) call them
once per poke. A trigger holds no secret: it reads the consumer's key from its Airflow connection when it
runs (in the triggerer), and signs each poll with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_nevermined_fl.protocol.client import GatewayClient, GatewayError
from airflow_nevermined_fl.runtime.workload import UNSUCCESSFUL, SessionState

if TYPE_CHECKING:
    from logging import Logger

LOG_DRAIN = 30.0
"""Longest wait (s) at a session's end for the workloads' log streams to send their last lines."""

# One poll's answer: the execution's status; a refusal (an HTTP error: final); None when the gateway did
# not answer (unreachable: maybe a passing hiccup).
Answer = dict[str, Any] | GatewayError | None


def answer_of(err: GatewayError) -> GatewayError | None:
    """A failed poll as an ``Answer``: a refusal counts, an unreachable gateway is no answer (None)."""
    return err if err.status_code is not None else None


def poll(client: GatewayClient, agreement_id: str) -> Answer:
    """One signed status poll (blocking): the sensors' check."""
    try:
        return client.status(agreement_id)
    except GatewayError as err:
        return answer_of(err)


def format_round(metrics: dict[str, Any]) -> str:
    parts = [f"round {metrics.get('round')} finished"]
    for key in ("loss", "accuracy", "n_samples", "duration", "global_accuracy"):
        if metrics.get(key) is not None:
            value = metrics[key]
            parts.append(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def ended(status: dict[str, Any]) -> str | None:
    """Why the coordinator's execution is over without success, or None while it runs (or finished)."""
    coordinator = status.get("coordinator") or {}
    if coordinator.get("state") == SessionState.FAILED:
        return f"coordinator failed: {coordinator.get('reason')}"
    if status.get("state") in UNSUCCESSFUL:
        code = status.get("exit_code")
        return (
            f"coordinator process exited with code {code}"
            if code is not None
            else f"coordinator {status['state']}"
        )
    return None


def serving_event(answer: Answer) -> dict[str, Any] | None:
    """The URL wait's event for one answer: success once the gateway reports the coordinator's URL and
    signed announcement (it answers its health check), an error once its execution ended or the gateway
    refused; else None."""
    if isinstance(answer, GatewayError):
        return {"status": "error", "message": str(answer)}
    gone = ended(answer) if answer else None
    if gone:
        return {"status": "error", "message": f"{gone} before serving"}
    if answer and answer.get("coordinator_url") and answer.get("announcement"):
        return {"status": "success", "execution": answer}
    return None


def not_serving_event(agreement_id: str, timeout: float) -> dict[str, Any]:
    message = f"coordinator of agreement {agreement_id} not serving within {timeout}s"
    return {"status": "error", "message": message, "reason": "timeout"}


class RoundsWatch:
    """The rounds wait's decisions, one answer at a time (``see``): logs each round as it finishes, and
    returns the event that ends the wait (success: FINISHED) or None while it goes on. Fails on a FAILED
    coordinator, an exited one (its exit code), a gateway or coordinator that does not answer for
    ``unreachable_timeout`` s, no progress (a round finishing, a state change) for ``stall_timeout`` s, or
    past ``deadline`` (the session's end, epoch s).

    Its clock is wall time so that ``state()`` (JSON) carries the watch to another process: a sensor in
    reschedule mode pokes from a new process each time.
    """

    def __init__(
        self,
        endpoint: str,
        deadline: float,
        stall_timeout: float,
        unreachable_timeout: float,
        log: Logger,
        state: dict[str, Any] | None = None,
    ) -> None:
        now, state = time.time(), state or {}
        self.endpoint = endpoint
        self.deadline = deadline
        self.stall_timeout = stall_timeout
        self.unreachable_timeout = unreachable_timeout
        self.log = log
        self.logged: set[Any] = set(state.get("logged", []))
        self.last_seen: float = state.get("last_seen", now)
        self.last_progress: float = state.get("last_progress", now)
        self.progress_mark: list[Any] | None = state.get("progress_mark")
        self.status: dict[str, Any] | None = None  # the coordinator's last status

    def state(self) -> dict[str, Any]:
        return {
            "logged": sorted(self.logged, key=str),
            "last_seen": self.last_seen,
            "last_progress": self.last_progress,
            "progress_mark": self.progress_mark,
        }

    def _error(self, message: str) -> dict[str, Any]:
        self.log.error(message)
        return {"status": "error", "message": message, "coordinator": self.status}

    def see(self, answer: Answer) -> dict[str, Any] | None:
        now = time.time()
        if now > self.deadline:
            return self._error("session timeout: the session did not finish in time")
        if isinstance(answer, GatewayError):
            return self._error(str(answer))
        gone = ended(answer) if answer else None
        if gone:
            return self._error(f"{gone} during the session (crashed or killed)")
        current = (answer or {}).get("coordinator")
        if current is None:
            if now - self.last_seen > self.unreachable_timeout:
                return self._error(
                    f"coordinator unreachable through {self.endpoint} for {now - self.last_seen:.1f}s "
                    "(crashed or killed)"
                )
        else:
            self.status, self.last_seen = current, now
            for metrics in current.get("rounds_metrics") or []:
                if metrics.get("round") not in self.logged:
                    self.logged.add(metrics.get("round"))
                    self.log.info(format_round(metrics))
            mark = [current.get("state"), current.get("round"), len(self.logged)]
            if mark != self.progress_mark:
                self.progress_mark, self.last_progress = mark, now
            if current.get("state") == SessionState.FINISHED:
                return {"status": "success", "coordinator": current}
        if now - self.last_progress > self.stall_timeout:
            return self._error(f"session stalled: no progress for {self.stall_timeout}s")
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

    async def _client(self, provider: dict[str, Any] | None = None) -> GatewayClient:
        """A client of this trigger's gateway, or of ``provider``'s (``endpoint``, ``provider`` address)."""
        from asgiref.sync import sync_to_async

        from airflow_nevermined_fl.operators.base import gateway, nevermined

        provider = provider or {"endpoint": self.endpoint, "provider": self.audience}
        # Reading the connection may block: never on the triggerer's event loop.
        return await sync_to_async(gateway)(nevermined(self.consumer_conn_id), provider)

    async def _poll(self, client: GatewayClient) -> Answer:
        try:
            return await client.astatus(self.agreement_id)
        except GatewayError as err:
            return answer_of(err)


class CoordinatorUrlTrigger(_GatewayTrigger):
    """Fire once the gateway reports the coordinator's URL (``serving_event``), or after ``timeout`` s."""

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
            event = serving_event(await self._poll(client))
            if event:
                if event["status"] == "success":
                    self.log.info("coordinator serving at %s", event["execution"]["coordinator_url"])
                yield TriggerEvent(event)
                return
            await asyncio.sleep(self.poll_interval)
        yield TriggerEvent(not_serving_event(self.agreement_id, self.timeout))


class SessionRoundsTrigger(_GatewayTrigger):
    """Follow the session round by round until FINISHED; fail fast on crash, stall or timeout
    (``RoundsWatch``: ``deadline`` epoch s, ``stall_timeout``, ``unreachable_timeout``). Meanwhile the
    log lines of ``workloads`` (each ``name``, ``endpoint``, ``provider``, ``agreement_id``: the session's
    executions) stream into this task's log as their gateways send them, each labelled ``[name]``
    (the gateways redact their providers' secrets)."""

    _fields = ("deadline", "stall_timeout", "unreachable_timeout", "workloads")

    def __init__(
        self,
        endpoint: str,
        audience: str,
        agreement_id: str,
        consumer_conn_id: str,
        deadline: float,
        stall_timeout: float,
        unreachable_timeout: float,
        workloads: list[dict[str, Any]] | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(endpoint, audience, agreement_id, consumer_conn_id, poll_interval)
        self.deadline = deadline
        self.stall_timeout = stall_timeout
        self.unreachable_timeout = unreachable_timeout
        self.workloads = workloads or []

    async def _stream_logs(self, workload: dict[str, Any]) -> None:
        """Log ``workload``'s lines until it ends or its gateway's stream breaks."""
        name = workload["name"]
        try:
            client = await self._client(workload)
            async for line in client.afollow_logs(workload["agreement_id"]):
                self.log.info("[%s] %s", name, line)
        except Exception as err:  # noqa: BLE001 - the session's wait goes on without this stream
            self.log.warning("[%s] log stream ended: %s: %s", name, type(err).__name__, err)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        limits = (self.deadline, self.stall_timeout, self.unreachable_timeout)
        watch = RoundsWatch(self.endpoint, *limits, log=self.log)
        streams = [asyncio.create_task(self._stream_logs(w)) for w in self.workloads]
        try:
            client = await self._client()
            while (event := watch.see(await self._poll(client))) is None:
                await asyncio.sleep(self.poll_interval)
            # The session is over before its streams may have caught up: a participant's stream ends by
            # itself once its workload ended and its gateway sent the rest, so its lines all reach the task
            # log. The coordinator keeps serving its final status for a while: its stream is not awaited.
            ending = [
                s
                for s, w in zip(streams, self.workloads, strict=True)
                if w["agreement_id"] != self.agreement_id
            ]
            if ending:
                drain = LOG_DRAIN if event["status"] == "success" else LOG_DRAIN / 6
                await asyncio.wait(ending, timeout=drain)
        finally:
            for stream in streams:
                stream.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
        yield TriggerEvent(event)
