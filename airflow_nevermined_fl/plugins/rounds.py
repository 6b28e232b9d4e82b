"""The rounds of one session run, as the chart shows them.

Once the rounds are over they come from the run's XComs (``wait_for_rounds``: ``rounds_metrics``,
``refused_uploads``); before (a running session, or a failed one), from the coordinator's status, which
its provider's gateway answers to the run's consumer and keeps after the end (``start_coordinator``'s
execution; the consumer connection of ``validate``'s ``session``, read in the api-server, signs the
call). Only the chart's fields leave: no URL, certificate, key or dataset location of the status.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from sqlalchemy import select

from airflow_nevermined_fl.runtime.workload import SessionState

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ROUND_FIELDS = (
    "round",
    "global_accuracy",
    "global_loss",
    "loss",
    "accuracy",
    "participants",
    "refused_uploads",
    "duration",
)
"""Per round: the global model's federated evaluation, the locally trained weights' scores, the uploads."""
LIVE_TIMEOUT = 5.0
"""Seconds for the gateway's status answer (the page polls again)."""

log = logging.getLogger(__name__)


def run_rounds(session: Session, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The chart's data for the run (None: no such run): its state, the session's planned rounds and, per
    finished round, :data:`ROUND_FIELDS`; ``source`` says where the rounds come from (``xcom``,
    ``coordinator``, or None before the coordinator started), ``note`` why the coordinator's are missing."""
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        return None
    xcoms = run_xcoms(session, dag_id, run_id, ["validate", "start_coordinator", "wait_for_rounds"])
    setup = xcoms.get(("validate", "session")) or {}
    conf = setup.get("conf") or {}
    body = {
        "dag_id": dag_id,
        "run_id": run_id,
        "run_state": run.state,
        "session_id": setup.get("session_id"),
        "rounds_planned": conf.get("rounds", (run.conf or {}).get("rounds")),
    }
    result = xcoms.get(("wait_for_rounds", "return_value"))
    if result:
        return body | _rounds(
            "xcom", result["rounds_metrics"], SessionState.FINISHED, result.get("refused_uploads")
        )
    execution = xcoms.get(("start_coordinator", "return_value"))
    if execution and conf:
        return body | _coordinator(conf["consumer_conn_id"], execution)
    return body | _rounds(None, [], None, None)


def run_xcoms(session: Session, dag_id: str, run_id: str, task_ids: list[str]) -> dict[tuple[str, str], Any]:
    """The XComs of these (unmapped) tasks of the run, by (task id, key)."""
    query = XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=task_ids, map_indexes=-1)
    return {(x.task_id, x.key): XComModel.deserialize_value(x) for x in session.scalars(query)}


def _coordinator(consumer_conn_id: str, execution: dict[str, Any]) -> dict[str, Any]:
    """The rounds so far, from the coordinator's status at its provider's gateway."""
    from airflow_nevermined_fl.operators.base import gateway, nevermined
    from airflow_nevermined_fl.protocol.client import GatewayError

    try:
        client = gateway(nevermined(consumer_conn_id), execution, timeout=LIVE_TIMEOUT)
        status = client.status(execution["agreement_id"])
    except Exception as err:  # noqa: BLE001 - the gateway, or the consumer connection here: a note, not a 500
        log.warning("rounds chart: coordinator status of %s: %s", execution["agreement_id"], err)
        reason = "its gateway did not answer" if isinstance(err, GatewayError) else type(err).__name__
        return _rounds("coordinator", [], None, None) | {"note": f"coordinator status unavailable: {reason}"}
    coordinator = status.get("coordinator") or {}
    return _rounds(
        "coordinator",
        coordinator.get("rounds_metrics") or [],
        coordinator.get("state"),
        coordinator.get("refused_uploads"),
    )


def _rounds(
    source: str | None, metrics: list[dict[str, Any]], state: str | None, refused_uploads: int | None
) -> dict[str, Any]:
    """The chart's fields of the rounds' metrics; the final accuracy (the last global model's, federated
    evaluation) once the coordinator FINISHED."""
    rounds = [{field: m.get(field) for field in ROUND_FIELDS} for m in metrics]
    return {
        "source": source,
        "coordinator_state": state,
        "rounds": rounds,
        "final_accuracy": rounds[-1]["global_accuracy"]
        if rounds and state == SessionState.FINISHED
        else None,
        "refused_uploads": refused_uploads,
    }
