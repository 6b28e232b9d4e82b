"""Waits on the coordinator, through its provider's gateway: its URL, then the rounds until FINISHED.

Deferrable by default (``deferrable=True``): the wait runs as a trigger in the triggerer and holds no
worker slot. With ``deferrable=False`` the same trigger runs inside the task.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import BaseTrigger

from airflow_nevermined_fl.operators.base import SessionOperator, metadata_store
from airflow_nevermined_fl.triggers.coordinator import CoordinatorUrlTrigger, SessionRoundsTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


def run_inline(trigger: BaseTrigger) -> dict[str, Any]:
    """The first event of ``trigger``, run in this process (the non-deferrable mode)."""

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AirflowFailException(f"{type(trigger).__name__} ended without an event")

    return asyncio.run(first())


class _CoordinatorWait(SessionOperator):
    """Defer to ``trigger()`` (or run it inline) and hand its event to ``on_event``."""

    template_fields = ("session", "coordinator")
    ui_color = "#fff2c4"

    def __init__(self, *, coordinator: Any, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coordinator = coordinator
        self.deferrable = deferrable

    def gateway_args(self) -> dict[str, Any]:
        """Where the coordinator's execution is polled: its gateway, agreement and the consumer."""
        return {
            "endpoint": self.coordinator["endpoint"],
            "audience": self.coordinator["provider"],
            "agreement_id": self.coordinator["agreement_id"],
            "consumer_conn_id": self.conf["consumer_conn_id"],
        }

    def trigger(self, context: Context) -> BaseTrigger:
        raise NotImplementedError

    def on_event(self, context: Context, event: dict[str, Any]) -> Any:
        raise NotImplementedError

    def ready_now(self) -> dict[str, Any] | None:
        """The event when the wait is already over (checked once, without waiting); else None."""
        return None

    def execute(self, context: Context) -> Any:
        trigger = self.trigger(context)
        event = self.ready_now()
        if event is not None:
            return self.execute_complete(context, event)
        if self.deferrable:
            timeout = timedelta(seconds=float(self.conf["session_timeout"]) + 60)
            self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)
        return self.execute_complete(context, run_inline(trigger))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if event.get("status") != "success":
            raise AirflowFailException(event.get("message") or f"coordinator wait failed: {event}")
        return self.on_event(context, event)


class WaitForCoordinatorSensor(_CoordinatorWait):
    """Until the coordinator's gateway reports it serving; then its URL and the session's storage are
    published in the coordinator's workflow DDO (where the participants' gateways read them)."""

    template_fields = ("session", "coordinator", "workflow")

    def __init__(
        self, *, workflow: Any, timeout: float = 120.0, probe_seconds: float = 3.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.workflow = workflow
        self.wait_timeout = timeout
        self.probe_seconds = probe_seconds

    def trigger(self, context: Context) -> BaseTrigger:
        return self._trigger(self.wait_timeout)

    def _trigger(self, timeout: float, poll_interval: float = 0.5) -> CoordinatorUrlTrigger:
        return CoordinatorUrlTrigger(**self.gateway_args(), timeout=timeout, poll_interval=poll_interval)

    def ready_now(self) -> dict[str, Any] | None:
        """A short probe (``probe_seconds``): a coordinator is usually serving within a second or two,
        and answering then saves the deferral round trip. Only a probe timeout defers."""
        event = run_inline(self._trigger(self.probe_seconds, poll_interval=0.2))
        return None if event.get("reason") == "timeout" else event

    def on_event(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        execution = event["execution"]
        url, storage = execution["coordinator_url"], execution["storage"]
        did = self.workflow["coordinator_did"]
        metadata_store(self.conf["storage_conn_id"]).annotate(did, coordinatorUrl=url, sessionStorage=storage)
        self.log.info("coordinator up at %s; recorded in %s", url, did)
        return {**self.coordinator, "coordinator_url": url, "storage": storage}


class WaitForRoundsSensor(_CoordinatorWait):
    """Follow the rounds (each finished round logged with its metrics) until the session FINISHED;
    fail fast on a coordinator crash, a stall (``stall_timeout``) or the ``session_timeout``."""

    def trigger(self, context: Context) -> BaseTrigger:
        started = context["dag_run"].start_date
        stall = float(self.conf["stall_timeout"])
        return SessionRoundsTrigger(
            **self.gateway_args(),
            deadline=started.timestamp() + float(self.conf["session_timeout"]),
            stall_timeout=stall,
            unreachable_timeout=min(stall, 10.0),
            poll_interval=0.5,
        )

    def on_event(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        status = event["coordinator"]
        metrics = status.get("rounds_metrics") or []
        final = metrics[-1] if metrics else {}
        self.log.info("session finished: %d rounds, final accuracy %s", len(metrics), final.get("accuracy"))
        return {
            "rounds": len(metrics),
            "rounds_metrics": metrics,
            "final_accuracy": final.get("accuracy"),
            "final_loss": final.get("loss"),
            "model": status.get("model"),
            "refused_uploads": status.get("refused_uploads"),
        }
