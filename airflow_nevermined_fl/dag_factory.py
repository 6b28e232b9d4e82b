"""The FL session DAG: one run = one Federated Learning session on Nevermined Compute-to-Data.

validate (provider DIDs resolved, gateways asked) -> lock_coordinator_payment + lock_payment (mapped:
data providers) -> publish_workflow -> start_coordinator (gateway execute) -> wait_for_coordinator
(sensor) -> start_participants (mapped gateway execute) -> wait_for_rounds (sensor) -> publish_model
(model DID, an event of the DAG's model asset ``nevermined-fl://models/<dag_id>``; the gateways settle
their own escrow) ; teardown (a teardown task: stop on every gateway, then the refund of unpaid work once
the agreements' time-out passed on chain). The consumer's Airflow holds only the consumer's key. The
sensors defer to the triggerer (no worker slot while they wait) when deferrable: by default where
Airflow's ``[operators] default_deferrable`` is set.

The lock steps run in parallel: the consumer's transactions (one nonce sequence and one ERC20 allowance
per account) are serialized by the account's file lock in NeverminedHook, across the task processes of
one host. Workers on several hosts (Celery, Kubernetes, Edge executors) sharing a consumer account need
``consumer_pool``: an Airflow pool of one slot per consumer account, which every step that sends the
consumer's transactions (the locks, both publications, the teardown's refunds) takes while it runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, XComArg

from airflow_nevermined_fl.assets import model_asset
from airflow_nevermined_fl.operators.model import PublishModelOperator
from airflow_nevermined_fl.operators.payment import LockPaymentOperator
from airflow_nevermined_fl.operators.workflow import PublishWorkflowOperator, ValidateSessionOperator
from airflow_nevermined_fl.operators.workloads import (
    StartCoordinatorOperator,
    StartParticipantOperator,
    TeardownSessionOperator,
)
from airflow_nevermined_fl.params import session_params
from airflow_nevermined_fl.sensors.coordinator import WaitForCoordinatorSensor, WaitForRoundsSensor

DEFAULT_ARGS: dict[str, Any] = {"owner": "nevermined-fl", "retries": 1, "retry_delay": timedelta(seconds=5)}


def fl_session_dag(
    dag_id: str,
    *,
    schedule: Any = None,
    warm_start: bool = False,
    deferrable: bool | None = None,
    params: dict[str, Any] | None = None,
    consumer_pool: str | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """Build a session DAG. ``params`` overrides the session defaults (the trigger form's values);
    ``warm_start`` starts from the last model this DAG published (the newest event of its model asset,
    :func:`~airflow_nevermined_fl.assets.model_asset`); ``deferrable``: whether the sensors defer their
    waits to the triggerer (None: a ``deferrable`` in ``default_args``, else Airflow's ``[operators]
    default_deferrable``); ``False`` keeps them in worker slots. ``consumer_pool``: the one-slot pool of
    the consumer's account that its transactions take (needed with workers on several hosts; create it
    first: ``airflow pools set NAME 1 DESCRIPTION``)."""
    dag_kwargs.setdefault("start_date", datetime(2025, 1, 1))
    dag_kwargs.setdefault("catchup", False)
    dag_kwargs.setdefault("default_args", DEFAULT_ARGS)
    dag_kwargs.setdefault("tags", ["nevermined", "federated-learning"])
    dag_kwargs.setdefault("doc_md", __doc__)
    waits: dict[str, Any] = {} if deferrable is None else {"deferrable": deferrable}
    session = session_params(**(params or {}))
    # No step may take longer than a whole session (the waits have their own limits, from the run's conf).
    bounded = {"execution_timeout": timedelta(seconds=float(session["session_timeout"].value))}
    sends = {"pool": consumer_pool} if consumer_pool else {}  # steps sending the consumer's transactions
    asset = model_asset(dag_id)
    with DAG(dag_id, schedule=schedule, params=session, **dag_kwargs) as dag:
        validate = ValidateSessionOperator(
            task_id="validate", warm_start=asset if warm_start else None, retries=0, **bounded
        )
        run = XComArg(validate, key="session")
        data_providers = validate.output
        lock_coordinator = LockPaymentOperator(
            task_id="lock_coordinator_payment",
            session=run,
            provider=XComArg(validate, key="coordinator"),
            **bounded,
            **sends,
        )
        lock = LockPaymentOperator.partial(
            task_id="lock_payment",
            session=run,
            map_index_template="{{ task.provider['name'] }}",
            **bounded,
            **sends,
        ).expand(provider=data_providers)
        payments = [lock_coordinator.output, lock.output]
        publish = PublishWorkflowOperator(task_id="publish_workflow", session=run, **bounded, **sends)
        [lock_coordinator, lock] >> publish
        start = StartCoordinatorOperator(
            task_id="start_coordinator", session=run, workflow=publish.output, payments=payments, **bounded
        )
        url = WaitForCoordinatorSensor(
            task_id="wait_for_coordinator",
            session=run,
            coordinator=start.output,
            workflow=publish.output,
            timeout=120,  # a coordinator serves within seconds of its start
            **waits,
        )
        participants = StartParticipantOperator.partial(
            task_id="start_participants",
            session=run,
            workflow=publish.output,
            payments=payments,
            map_index_template="{{ task.provider['name'] }}",
            **bounded,
        ).expand(provider=data_providers)
        url >> participants
        rounds = WaitForRoundsSensor(
            task_id="wait_for_rounds",
            session=run,
            coordinator=url.output,
            workloads=[start.output, participants.output],
            **waits,
        )
        participants >> rounds
        model = PublishModelOperator(
            task_id="publish_model",
            session=run,
            workflow=publish.output,
            payments=payments,
            result=rounds.output,
            outlets=[asset],
            **bounded,
            **sends,
        )
        TeardownSessionOperator(
            task_id="teardown", session=run, payments=payments, published=model.output, **sends
        ).as_teardown(setups=[lock_coordinator, lock, start, participants])
    return dag
