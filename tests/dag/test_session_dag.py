"""Whole-DAG session with ``dag.test()`` on the real stack (anvil + contracts, SeaweedFS, one gateway
process per provider with its own key, xain-fl processes), then the chain-touching tasks retried: no
second on-chain effect. The consumer's side never sees a provider key or dataset location."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from dagstack import Stack, assert_no_secrets, dataset_locations, gateway_workloads, payments

from airflow_nevermined_fl import ddo

RETRIED = ("lock_coordinator_payment", "lock_payment", "publish_workflow", "publish_model")


@pytest.fixture(scope="module")
def session_run(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    before = stack.balances()
    summary, output = stack.dag_test(stack.conf(), tmp_path_factory.mktemp("run") / "summary.json", *RETRIED)
    return {"before": before, "after": stack.balances(), "summary": summary, "output": output}


def _value(summary: dict[str, Any], task: str) -> Any:
    return summary["xcom"][task]["return_value"]


def model_event(summary: dict[str, Any], dag_id: str = "fl_session") -> dict[str, Any]:
    """The asset event a successful ``publish_model`` of the run emits: its DAG's model, as published."""
    model = _value(summary, "publish_model")
    extra = {
        "model_did": model["model_did"],
        "model_url": model["model_url"],
        "sha256": model["model_sha256"],
        "final_accuracy": model["final_accuracy"],
        "rounds": len(model["rounds_metrics"]),
        "session_id": model["session_id"],
    }
    return {"uri": f"nevermined-fl://models/{dag_id}", "source_task_id": "publish_model", "extra": extra}


def test_session_succeeds_with_every_step(session_run: dict[str, Any]) -> None:
    summary = session_run["summary"]
    assert summary["state"] == "success"
    assert set(summary["tasks"].values()) == {"success"}
    assert len([t for t in summary["tasks"] if t.startswith("start_participants[")]) == 3
    rounds = _value(summary, "wait_for_rounds")
    assert rounds["rounds"] == 2 and [m["round"] for m in rounds["rounds_metrics"]] == [0, 1]
    assert rounds["final_accuracy"] > 0.5
    assert "round 1 finished" in session_run["output"]  # the trigger logged each round with its metrics
    # The workloads' own log lines streamed into the wait's log while the session ran, by workload.
    for name in ("coordinator", "provider-1", "provider-2", "provider-3"):
        assert f"[{name}] " in session_run["output"], name
    assert "event='Round finished'" in session_run["output"]
    model = _value(summary, "publish_model")
    assert model["model_did"].startswith("did:nv:") and model["model_url"].startswith("s3://")
    assert model["final_accuracy"] == rounds["final_accuracy"]


def test_the_model_is_announced_as_an_asset_event(session_run: dict[str, Any]) -> None:
    # One event per successful try of publish_model: the retry announces the same model again.
    assert session_run["summary"]["asset_events"] == [model_event(session_run["summary"])] * 2


def test_extra_links_of_retries_that_sent_nothing(session_run: dict[str, Any]) -> None:
    """Links are kept as XComs when a task ends (how Airflow 3 serves them): the retries of this run sent
    no transaction, so they link none; the model's DDO stays linked. (Transactions links: test_rest_api.)"""
    xcom, summary = session_run["summary"]["xcom"], session_run["summary"]
    assert xcom["publish_model"]["_link_ModelRegistrationLink"] == ""
    assert xcom["publish_model"]["_link_ModelDdoLink"] == (
        f"/nevermined-fl/model-ddo?dag_id=fl_session&run_id={quote(summary['run_id'], safe='')}"
    )
    assert xcom["lock_coordinator_payment"]["_link_LockTransactionLink"] == ""


