"""A real coordinator launched through ``execute`` (local backend): its address in ``status`` once it
answers, one workload however often ``execute`` is retried, its ``logs``, and ``stop`` taking effect once
and leaving no process. Only the consumer may see or stop it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from gatewaystack import Consumer, Gateway, start_gateway, stop_gateway, wait_for

from airflow_nevermined_fl import process
from airflow_nevermined_fl.devtools import data
from airflow_nevermined_fl.devtools.devstack import chain
from airflow_nevermined_fl.gateway.launchers import Workload
from airflow_nevermined_fl.gateway.launchers.local import LocalLauncher
from airflow_nevermined_fl.protocol import announce
from airflow_nevermined_fl.protocol.client import GatewayClient, GatewayError


def test_coordinator_execute_status_logs_stop(
    coordinator_gw: Gateway,
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    seaweed: dict[str, Any],
    session_id: str,
    secrets_of: list[str],
) -> None:
    seats = [data_gw.asset("provider-1-s3")["did"]]
    workflow = consumer.coordinator_workflow(coordinator_gw, session_id, data.softmax_model(manifest), seats)
    agreement = consumer.agreement(coordinator_gw, "coordinator")
    agreement_id, client = agreement["agreement_id"], consumer.client(coordinator_gw)

    started = client.execute(agreement, workflow)
    assert {
        k: started[k] for k in ("agreement_id", "service", "role", "workflow_did", "consumer", "state")
    } == {
        "agreement_id": agreement_id,
        "service": "coordinator",
        "role": "coordinator",
        "workflow_did": workflow,
        "consumer": consumer.address,
        "state": "running",
    }
    assert (
        started["did"] == coordinator_gw.asset("coordinator")["did"] and started["session_id"] == session_id
    )
    assert started["announcement"] is None  # signed once the coordinator serves
    assert started["settlement"] == {"compute_tx": None, "release_tx": None, "settled": False, "error": None}

    retried = client.execute(agreement, workflow)
    assert (retried["agreement_id"], retried["started"]) == (agreement_id, started["started"])
    assert len(coordinator_gw.workload_dirs(agreement_id)) == 1  # one workload however often it is asked

    status = wait_for(
        lambda: (s := client.status(agreement_id))["coordinator_url"] and s, 60, "coordinator up"
    )
    assert status["coordinator_url"] == status["coordinator"]["grpc"]
    announced = announce.verify(
        status["announcement"], provider=coordinator_gw.address, session_id=session_id
    )
    assert announced["url"] == status["coordinator_url"] and "PRIVATE KEY" not in json.dumps(status)
    assert (status["state"], status["coordinator"]["state"]) == ("running", "STANDBY")
    assert status["coordinator"]["session_id"] == session_id
    assert client.info()["capacity"]["running"] >= 1
    logs = client.logs(agreement_id, tail=200)
    assert "NVFL_COORDINATOR_READY" in logs

    other = Account.create()
    stranger = GatewayClient(
        coordinator_gw.endpoint,
        audience=coordinator_gw.address,
        address=other.address,
        sign=lambda text: other.sign_message(encode_defunct(text=text)).signature.to_0x_hex(),
        chain_id=consumer.chain_id,
    )
    for call in (stranger.status, stranger.logs, stranger.stop):
        with pytest.raises(GatewayError) as err:
            call(agreement_id)
        assert err.value.status_code == 403 and "is not the consumer of agreement" in err.value.detail

    (directory,) = coordinator_gw.workload_dirs(agreement_id)
    workload = Workload.from_dict(json.loads((directory / "workload.json").read_text()))
    launcher = LocalLauncher(root=coordinator_gw.state_dir / "workloads")
    assert launcher.status(workload).running

    stopped = client.stop(agreement_id)
    assert stopped["state"] == "stopped" and not stopped["settlement"]["settled"]
    assert not launcher.status(workload).running  # the workload's pid is gone
    for endpoint in workload.endpoints.values():
        host, port = endpoint.split(":")
        assert not process.port_open(host, int(port))
    assert client.stop(agreement_id) == stopped  # a second stop has no effect
    assert client.status(agreement_id) == stopped
    assert client.execute(agreement, workflow)["state"] == "stopped"  # nor does a late retry relaunch
    assert len(coordinator_gw.workload_dirs(agreement_id)) == 1

    answers = json.dumps([started, retried, status, stopped]) + logs
    for secret in secrets_of:
        assert secret not in answers


def test_a_full_gateway_says_so_before_anyone_pays(
    tmp_path: Path,
    gw_chain: dict[str, Any],
    seaweed: dict[str, Any],
    data_gw: Gateway,
    consumer: Consumer,
    manifest: dict[str, Any],
    session_id: str,
) -> None:
    """At capacity, ``info`` reports the service not ready (what ``validate`` checks before any lock), and
    an ``execute`` would be refused: the consumer learns it before paying."""
    services = [{"name": "coordinator", "type": "fl-coordinator", "price": 10}]
    full = start_gateway(
        tmp_path, "coordinator", chain.COORDINATOR_PROVIDER, gw_chain, seaweed, services, max_executions=1
    )
    try:
        client = consumer.client(full)
        assert client.info()["services"][0]["ready"] is True
        seats = [data_gw.asset("provider-1-s3")["did"]]
        workflow = consumer.coordinator_workflow(full, session_id, data.softmax_model(manifest), seats)
        client.execute(consumer.agreement(full, "coordinator"), workflow)
        (service,) = client.info()["services"]
        assert (service["ready"], service["reason"]) == (False, "at capacity (1 executions running)")
    finally:
        stop_gateway(full)
