"""What a session run produced, read over Airflow's REST API: its task states, rounds, model and payments
(from its task instances and XComs, which never hold a secret)."""

from __future__ import annotations

import time
from typing import Any

from airflow_nevermined_fl.client import AirflowApiError, AirflowClient

ENDED = ("success", "failed", "skipped", "upstream_failed", "removed")
"""Task instance states of a step that has ended; a stop fails the others (not yet scheduled, too)."""
RUNNING = ("running", "restarting")
"""A step on a worker: a stop lets it end (it may be in the middle of a transaction)."""
TRANSIENT = (409, 500, 503)
"""A failed PATCH that the next pass of a stop tries again: the step ended meanwhile, a busy database."""
STOP_NOTE = "stopped with `nvfl session stop`"
ROUND_KEYS = ("round", "global_accuracy", "global_loss", "accuracy", "loss", "n_samples", "duration")
"""A round in a summary: the global model's federated evaluation (``global_*``: scored by the participants
on held-out rows before training on it), the locally trained weights' ``accuracy``/``loss``, the round."""


def task_key(ti: dict[str, Any]) -> str:
    """``task_id``, with ``[map_index]`` for a mapped task's instance."""
    return ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")


def rounds_result(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """``wait_for_rounds``'s XCom (``rounds_metrics``, ``final_accuracy``: the last global model's federated
    evaluation, ``final_train_accuracy``), None until it succeeded."""
    try:
        return client.xcom(dag_id, run_id, "wait_for_rounds")
    except AirflowApiError as err:
        if err.status_code == 404:
            return None
        raise


def session_summary(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, Any]:
    """What a session produced, from its task instances and XComs (no secrets are ever in there)."""
    tis = client.task_instances(dag_id, run_id)
    states = {task_key(ti): ti["state"] for ti in tis}
    summary: dict[str, Any] = {"tasks": states}
    done = {key for key, state in states.items() if state == "success"}
    payments = (
        [client.xcom(dag_id, run_id, "lock_coordinator_payment")]
        if "lock_coordinator_payment" in done
        else []
    )
    payments += [
        client.xcom(dag_id, run_id, "lock_payment", map_index=ti["map_index"])
        for ti in tis
        if ti["task_id"] == "lock_payment" and ti["state"] == "success"
    ]
    model = client.xcom(dag_id, run_id, "publish_model") if "publish_model" in done else {}
    released = model.get("released", {})
    summary["payments"] = [
        {
            "name": p["name"],
            "role": p["role"],
            "did": p["did"],
            "provider": p["provider"],
            "price": p["price"],
            "agreement_id": p["agreement"]["agreement_id"],
            "lock_tx": p["tx_hashes"]["lock"],
            "compute_tx": released.get(p["name"], {}).get("compute"),
            "release_tx": released.get(p["name"], {}).get("release"),
        }
        for p in payments
    ]
    if "wait_for_rounds" in done:
        result = client.xcom(dag_id, run_id, "wait_for_rounds")
        summary["rounds"] = [{k: r.get(k) for k in ROUND_KEYS} for r in result["rounds_metrics"]]
        summary["final_accuracy"] = result["final_accuracy"]
        summary["final_train_accuracy"] = result.get("final_train_accuracy")
    if "publish_workflow" in done:
        summary["workflow"] = client.xcom(dag_id, run_id, "publish_workflow")
    for key in ("model_did", "model_url", "model_sha256", "ddo_url"):
        summary[key] = model.get(key)
    summary["model_tx_hashes"] = model.get("tx_hashes")
    if "teardown" in done:
        summary["teardown"] = client.xcom(dag_id, run_id, "teardown")
    return summary


def run_row(client: AirflowClient, dag_id: str, run: dict[str, Any]) -> dict[str, Any]:
    """One line of a run list: its ids, state and dates; rounds and final accuracy once known."""
    result = rounds_result(client, dag_id, run["dag_run_id"]) if run["state"] != "queued" else None
    return {
        "run_id": run["dag_run_id"],
        "state": run["state"],
        "start_date": run["start_date"],
        "end_date": run["end_date"],
        "rounds": len(result["rounds_metrics"]) if result else None,
        "final_accuracy": result["final_accuracy"] if result else None,
    }


def stop_session(client: AirflowClient, dag_id: str, run_id: str, timeout: float = 300.0) -> list[str]:
    """Stop a running session: fail every step that has not ended, except the teardown, so that the steps
    after them fail upstream, the teardown runs (stops the workloads, refunds) and the run ends failed.
    A step already running on a worker (a lock, a publication, a start: seconds; not a wait) is let
    finish first: killed in the middle of a transaction, what it paid would be unknown to the teardown.
    The failed task instances (:func:`task_key`).

    Not ``PATCH dagRun state=failed``: that skips the pending steps and lets the teardown run, but then
    Airflow computes the run's end from its leaves, a skipped ``publish_model``: the run ends success."""
    tasks = client.tasks(dag_id)
    # A teardown has this trigger rule (``as_teardown`` gives it, nothing else has it): it must run.
    teardowns = {t["task_id"] for t in tasks if t["trigger_rule"] == "all_done_setup_success"}
    mapped = {t["task_id"] for t in tasks if t["is_mapped"]}
    waits = {t["task_id"] for t in tasks if str(t["operator_name"]).endswith("Sensor")}  # stopped at once
    deadline = time.monotonic() + timeout
    while True:  # the note first: it says why the steps failed
        try:
            client.note_run(dag_id, run_id, STOP_NOTE)
            break
        except AirflowApiError as err:  # a busy database (SQLite: locked) answers 500: again
            if err.status_code not in TRANSIENT or time.monotonic() > deadline:
                raise
            time.sleep(1)
    failed: list[str] = []
    while time.monotonic() < deadline:  # until every step ended: those expanded or started meanwhile too
        tis = client.task_instances(dag_id, run_id)
        if not tis:  # a run just triggered: the scheduler has not created its task instances yet
            time.sleep(1)
            continue
        pending = [
            ti
            for ti in tis
            if ti["state"] not in ENDED
            and ti["task_id"] not in teardowns
            # not a mapped step before its expansion: it fails upstream with what it maps over
            and not (ti["task_id"] in mapped and ti["map_index"] < 0)
        ]
        if not pending:
            break
        for ti in pending:
            if ti["state"] in RUNNING and ti["task_id"] not in waits:
                continue
            try:
                client.fail_task(dag_id, run_id, ti["task_id"], ti["map_index"], STOP_NOTE)
            except AirflowApiError as err:
                if err.status_code not in TRANSIENT:  # it ended meanwhile, or a busy database
                    raise
                continue
            failed.append(task_key(ti))
        time.sleep(1)
    return failed