def test_the_evaluation_dag_evaluates_the_last_published_model(
    session_run: dict[str, Any], stack: Stack, tmp_path: Path
) -> None:
    """A manual run of ``fl_model_evaluation`` (no triggering event): the newest event's model, read
    through the consumer's storage and checked against its sha256, on the held-out split."""
    from airflow_nevermined_fl.devtools.devstack import airflow, gateways

    airflow.upload_heldout(stack.s3)
    summary, output = stack.dag_test({}, tmp_path / "evaluation.json", dag_id="fl_model_evaluation")
    assert summary["state"] == "success", output[-3000:]
    result, model = _value(summary, "evaluate_model"), _value(session_run["summary"], "publish_model")
    assert result["model_did"] == model["model_did"] and result["sha256"] == model["model_sha256"]
    assert result["n"] == gateways.partition_demo(tmp_path / "data")["test"]["rows"]
    assert result["accuracy"] > 0.5
    assert f"model {model['model_did']} (session {model['session_id']}): accuracy" in output


def test_retries_have_no_second_on_chain_effect(session_run: dict[str, Any], stack: Stack) -> None:
    summary, before, after = session_run["summary"], session_run["before"], session_run["after"]
    assert set(summary["retried"]) == {
        "lock_coordinator_payment[-1]",
        "lock_payment[0]",
        "lock_payment[1]",
        "lock_payment[2]",
        "publish_workflow[-1]",
        "publish_model[-1]",
    }
    assert set(summary["retried"].values()) == {"success"}
    prices = {"coordinator": stack.base(10)} | {f"provider-{i}": stack.base(5) for i in (1, 2, 3)}
    assert before["consumer"] - after["consumer"] == sum(prices.values())
    for name, price in prices.items():
        assert after[name] - before[name] == price, name
    # The retried tasks' outputs (the last try) report that nothing was sent.
    for lock in payments(summary):
        assert lock["tx_hashes"] == {"agreement": None, "lock": None}
    assert set(_value(summary, "publish_workflow")["tx_hashes"].values()) == {None}
    model = _value(summary, "publish_model")
    assert model["tx_hashes"] == {"register": None, "provenance": []}
    # Each gateway settled its own agreement once; the retry reads the settlement it recorded.
    assert set(model["released"]) == set(prices)
    assert all(txs["compute"] and txs["release"] for txs in model["released"].values())


