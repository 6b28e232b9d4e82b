"""Sensors on the coordinator, through its provider's gateway: its URL, then the rounds until FINISHED.

Each ``poke`` is one signed ``status`` poll of the coordinator provider's gateway, judged by the same
decisions as the triggers (``serving_event``, ``RoundsWatch`` in ``triggers/coordinator.py``). As any
``BaseSensorOperator``: ``mode="poke"`` waits ``poke_interval`` between pokes in the worker slot,
``mode="reschedule"`` frees the slot between pokes; ``deferrable=True`` checks once, then hands the wait
to the trigger in the triggerer (no worker slot) and resumes in ``execute_complete``. ``deferrable``
defaults to Airflow's ``[operators] default_deferrable``; ``timeout`` to the session's
``session_timeout``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from airflow_nevermined_fl.operators.base import SessionOperator, as_list, gateway, metadata_store
from airflow_nevermined_fl.triggers.coordinator import (
    Answer,
    CoordinatorUrlTrigger,
    RoundsWatch,
    SessionRoundsTrigger,
    poll,
    serving_event,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_nevermined_fl.protocol.client import GatewayClient

# The deferral's time-out beyond the sensor's ``timeout``: the trigger reports its own time-out first.
DEFERRAL_GRACE = 60.0


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable`` (False when unset), read when a sensor is built."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


class _CoordinatorSensor(SessionOperator, BaseSensorOperator):
    """Pokes the coordinator's execution at its provider's gateway (``coordinator``: the execution the
    gateway started, with ``endpoint``, ``provider`` and ``agreement_id``), signing as the session's
    consumer. ``judge`` turns a poll's answer into the event that ends the wait (or None);
    ``on_event`` turns a success into the task's XCom.

    :param deferrable: defer to ``trigger()`` after a first check (None: ``[operators] default_deferrable``)
    :param timeout: seconds before the sensor fails (None: the session's ``session_timeout``)
    :param probe_seconds: when deferrable, keep poking this long before deferring (0: one poke)
    """

    template_fields = ("session", "coordinator")
    ui_color = "#fff2c4"

    def __init__(
        self,
        *,
        coordinator: Any,
        deferrable: bool | None = None,
        timeout: timedelta | float | None = None,
        poke_interval: timedelta | float = 0.5,
        probe_seconds: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(timeout=timeout, poke_interval=poke_interval, **kwargs)
        self.coordinator = coordinator
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.probe_seconds = probe_seconds
        self.timeout_from_session = timeout is None

    # -- what each sensor decides ---------------------------------------------------------------------------

    def judge(self, context: Context, answer: Answer) -> dict[str, Any] | None:
        raise NotImplementedError

    def trigger(self, context: Context) -> BaseTrigger:
        raise NotImplementedError

    def on_event(self, context: Context, event: dict[str, Any]) -> Any:
        raise NotImplementedError

    # -- the sensor -----------------------------------------------------------------------------------------

    def gateway_args(self) -> dict[str, Any]:
        """Where the coordinator's execution is polled: its gateway, agreement and the consumer."""
        return {
            "endpoint": self.coordinator["endpoint"],
            "audience": self.coordinator["provider"],
            "agreement_id": self.coordinator["agreement_id"],
            "consumer_conn_id": self.conf["consumer_conn_id"],
        }

    @cached_property
    def client(self) -> GatewayClient:
        return gateway(self.consumer, self.coordinator)

    def poke(self, context: Context) -> PokeReturnValue:
        """One status poll, judged: not done while the wait goes on; done with the XCom on success;
        an error ends the task (``AirflowFailException``, ``AirflowSensorTimeout``)."""
        event = self.judge(context, poll(self.client, self.coordinator["agreement_id"]))
        if event is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self.execute_complete(context, event))

    def execute(self, context: Context) -> Any:
        if self.timeout_from_session:
            self.timeout = float(self.conf["session_timeout"])
        if not self.deferrable:
            return super().execute(context)
        done = self.probe(context)
        if done:
            return done.xcom_value
        self.defer(
            trigger=self.trigger(context),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_GRACE),
        )

    def probe(self, context: Context) -> PokeReturnValue:
        """Poke for up to ``probe_seconds`` (at least once) before deferring: a wait that is over at
        once saves the deferral's round trip through the triggerer."""
        until = time.monotonic() + self.probe_seconds
        while not (done := self.poke(context)) and time.monotonic() + self.poke_interval < until:
            time.sleep(self.poke_interval)
        return done

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """The end of the wait (a trigger's event, or a poke's): the XCom on success, else fail."""
        if event.get("status") != "success":
            message = event.get("message") or f"coordinator wait failed: {event}"
            if event.get("reason") == "timeout":
                raise AirflowSensorTimeout(message)
            raise AirflowFailException(message)
        return self.on_event(context, event)


