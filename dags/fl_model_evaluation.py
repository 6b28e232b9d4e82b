"""Evaluate each model the ``fl_session`` DAG publishes on the consumer's own held-out set.

Scheduled on ``fl_session``'s model asset (``nevermined-fl://models/fl_session``): a run follows each
published model (events that arrive together share a run, which evaluates the newest); a manual run
evaluates the last model published. The model is read from the event's ``model_url`` through the storage
connection and checked against its ``sha256``; the held-out ``.npz`` (``x``, ``y``: rows no provider
trained on) is the object ``test_data`` of the same bucket (the devstack puts the demo's there).
"""

from __future__ import annotations

import logging
from datetime import datetime
from operator import attrgetter
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_nevermined_fl.assets import last_model, model_asset
from airflow_nevermined_fl.hooks.storage import StorageHook
from airflow_nevermined_fl.runtime.evaluate import evaluate

MODEL = model_asset("fl_session")
log = logging.getLogger(__name__)


@dag(
    schedule=[MODEL],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["nevermined", "federated-learning"],
    doc_md=__doc__,
    params={
        "storage_conn_id": Param("nvfl_storage_default", type="string", description="Storage connection."),
        "test_data": Param(
            "heldout/test.npz", type="string", description="Key of the held-out .npz in its bucket."
        ),
    },
)
def fl_model_evaluation() -> None:
    @task(inlets=[MODEL])
    def evaluate_model() -> dict[str, Any]:
        """The accuracy of the newest triggering (else last published) model on the held-out set."""
        context = get_current_context()
        triggering = context["triggering_asset_events"].get(MODEL)
        model = (
            max(triggering, key=attrgetter("timestamp")).extra if triggering else last_model(context, MODEL)
        )
        if not model:
            raise AirflowSkipException(f"no model published on {MODEL.uri} yet")
        params = context["params"]
        store = StorageHook(params["storage_conn_id"])
        held_out = store.get_bytes(store.url(params["test_data"]))
        try:
            result = evaluate(store.get_bytes(model["model_url"]), held_out, model["sha256"])
        except ValueError as err:  # not the model published, not a softmax model, or not its data
            raise AirflowFailException(f"model {model['model_did']}: {err}") from None
        log.info(
            "model %s (session %s): accuracy %.4f on %d held-out rows (the session reported %s)",
            model["model_did"],
            model["session_id"],
            result["accuracy"],
            result["n"],
            model["final_accuracy"],
        )
        return {"model_did": model["model_did"], "session_id": model["session_id"], **result}

    evaluate_model()


fl_model_evaluation()