def test_published_artifacts_on_chain_and_storage(
    session_run: dict[str, Any], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in stack.conn_env.items():
        monkeypatch.setenv(key, value)
    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook
    from airflow_nevermined_fl.hooks.storage import StorageHook
    from airflow_nevermined_fl.metadata import MetadataStore

    summary = session_run["summary"]
    session_id = summary["xcom"]["validate"]["session"]["session_id"]
    workflow, model = _value(summary, "publish_workflow"), _value(summary, "publish_model")
    consumer = NeverminedHook("nevermined_consumer")
    store = MetadataStore(StorageHook("nvfl_storage_default"))

    model_ddo = store.get(model["model_did"])
    assert consumer.get_did(model["model_did"]).checksum == ddo.ddo_checksum(model_ddo)
    provenance = ddo.main_block(model_ddo)["provenance"]
    assert provenance["sessionId"] == session_id
    assert set(provenance["wasDerivedFrom"]) == {
        workflow["coordinator_did"],
        *workflow["participant_dids"].values(),
    }
    data = store.storage.get_bytes(model["model_url"])
    assert hashlib.sha256(data).hexdigest() == model["model_sha256"]
    assert ddo.main_block(model_ddo)["files"][0]["checksum"] == "0x" + model["model_sha256"]

    coordinator_ddo = store.get(workflow["coordinator_did"])
    main = ddo.main_block(coordinator_ddo)
    assert main["type"] == "fl-coordinator"
    assert main["parameters"]["rounds"] == 2 and main["parameters"]["minParticipants"] == 3
    assert main["parameters"]["participantsRatio"] == 1.0
    url = _value(summary, "wait_for_coordinator")["coordinator_url"]
    assert coordinator_ddo["service"][0]["attributes"]["additionalInformation"]["coordinatorUrl"] == url
    for did in workflow["participant_dids"].values():
        assert ddo.main_block(store.get(did))["type"] == "workflow"

    for payment in payments(summary):
        states = consumer.condition_states(payment["agreement"])
        assert states == {"compute": "fulfilled", "lock": "fulfilled", "escrow": "fulfilled"}
        assert payment["price"] == stack.gateways[payment["name"]]["price"]  # the price its DDO states
        assert payment["did"] == stack.gateways[payment["name"]]["did"]


def test_teardown_left_nothing_running(session_run: dict[str, Any], stack: Stack) -> None:
    summary = session_run["summary"]
    teardown = _value(summary, "teardown")
    assert teardown["session_completed"] is True and teardown["refunds"] == {}
    names = {"coordinator", "provider-1", "provider-2", "provider-3"}
    assert {w["name"] for w in teardown["stopped"]} == names
    assert {w["state"] for w in teardown["stopped"]} == {"finished"}
    workloads = gateway_workloads(stack, {p["agreement"]["agreement_id"] for p in payments(summary)})
    assert {w.labels.name for _, w in workloads} == names  # each started by its own provider's gateway
    assert not any(launcher.status(w).running for launcher, w in workloads)
    assert {launcher.status(w).exit_code for launcher, w in workloads if w.labels.role == "participant"} == {
        0
    }


def test_no_secrets_or_dataset_locations_on_the_consumer_side(
    session_run: dict[str, Any], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = session_run["summary"]
    assert summary["rendered"], "no rendered template fields recorded"
    for key, value in stack.conn_env.items():
        monkeypatch.setenv(key, value)
    from airflow_nevermined_fl.hooks.nevermined import NeverminedHook
    from airflow_nevermined_fl.hooks.storage import StorageHook
    from airflow_nevermined_fl.metadata import MetadataStore
    from airflow_nevermined_fl.resolver import fetch_ddo

    consumer, store = (
        NeverminedHook("nevermined_consumer"),
        MetadataStore(StorageHook("nvfl_storage_default")),
    )
    workflow = _value(summary, "publish_workflow")
    dids = [
        workflow["coordinator_did"],
        *workflow["participant_dids"].values(),
        _value(summary, "publish_model")["model_did"],
    ]
    dids += [gateway["did"] for gateway in stack.gateways.values()]
    on_chain = [consumer.get_did(did).url for did in dids]
    ddos = [json.dumps(store.get(did)) for did in dids[:-4]] + [
        json.dumps(fetch_ddo(url)) for url in on_chain[-4:]
    ]
    consumer_side = [
        session_run["output"],
        json.dumps(summary["xcom"]),
        json.dumps(summary["rendered"]),
        json.dumps(summary["asset_events"]),
        *ddos,
        *on_chain,
    ]
    assert_no_secrets(stack, *consumer_side)
    for location in dataset_locations(stack):
        assert not any(location in text for text in consumer_side), location
    # The provider side's records and workload logs hold no key either; a workload's own credentials (its
    # storage grants, TLS key, seat ticket) are files only it can read, holding no storage secret key.
    workloads = gateway_workloads(stack, {p["agreement"]["agreement_id"] for p in payments(summary)})
    files = [f for _, w in workloads for f in Path(w.details["dir"]).iterdir()]
    credentials = [f for f in files if f.name in ("grants.json", "tls.key", "seat", "data-url")]
    assert {f.name for f in credentials} >= {"grants.json", "tls.key", "seat"}
    assert all(f.stat().st_mode & 0o077 == 0 for f in credentials)
    secret_key = stack.secrets()[-2]  # the S3 secret access key
    assert not any(secret_key in f.read_text() for f in credentials)
    logs_and_records = [f for f in files if f.suffix in (".json", ".log") and f not in credentials]
    assert_no_secrets(stack, *(f.read_text() for f in logs_and_records))


def test_the_consumer_side_holds_exactly_one_private_key(stack: Stack) -> None:
    """Connections, variables and every task process's environment: the consumer's key and no other."""
    from airflow_nevermined_fl.devtools.devstack import chain

    environment = json.dumps(stack.airflow_env())
    held = [i for i in range(10) if chain.account(i).key.hex().removeprefix("0x") in environment]
    assert held == [chain.CONSUMER]
