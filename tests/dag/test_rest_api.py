"""End to end through the Airflow components (api-server, scheduler, dag-processor, triggerer) on
127.0.0.1: bad conf refused with 400, conf re-checked at run start before any transaction, one session
triggered with ``POST /api/v2/dags/fl_session/dagRuns``, waits deferred (no worker slot), its model's
asset event scheduling ``fl_model_evaluation``, no secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagstack import Api, Stack, assert_no_secrets

from airflow_nevermined_fl.client import AirflowApiError
from airflow_nevermined_fl.session_info import session_summary

DAG = "fl_session"
EVALUATION = "fl_model_evaluation"


def test_bad_conf_is_refused_with_400_naming_the_field(api: Api, stack: Stack) -> None:
    client = api.client
    for field, value in (("rounds", 0), ("fraction", 1.5), ("heartbeat", "fast")):
        with pytest.raises(AirflowApiError) as err:
            client.trigger(DAG, stack.conf(**{field: value}))
        assert err.value.status_code == 400
        assert field in str(err.value.detail) or repr(value) in str(err.value.detail), err.value.detail


UNKNOWN_DID = "did:nv:" + "0f" * 32


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_participants": 5}, "conf.min_participants: 5 exceeds the 3 data providers"),
        ({"max_price": 7}, "conf.coordinator.did: coordinator asks 10, above max_price=7"),
        (
            {"data_providers": [{"did": UNKNOWN_DID}], "min_participants": 1},
            f"conf.data_providers[0].did: did: unknown DID {UNKNOWN_DID}",
        ),
        (
            {"model": {"name": "softmax", "num_features": 32, "num_classes": 10}},
            "conf.model.num_features: 32, but provider-1's dataset",
        ),
        (  # a model outside the providers' published policies (issue 19): refused from their DDOs
            {"model": {"name": "subprocess:Popen"}},
            "conf.coordinator.did: coordinator's policy refuses this session: policy.models: "
            "'subprocess:Popen' is not an allowed model",
        ),
    ],
    ids=["min-participants", "max-price", "unknown-did", "model-size", "unlisted-model"],
)
def test_conf_is_checked_again_at_run_start(
    api: Api, stack: Stack, overrides: dict[str, Any], message: str
) -> None:
    """Valid for the schema, but not together, not on chain or not at the providers' terms: the run fails
    in ``validate``, before any transaction."""
    client = api.client
    nonce = stack.w3().eth.get_transaction_count(stack.accounts()["consumer"])
    run = client.trigger(DAG, stack.conf(**overrides))
    assert client.wait_run(DAG, run["dag_run_id"], timeout=120)["state"] == "failed"
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG, run["dag_run_id"])}
    assert states["validate"] == "failed"
    assert states["lock_coordinator_payment"] == "upstream_failed"
    log = client.task_log(DAG, run["dag_run_id"], "validate", 1)
    assert message in log, log[-2000:]
    assert stack.w3().eth.get_transaction_count(stack.accounts()["consumer"]) == nonce


def test_a_gateway_down_at_validate_costs_nothing(api: Api, stack: Stack) -> None:
    """A provider whose gateway is down: the run fails in ``validate``, before any transaction."""
    from airflow_nevermined_fl import process

    client = api.client
    extra = stack.start_gateways("local", "-down")
    process.stop(int(stack.extra_gateways["-down"]["gateways"]["provider-3-down"]["pid"]))
    providers = [{"did": stack.gateways[n]["did"]} for n in ("provider-1", "provider-2")]
    conf = stack.conf(data_providers=[*providers, {"did": extra["provider-3-down"]["did"]}])
    consumer = stack.accounts()["consumer"]
    nonce, balance = stack.w3().eth.get_transaction_count(consumer), stack.balances()["consumer"]
    run = client.trigger(DAG, conf)
    assert client.wait_run(DAG, run["dag_run_id"], timeout=120)["state"] == "failed"
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG, run["dag_run_id"])}
    assert states["validate"] == "failed" and states["lock_coordinator_payment"] == "upstream_failed"
    log = client.task_log(DAG, run["dag_run_id"], "validate", 1)
    assert "conf.data_providers[2].did:" in log and "unreachable" in log, log[-2000:]
    assert stack.w3().eth.get_transaction_count(consumer) == nonce
    assert stack.balances()["consumer"] == balance


def _created_run(api: Api, run_id: str, timeout: float) -> str:
    """The run that the model event of session run ``run_id`` scheduled (of the DAG consuming the asset)."""
    deadline = time.monotonic() + timeout
    while True:
        (event,) = api.client.asset_events(source_dag_id=DAG, source_run_id=run_id)
        if event["created_dagruns"]:
            (run,) = event["created_dagruns"]
            return run["run_id"]
        assert time.monotonic() < deadline, "the model's asset event scheduled no run"
        time.sleep(0.5)


def test_session_over_rest(api: Api, stack: Stack) -> None:
    from airflow_nevermined_fl.devtools.devstack import airflow

    state, client = api.state, api.client
    airflow.upload_heldout(stack.s3)  # what fl_model_evaluation evaluates each published model on
    before = stack.balances()
    strategy = {"name": "fedavgm", "eta": 1.0, "momentum": 0.5}  # a server optimiser, end to end
    run_id = client.trigger(DAG, {**stack.conf(), "strategy": strategy})["dag_run_id"]
    seen: dict[str, set[str]] = {}
    deadline = time.monotonic() + 600
    while client.run(DAG, run_id)["state"] not in ("success", "failed"):
        for ti in client.task_instances(DAG, run_id):
            seen.setdefault(ti["task_id"], set()).add(ti["state"])
        assert time.monotonic() < deadline, "session did not finish"
        time.sleep(0.5)
    assert client.run(DAG, run_id)["state"] == "success"
    assert "deferred" in seen["wait_for_rounds"]  # the long wait runs in the triggerer, not a worker slot

    summary = session_summary(client, DAG, run_id)
    assert set(summary["tasks"].values()) == {"success"}
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["model_did"].startswith("did:nv:")
    assert {p["name"] for p in summary["payments"]} == {
        "coordinator",
        "provider-1",
        "provider-2",
        "provider-3",
    }
    assert all(p["lock_tx"] and p["release_tx"] for p in summary["payments"])  # released by the gateways
    after = stack.balances()
    assert before["consumer"] - after["consumer"] == stack.base(25)
    assert after["coordinator"] - before["coordinator"] == stack.base(10)
    # Extra links, as the UI gets them: transactions on the connection's explorer, the model's DDO.
    lock_tx = next(p["lock_tx"] for p in summary["payments"] if p["name"] == "coordinator")
    assert client.extra_links(DAG, run_id, "lock_coordinator_payment") == {
        "Lock transaction": f"https://explorer.test/tx/{lock_tx}"
    }
    links = client.extra_links(DAG, run_id, "publish_model")
    assert links["Model DID registration"].startswith("https://explorer.test/tx/0x")
    # Absolute on the Airflow's [api] base_url.
    assert links["Model DDO"].startswith(f"{state['url']}/nevermined-fl/model-ddo?dag_id=fl_session&run_id=")
    bearer = {"Authorization": f"Bearer {api.token()}"}
    ddo = httpx.get(links["Model DDO"], headers=bearer).json()  # the plugin serves it
    assert ddo["id"] == summary["model_did"] and ddo["proof"]["creator"] == stack.accounts()["consumer"]
    assert ddo["service"][0]["attributes"]["main"]["metrics"]["strategy"] == strategy
    # The model's asset event scheduled fl_model_evaluation, which evaluated that model.
    evaluation = _created_run(api, run_id, timeout=120)
    assert client.wait_run(EVALUATION, evaluation, timeout=120)["state"] == "success"
    assert client.xcom(EVALUATION, evaluation, "evaluate_model")["model_did"] == summary["model_did"]

    logs = [p.read_text(errors="replace") for p in Path(state["home"], "logs").rglob("*") if p.is_file()]
    assert any("round 1 finished" in text for text in logs)  # trigger logs reach the task log
    waited = client.task_log(DAG, run_id, "wait_for_rounds", 1)  # and the workloads' lines, streamed
    assert all(f"[{name}] " in waited for name in ("coordinator", "provider-1", "provider-2", "provider-3"))
    rendered = [
        client.task_instance(DAG, run_id, t)["rendered_fields"]
        for t in ("publish_workflow", "start_coordinator", "teardown")
    ]
    assert_no_secrets(stack, json.dumps(summary), json.dumps(rendered), *logs)


def test_three_sessions_at_once_on_one_consumer_account(api: Api, stack: Stack) -> None:
    """Three runs triggered together: their transactions from one consumer account interleave (the
    account's lock serializes them), each session completes, balances reconcile, no nonce error."""
    state, client = api.state, api.client
    before = stack.balances()
    run_ids = [client.trigger(DAG, stack.conf())["dag_run_id"] for _ in range(3)]
    deadline = time.monotonic() + 900
    while any(client.run(DAG, r)["state"] not in ("success", "failed") for r in run_ids):
        assert time.monotonic() < deadline, "sessions did not finish"
        time.sleep(1)
    assert [client.run(DAG, r)["state"] for r in run_ids] == ["success"] * 3
    after = stack.balances()
    assert before["consumer"] - after["consumer"] == 3 * stack.base(25)  # each session paid once
    assert after["coordinator"] - before["coordinator"] == 3 * stack.base(10)
    for name in ("provider-1", "provider-2", "provider-3"):
        assert after[name] - before[name] == 3 * stack.base(5)
    logs = [p.read_text(errors="replace") for p in Path(state["home"], "logs").rglob("*") if p.is_file()]
    assert not any("nonce too low" in text.lower() or "underpriced" in text.lower() for text in logs)


def test_triggerer_and_scheduler_restarted_mid_session(api: Api, stack: Stack) -> None:
    """The triggerer restarted while ``wait_for_rounds`` is deferred, then the scheduler: the wait resumes
    in the new triggerer, the session completes and is paid once."""
    from airflow_nevermined_fl.devtools.devstack import airflow

    state, client = api.state, api.client
    before = stack.balances()
    run_id = client.trigger(DAG, stack.conf(rounds=30, heartbeat=0.5))["dag_run_id"]

    def state_of(task_id: str) -> str | None:
        return next((t["state"] for t in client.task_instances(DAG, run_id) if t["task_id"] == task_id), None)

    deadline = time.monotonic() + 300
    while state_of("wait_for_rounds") != "deferred":
        assert time.monotonic() < deadline, "wait_for_rounds never deferred"
        time.sleep(0.3)
    for component in ("triggerer", "scheduler"):
        airflow.restart(state, component, api.conn_env)
    deadline = time.monotonic() + 600
    while client.run(DAG, run_id)["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, "session did not finish"
        time.sleep(0.5)
    assert client.run(DAG, run_id)["state"] == "success"
    summary = session_summary(client, DAG, run_id)
    assert len(summary["rounds"]) == 30 and set(summary["tasks"].values()) == {"success"}
    after = stack.balances()
    paid = (before["consumer"] - after["consumer"], after["coordinator"] - before["coordinator"])
    assert paid == (stack.base(25), stack.base(10))