class WaitForCoordinatorSensor(_CoordinatorSensor):
    """Until the coordinator's gateway reports it serving (fails at once when its execution ended); then
    its URL and certificate, as its provider signed them, are published in the coordinator's workflow DDO
    (where the participants' gateways check and read them). A coordinator usually serves within a second
    or two: when deferrable, it is probed for ``probe_seconds`` (default 3) before the wait defers."""

    template_fields = ("session", "coordinator", "workflow")

    def __init__(self, *, workflow: Any, probe_seconds: float = 3.0, **kwargs: Any) -> None:
        super().__init__(probe_seconds=probe_seconds, **kwargs)
        self.workflow = workflow

    def judge(self, context: Context, answer: Answer) -> dict[str, Any] | None:
        return serving_event(answer)

    def trigger(self, context: Context) -> BaseTrigger:
        return CoordinatorUrlTrigger(
            **self.gateway_args(), timeout=self.timeout, poll_interval=self.poke_interval
        )

    def on_event(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        execution = event["execution"]
        url, announcement = execution["coordinator_url"], execution["announcement"]
        did = self.workflow["coordinator_did"]
        metadata_store(self.conf["storage_conn_id"]).annotate(
            did, coordinatorUrl=url, coordinatorAnnouncement=announcement
        )
        self.log.info("coordinator up at %s; its signed announcement recorded in %s", url, did)
        return {**self.coordinator, "coordinator_url": url}


class WaitForRoundsSensor(_CoordinatorSensor):
    """Follow the rounds (each finished round logged with its metrics) until the session FINISHED; fail
    fast on a coordinator crash, a stall (``stall_timeout``) or the ``session_timeout`` (counted from the
    run's start). In reschedule mode the watch (rounds logged, last progress) is kept in the task
    instance's ``task_state_store`` between pokes.

    :param workloads: the session's executions (``start_coordinator``'s, ``start_participants``'): when
        deferred, their log lines stream into this task's log while the session runs
    """

    STATE_KEY = "rounds_watch"
    template_fields = (*_CoordinatorSensor.template_fields, "workloads")

    def __init__(self, *, workloads: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workloads = workloads
        self._watch: RoundsWatch | None = None

    def limits(self, context: Context) -> dict[str, float]:
        stall = float(self.conf["stall_timeout"])
        return {
            "deadline": context["dag_run"].start_date.timestamp() + float(self.conf["session_timeout"]),
            "stall_timeout": stall,
            "unreachable_timeout": min(stall, 10.0),
        }

    def watch(self, context: Context) -> RoundsWatch:
        """This process's watch; a rescheduled poke resumes the one its try saved."""
        if self._watch is None:
            saved = context["task_state_store"].get(self.STATE_KEY) if self.reschedule else None
            state = saved if saved and saved.get("try") == context["ti"].try_number else None
            endpoint = self.coordinator["endpoint"]
            self._watch = RoundsWatch(endpoint, **self.limits(context), log=self.log, state=state)
        return self._watch

    def execute(self, context: Context) -> Any:
        self._watch = None  # a new try starts a new watch
        return super().execute(context)

    def judge(self, context: Context, answer: Answer) -> dict[str, Any] | None:
        watch = self.watch(context)
        event = watch.see(answer)
        if self.reschedule:
            store = context["task_state_store"]
            if event is None:
                store.set(self.STATE_KEY, {**watch.state(), "try": context["ti"].try_number})
            else:
                store.delete(self.STATE_KEY)
        return event

    def trigger(self, context: Context) -> BaseTrigger:
        fields = ("name", "endpoint", "provider", "agreement_id")
        workloads = [{f: w[f] for f in fields} for w in as_list(self.workloads)]
        return SessionRoundsTrigger(
            **self.gateway_args(),
            **self.limits(context),
            workloads=workloads,
            poll_interval=self.poke_interval,
        )

    def on_event(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        status = event["coordinator"]
        metrics = status.get("rounds_metrics") or []
        final = metrics[-1] if metrics else {}
        self.log.info(
            "session finished: %d rounds, global model's accuracy %s (federated evaluation)",
            len(metrics),
            final.get("global_accuracy"),
        )
        return {
            "rounds": len(metrics),
            "rounds_metrics": metrics,
            # The last round's global model scored by the participants on held-out rows (None when the
            # model does not report it); the locally trained weights' scores beside, named for what they are.
            "final_accuracy": final.get("global_accuracy"),
            "final_loss": final.get("global_loss"),
            "final_train_accuracy": final.get("accuracy"),
            "final_train_loss": final.get("loss"),
            "model": status.get("model"),
            "refused_uploads": status.get("refused_uploads"),
        }
